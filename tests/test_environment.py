"""environment.yml (conda) and pyproject.toml name the same packages.

Also: the torch and torchvision ranges admit the versions on this machine; the Makefile's choice of
environment (an active conda environment other than base, else .venv, and PY= over both; checked with
`make -n`, skipped without make); requirements.lock pins the torch of the committed results.
"""
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge's name -> PyPI's


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {CONDA_NAMES.get(_name(d), _name(d)) for d in env["dependencies"] if isinstance(d, str)}
    conda -= {"python", "pip"}
    assert conda == pip_names


def test_torch_pins_admit_the_versions_on_this_machine():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in deps if _name(d) == "torch")
    vision_pin = next(d for d in deps if _name(d) == "torchvision")
    assert "<=2.14.1" in torch_pin and "<=0.29.1" in vision_pin


def _make_says(*args: str, **env: str) -> str:
    """What `make -n test` would run, with the environment's CONDA variables as given (dry run: nothing runs)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONDA")}
    out = subprocess.run(["make", "-n", "--no-print-directory", "test", *args], cwd=ROOT, env={**clean, **env},
                         capture_output=True, text=True, timeout=60)
    return out.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
def test_the_makefile_uses_an_active_conda_environment_or_the_python_given():
    assert ".venv/bin/python -m pytest" in _make_says()
    assert "/opt/env/bin/python -m pytest" in _make_says(CONDA_PREFIX="/opt/env", CONDA_DEFAULT_ENV="attention-conv")
    assert ".venv/bin/python -m pytest" in _make_says(CONDA_PREFIX="/opt/conda", CONDA_DEFAULT_ENV="base")
    given = _make_says(f"PY={sys.executable}", CONDA_PREFIX="/opt/env", CONDA_DEFAULT_ENV="attention-conv")
    assert f"{sys.executable} -m pytest" in given and "/opt/env" not in given


def test_the_lock_pins_the_torch_of_the_committed_results():
    """requirements.lock (make lock) holds exact versions, and the ones the pyproject ranges admit."""
    pins = dict(line.split("==") for line in (ROOT / "requirements.lock").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert {"papermill", "jupyterlab", "pytest", "playwright"} <= set(pins) and "attnlib" not in pins
