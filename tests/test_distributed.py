"""Training with DDP over 2 processes (gloo on the CPU, launched with torchrun) against 1 process.

Covers attnlib.training.train.fit under a process group and attnlib.experiments.distributed: 2 processes reproduce the 1-process
run with the same global batch (metric rows and final weights within float rounding; an uneven split of
every batch and a last batch of one image, which leaves one process a stand-in row); rank 0 alone writes
the checkpoint, whose state dict has the 1-process keys; a rank killed with SIGKILL mid-epoch and a rerun
end like an uninterrupted run (with dropout too: every process's RNG is restored); a DDP checkpoint resumes
in one process; the command line trains a notebook's planned runs so that the notebook's own run_grid reads
them back, and bad input is one line and exit status 2.

This file is also the worker that torchrun starts: `python tests/test_distributed.py worker DIR MODE`.
"""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attnlib import results  # noqa: E402
from attnlib.data import make_synthetic  # noqa: E402
from attnlib.experiments import grid
from attnlib.loaders import BatchLoader
from attnlib.models import create_model  # noqa: E402
from attnlib.training.records import RunInfo
from attnlib.training.train import TrainConfig, fit  # noqa: E402

TINY = dict(layers=1, heads=4, hidden=16, ff=16, downsample=2, image_size=8)
NUMBERS = ["train_loss", "train_acc", "test_loss", "test_acc", "lr"]
RUNS = {"plain": 0.0, "dropout": 0.1}  # run id: dropout (hidden states and attention)
EPOCHS = 3
BATCH = 15  # 76 images: five batches of 15 (8 + 7 rows per process) and a last one of 1 (a stand-in for rank 1)
TOL = 1e-5


def data():
    return make_synthetic(n_train=76, n_test=48, image_size=8)


def train(run_id: str, results_dir, stop_after_epoch=None) -> list[dict]:
    """One tiny run, as a notebook trains it: the model built after torch.manual_seed, then fit."""
    torch.manual_seed(0)
    drop = RUNS[run_id]
    model = create_model("sa_quadratic", **TINY, dropout=drop, attn_dropout=drop)
    cfg = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=0.05, seed=1, warmup=0.1)
    info = RunInfo(run_id, "exp", "sa_quadratic", "4 heads", "synthetic", "smoke")
    return fit(model, data(), cfg, info, results_dir, "cpu", progress=False, stop_after_epoch=stop_after_epoch)


def worker(results_dir: str, mode: str):
    """A torchrun process: both runs whole; or (mode kill) `plain` stopped after epoch 1 and `dropout` with rank 1
    killed (SIGKILL) at the third batch of epoch 2."""
    import torch.distributed as dist

    from attnlib.experiments.distributed import init

    init("cpu")
    if mode == "kill" and dist.get_rank() == 1:
        batches = BatchLoader.__iter__

        def dying(self):
            for i, batch in enumerate(batches(self)):
                if self.train and self.epoch == 2 and i == 2 and RUNS[current] > 0:
                    os.kill(os.getpid(), signal.SIGKILL)
                yield batch
        BatchLoader.__iter__ = dying
    for current in RUNS:
        train(current, results_dir, stop_after_epoch=1 if mode == "kill" and current == "plain" else None)
    dist.destroy_process_group()


def torchrun(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run --standalone --nproc-per-node=2 ARGS` from the repository's root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def rows(results_dir, run_id: str) -> pd.DataFrame:
    df = results.read_metrics(results.metrics_path(results_dir, "smoke", "exp"))
    return df[df["run_id"] == run_id].reset_index(drop=True)


def checkpoint(results_dir, run_id: str) -> dict:
    return torch.load(results.checkpoint_path(results_dir, "smoke", run_id), weights_only=True)


def assert_close_runs(a_dir, b_dir, run_id: str, atol: float):
    a, b = rows(a_dir, run_id), rows(b_dir, run_id)
    assert list(a["epoch"]) == list(b["epoch"]) == list(range(1, EPOCHS + 1))
    pd.testing.assert_frame_equal(a[NUMBERS], b[NUMBERS], check_exact=False, rtol=0, atol=atol)
    wa, wb = checkpoint(a_dir, run_id)["model"], checkpoint(b_dir, run_id)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=atol, msg=k)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Folders: one (1 process), whole (2 processes), killed (2 processes, killed), resumed (killed, rerun)."""
    base = tmp_path_factory.mktemp("ddp")
    for run_id in RUNS:
        train(run_id, base / "one")
    torchrun(__file__, "worker", str(base / "whole"), "whole")
    killed = torchrun(__file__, "worker", str(base / "killed"), "kill", check=False)
    shutil.copytree(base / "killed", base / "resumed")
    torchrun(__file__, "worker", str(base / "resumed"), "whole")
    return base, killed


def test_two_processes_reproduce_one_with_the_same_global_batch(launched):
    base, _ = launched
    assert_close_runs(base / "one", base / "whole", "plain", atol=TOL)
    df = rows(base / "whole", "plain")
    assert df["device"].str.startswith("2 x cpu").all()  # rank 0 alone wrote the rows, once per epoch
    state = checkpoint(base / "whole", "plain")
    assert len(state["rng_ranks"]) == 2 and not list((base / "whole").rglob("*.tmp"))
    assert checkpoint(base / "one", "plain")["model"].keys() == state["model"].keys()


def test_a_killed_rank_resumes_from_the_checkpoint_and_ends_like_an_uninterrupted_run(launched):
    base, killed = launched
    assert killed.returncode != 0  # torchrun saw rank 1 die and stopped rank 0
    assert checkpoint(base / "killed", "dropout")["epoch"] == 1  # epoch 2 never finished
    assert checkpoint(base / "killed", "plain")["epoch"] == 1
    for run_id in RUNS:  # with dropout: each process's RNG came back from the checkpoint
        assert_close_runs(base / "whole", base / "resumed", run_id, atol=1e-7)


def test_a_ddp_checkpoint_resumes_in_one_process(launched, tmp_path):
    base, _ = launched
    shutil.copytree(base / "killed", tmp_path / "r")
    assert train("plain", tmp_path / "r")[0]["device"].startswith("2 x cpu")  # epoch 1 came from DDP
    assert_close_runs(base / "one", tmp_path / "r", "plain", atol=TOL)


def test_command_line_trains_the_notebooks_runs_and_the_notebook_reads_them_back(tmp_path, capsys):
    from attnlib.experiments import params
    from attnlib.experiments import runs as experiment

    out = torchrun("-m", "attnlib.distributed", "02_quadratic", "--profile", "smoke", "--results-dir", str(tmp_path))
    lines = out.stdout.splitlines()
    p = params.load_with(ROOT / "params" / "smoke" / "02_quadratic.yaml", {"results_dir": str(tmp_path)})
    runs = grid.plan(p, experiment.load_data(p))
    assert all(any(r.run_id in line for line in lines) for r in runs), out.stdout
    mtimes = {r.run_id: results.checkpoint_path(tmp_path, "smoke", r.run_id).stat().st_mtime_ns for r in runs}
    df = experiment.run_grid(p, "02_quadratic", progress=False)  # what the notebook does: reads them back
    assert sorted(df["run_id"]) == sorted(mtimes) and df["device"].str.startswith("2 x ").all()
    assert mtimes == {r: results.checkpoint_path(tmp_path, "smoke", r).stat().st_mtime_ns for r in mtimes}


@pytest.mark.parametrize("argv, says", [
    (["99_nothing", "--profile", "smoke"], "unknown notebook '99_nothing'"),
    (["02_quadratic", "--profile", "smoke", "--params-dir", "{tmp}"], "no parameter file"),
    (["02_quadratic", "--profile", "smoke", "--only", "resnet"], "no planned run's id starts with 'resnet'"),
])
def test_command_line_bad_input_is_one_line_and_exit_2(argv, says, tmp_path, capsys):
    from attnlib.experiments import distributed

    assert distributed.main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and says in err, err


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(*sys.argv[2:4])
