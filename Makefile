# Two commands do everything on a fresh clone:  make reproduce   and   make test
# (both set up .venv first when it is missing or pyproject.toml changed).
SHELL := /bin/bash
PROFILE ?= auto
DATASET ?=
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup data lab-settings reproduce report test bench lab clean-smoke help

help:
	@echo "make reproduce [PROFILE=auto|smoke|quick|paper] [DATASET=auto|cifar10|fashion_mnist|synthetic] [FORCE=1]"
	@echo "              run notebooks 00-08 (unchanged ones are skipped; FORCE=1 reruns all), then the report"
	@echo "make report   rebuild only the report (notebook 08, results/<profile>/report.html and .pdf)"
	@echo "make test      run the test suite (unit + notebooks on the smoke profile)"
	@echo "make setup     create $(VENV) and install attnlib with its test extras"
	@echo "make bench     attnlib's training step vs a straightforward fp32 implementation (a few minutes)"
	@echo "make lab       JupyterLab on 127.0.0.1 in the project's environment"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); } || \
	  { rm -rf $(VENV); echo "error: '$(PYTHON) -m venv' failed: install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	@echo "installing attnlib and its dependencies into $(VENV) (torch is large: a few minutes the first time)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@$(MAKE) --no-print-directory data lab-settings
	@touch $@

# JupyterLab settings of this environment: no news or update checks (the pop-up asking, and requests
# to the internet). jupyter/overrides.json is copied where JupyterLab reads overrides.
lab-settings:
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json

# Real data that needs no network: Debian's Fashion-MNIST package (used when CIFAR-10 is absent).
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || [ -f data/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
	  true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist (real data for machines without CIFAR-10)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1; } || \
	  echo "note: could not install dataset-fashion-mnist; put CIFAR-10 or Fashion-MNIST under data/ (see README)"; \
	else \
	  echo "note: no offline data set installed; as root on Debian: apt-get install dataset-fashion-mnist (see README)"; \
	fi

reproduce: setup
	$(PY) -m attnlib.run --profile $(PROFILE) $(if $(DATASET),--dataset $(DATASET)) $(if $(filter 1 yes true,$(FORCE)),--force)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench.py

# JupyterLab on 127.0.0.1 in the project's environment; it makes a fresh token and prints the link with it.
lab: setup lab-settings
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

report: setup
	$(PY) -m attnlib.run --profile $(PROFILE) --report

clean-smoke:
	rm -rf results/smoke
