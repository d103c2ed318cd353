"""Faults and bad inputs (issue 16), tried as an adversarial user would: every one either heals, with one line
saying so and the results as an undisturbed run leaves them, or stops with exactly one line naming the file
and what to do. Never a traceback, never lost results.

Every case says in its name or id whether the fault heals or stops (`heal-`/`heal_`, `stop-`/`stop_`), so
`pytest tests/test_faults.py --collect-only -q | grep -cE "heal[-_]"` counts them; the few cases without either
are the controls, showing that the checks leave whole files alone. Most cases call the library directly on a copy
of one trained smoke folder; the runner's own faults (Ctrl-C, SIGTERM, kill -9, a failing rerun, a damaged
checkpoint under `make reproduce`) run it for real.

What is damaged, in 191 cases (198 tests with the controls; 71 of them from issue 29, each saying what it did at
commit ffb255a where that differs): parameter files (and the runner and `python -m attnlib.params` on them),
notebook 07's parameters beyond what was trained, checkpoints, the metrics, centers, attention, summary and timing
CSVs (with and without checkpoints to rebuild them from, and against the plan as the report reads them), the runner's
stamps, Fashion-MNIST's files and a half-extracted CIFAR-10, temporary files of a killed writer, the file modes of
atomic writes, the results folder itself (a file, a loop, a full or read-only disk, a second runner), the runner's
signals and a reader that goes away, and pictures for the explorer (16-bit, float, palette, EXIF, bombs, folders).
A full or read-only file system is injected (OSError with ENOSPC or EROFS from the writes), not mounted: the tests
need no root; a file size limit (RLIMIT_FSIZE) is the system's own.
"""
import contextlib
import gzip
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import ROOT, run_runner
from PIL import Image

from attnlib import data, results
from attnlib.data import DataError
from attnlib.experiments import grid, params, settings
from attnlib.experiments import runs as experiment
from attnlib.explorer import cli
from attnlib.explorer.image import NotAnImage, open_image, prepare_image
from attnlib.report import tables as report
from attnlib.report import timing_table
from attnlib.results import ATTENTION_COLUMNS, CENTER_COLUMNS, METRIC_COLUMNS
from attnlib.runner import digest, run
from attnlib.training.train import TrainingError

TIME_COLUMNS = ["seconds"]  # what may differ between two runs of the same settings (besides nothing else)


def one_line(text: str) -> str:
    """The only non-empty line of `text` (fails if there are none or several, e.g. a traceback)."""
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def read_records(path) -> pd.DataFrame:
    """A records CSV as the library reads it: its text columns as text (a commit such as 6395e37 is no float)."""
    return pd.read_csv(path, dtype=dict.fromkeys(results.TEXT_COLUMNS, str))


def same_rows(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], ignore=TIME_COLUMNS):
    """Two CSVs' rows equal in every column but `ignore`, whatever their order."""
    cols = [c for c in a.columns if c not in ignore]
    assert list(a.columns) == list(b.columns)
    a = a.sort_values(keys).reset_index(drop=True)[cols]
    b = b.sort_values(keys).reset_index(drop=True)[cols]
    pd.testing.assert_frame_equal(a, b, check_dtype=False)


# -- one trained smoke folder, shared ----------------------------------------------------------------------
SMALL_02 = {"models": ["sa_quadratic", "sa_quadratic_aniso"], "heads": [2], "layers": 1, "hidden": 8, "ff": 8,
            "epochs": 2, "train_subset": 64, "test_subset": 32, "batch_size": 32}


def small_params(folder: Path, **changes) -> Path:
    """params/smoke/02_quadratic.yaml made smaller (two quadratic runs of two short epochs), under folder/smoke/."""
    values = {**yaml.safe_load((ROOT / "params" / "smoke" / "02_quadratic.yaml").read_text()), **SMALL_02, **changes}
    path = folder / "smoke" / "02_quadratic.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


class Trained:
    """A results folder holding the two runs of SMALL_02, trained in this process."""

    def __init__(self, root: Path):
        self.params_file = small_params(root / "params")
        self.results_dir = root / "results"
        p = self.p(self.results_dir)
        self.data = experiment.load_data(p)
        experiment.run_grid(p, "02_quadratic", self.data, progress=False)

    def p(self, results_dir: Path):
        return params.load_with(self.params_file, {"profile": "smoke", "results_dir": str(results_dir)})

    def copy(self, dest: Path) -> "Copy":
        shutil.copytree(self.results_dir, dest / "results")
        return Copy(self, dest / "results")


class Copy:
    def __init__(self, trained: Trained, results_dir: Path):
        self.trained, self.results_dir = trained, results_dir
        self.p = trained.p(results_dir)
        self.root = results_dir / "smoke"
        self.runs = grid.plan(self.p, trained.data)

    def checkpoint(self, i: int = 0) -> Path:
        return results.checkpoint_path(self.results_dir, "smoke", self.runs[i].run_id)

    @property
    def metrics(self) -> Path:
        return results.metrics_path(self.results_dir, "smoke", "02_quadratic")

    @property
    def centers(self) -> Path:
        return results.centers_path(self.results_dir, "smoke", "02_quadratic")

    @property
    def attention(self) -> Path:
        return results.attention_path(self.results_dir, "smoke", "02_quadratic")

    def train(self):
        return experiment.run_grid(self.p, "02_quadratic", self.trained.data, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    t = Trained(tmp_path_factory.mktemp("trained"))
    t.metrics = read_records(results.metrics_path(t.results_dir, "smoke", "02_quadratic"))
    t.centers = read_records(results.centers_path(t.results_dir, "smoke", "02_quadratic"))
    return t


# -- parameter files: values no run should start with, files that are not parameter files -------------------
def _folder(path: Path):
    path.mkdir(parents=True)


PARAM_FAULTS = [  # (id, notebook, content (text, bytes or a function making the path), words the line holds)
    ("lr-inf", "02_quadratic", "profile: smoke\nlr: .inf\n", ["lr must be a finite number"]),
    ("lr-minus-inf", "02_quadratic", "profile: smoke\nlr: -.inf\n", ["lr must be a finite number"]),
    ("momentum-nan", "02_quadratic", "profile: smoke\nmomentum: .nan\n", ["momentum must be a finite number"]),
    ("weight-decay-inf", "02_quadratic", "profile: smoke\nweight_decay: .inf\n", ["weight_decay must be a finite"]),
    ("label-smoothing-nan", "02_quadratic", "profile: smoke\nlabel_smoothing: .nan\n", ["label_smoothing must be a finite"]),
    ("warmup-nan", "02_quadratic", "profile: smoke\nwarmup: .nan\n", ["warmup must be a finite"]),
    ("dropout-nan", "02_quadratic", "profile: smoke\ndropout: .nan\n", ["dropout must be a finite"]),
    ("gamma-negative", "05_resnet", "profile: smoke\ngamma: -1\n", ["gamma must be in (0, 1]"]),
    ("gamma-nan", "05_resnet", "profile: smoke\ngamma: .nan\n", ["gamma must be a finite"]),
    ("gamma-above-one", "05_resnet", "profile: smoke\ngamma: 2\n", ["gamma must be in (0, 1]"]),
    ("milestones-negative", "05_resnet", "profile: smoke\nschedule: step\nmilestones: [-5]\n", ["milestones must be epochs"]),
    ("milestones-decreasing", "05_resnet", "profile: smoke\nschedule: step\nmilestones: [5, 3]\n", ["milestones must be increasing"]),
    ("momentum-above-one", "02_quadratic", "profile: smoke\nmomentum: 1.5\n", ["momentum must be below 1"]),
    ("nesterov-without-momentum", "02_quadratic", "profile: smoke\nnesterov: true\nmomentum: 0\n", ["nesterov needs a momentum"]),
    ("epochs-a-billion", "02_quadratic", "profile: smoke\nepochs: 1000000000\n", ["epochs must be at most 10,000"]),
    ("seed-negative", "02_quadratic", "profile: smoke\nseeds: [-1]\n", ["seeds must all be in [0, 2**32)"]),
    ("synthetic-image-huge", "02_quadratic", "profile: smoke\nsynthetic_image_size: 100000\n", ["synthetic_image_size must be at most"]),
    ("per-model-lr-inf", "05_resnet", "profile: smoke\nmodels: [resnet18]\nper_model:\n  resnet18: {lr: .inf}\n",
     ["per_model.resnet18.lr must be a finite number"]),
    ("per-model-option-nan", "03_san", "profile: smoke\nmodels: [san_pairwise]\nper_model:\n  san_pairwise: {rel_ratio: .nan}\n",
     ["per_model.san_pairwise.rel_ratio"]),
    ("alpha-inf", "00_conv_as_attention", "profile: smoke\nalpha: .inf\n", ["alpha must be a finite number"]),
    ("alphas-with-nan", "00_conv_as_attention", "profile: smoke\nalphas: [1, .nan]\n", ["alphas must be finite numbers"]),
    ("blur-sigma-inf", "00_conv_as_attention", "profile: smoke\nblur_sigma: .inf\n", ["blur_sigma must be a finite"]),
    ("duplicate-key", "02_quadratic", "profile: smoke\nlr: 0.1\nepochs: 3\nlr: 0.2\n", ["key 'lr' is given twice (lines 2 and 4)"]),
    ("duplicate-key-in-per-model", "05_resnet",
     "profile: smoke\nmodels: [resnet18]\nper_model:\n  resnet18:\n    width: 8\n    width: 16\n", ["key 'width' is given twice"]),
    ("empty-file", "02_quadratic", "", ["is empty", "profile: smoke", "paper's settings"]),
    ("only-comments", "02_quadratic", "# settings to come\n", ["is empty"]),
    ("empty-mapping", "02_quadratic", "{}\n", ["is empty"]),
    ("not-utf8", "02_quadratic", b"profile: smoke\nlr: 0.1 \xff\xfe\n", ["not UTF-8 text", "save it as UTF-8"]),
    ("a-folder", "02_quadratic", _folder, ["is a folder, not a parameter file"]),
    ("a-list", "02_quadratic", "- profile: smoke\n- lr: 0.1\n", ["expected a mapping"]),
    ("tab-indented", "02_quadratic", "profile: smoke\nper_model:\n\tresnet18: {}\n", ["not valid YAML at line"]),
    ("viz-experiment-misspelled", "07_visualizations", "profile: smoke\nexperiments: [01_learned_2d, 02_quadratc]\n",
     ["experiments names '02_quadratc', which is not a training notebook", "did you mean '02_quadratic'?"]),
    ("viz-experiment-not-a-notebook", "07_visualizations", "profile: smoke\nexperiments: [09_extra]\n",
     ["experiments names '09_extra', which is not a training notebook under notebooks/"]),
    ("viz-centers-experiment-misspelled", "07_visualizations", "profile: smoke\ncenters_experiment: quadratic\n",
     ["centers_experiment names 'quadratic'"]),
    # Beyond issue 16 (issue 29). At commit ffb255a the first (342 bytes) wrote a 157 MB error line holding the
    # whole expanded value, the second ended in a RecursionError traceback, the third wrote its 15,000-character
    # value out in its line.
    ("yaml-billion-laughs", "02_quadratic", "profile: smoke\nseeds: [&a [1, 2, 3, 4, 5, 6, 7, 8, 9], "
     + ", ".join(f"&{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefg", "bcdefgh")) + "]\n",
     ["refused", "aliases expand into more than 100,000 values"]),
    ("list-nested-3000-deep", "02_quadratic", "profile: smoke\nseeds: " + "[" * 3000 + "]" * 3000 + "\n",
     ["refused", "nested more than 50 deep"]),
    ("long-wrong-value-quoted-short", "02_quadratic", "profile: smoke\nseeds: [" + "1, " * 5000 + "[1]]\n",
     ["seeds must be a list of int, got [1, 1, 1"]),
    # Faults of our own (issue 29). At ffb255a: `epochs: yes` said "must be int, got True" without saying why a
    # number became True; a seed, head count or model listed twice was taken and the same runs planned twice; a
    # UTF-16 file already got its line; a named pipe in place of the file hung the command for ever.
    ("epochs-yes", "02_quadratic", "profile: smoke\nepochs: yes\n",
     ["epochs must be int, got True", "YAML reads yes, no, on, off, true and false as a boolean"]),
    ("seeds-twice", "02_quadratic", "profile: smoke\nseeds: [42, 42]\n", ["seeds lists 42 twice", "keep one"]),
    ("heads-twice", "02_quadratic", "profile: smoke\nheads: [2, 9, 2]\n", ["heads lists 2 twice"]),
    ("models-twice", "02_quadratic", "profile: smoke\nmodels: [sa_quadratic, sa_learned, sa_quadratic]\n",
     ["models lists 'sa_quadratic' twice"]),
    ("utf-16", "02_quadratic", "profile: smoke\nlr: 0.1\n".encode("utf-16"), ["not UTF-8 text", "save it as UTF-8"]),
    ("a-named-pipe", "02_quadratic", lambda path: os.mkfifo(path), ["is a named pipe, not a parameter file"]),
]


def write_param_file(tmp_path: Path, notebook: str, content) -> Path:
    path = tmp_path / "params" / "smoke" / f"{notebook}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("name, notebook, content, words", PARAM_FAULTS, ids=[f"stop-params-{f[0]}" for f in PARAM_FAULTS])
def test_bad_parameter_file_stops_with_one_line_naming_file_and_key(tmp_path, capsys, name, notebook, content, words):
    path = write_param_file(tmp_path, notebook, content)
    assert params.main([str(path)]) == 2
    out = capsys.readouterr()
    line = one_line(out.err)
    assert out.out == "" and line.startswith(f"error: {path}: ")
    for w in words:
        assert w in line, line
    assert len(line) < 400, line  # a prefix of the value, never the whole of it


RUNNER_PARAM_FAULTS = ["lr-inf", "duplicate-key", "empty-file", "not-utf8", "a-folder", "yaml-billion-laughs"]


@pytest.mark.parametrize("name", RUNNER_PARAM_FAULTS, ids=[f"stop-runner-params-{n}" for n in RUNNER_PARAM_FAULTS])
def test_runner_stops_before_anything_runs(tmp_path, capsys, name):
    """The same faults under `make reproduce`: exit 2, one line, nothing written under results/."""
    _, notebook, content, words = next(f for f in PARAM_FAULTS if f[0] == name)
    path = write_param_file(tmp_path, notebook, content)
    code = run.main(["--profile", "smoke", "--only", notebook[:2], "--params-dir", str(tmp_path / "params"),
                     "--results-dir", str(tmp_path / "results")])
    out = capsys.readouterr()
    assert code == 2 and str(path) in one_line(out.err) and words[0] in out.err
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name", ["not-utf8", "a-folder"], ids=["stop-cli-params-not-utf8", "stop-cli-params-a-folder"])
def test_params_command_line_stops_with_one_line(tmp_path, name):
    _, notebook, content, words = next(f for f in PARAM_FAULTS if f[0] == name)
    path = write_param_file(tmp_path, notebook, content)
    out = subprocess.run([sys.executable, "-m", "attnlib.params", str(path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stdout == ""
    assert str(path) in one_line(out.stderr) and words[0] in out.stderr


@pytest.mark.parametrize("text", ["profile: smoke\nlr: 1e-3\nweight_decay: 5E-4\n",
                                  "\ufeffprofile: smoke\r\nlr: 1.0e-3\r\nweight_decay: 0.0005\r\n"],
                         ids=["heal-params-1e-3-is-a-number", "heal-params-byte-order-mark-and-crlf"])
def test_numbers_as_python_writes_them_and_a_windows_file_are_read_as_meant(tmp_path, text):
    """At ffb255a `lr: 1e-3` stopped with "lr must be float, got '1e-3'" (YAML 1.1 wants a dot: 1.0e-3). A file
    saved on Windows, with a byte order mark and CRLF line ends, was already read."""
    path = write_param_file(tmp_path, "02_quadratic", text.encode("utf-8"))
    p = params.load(path)
    assert (p.lr, p.weight_decay) == (0.001, 0.0005)


def test_a_good_file_still_passes_and_an_explicit_profile_only_file_is_not_empty(tmp_path, capsys):
    """The checks above can tell a fault from a good file (each of them can fail)."""
    good = write_param_file(tmp_path, "05_resnet", (ROOT / "params" / "smoke" / "05_resnet.yaml").read_text())
    assert params.main([str(good)]) == 0
    assert params.load(write_param_file(tmp_path, "08_report", "profile: smoke\n")).profile == "smoke"
    assert params.load(write_param_file(tmp_path, "02_quadratic", "profile: smoke\nper_model: {}\n")).per_model == {}


# -- notebook 07's parameters against what was trained ------------------------------------------------------------
VIZ_FAULTS = {  # the runs of SMALL_02: one layer, 8x8 images, 32 test images
    "trajectory-layer-beyond-the-layers": ({"trajectory_layer": 99}, "trajectory_layer is 99, but the runs of 02_quadratic "
                                           "recorded the centers of 1 layer(s)"),
    "trajectory-layer-2-of-1": ({"trajectory_layer": 2}, "trajectory_layer is 2"),
    "query-row-beyond-the-image": ({"query_row": 500}, "query_row is 500, outside the 8x8 test images"),
    "query-col-beyond-the-image": ({"query_col": 8}, "query_col is 8, outside the 8x8 test images"),
    "image-index-beyond-the-test-set": ({"image_index": 32}, "image_index is 32, but"),
}


def viz_params(trained, results_dir: Path, **values):
    return params.from_mapping(settings.VizParams, {"profile": "smoke", "experiments": ["02_quadratic"],
                                                  "params_dir": str(trained.params_file.parent.parent),
                                                  "results_dir": str(results_dir), **values})


@pytest.mark.parametrize("name", list(VIZ_FAULTS), ids=[f"stop-viz-{n}" for n in VIZ_FAULTS])
def test_visualization_parameters_beyond_what_was_trained_stop_with_one_line(trained, name):
    from attnlib.explorer import trained_runs

    values, words = VIZ_FAULTS[name]
    p = viz_params(trained, trained.results_dir, **values)
    runs, missing = trained_runs.trained_runs(p.experiments, p.profile, p.results_dir, p.params_dir)
    assert len(runs) == 2 and not missing
    with pytest.raises(params.ParamsError) as err:
        trained_runs.check_params(p, runs)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(str(trained.params_file.parent / "07_visualizations.yaml") + ": ")
    assert words in msg
    trained_runs.check_params(viz_params(trained, trained.results_dir, query_row=7, query_col=0, image_index=31), runs)


# -- checkpoints: moved aside, the run starts again, the CSVs end as an undisturbed run's -------------------
def _edit_state(change):
    def damage(ckpt: Path, other: Path):
        state = torch.load(ckpt, weights_only=True)
        change(state)
        torch.save(state, ckpt)
    return damage


def _folder_instead(ckpt: Path, other: Path):
    ckpt.unlink()
    ckpt.mkdir()
    (ckpt / "data.pkl").write_bytes(b"x")


CHECKPOINT_FAULTS = {
    "truncated": lambda ckpt, other: ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2]),
    "random-bytes": lambda ckpt, other: ckpt.write_bytes(np.random.default_rng(0).bytes(ckpt.stat().st_size)),
    "zero-bytes": lambda ckpt, other: ckpt.write_bytes(b""),
    "a-tensor": lambda ckpt, other: torch.save(torch.zeros(3), ckpt),
    "foreign-pickle": lambda ckpt, other: torch.save({"model": Path("x")}, ckpt),  # weights_only refuses it
    "plain-pickle": lambda ckpt, other: ckpt.write_bytes(pickle.dumps({"epoch": 2})),
    "lacks-history": _edit_state(lambda s: s.pop("history")),
    "history-short": _edit_state(lambda s: s.update(history=s["history"][:1])),
    "epoch-not-int": _edit_state(lambda s: s.update(epoch="2")),
    "weights-of-another-shape": _edit_state(lambda s: s["model"].update({k: torch.zeros(1) for k in list(s["model"])[:1]})),
    "rng-state-malformed": _edit_state(lambda s: s.update(rng=torch.zeros(3, dtype=torch.uint8))),
    "another-runs-checkpoint": lambda ckpt, other: shutil.copyfile(other, ckpt),
    "a-folder": _folder_instead,
    "epoch-4-of-a-2-epoch-run": _edit_state(lambda s: s.update(epoch=4, history=s["history"] + [
        dict(s["history"][-1], epoch=e) for e in (3, 4)])),
    "epoch-4-whose-rows-say-4-epochs": _edit_state(lambda s: s.update(epoch=4, history=[
        dict(s["history"][-1], epoch=e, epochs=4) for e in (1, 2, 3, 4)])),
    "rows-of-a-3-epoch-plan": _edit_state(lambda s: s.update(history=[dict(r, epochs=3) for r in s["history"]])),
    "an-accuracy-of-28.9": _edit_state(lambda s: s["history"][-1].update(test_acc=28.9)),
    "a-loss-that-is-text": _edit_state(lambda s: s["history"][0].update(train_loss="low")),
    # issue 29, our own: at ffb255a a named pipe in place of a checkpoint hung the notebook for ever
    "a-named-pipe": lambda ckpt, other: (ckpt.unlink(), os.mkfifo(ckpt)),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_FAULTS), ids=[f"heal-checkpoint-{n}" for n in CHECKPOINT_FAULTS])
def test_damaged_checkpoint_is_moved_aside_and_its_run_starts_again(trained, tmp_path, capsys, name):
    c = trained.copy(tmp_path)
    ckpt = c.checkpoint(0)
    CHECKPOINT_FAULTS[name](ckpt, c.checkpoint(1))
    c.train()
    line = one_line(capsys.readouterr().out)
    assert line.startswith(f"{ckpt} is damaged (") and f"moved aside to {ckpt.name}.damaged" in line
    assert "starts again from epoch 1" in line
    assert (ckpt.parent / f"{ckpt.name}.damaged").exists()
    assert results.load_checkpoint(ckpt, c.runs[0].run_id)["epoch"] == 2  # whole again
    same_rows(read_records(c.metrics), trained.metrics, ["run_id", "epoch"])  # replaced, not duplicated
    same_rows(read_records(c.centers), trained.centers, ["run_id", "epoch", "layer", "head"])
    c.train()  # and from then on it is a finished run, read back
    assert capsys.readouterr().out == ""


def test_a_good_checkpoint_is_not_taken_for_a_damaged_one(trained, tmp_path, capsys):
    c = trained.copy(tmp_path)
    before = c.checkpoint(0).read_bytes()
    c.train()
    assert capsys.readouterr().out == "" and c.checkpoint(0).read_bytes() == before
    assert not list(c.checkpoint(0).parent.glob("*.damaged"))


def test_stop_damaged_checkpoint_read_for_the_figures_is_one_line_and_a_rerun_trains_it(trained, tmp_path):
    """Notebook 07 loads checkpoints that 02 trained: a damaged one stops it with one line, is moved aside, and the
    stamp of the notebook that trains it is dropped, so running the same command again retrains it."""
    c = trained.copy(tmp_path)
    stamps = c.root / ".cache" / "stamps.json"
    stamps.parent.mkdir(parents=True, exist_ok=True)
    entry = {"digest": "d", "seconds": 1.0, "finished": "2026-01-01T00:00:00"}
    stamps.write_text(json.dumps({"02_quadratic": entry, "05_resnet": entry}))
    ckpt = c.checkpoint(0)
    ckpt.write_bytes(b"")
    with pytest.raises(TrainingError) as err:
        experiment.load_trained(c.p, c.runs[0])
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{ckpt} is damaged")
    assert (ckpt.parent / f"{ckpt.name}.damaged").exists()
    assert set(json.loads(stamps.read_text())) == {"05_resnet"}


# -- metric and centers CSVs: rebuilt from the checkpoints' histories ---------------------------------------
def _cut_mid_line(path: Path):
    text = path.read_text()
    path.write_text(text[: len(text) - 40])


def _drop_header(path: Path):
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]))


def _drop_column(path: Path):
    df = read_records(path)
    df.drop(columns=[df.columns[-1]]).to_csv(path, index=False)


def _empty_a_field(path: Path):
    lines = path.read_text().splitlines(keepends=True)
    fields = lines[1].split(",")
    fields[0] = ""
    lines[1] = ",".join(fields)
    path.write_text("".join(lines))


def _text_in_numbers(path: Path):
    df = pd.read_csv(path, dtype=str)
    df.loc[0, "epoch"] = "two"
    df.to_csv(path, index=False)


def _header_twice(path: Path):
    text = path.read_text()
    path.write_text(text + text.splitlines(keepends=True)[0])


def _merge_conflict(path: Path):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([lines[0], "<<<<<<< HEAD\n", *lines[1:], "=======\n", lines[-1], ">>>>>>> other\n"]))


def _set(column: str, value):
    """A fault that writes `value` into `column` of the first row: a number no training writes there."""
    def fault(path: Path):
        df = read_records(path)
        df.loc[0, column] = value
        df.to_csv(path, index=False)
    return fault


def _epoch_beyond_the_plan(path: Path):
    df = read_records(path)
    df.loc[len(df) - 1, "epoch"] = 7  # of a run planned for fewer
    df.to_csv(path, index=False)


def _a_run_twice(path: Path):
    df = read_records(path)
    pd.concat([df, df[df["run_id"] == df["run_id"].iloc[0]]]).to_csv(path, index=False)


def _forged_epochs(one_row: bool):
    """A fault that adds an epoch 7 to the first run, its accuracy 0.99, and says the run planned 7 epochs: in that
    row alone (`one_row`), or in every row of the run, as a forger who knows the check would."""
    def fault(path: Path):
        df = read_records(path)
        run = df["run_id"] == df["run_id"].iloc[0]
        if not one_row:
            df.loc[run, "epochs"] = 7
        extra = df[run].tail(1).assign(epoch=7, epochs=7, test_acc=0.99)
        pd.concat([df, extra], ignore_index=True).to_csv(path, index=False)
    return fault


def _non_utf8(path: Path):
    path.write_bytes(path.read_bytes().replace(b"sa_quadratic", b"sa_qu\xffadratic", 1))


def _folder_csv(path: Path):
    path.unlink()
    path.mkdir()


CSV_FAULTS = {
    "cut-mid-line": _cut_mid_line,
    "header-deleted": _drop_header,
    "zero-bytes": lambda path: path.write_bytes(b""),
    "random-bytes": lambda path: path.write_bytes(np.random.default_rng(1).bytes(500)),
    "not-utf8": _non_utf8,
    "a-column-missing": _drop_column,
    "a-field-emptied": _empty_a_field,
    "text-in-a-number-column": _text_in_numbers,
    "header-again-at-the-end": _header_twice,
    "merge-conflict-markers": _merge_conflict,
    "a-folder": _folder_csv,
    "an-accuracy-of-28.9": _set("test_acc", 28.9),
    "a-negative-loss": _set("train_loss", -1.0),
    "an-infinite-loss": _set("test_loss", float("inf")),
    "epoch-7-of-a-shorter-run": _epoch_beyond_the_plan,
    "a-run's-rows-twice": _a_run_twice,
    # issue 29, our own: at ffb255a the first was shown as the run's last epoch (0.99) and the second hung the reader
    "a-row-that-names-7-epochs": _forged_epochs(one_row=True),
    "a-named-pipe": lambda path: (path.unlink(), os.mkfifo(path)),
}
CENTER_FAULTS = ["cut-mid-line", "header-deleted", "zero-bytes", "a-run's-rows-twice", "a-named-pipe"]
ATTENTION_FAULTS = CENTER_FAULTS + ["a-share-above-1"]
CSV_FAULTS["a-share-above-1"] = _set("top_mass", 1.5)
RECORD_CSVS = ([("metrics", n) for n in CSV_FAULTS if n != "a-share-above-1"] + [("centers", n) for n in CENTER_FAULTS]
               + [("attention", n) for n in ATTENTION_FAULTS])


@pytest.mark.parametrize("kind, name", RECORD_CSVS, ids=[f"heal-{k}-csv-{n}" for k, n in RECORD_CSVS])
def test_damaged_csv_is_rebuilt_from_the_checkpoints(trained, tmp_path, capsys, kind, name):
    c = trained.copy(tmp_path)
    path = getattr(c, kind)
    columns = {"metrics": METRIC_COLUMNS, "centers": CENTER_COLUMNS, "attention": ATTENTION_COLUMNS}[kind]
    original = read_records(path)
    keys = ["run_id", "epoch"] + (["layer", "head"] if kind != "metrics" else [])
    CSV_FAULTS[name](path)
    df = results.read_metrics(path, columns)
    line = one_line(capsys.readouterr().out)
    assert line.startswith(f"{path} was damaged (") and "rebuilt from the 2 run(s)" in line
    assert (path.parent / f"{path.name}.damaged").exists()  # the damaged file is kept, not lost
    same_rows(df, original, keys, ignore=[])
    same_rows(read_records(path), original, keys, ignore=[])  # on disk too
    assert results.read_metrics(path, columns).shape == original.shape and capsys.readouterr().out == ""


def test_heal_report_a_run_forged_to_7_epochs_is_read_against_its_plan(trained, tmp_path, capsys):
    """Every row of a run says 7 epochs, and an epoch 7 with accuracy 0.99 is added: each row is plausible alone, and
    at ffb255a `make report` showed 0.99 as the run's last epoch. The report reads the rows against the epochs the
    notebook's summary planned, as a rerun reads them against its parameters: the file is damaged and rebuilt."""
    c = trained.copy(tmp_path)
    summary = results.summary_path(c.results_dir, "smoke", "02_quadratic")
    experiment.summarize(trained.metrics).to_csv(summary, index=False)
    _forged_epochs(one_row=False)(c.metrics)
    assert len(results.read_metrics(c.metrics)) == len(trained.metrics) + 1  # alone, the rows are plausible
    res = report.load_results(c.results_dir, "smoke")
    line = one_line(capsys.readouterr().out)
    assert line.startswith(f"{c.metrics} was damaged (") and "epoch 7 is beyond the 2 epochs its run plans" in line
    assert "rebuilt from the 2 run(s)" in line and (c.metrics.parent / "02_quadratic.csv.damaged").exists()
    same_rows(res["metrics"], trained.metrics, ["run_id", "epoch"], ignore=[])
    _forged_epochs(one_row=False)(c.metrics)
    c.train()  # a rerun replaces the run's rows by its checkpoint's
    same_rows(read_records(c.metrics), trained.metrics, ["run_id", "epoch"], ignore=[])


def test_heal_damaged_csv_no_longer_stops_the_notebooks_later_runs(trained, tmp_path, capsys):
    """The issue's case: a cut metrics CSV made every later run of the notebook fail (ParserError)."""
    c = trained.copy(tmp_path)
    _cut_mid_line(c.metrics)
    c.train()
    assert "rebuilt from the 2 run(s)" in one_line(capsys.readouterr().out)
    same_rows(read_records(c.metrics), trained.metrics, ["run_id", "epoch"], ignore=[])


def test_heal_damaged_csv_without_checkpoints_is_moved_aside_and_its_runs_trained_again(trained, tmp_path, capsys):
    c = trained.copy(tmp_path)
    shutil.rmtree(c.root / "checkpoints")
    _drop_header(c.metrics)
    assert results.read_metrics(c.metrics).empty
    line = one_line(capsys.readouterr().out)
    assert "no checkpoint" in line and "trained again" in line and (c.metrics.parent / "02_quadratic.csv.damaged").exists()
    c.train()
    same_rows(read_records(c.metrics), trained.metrics, ["run_id", "epoch"])


def test_a_good_csv_is_read_as_it_is(trained, tmp_path, capsys):
    c = trained.copy(tmp_path)
    before = c.metrics.read_bytes()
    assert len(results.read_metrics(c.metrics)) == 4 and len(results.read_metrics(c.centers, CENTER_COLUMNS)) > 0
    assert capsys.readouterr().out == "" and c.metrics.read_bytes() == before


def test_heal_damaged_summary_is_left_out_of_the_report_and_written_again(trained, tmp_path, capsys):
    c = trained.copy(tmp_path)
    summary = c.root / "metrics" / "02_quadratic_summary.csv"
    summary.write_text("run_id,model\n\"sa_quadratic,oops\n")
    stamps = c.root / ".cache" / "stamps.json"
    stamps.parent.mkdir(parents=True, exist_ok=True)
    stamps.write_text(json.dumps({"02_quadratic": {"digest": "d", "seconds": 1.0, "finished": "x"}}))
    res = report.load_results(c.results_dir, "smoke")
    line = one_line(capsys.readouterr().out)
    assert line.startswith(f"note: {summary} is damaged") and res["metrics"].empty
    assert json.loads(stamps.read_text()) == {}  # 02 runs again next time and writes it anew


def test_heal_damaged_timing_csv_is_moved_aside_and_timed_again(tmp_path, capsys):
    path = tmp_path / "06_timing.csv"
    path.write_text("model,variant\nresnet18,stan")
    assert timing_table._read_rows(path) == []
    assert "every model is timed again" in one_line(capsys.readouterr().out)
    assert (tmp_path / "06_timing.csv.damaged").exists() and not path.exists()


# -- the runner's stamps: damaged ones cost a rerun -----------------------------------------------------------
GOOD_ENTRY = {"digest": "abc", "seconds": 3.0, "finished": "2026-01-01T00:00:00"}
STAMP_FAULTS = {  # (content, entries that survive)
    "truncated": (json.dumps({"00_conv_as_attention": GOOD_ENTRY})[:25], set()),
    "a-list": (json.dumps([GOOD_ENTRY]), set()),
    "an-entry-that-is-a-string": (json.dumps({"00_conv_as_attention": "abc", "02_quadratic": GOOD_ENTRY}), {"02_quadratic"}),
    "an-entry-without-digest": (json.dumps({"02_quadratic": {"seconds": 1.0, "finished": "x"}}), set()),
    "seconds-as-text": (json.dumps({"02_quadratic": {**GOOD_ENTRY, "seconds": "3"}}), set()),
    "not-utf8": (b"{\"02_quadratic\": \xff}", set()),
    "zero-bytes": ("", set()),
    "a-folder": (None, set()),
    # issue 29, our own: at ffb255a the first ended the runner in a RecursionError traceback, the second hung it
    "nested-200000-deep": ("[" * 200_000 + "]" * 200_000, set()),
    "a-named-pipe": (os.mkfifo, set()),
}


def _write_stamps(path: Path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.mkdir()
    elif callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@pytest.mark.parametrize("name", list(STAMP_FAULTS), ids=[f"heal-stamps-{n}" for n in STAMP_FAULTS])
def test_damaged_stamps_only_cost_a_rerun(tmp_path, capsys, name):
    content, kept = STAMP_FAULTS[name]
    path = tmp_path / ".cache" / "stamps.json"
    _write_stamps(path, content)
    stamps = digest.Stamps(path)
    assert set(stamps.data) == kept
    assert one_line(capsys.readouterr().out).startswith(f"note: {path} is damaged")
    assert stamps.upstream("08_report") is not None
    stamps.record("00_conv_as_attention", "d0", 1.0)  # and the next success writes a whole file again
    assert "00_conv_as_attention" in json.loads(path.read_text())
    assert digest.Stamps(path).data.keys() == {"00_conv_as_attention", *kept} and capsys.readouterr().out == ""


def test_heal_damaged_stamps_leave_the_report_whole(trained, tmp_path, capsys):
    c = trained.copy(tmp_path)
    path = c.root / ".cache" / "stamps.json"
    _write_stamps(path, json.dumps({"02_quadratic": "oops", "01_learned_2d": GOOD_ENTRY}))
    res = report.load_results(c.results_dir, "smoke")
    assert list(res["stamps"]) == ["01_learned_2d"]
    assert one_line(capsys.readouterr().out).startswith(f"note: {path} is damaged")
    assert list(report.series_time(res["stamps"], res["metrics"])["notebook"]) == ["01_learned_2d"]


# -- data files -----------------------------------------------------------------------------------------------
def _fake_fashion_mnist(folder: Path, n: int = 12):
    from test_data import write_fake_fashion_mnist
    write_fake_fashion_mnist(folder, n_train=n, n_test=n)


def _gz(path: Path, payload: bytes):
    with gzip.open(path, "wb") as fh:
        fh.write(payload)


def _idx(path: Path) -> bytes:
    with gzip.open(path, "rb") as fh:
        return fh.read()


TRAIN_IMAGES, TRAIN_LABELS = data.FASHION_MNIST_FILES["train"]
FASHION_FAULTS = {  # (file, damage)
    "truncated-gz": (TRAIN_IMAGES, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "zero-byte-file": (TRAIN_IMAGES, lambda p: p.write_bytes(b"")),
    "empty-idx": (TRAIN_LABELS, lambda p: _gz(p, b"")),
    "short-idx": (TRAIN_IMAGES, lambda p: _gz(p, _idx(p)[:16 + 28 * 28 + 100])),
    "header-only": (TRAIN_LABELS, lambda p: _gz(p, _idx(p)[:8])),
    "not-gzip": (TRAIN_IMAGES, lambda p: p.write_bytes(_idx(p))),
    "labels-in-place-of-images": (TRAIN_IMAGES, lambda p: shutil.copyfile(p.parent / TRAIN_LABELS, p)),
    "label-out-of-range": (TRAIN_LABELS, lambda p: _gz(p, _idx(p)[:8] + bytes([200]) + _idx(p)[9:])),
    "images-not-28x28": (TRAIN_IMAGES, lambda p: _gz(p, _idx(p)[:8] + np.array([32, 32], ">i4").tobytes() + _idx(p)[16:])),
    "a-folder": (TRAIN_LABELS, lambda p: (p.unlink(), p.mkdir())),
}


@pytest.fixture
def fashion_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(data, "FASHION_MNIST_DIRS", ())
    _fake_fashion_mnist(tmp_path / "fashion-mnist")
    return tmp_path / "fashion-mnist"


@pytest.mark.parametrize("name", list(FASHION_FAULTS), ids=[f"stop-fashion-mnist-{n}" for n in FASHION_FAULTS])
def test_damaged_fashion_mnist_file_is_one_line_naming_it(fashion_dir, name):
    file, damage = FASHION_FAULTS[name]
    damage(fashion_dir / file)
    with pytest.raises(DataError) as err:
        data.load_dataset("fashion_mnist", root=fashion_dir.parent, verbose=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{fashion_dir / file} is damaged (") and "replace it" in msg


def test_stop_dataset_auto_with_damaged_fashion_mnist_says_no_data_set_is_available(fashion_dir):
    FASHION_FAULTS["truncated-gz"][1](fashion_dir / TRAIN_IMAGES)
    with pytest.raises(DataError) as err:
        data.load_dataset("auto", root=fashion_dir.parent, download=False, verbose=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("no data set available") and str(fashion_dir / TRAIN_IMAGES) in msg
    assert data.load_dataset("synthetic", verbose=False).name == "synthetic"


def test_whole_fashion_mnist_files_still_load(fashion_dir):
    assert len(data.load_dataset("fashion_mnist", root=fashion_dir.parent, verbose=False).x_train) == 12


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """A fake CIFAR-10 archive whose MD5s torchvision is told, so its integrity checks run for real."""
    import hashlib

    from test_data import write_fake_cifar10
    from torchvision.datasets import CIFAR10

    src = tmp_path / "src"
    write_fake_cifar10(src)
    folder = src / "cifar-10-batches-py"

    def md5(name):
        return hashlib.md5((folder / name).read_bytes()).hexdigest()
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5(n)] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5(n)] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5("batches.meta")})
    root = tmp_path / "data"
    root.mkdir()
    with tarfile.open(root / data.CIFAR10_ARCHIVE, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return root


def _half_extracted(root: Path):
    """What an extraction cut short leaves: the first batch whole, the second cut, the rest missing."""
    with tarfile.open(root / data.CIFAR10_ARCHIVE) as tar:
        tar.extractall(root, members=[m for m in tar.getmembers() if m.name.endswith(("py", "data_batch_1", "data_batch_2"))],
                       filter="data")
    second = root / "cifar-10-batches-py" / "data_batch_2"
    second.write_bytes(second.read_bytes()[:1000])


@pytest.mark.parametrize("damage", ["half-extracted", "a-batch-overwritten"],
                         ids=["heal-cifar10-half-extracted", "heal-cifar10-a-batch-overwritten"])
def test_incomplete_cifar10_folder_is_extracted_again_from_the_archive(cifar, capsys, damage):
    if damage == "half-extracted":
        _half_extracted(cifar)
    else:
        with tarfile.open(cifar / data.CIFAR10_ARCHIVE) as tar:
            tar.extractall(cifar, filter="data")
        (cifar / "cifar-10-batches-py" / "test_batch").write_bytes(b"\0" * 100)
    ds = data.load_dataset("cifar10", root=cifar, download=False, verbose=False)
    assert ds.name == "cifar10" and len(ds.x_test) == 20
    line = one_line(capsys.readouterr().out)
    assert line.startswith(f"{cifar / 'cifar-10-batches-py'}/ is incomplete or damaged") and "extracting" in line
    assert data.cifar10_damaged(cifar / "cifar-10-batches-py") == []


CIFAR_STOPS = {
    "half-extracted-no-archive": lambda root: (_half_extracted(root), (root / data.CIFAR10_ARCHIVE).unlink()),
    "truncated-archive": lambda root: (root / data.CIFAR10_ARCHIVE).write_bytes(
        (root / data.CIFAR10_ARCHIVE).read_bytes()[:2000]),
    "half-extracted-truncated-archive": lambda root: (_half_extracted(root), (root / data.CIFAR10_ARCHIVE).write_bytes(
        (root / data.CIFAR10_ARCHIVE).read_bytes()[:2000])),
    "archive-of-something-else": lambda root: (root / data.CIFAR10_ARCHIVE).write_bytes(b"not an archive" * 100),
}


@pytest.mark.parametrize("name", list(CIFAR_STOPS), ids=[f"stop-cifar10-{n}" for n in CIFAR_STOPS])
def test_unusable_cifar10_is_one_line_naming_what_to_replace(cifar, capsys, name):
    CIFAR_STOPS[name](cifar)
    with pytest.raises(DataError) as err:
        data.load_dataset("cifar10", root=cifar, download=False, verbose=False)
    msg = str(err.value)
    assert "\n" not in msg and str(cifar) in msg and data.CIFAR10_ARCHIVE in msg


# -- files written by an interrupted process, and who may read the files written -----------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


TEMP_FAULTS = {  # (folder, name of a temporary file left behind)
    "checkpoint-write-killed": ("checkpoints", lambda: f".run.pt.{results.files._host()}-{_dead_pid()}.0123abcd.tmp"),
    "csv-write-killed": ("metrics", lambda: f".02_quadratic.csv.{results.files._host()}-{_dead_pid()}.0123abcd.tmp"),
    "executed-notebook-killed": ("notebooks", lambda: f".02_quadratic.ipynb.{results.files._host()}-{_dead_pid()}.0123abcd.tmp.ipynb"),
    "written-by-an-older-version": ("checkpoints", lambda: ".run.pt.k3j2_x9a.tmp"),
    # issue 29: at ffb255a a temporary file whose name lacks the dot, the host and the pid stayed forever
    "any-name-just-now": ("checkpoints", lambda: "run.pt.tmp"),
    "any-name-in-figures": ("figures", lambda: "02_quadratic_curves.png.tmp"),
}


@pytest.mark.parametrize("name", list(TEMP_FAULTS), ids=[f"heal-temp-file-{n}" for n in TEMP_FAULTS])
def test_temporary_files_of_a_killed_writer_are_removed_on_the_next_start(trained, tmp_path, capsys, name):
    c = trained.copy(tmp_path)
    folder, make_name = TEMP_FAULTS[name]
    stale = c.root / folder / make_name()
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"half a file")
    if name == "written-by-an-older-version":
        os.utime(stale, (time.time() - 7200, time.time() - 7200))
    live = c.root / "metrics" / f".x.csv.{results.files._host()}-{os.getpid()}.89abcdef.tmp"  # a writer still at work
    live.write_bytes(b"being written")
    c.train()
    line = one_line(capsys.readouterr().out)
    assert line.startswith("removed 1 temporary file(s) left by interrupted writes") and stale.name in line
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["heal-file-mode-umask-022", "heal-file-mode-umask-002"])
def test_files_written_atomically_get_the_mode_a_plain_open_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        results.atomic_write_text(tmp_path / "report.html", "<p>hi</p>")
        results.atomic_torch_save({"a": torch.zeros(1)}, tmp_path / "c.pt")
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    assert plain == 0o666 & ~umask
    for name in ("report.html", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == plain, name
    assert not list(tmp_path.glob(".*.tmp"))


# -- the runner itself: a damaged checkpoint, a failing rerun, Ctrl-C, kill -9 --------------------------------
def runner_args(params_dir: Path, results_dir: Path) -> list[str]:
    return ["--only", "02", "--params-dir", str(params_dir), "--results-dir", str(results_dir)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted `make reproduce` of the small 02 (two runs of two epochs), its params and results."""
    root = tmp_path_factory.mktemp("reference")
    small_params(root / "params")
    out = run_runner(*runner_args(root / "params", root / "results"))
    assert out.returncode == 0, out.stderr[-2000:]
    return root


def _metrics(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    m = results_dir / "smoke" / "metrics"
    return read_records(m / "02_quadratic.csv"), read_records(m / "02_quadratic_centers.csv")


@pytest.mark.notebook
def test_heal_runner_damaged_checkpoint_the_rerun_ends_green(reference, tmp_path):
    shutil.copytree(reference / "results", tmp_path / "results")
    ckpt = sorted((tmp_path / "results" / "smoke" / "checkpoints").glob("*.pt"))[0]
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    (tmp_path / "results" / "smoke" / ".cache" / "stamps.json").unlink()  # rerun, and read back (--force would retrain)
    out = run_runner(*runner_args(reference / "params", tmp_path / "results"))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    root = tmp_path / "results" / "smoke"
    line = f"{ckpt} is damaged ("
    assert line in (root / "logs" / "02_quadratic.log").read_text()
    assert line in (root / "notebooks" / "02_quadratic.ipynb").read_text()
    for got, want in zip(_metrics(tmp_path / "results"), _metrics(reference / "results")):
        same_rows(got, want, [c for c in ("run_id", "epoch", "layer", "head") if c in got])


@pytest.mark.notebook
def test_stop_runner_failing_rerun_keeps_the_last_good_executed_notebook(reference, tmp_path):
    shutil.copytree(reference / "results", tmp_path / "results")
    small_params(tmp_path / "params", dataset="cifar10", download=False, data_root=str(tmp_path / "nodata"))
    executed = tmp_path / "results" / "smoke" / "notebooks" / "02_quadratic.ipynb"
    good = executed.read_bytes()
    out = run_runner(*runner_args(tmp_path / "params", tmp_path / "results"), "--force")
    assert out.returncode == 1
    line = one_line(out.stderr)
    failed = executed.with_name("02_quadratic.failed.ipynb")
    assert "02_quadratic.ipynb failed in cell" in line and "DataError" in line and f"executed notebook: {failed}" in line
    assert "(log: " in line and executed.read_bytes() == good and failed.exists()
    for got, want in zip(_metrics(tmp_path / "results"), _metrics(reference / "results")):
        pd.testing.assert_frame_equal(got, want)  # results unchanged
    assert not list((tmp_path / "results").rglob(".*.tmp*"))


def _start_runner(params_dir: Path, results_dir: Path) -> subprocess.Popen:
    """The runner in its own process group (so a signal to the group reaches it and the kernel it started),
    with Ctrl-C's default disposition whatever the test process inherited."""
    return subprocess.Popen([sys.executable, "-m", "attnlib.run", "--profile", "smoke", *runner_args(params_dir, results_dir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _descendants(pid: int) -> list[int]:
    """The processes started by `pid`, and by those, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120):
    t0 = time.monotonic()
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.05)


@pytest.mark.notebook
def test_stop_runner_ctrl_c_mid_notebook_is_one_line(reference, tmp_path):
    proc = _start_runner(reference / "params", tmp_path / "results")
    progress = tmp_path / "results" / "smoke" / ".cache" / "progress.jsonl"
    _wait_for(lambda: progress.exists() and progress.stat().st_size > 0, proc)  # training has started
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert one_line(err).startswith("interrupted in 02_quadratic.ipynb: run the same command again")
    assert not list((tmp_path / "results" / "smoke" / "notebooks").iterdir())  # its half-executed copy removed


@pytest.mark.notebook
def test_stop_runner_ctrl_c_while_starting_is_one_line(reference, tmp_path):
    proc = _start_runner(reference / "params", tmp_path / "results")
    maps = Path(f"/proc/{proc.pid}/maps")
    _wait_for(lambda: "libtorch" in maps.read_text(), proc, timeout=60)  # torch is loading, torchvision and papermill next
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and out == ""
    assert one_line(err).startswith("interrupted before any notebook started")
    assert not (tmp_path / "results").exists()


@pytest.mark.notebook
def test_heal_runner_killed_mid_notebook_the_rerun_gives_identical_csvs(reference, tmp_path):
    """`make reproduce` killed with SIGKILL (runner and kernel) while a notebook trains: the same command again
    resumes, leaves no temporary file, and ends with the uninterrupted run's numbers."""
    results_dir = tmp_path / "results"
    proc = _start_runner(reference / "params", results_dir)
    ckpts = results_dir / "smoke" / "checkpoints"
    _wait_for(lambda: ckpts.is_dir() and any(p.suffix == ".pt" for p in ckpts.iterdir()), proc)
    kernels = _descendants(proc.pid)  # the kernel runs in a session of its own: kill it by its pid
    assert kernels
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in kernels:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    executed = results_dir / "smoke" / "notebooks" / "02_quadratic.ipynb"
    assert not executed.exists()  # killed mid-notebook: only its temporary copy was there
    left = list(results_dir.rglob(".*.tmp*"))
    assert left  # that temporary copy (and maybe a checkpoint being written)
    again = run_runner(*runner_args(reference / "params", results_dir))
    assert again.returncode == 0 and again.stderr == "", again.stderr[-2000:]
    assert "1 of 1 notebooks run" in again.stdout and executed.exists()
    assert f"removed {len(left)} temporary file(s) left by interrupted writes" in again.stdout
    assert not list(results_dir.rglob(".*.tmp*"))
    for got, want in zip(_metrics(results_dir), _metrics(reference / "results")):
        same_rows(got, want, [c for c in ("run_id", "epoch", "layer", "head") if c in got])


@pytest.mark.notebook
def test_stop_runner_visualization_query_beyond_the_image_is_one_line(reference, tmp_path):
    """Notebook 07 under the runner: a query pixel outside the trained runs' images stops it in its first cell
    with one line naming the parameter file and the key, instead of a silently moved pixel."""
    shutil.copytree(reference / "params", tmp_path / "params")
    viz = tmp_path / "params" / "smoke" / "07_visualizations.yaml"
    viz.write_text("profile: smoke\nexperiments: [02_quadratic]\naverage_images: 4\nquery_row: 500\n")
    shutil.copytree(reference / "results", tmp_path / "results")
    out = run_runner("--only", "07", "--params-dir", str(tmp_path / "params"), "--results-dir", str(tmp_path / "results"))
    assert out.returncode == 1
    line = one_line(out.stderr)
    assert "07_visualizations.ipynb failed in cell" in line and f"ParamsError: {viz}: query_row is 500" in line
    for got, want in zip(_metrics(tmp_path / "results"), _metrics(reference / "results")):
        pd.testing.assert_frame_equal(got, want)


@pytest.mark.notebook
def test_heal_runner_damaged_stamps_rerun_the_notebook(reference, tmp_path):
    shutil.copytree(reference / "results", tmp_path / "results")
    stamps = tmp_path / "results" / "smoke" / ".cache" / "stamps.json"
    stamps.write_text(json.dumps(["not", "a", "mapping"]))
    out = run_runner(*runner_args(reference / "params", tmp_path / "results"))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    notes = [line for line in out.stdout.splitlines() if "stamps.json" in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: {stamps} is damaged")
    assert "1 of 1 notebooks run" in out.stdout and set(json.loads(stamps.read_text())) == {"02_quadratic"}
    for got, want in zip(_metrics(tmp_path / "results"), _metrics(reference / "results")):
        pd.testing.assert_frame_equal(got, want)  # finished runs read back, not retrained


# -- beyond issue 16 (issue 29): lines that name the real cause -------------------------------------------------
def test_stop_only_that_matches_no_notebook_says_so_with_the_closest(capsys):
    """At ffb255a `--only 99` said that there were no parameter files under params/<profile>/."""
    assert run.main(["--profile", "smoke", "--only", "99"]) == 2
    err = capsys.readouterr().err
    assert one_line(err) == "error: --only 99 matches no notebook (notebooks: 00, 01, 02, 03, 04, 05, 06, 07, 08)"
    assert run.main(["--profile", "smoke", "--only", "02,quadratc"]) == 2
    assert "--only quadratc matches no notebook" in (err := capsys.readouterr().err) and "did you mean 02" in err


@pytest.mark.parametrize("steps", ["0", "-1"], ids=["stop-dry-run-of-0-steps", "stop-dry-run-of-minus-1-steps"])
def test_a_dry_run_has_at_least_one_step(tmp_path, capsys, steps):
    """At ffb255a `--dry-run 0` (make reproduce PROFILE=paper DRY_RUN=0) started the real training; -1 was refused."""
    with pytest.raises(SystemExit) as stop:
        run.main(["--profile", "smoke", "--only", "02", "--dry-run", steps, "--results-dir", str(tmp_path / "r")])
    assert stop.value.code == 2 and not (tmp_path / "r").exists()
    assert one_line(capsys.readouterr().err) == f"error: --dry-run must be a number of steps, at least 1, got {steps}"


def test_stop_explore_run_with_a_typo_names_the_runs_and_the_closest(tmp_path, capsys):
    """At ffb255a a misspelt --run said only that there were no trained runs in results/quick."""
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "photo.png")
    ckpts = tmp_path / "results" / "smoke" / "checkpoints"
    ckpts.mkdir(parents=True)
    for run_id in ("sa_quadratic-h9-s42-abcd1234", "sa_learned-h9-s42-1234abcd"):
        (ckpts / f"{run_id}.pt").touch()
    code = cli.main([str(tmp_path / "photo.png"), "--run", "sa_quadratc-h9", "--out", str(tmp_path / "page.html"),
                     "--results-dir", str(tmp_path / "results")])
    line = one_line(capsys.readouterr().err)
    assert code == 2 and line.startswith("error: --run sa_quadratc-h9 matches no trained run; did you mean "
                                         "sa_quadratic-h9-s42-abcd1234?")
    assert "sa_learned-h9-s42-1234abcd" in line and not (tmp_path / "page.html").exists()


def test_stop_yaml_alias_inside_its_own_anchor_is_one_line(tmp_path, capsys):
    """An alias inside its own anchor (`&x [*x]`) stands for endlessly many values: one line, not a RecursionError."""
    path = write_param_file(tmp_path, "02_quadratic", "profile: smoke\nseeds: &x [1, *x]\n")
    assert params.main([str(path)]) == 2
    assert "refers to the value that holds it" in one_line(capsys.readouterr().err)


# -- the results folder itself: checked before anything is written, one line naming it ------------------------------
def _a_file(base: Path) -> Path:
    (base / "results").write_text("not a folder")
    return base / "results"


def _a_symlink_loop(base: Path) -> Path:
    os.symlink(base / "loop", base / "loop")
    return base / "loop"


def _a_name_too_long(base: Path) -> Path:
    return base / ("r" * 300)


def _logs_a_file(base: Path) -> Path:
    (base / "results" / "smoke").mkdir(parents=True)
    (base / "results" / "smoke" / "logs").write_text("not a folder")
    return base / "results"


def _cache_a_file(base: Path) -> Path:
    (base / "results" / "smoke").mkdir(parents=True)
    (base / "results" / "smoke" / ".cache").write_text("not a folder")
    return base / "results"


def _under_a_file(base: Path) -> Path:
    (base / "file").write_text("x")
    return base / "file" / "results"


FOLDER_FAULTS = {"a-file": (_a_file, "is a file, not a folder"),
                 "a-symlink-loop": (_a_symlink_loop, "leads back to itself"),
                 "a-name-too-long": (_a_name_too_long, "longer than the system allows"),
                 "logs-a-file": (_logs_a_file, "logs: it is a file, not a folder"),
                 ".cache-a-file": (_cache_a_file, ".cache: it is a file, not a folder"),
                 "under-a-file": (_under_a_file, "is a file")}


@pytest.mark.parametrize("name", list(FOLDER_FAULTS), ids=[f"stop-results-folder-{n}" for n in FOLDER_FAULTS])
def test_a_results_folder_that_cannot_be_one_stops_with_one_line(tmp_path, capsys, name):
    """In the runner's own process (`make reproduce` runs the same main()): the check comes before any notebook."""
    make, words = FOLDER_FAULTS[name]
    target = make(tmp_path)
    code = run.main(["--profile", "smoke", "--only", "00", "--results-dir", str(target)])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    line = one_line(out.err)
    assert line.startswith("error: results folder ") and words in line and "Traceback" not in out.err, line


@pytest.mark.parametrize("code, words", [(28, "no space is left"), (30, "read-only")],
                         ids=["stop-results-folder-full-disk", "stop-results-folder-read-only"])
def test_a_full_or_read_only_disk_is_named_before_anything_is_written(tmp_path, monkeypatch, code, words):
    from attnlib.runner import folder

    def refuse(self, data):
        raise OSError(code, os.strerror(code), str(self))
    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(folder.ResultsFolderError) as err:
        folder.check_writable(tmp_path / "results" / "smoke")
    assert words in str(err.value) and f"results folder {tmp_path / 'results'}:" in str(err.value)


def test_stop_a_disk_that_fills_during_the_run_is_one_line_and_keeps_what_was_written(tmp_path, monkeypatch,
                                                                                          capsys):
    def full(self, *args, **kwargs):
        raise OSError(28, os.strerror(28), str(self.path))
    monkeypatch.setattr(digest.Stamps, "record", full)
    code = run.main(["--profile", "smoke", "--only", "00", "--results-dir", str(tmp_path / "results"), "--force"])
    err = capsys.readouterr().err
    assert code == 1 and "no space is left" in one_line(err) and "kept" in err
    assert (tmp_path / "results" / "smoke" / "notebooks" / "00_conv_as_attention.ipynb").exists()


def test_heal_a_relative_results_folder_holds_the_whole_series_where_the_command_ran(tmp_path):
    out = subprocess.run([sys.executable, "-m", "attnlib.run", "--profile", "smoke", "--only", "00",
                          "--results-dir", "mine"], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert out.returncode == 0, out.stderr
    base = tmp_path / "mine" / "smoke"
    assert (base / "notebooks" / "00_conv_as_attention.ipynb").exists() and (base / "logs").is_dir()
    assert (base / "metrics" / "00_conv_as_attention.csv").exists()
    assert not (ROOT / "mine").exists()
    executed = (base / "notebooks" / "00_conv_as_attention.ipynb").read_text()
    assert f'results_dir = \\"{base.parent}\\"' in executed  # outside the repository: absolute


def test_paths_reach_the_notebooks_relative_to_the_repository_inside_it():
    assert run.for_notebook(ROOT / "results") == "results" and run.for_notebook(ROOT / "params" / ".." / "data") == "data"
    assert run.for_notebook(Path("/somewhere/else")) == "/somewhere/else"


def test_an_executed_notebook_names_no_machine_folder_and_its_results_land_in_the_series(tmp_path):
    """A series inside the repository: the executed notebook says results_dir = "<relative>", and what it wrote lies
    in that series, not beside notebooks/ (the library resolves the relative folder against the repository)."""
    (ROOT / "build").mkdir(exist_ok=True)  # ignored by git
    inside = Path(tempfile.mkdtemp(dir=ROOT / "build"))
    try:
        relative = inside.relative_to(ROOT).as_posix()
        out = run_runner("--only", "00", "--results-dir", str(inside))
        assert out.returncode == 0, out.stderr
        executed = (inside / "smoke" / "notebooks" / "00_conv_as_attention.ipynb").read_text()
        assert f'results_dir = \\"{relative}\\"' in executed and str(ROOT) not in executed
        assert (inside / "smoke" / "metrics" / "00_conv_as_attention.csv").exists()
        assert not (ROOT / "notebooks" / relative).exists()
    finally:
        shutil.rmtree(inside, ignore_errors=True)


def test_stop_a_second_runner_on_the_same_series_is_one_line(tmp_path):
    from attnlib.runner import folder

    base = tmp_path / "results" / "smoke"
    folder.check_writable(base)
    with folder.runner_lock(base):  # as a runner working on it holds it
        out = run_runner("--only", "00", "--results-dir", str(tmp_path / "results"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = one_line(out.stderr)
    assert line.startswith(f"error: {base} is in use by another runner (pid {os.getpid()}, started "), line
    assert not (base / "notebooks" / "00_conv_as_attention.ipynb").exists()
    out = run_runner("--only", "00", "--results-dir", str(tmp_path / "results"))  # once it is released
    assert out.returncode == 0, out.stderr


# -- faults of our own (issue 29): signals, a reader that goes away, file sizes, odd names, what a path is ----------
@pytest.mark.notebook
def test_stop_runner_sigterm_mid_notebook_is_one_line_and_the_rerun_resumes(reference, tmp_path):
    """`kill` (SIGTERM) as Ctrl-C: at ffb255a the runner died silently (exit -15), its half-executed notebook left."""
    proc = _start_runner(reference / "params", tmp_path / "results")
    ckpts = tmp_path / "results" / "smoke" / "checkpoints"
    _wait_for(lambda: ckpts.is_dir() and any(p.suffix == ".pt" for p in ckpts.iterdir()), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert one_line(err).startswith("interrupted by SIGTERM in 02_quadratic.ipynb: run the same command again")
    assert not list((tmp_path / "results" / "smoke" / "notebooks").iterdir())
    again = run_runner(*runner_args(reference / "params", tmp_path / "results"))
    assert again.returncode == 0 and again.stderr == "", again.stderr[-2000:]
    for got, want in zip(_metrics(tmp_path / "results"), _metrics(reference / "results")):
        same_rows(got, want, [c for c in ("run_id", "epoch", "layer", "head") if c in got])


@pytest.mark.notebook
def test_heal_runner_whose_reader_went_away_runs_to_the_end(tmp_path):
    """`make reproduce | head -1`, or a closed terminal: at ffb255a the first print ended the runner in a
    BrokenPipeError traceback before any notebook ran. Now it goes on, its lines going nowhere."""
    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run([sys.executable, "-m", "attnlib.run", "--profile", "smoke", "--only", "00",
                              "--results-dir", str(tmp_path / "results")], cwd=ROOT, stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(write)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert (tmp_path / "results" / "smoke" / "metrics" / "00_conv_as_attention.csv").exists()


@pytest.mark.notebook
def test_heal_runner_started_with_nohup_keeps_sighup_ignored(tmp_path):
    """`nohup make reproduce`: the hang-up of the terminal it was started from must not stop it. (A first version of
    the SIGTERM handling put a handler on SIGHUP whatever the runner inherited; a review caught it.)"""
    proc = subprocess.Popen([sys.executable, "-m", "attnlib.run", "--profile", "smoke", "--only", "00",
                             "--results-dir", str(tmp_path / "results")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    log = tmp_path / "results" / "smoke" / "logs" / "00_conv_as_attention.log"
    _wait_for(lambda: log.exists() and log.stat().st_size > 0, proc)  # the notebook is running
    os.killpg(proc.pid, signal.SIGHUP)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and err == "", err
    assert (tmp_path / "results" / "smoke" / "metrics" / "00_conv_as_attention.csv").exists()


def test_a_console_stream_hides_only_a_reader_that_went_away():
    """The runner's console survives EPIPE, but an encoding error is raised, not swallowed with every later line."""
    from attnlib.runner.execute import SurvivingStream

    read, write = os.pipe()
    os.close(read)
    gone = SurvivingStream(os.fdopen(write, "w", buffering=1))
    assert gone.write("a line\n") == len("a line\n")  # EPIPE: the stream now leads to /dev/null
    gone.write("more\n")
    gone.flush()
    gone.close()
    ascii_only = SurvivingStream(io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    with pytest.raises(UnicodeEncodeError):
        ascii_only.write("café\n")


@pytest.mark.notebook
def test_heal_runner_results_folder_with_quotes_accents_and_a_line_break_in_its_name(tmp_path):
    """A name a shell or a notebook's parameter cell could misread. At ffb255a already whole; kept so it stays so."""
    odd = tmp_path / 'rés "q" $HOME\nline'
    out = run_runner("--only", "00", "--results-dir", str(odd))
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert (odd / "smoke" / "metrics" / "00_conv_as_attention.csv").exists()
    assert (odd / "smoke" / "notebooks" / "00_conv_as_attention.ipynb").exists()


@pytest.mark.notebook
def test_stop_runner_past_the_file_size_limit_is_one_line_and_keeps_the_last_results(reference, tmp_path):
    """`ulimit -f` below a checkpoint's size: writes fail with EFBIG. One line naming the cause, the log and
    nothing half-written (at ffb255a the same line)."""
    import resource
    shutil.copytree(reference / "results", tmp_path / "results")
    before = _metrics(tmp_path / "results")
    out = subprocess.run([sys.executable, "-m", "attnlib.run", "--profile", "smoke", "--force",
                          *runner_args(reference / "params", tmp_path / "results")], cwd=ROOT, capture_output=True,
                         text=True, timeout=600,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)))
    assert out.returncode == 1
    assert "File too large" in one_line(out.stderr) and "02_quadratic" in out.stderr
    for got, want in zip(_metrics(tmp_path / "results"), before):
        pd.testing.assert_frame_equal(got, want)
    assert not list((tmp_path / "results").rglob(".*.tmp*"))


def test_heal_a_stale_runner_lock_of_a_dead_process_does_not_hold_the_series(tmp_path):
    """The lock file of a runner killed long ago, naming a pid that no longer runs: the next runner takes the series
    (the lock is the system's flock, which ends with its process, not the file's presence)."""
    from attnlib.runner import folder

    base = tmp_path / "results" / "smoke"
    folder.check_writable(base)
    (base / ".cache" / "runner.lock").write_text(f"pid {_dead_pid()}, started 2026-01-01 00:00:00")
    with folder.runner_lock(base):
        assert f"pid {os.getpid()}," in (base / ".cache" / "runner.lock").read_text()


def _explore(trained, tmp_path, image, out=None) -> tuple[int, Path]:
    """`python -m attnlib.explore IMAGE --out OUT` on the trained runs: (exit code, the page)."""
    page = Path(out or tmp_path / "page.html")
    code = cli.main([str(image), "--out", str(page), "--results-dir", str(trained.results_dir), "--profile", "smoke",
                     "--params-dir", str(trained.params_file.parent.parent), "--experiments", "02_quadratic"])
    return code, page


def test_stop_explore_image_that_is_a_folder_names_it_a_folder(trained, tmp_path, capsys):
    """At ffb255a: "pic is not an image (no such file)", for a folder that is there."""
    (tmp_path / "pic").mkdir()
    code, page = _explore(trained, tmp_path, tmp_path / "pic")
    assert code == 2 and one_line(capsys.readouterr().err) == f"error: {tmp_path / 'pic'} is not an image (it is a folder)"
    os.mkfifo(tmp_path / "pipe.png")
    code, page = _explore(trained, tmp_path, tmp_path / "pipe.png")
    assert code == 2 and "is not an image (it is a named pipe)" in one_line(capsys.readouterr().err)


def test_stop_explore_out_that_is_a_folder_names_it(trained, tmp_path, capsys):
    """At ffb255a: "[Errno 21] Is a directory: '.out.html.<host>-<pid>.<hex>.tmp' -> 'out.html'"."""
    Image.new("L", (28, 28)).save(tmp_path / "p.png")
    (tmp_path / "out.html").mkdir()
    code, _ = _explore(trained, tmp_path, tmp_path / "p.png", tmp_path / "out.html")
    assert code == 2
    assert one_line(capsys.readouterr().err) == (f"error: --out {tmp_path / 'out.html'} is a folder; name the HTML "
                                                 "file to write")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("name", ["a-line-4000-by-1", "an-animated-gif", "out-in-a-folder-not-made-yet"],
                         ids=["heal-explore-a-line-4000-by-1", "heal-explore-an-animated-gif",
                              "heal-explore-out-in-a-folder-not-made-yet"])
def test_pictures_of_odd_shapes_and_kinds_make_a_page(trained, tmp_path, capsys, name):
    """A picture 4000 pixels wide and 1 high (its middle pixel, with a note), an animated GIF (its first frame), and
    a page asked for in a folder not made yet. All three already worked at ffb255a; kept so that they stay so."""
    out = None
    if name == "a-line-4000-by-1":
        Image.new("L", (4000, 1), 128).save(image := tmp_path / "line.png")
    elif name == "an-animated-gif":
        frames = [Image.new("L", (28, 28), v) for v in (0, 255, 128)]
        frames[0].save(image := tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    else:
        Image.new("L", (28, 28)).save(image := tmp_path / "p.png")
        out = tmp_path / "new" / "folder" / "page.html"
    code, page = _explore(trained, tmp_path, image, out)
    text = capsys.readouterr()
    assert code == 0 and page.exists() and "Traceback" not in text.err, text.err
    if name == "a-line-4000-by-1":
        assert "4000x1 pixels: its middle 1x1 square is shown" in text.out


# -- pictures for the explorer (issue 29): what they hold, not what 8 bits would mean ---------------------------
# At ffb255a a 16-bit grey PNG was nearly all white (95% of its pixels at 255) and a 32-bit float TIFF all black.
def _saved(img, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _gradient(dtype, high) -> np.ndarray:
    return (np.linspace(0, 1, 28 * 28).reshape(28, 28) * high).astype(dtype)


def _exif_rotated() -> bytes:
    img = Image.new("L", (28, 28), 0)
    img.paste(255, (0, 0, 28, 7))  # a white band along the top, stored rotated: the file says turn it upright
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return _saved(img, "JPEG", exif=exif, quality=100)


# name -> (file bytes, mean grey value the explorer must see, words of the note)
PICTURES = {
    "16-bit grey PNG": (lambda: _saved(Image.fromarray(_gradient(np.uint16, 65535)), "PNG"), 127.5, "16-bit"),
    "32-bit float TIFF in [0, 1]": (lambda: _saved(Image.fromarray(_gradient(np.float32, 1.0), mode="F"), "TIFF"),
                                    127.5, "float values in [0, 1]"),
    "32-bit float TIFF of any range": (lambda: _saved(Image.fromarray(_gradient(np.float32, 4000.0) - 1000, mode="F"),
                                                      "TIFF"), 127.5, "values -1000 to 3000"),
    "32-bit integer PNG": (lambda: _saved(Image.fromarray(_gradient(np.int32, 1_000_000), mode="I"), "TIFF"),
                           127.5, "values 0 to 1e+06"),
    "palette with transparency": (lambda: _saved(Image.new("P", (28, 28), 0), "PNG", transparency=0), 0.0, None),
    "grey with alpha": (lambda: _saved(Image.new("LA", (28, 28), (255, 255)), "PNG"), 255.0, None),
    "CMYK": (lambda: _saved(Image.new("CMYK", (28, 28), (0, 0, 0, 0)), "JPEG", quality=100), 255.0, None),
}


@pytest.mark.parametrize("name", list(PICTURES), ids=[f"heal-image-{n}" for n in PICTURES])
def test_pictures_that_are_not_8_bit_grey_or_rgb_are_seen_as_they_look(name):
    from attnlib.explorer.cli import picture_notes

    make, mean, words = PICTURES[name]
    img = open_image(make(), name)
    grey = prepare_image(img, 28, 1).float()
    assert abs(grey.mean().item() - mean) < 2.0, (name, grey.mean().item())
    notes = picture_notes(img)
    assert (words is None and not notes) or (words in notes[0] and "8-bit" in notes[0]), notes


def test_heal_an_exif_rotated_photo_is_shown_upright_and_a_wide_one_says_it_is_cropped():
    from attnlib.explorer.cli import picture_notes

    grey = prepare_image(open_image(_exif_rotated()), 28, 1).float()[0]
    assert grey[:, -7:].mean() > 200 and grey[:, :7].mean() < 60  # the band now runs down the right side
    notes = picture_notes(Image.new("RGB", (300, 200)))
    assert notes == ["300x200 pixels: its middle 200x200 square is shown (the networks take square images)"]


def test_stop_a_decompression_bomb_is_one_line_not_an_image():
    huge = _saved(Image.new("1", (1, 1)), "PNG")
    # a PNG header claiming 100,000 x 100,000 pixels (PIL refuses more than twice its limit)
    header = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 1, 0, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = header + chunk + huge[len(header) + len(chunk):]
    with pytest.raises(NotAnImage) as err:
        open_image(bomb, "bomb.png")
    assert "\n" not in str(err.value) and str(err.value).startswith("bomb.png is not an image")
