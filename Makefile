# Two commands do everything on a fresh clone:  make reproduce   and   make test
# (both run `make setup` first, which does nothing when the environment is already installed).
#
# The environment: PY=/path/to/python uses that interpreter; else an active conda environment other than
# base (conda env create -f environment.yml && conda activate attention-conv); else .venv, made here.
SHELL := /bin/bash
PROFILE ?= auto
DATASET ?=
DRY_RUN ?=
DEVICES ?=
PYTHON ?= python3
# make test's pytest workers (pytest-xdist): one per core, at most 4 (each runs notebooks of a few hundred MB),
# each taking whole test files, so that a file's module fixtures are built once; TEST_WORKERS=0 (or empty) runs
# the suite in one process
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
VENV := .venv
LOCK := requirements.lock

ifeq ($(origin PY),undefined)
  ifneq ($(and $(CONDA_PREFIX),$(filter-out base,$(CONDA_DEFAULT_ENV))),)
    PY := $(CONDA_PREFIX)/bin/python
  else
    PY := $(VENV)/bin/python
    OWN_VENV := 1
  endif
endif
# the set-up stamp: in .venv, or per outside interpreter under build/
STAMP := $(if $(OWN_VENV),$(VENV)/.installed,build/setup-$(shell printf '%s' '$(PY)' | cksum | cut -d' ' -f1).stamp)

.PHONY: setup packages lab-settings lock reproduce report test bench gpu-check lab clean-smoke help

help:
	@echo "make reproduce [PROFILE=auto|smoke|quick|evidence|paper] [DATASET=auto|cifar10|fashion_mnist|synthetic] [FORCE=1]"
	@echo "              run notebooks 00-08 (unchanged ones are skipped; FORCE=1 reruns all and retrains every run), then the report"
	@echo "              [DRY_RUN=N]: every run at its real size for N steps, with memory, step time and projected"
	@echo "              time per run, into results/dry-run/<profile>/ (e.g. make reproduce PROFILE=paper DRY_RUN=2)"
	@echo "              [DEVICES=0,1,2,3]: the training notebooks' runs spread over these GPUs (or cpu,cpu), one"
	@echo "              worker each; default: every visible GPU"
	@echo "make report   rebuild only the report (notebook 08, results/<profile>/report.html and .pdf)"
	@echo "make test      run the test suite (unit + notebooks on the smoke profile + browser)"
	@echo "make setup     install attnlib, its test extras, the offline data set and Chromium (environment: $(PY))"
	@echo "make lock      write $(LOCK) from the environment (the exact versions behind committed results)"
	@echo "make bench     attnlib's training step vs [Re]'s way of computing it, fp32 and bf16, against the GEMM peak, its products replayed alone (5 min)"
	@echo "make gpu-check on a GPU, at most 8 minutes: every model's step in fp32/TF32/bf16 with peak memory, the speed"
	@echo "              options' parity, a 2-step dry run per family, DDP over NCCL (2+ GPUs); table in OUT=/tmp/gpu_check.csv"
	@echo "make lab       JupyterLab on 127.0.0.1 in the project's environment"

setup: $(STAMP)

# With $(LOCK) present, .venv gets exactly the versions that produced the committed results (where this
# platform has them; otherwise the ranges in pyproject.toml, saying so). An outside environment keeps its
# own versions and only gains what is missing.
$(STAMP): pyproject.toml $(wildcard $(LOCK))
ifdef OWN_VENV
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); } || \
	  { rm -rf $(VENV); echo "error: '$(PYTHON) -m venv' failed: install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	@echo "installing attnlib and its dependencies into $(VENV) (torch is large: a few minutes the first time)"
	@if [ -f $(LOCK) ]; then \
	  $(PY) -m pip install --quiet --disable-pip-version-check -r $(LOCK) || \
	  echo "note: the versions in $(LOCK) are not all installable here; using the ranges in pyproject.toml"; \
	fi
else
	@$(PY) -c 'import sys' 2>/dev/null || { echo "error: PY=$(PY) is not a Python interpreter"; exit 1; }
	@echo "installing attnlib into the environment of $(PY)"
endif
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@$(MAKE) --no-print-directory packages lab-settings PY=$(PY)
	@mkdir -p $(dir $@) && touch $@

# What the project uses from Debian: the offline real data set, and Chromium (the browser tests, the
# report's PDF). Installed as root on Debian; elsewhere one note says what is missing and what it costs.
packages:
	@$(call debian_package,dataset-fashion-mnist,test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || test -f data/fashion-mnist/train-images-idx3-ubyte.gz,\
	  the offline real data set for machines without CIFAR-10,without it put CIFAR-10 or Fashion-MNIST under data/ (see README))
	@$(call debian_package,chromium,command -v chromium || command -v chromium-browser || command -v google-chrome,\
	  the browser tests and the report's PDF,without it the browser tests skip and the report has no PDF)

# $(call debian_package,NAME,CHECK,WHAT IT IS FOR,WHAT HAPPENS WITHOUT IT)
define debian_package
if { $(2); } >/dev/null 2>&1; then true; \
elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
  echo "installing Debian's $(strip $(1)): $(strip $(3))"; \
  export DEBIAN_FRONTEND=noninteractive; \
  apt-get install -y -qq $(1) >/dev/null 2>&1 || \
  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(1) >/dev/null 2>&1; } || \
  echo "note: could not install $(strip $(1)); $(strip $(4))"; \
else \
  echo "note: $(strip $(1)) is not installed; $(strip $(4)) (as root on Debian: apt-get install $(strip $(1)))"; \
fi
endef

# JupyterLab settings of this environment: no news or update checks (the pop-up asking, and requests
# to the internet). jupyter/overrides.json is copied where JupyterLab reads overrides.
# In an outside environment an overrides.json of its own is kept.
lab-settings:
	@settings="$$($(PY) -c 'import sys; print(sys.prefix)')/share/jupyter/lab/settings" && \
	  if [ -n "$(OWN_VENV)" ] || [ ! -e "$$settings/overrides.json" ]; then \
	    mkdir -p "$$settings" && cp jupyter/overrides.json "$$settings/overrides.json"; fi

lock: setup
	@{ echo "# Exact versions of the environment behind the committed results ($$($(PY) -c 'import platform, sys; print(f"Python {sys.version.split()[0]}, {platform.system()} {platform.machine()}")')),"; \
	   echo "# written by make lock; make setup installs them into .venv where this platform has them."; \
	   $(PY) -m pip list --format=freeze --exclude-editable --exclude pip --exclude setuptools --exclude wheel --disable-pip-version-check | grep -v '^attnlib='; } > $(LOCK)
	@echo "wrote $(LOCK) ($$(grep -vc '^#' $(LOCK)) packages) from $(PY)"

reproduce: setup
	@$(PY) -m attnlib.run --profile $(PROFILE) $(if $(DATASET),--dataset $(DATASET)) $(if $(filter 1 yes true,$(FORCE)),--force) \
	  $(if $(DRY_RUN),--dry-run $(DRY_RUN)) $(if $(DEVICES),--devices $(DEVICES))

test: setup
	$(PY) -m pytest -q -n $(or $(TEST_WORKERS),0) --dist loadfile

bench: setup
	$(PY) benchmarks/bench.py

# On a GPU machine before the paper profile (benchmarks/gpu_check.py); without CUDA one line says so.
gpu-check: setup
	$(PY) benchmarks/gpu_check.py $(if $(OUT),--out $(OUT))

# JupyterLab on 127.0.0.1 in the project's environment; it makes a fresh token and prints the link with it.
lab: setup lab-settings
	$(PY) -m jupyter lab --ip 127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

report: setup
	@$(PY) -m attnlib.run --profile $(PROFILE) --report $(if $(DRY_RUN),--dry-run $(DRY_RUN))

clean-smoke:
	rm -rf results/smoke
