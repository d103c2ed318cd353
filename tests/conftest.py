"""Helpers shared by the tests that drive the notebook runner (python -m attnlib.run)."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_runner(*args: str) -> subprocess.CompletedProcess:
    """`python -m attnlib.run --profile smoke ARGS...` from the repository root, output captured."""
    return subprocess.run([sys.executable, "-m", "attnlib.run", "--profile", "smoke", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def assert_every_field_injected(executed_notebook: Path, params_cls: type):
    """papermill injected one cell setting every field of params_cls: no notebook default can leak in."""
    executed = json.loads(Path(executed_notebook).read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert len(injected) == 1
    source = "".join(injected[0]["source"])
    for field in dataclasses.fields(params_cls):
        assert f"{field.name} = " in source, field.name
