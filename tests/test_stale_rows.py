"""No stale rows: a run's id covers the code that decides what it trains and records (attnlib.experiments.code_digest),
so a change to that code retrains through the runner and leaves none of the old rows standing, a change that cannot
alter a number (a docstring, a move) retrains nothing, and `--force` (FORCE=1) trains every run again.

The runner tests work on a copy of the library, so that its code can be changed: the copy's notebooks import the
copy (PYTHONPATH), and train the smoke profile's notebook 02 into a results folder of their own."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attnlib.experiments.code_digest import TRAINING_CODE, code_digest, definitions

ROOT = Path(__file__).resolve().parent.parent
MEASURE = "                             top_mass=float(top_mass[head]), queries=int(valid[head].sum()),"


def test_the_digest_ignores_what_cannot_change_a_number(tmp_path):
    source = '"""A module."""\nimport math\n\n\ndef f(x):\n    """Twice x."""\n    return 2 * x  # doubled\n\n\n' \
             'def g(x):\n    return f(x) + 1\n'
    reworded = source.replace("Twice x.", "x, doubled.").replace("# doubled", "").replace("import math", "import os")
    assert definitions(reworded) == definitions(source)
    moved = 'def g(x):\n    return f(x) + 1\n'
    (tmp_path / "a.py").write_text(source)
    (tmp_path / "b.py").write_text("")
    before = code_digest(tmp_path, ("a.py", "b.py"))
    (tmp_path / "a.py").write_text(source.replace(moved, ""))  # g moved to another module of the set
    (tmp_path / "b.py").write_text(moved)
    assert code_digest(tmp_path, ("a.py", "b.py")) == before
    (tmp_path / "a.py").write_text(source.replace("2 * x", "3 * x").replace(moved, ""))  # a body changed
    assert code_digest(tmp_path, ("a.py", "b.py")) != before


def test_the_training_code_exists():
    for rel in TRAINING_CODE:
        assert (ROOT / "attnlib" / rel).exists(), rel
    assert MEASURE in (ROOT / "attnlib/evidence/attention_maps.py").read_text()  # what the runner test changes


@pytest.fixture
def copy(tmp_path) -> Path:
    """The library, notebooks and smoke parameters in a folder of their own."""
    repo = tmp_path / "repo"
    for part in ("attnlib", "notebooks"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    shutil.copytree(ROOT / "params" / "smoke", repo / "params" / "smoke")
    return repo


def run_02(repo: Path, *extra: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, "-m", "attnlib.run", "--profile", "smoke", "--only", "02",
                          "--results-dir", str(repo / "results"), *extra],
                         capture_output=True, text=True, cwd=repo, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def state(repo: Path) -> tuple[pd.DataFrame, dict[str, int]]:
    """Notebook 02's attention rows, and each checkpoint's modification time."""
    base = repo / "results" / "smoke"
    rows = pd.read_csv(base / "metrics" / "02_quadratic_attention.csv")
    return rows, {p.name: p.stat().st_mtime_ns for p in (base / "checkpoints").glob("*.pt")}


@pytest.mark.notebook
def test_a_changed_measure_retrains_and_no_old_row_stands(copy):
    run_02(copy)
    rows, checkpoints = state(copy)
    measures = copy / "attnlib/evidence/attention_maps.py"
    measures.write_text(measures.read_text().replace(MEASURE, MEASURE.replace("float(top_mass[head])",
                                                                              "float(top_mass[head]) / 2")))
    run_02(copy)
    again, after = state(copy)
    assert set(again["run_id"]).isdisjoint(rows["run_id"])  # new ids: the old rows are gone
    assert len(again) == len(rows)
    key = ["model", "variant", "seed", "epoch", "layer", "head"]
    both = rows.merge(again, on=key, suffixes=("_old", "_new"))
    assert len(both) == len(rows)
    assert (both["top_mass_new"] - both["top_mass_old"] / 2).abs().max() < 1e-9  # recomputed, by the new code
    assert {f"{run}.pt" for run in again["run_id"]} <= set(after) - set(checkpoints)  # trained anew


@pytest.mark.notebook
def test_a_docstring_retrains_nothing_and_force_retrains_everything(copy):
    run_02(copy)
    rows, checkpoints = state(copy)
    train = copy / "attnlib/training/train.py"
    train.write_text(train.read_text().replace('"""fit(): SGD', '"""fit(), reworded: SGD', 1))
    out = run_02(copy)
    again, after = state(copy)
    assert after == checkpoints, out  # read back, not retrained
    pd.testing.assert_frame_equal(again, rows)
    out = run_02(copy, "--force")
    forced, after = state(copy)
    assert set(after) == set(checkpoints)  # the same runs ...
    assert all(after[name] != checkpoints[name] for name in checkpoints), out  # ... every checkpoint written again
    assert sorted(forced["run_id"].unique()) == sorted(rows["run_id"].unique())
    assert "resuming" not in out
