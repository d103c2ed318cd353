"""A grid's runs spread over several devices (attnlib.training.schedule through attnlib.experiments.runs.run_grid).

Two CPU workers stand in for two devices. They train the same runs as the serial run_grid, with the same ids
and the same numbers (up to the seconds and device columns); the console names each run's device when it starts
and ends, and the workers' progress bars reach the runner's events file, each naming its run. A run that fails
stops no other: the summary names it, and run_grid raises one line afterwards. The devices parameter is
checked; the runner's --devices reaches only the training notebooks and is left out of their digest. A worker
killed in a job (as the out-of-memory killer kills) fails that job alone, named with the signal and the memory
it had reached, and a fresh worker takes the rest; with one_job_each every job has a process of its own.
"""
import functools
import io
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from attnlib.data import make_synthetic
from attnlib.experiments import grid, params
from attnlib.experiments import runs as experiment
from attnlib.experiments.params import ParamsError
from attnlib.experiments.settings import TrainParams
from attnlib.runner import digest, run
from attnlib.training import schedule
from attnlib.training.progress import ENV as PROGRESS_ENV
from attnlib.training.train import TrainingError

TINY = dict(profile="smoke", dataset="synthetic", synthetic_image_size=8, models=["sa_quadratic", "resnet18"], layers=1,
            heads=[2], hidden=8, ff=8, epochs=1, batch_size=16, lr=0.05, per_model={"resnet18": {"width": 4}})
NOT_NUMBERS = ["seconds", "device"]  # how long, and where with how many threads: not what was computed


@pytest.fixture(scope="module")
def data():
    return make_synthetic(64, 32, image_size=8)


def tiny(results_dir, **values) -> TrainParams:
    return params.from_mapping(TrainParams, {**TINY, "results_dir": str(results_dir), **values})


def rows(df):
    return df.drop(columns=NOT_NUMBERS).sort_values(["run_id", "epoch"]).reset_index(drop=True)


def test_two_workers_train_the_serial_grids_runs_with_the_same_numbers(tmp_path, data, capsys, monkeypatch):
    seeds = dict(seeds=[1, 2])
    threads, share = torch.get_num_threads(), max(1, torch.get_num_threads() // 2)
    torch.set_num_threads(share)  # as each of two CPU workers: the same float rounding (matrix products split alike)
    try:
        serial = experiment.run_grid(tiny(tmp_path / "serial", **seeds), "t", data, progress=False)
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    events = tmp_path / "progress.jsonl"
    monkeypatch.setenv(PROGRESS_ENV, str(events))  # as the runner sets it: the workers inherit it
    p = tiny(tmp_path / "spread", devices=["cpu", "cpu"], **seeds)
    spread = experiment.run_grid(p, "t", data)
    out = capsys.readouterr().out

    ids = [r.run_id for r in grid.plan(p, data)]
    assert len(ids) == 4 and list(serial["run_id"]) == ids and list(spread["run_id"]) == ids  # the plan's order
    assert rows(spread).equals(rows(serial))
    assert data.x_train.is_shared() and data.x_test.is_shared()  # the workers were given it, not a copy each
    for run_id in ids:
        assert re.search(rf"^\[cpu#[12]\] {run_id}: started$", out, re.M)
        assert re.search(rf"^\[cpu#[12]\] {run_id}: finished in \d+s$", out, re.M)
        assert re.search(rf"^\[cpu#[12]\] --- run \d/4 {run_id}: ", out, re.M)  # the worker's own lines, forwarded
    assert re.search(r"^4 runs in \d+s on cpu#1, cpu#2: 4 finished, 0 failed$", out, re.M)
    assert "cpu#1: " in out and "cpu#2: " in out
    bars = [json.loads(line) for line in events.read_text().splitlines()]
    assert {b["bar"] for b in bars if b["done"]} == set(ids)  # every worker's bar reached the file, named by its run
    assert all(d.endswith(f"; {share} threads)") for d in spread["device"])  # the cores shared between workers


def test_a_failing_run_stops_no_other_and_run_grid_raises_one_line_after(tmp_path, data, capsys):
    # resnet18's loss becomes NaN at its second step (lr 1e30): TrainingError in its worker
    p = tiny(tmp_path, models=["resnet18", "sa_quadratic"], hierarchical=[False, True], seeds=[1],
             per_model={"resnet18": {"width": 4, "lr": 1e30}}, devices=["cpu", "cpu"])
    bad, *good = [r.run_id for r in grid.plan(p, data)]
    with pytest.raises(TrainingError) as err:
        experiment.run_grid(p, "t", data, progress=False)
    out = capsys.readouterr().out
    message = str(err.value)
    assert "\n" not in message and message.startswith("1 of 3 runs failed: ") and bad in message
    assert "loss became nan" in message and not any(g in message for g in good)
    assert re.search(rf"^\[cpu#[12]\] {bad}: FAILED: TrainingError: .*loss became nan", out, re.M)
    assert re.search(rf"^  FAILED {bad} on cpu#[12]: TrainingError: ", out, re.M)
    assert re.search(r"^3 runs in \d+s on cpu#1, cpu#2: 2 finished, 1 failed$", out, re.M)
    for run_id in good:  # finished, their rows written, before run_grid raised
        assert re.search(rf"^\[cpu#[12]\] {run_id}: finished in ", out, re.M)
    metrics = experiment.results.read_metrics(experiment.results.metrics_path(p.results_dir, p.profile, "t"))
    assert set(metrics["run_id"]) == set(good)


def test_devices_are_checked_and_resolved(tmp_path):
    assert tiny(tmp_path, devices=["cpu", "0", "cuda", "cuda:3"]).devices == ["cpu", "0", "cuda", "cuda:3"]
    for wrong in (["gpu0"], ["cuda:x"], ["-1"], [""]):
        with pytest.raises(ParamsError, match=r"^params/x.yaml: devices must each be cpu, cuda, cuda:N or a GPU "
                                              r"index N, got"):
            params.from_mapping(TrainParams, {**TINY, "devices": wrong}, where="params/x.yaml")
    with pytest.raises(ParamsError, match="devices must be a list of str"):
        params.from_mapping(TrainParams, {**TINY, "devices": "0,1"})
    assert schedule.devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    assert schedule.devices([], "cpu") == ["cpu"]
    if torch.cuda.device_count() < 2:
        assert schedule.devices([], "auto") == ["auto"]  # one device: the serial path, as before
    with pytest.raises(TrainingError, match=r"^devices cuda:\d+ asked for, but torch sees"):
        schedule.devices(["cpu", str(torch.cuda.device_count())])
    assert schedule.labels(["cuda:0", "cpu", "cpu"]) == ["cuda:0", "cpu#1", "cpu#2"]


def test_the_runners_devices_reach_the_training_notebooks_only_and_not_their_digest(tmp_path):
    args = run._arguments(["--profile", "smoke", "--devices", "cpu, cpu", "--only", "02,06"])
    assert args.devices == ["cpu", "cpu"]
    plans = dict((nb.stem, values) for nb, values in run.checked_plans(run.notebooks_for("smoke", ["02", "06"]),
                                                                       "smoke", args))
    assert plans["02_quadratic"]["devices"] == ["cpu", "cpu"] and "devices" not in plans["06_timing"]
    nb = tmp_path / "02.ipynb"
    nb.write_text("{}")
    assert digest.notebook_digest(nb, plans["02_quadratic"], "lib", {}) == \
        digest.notebook_digest(nb, {**plans["02_quadratic"], "devices": []}, "lib", {})
    with pytest.raises(ParamsError, match=r"devices must each be"):
        run.checked_plans(run.notebooks_for("smoke", ["02"]), "smoke", run._arguments(["--devices", "gpu0"]))


def _note_process_or_die(folder: str, job: str, device):
    """A job of the test below: notes the process it ran in; the job "die" is killed as the out-of-memory killer
    kills, after long enough for the parent to see its memory."""
    Path(folder, f"{job}.pid").write_text(str(os.getpid()))
    if job == "die-at-once":  # before its "started" event can have left the process
        os.kill(os.getpid(), signal.SIGKILL)
    if job == "die":
        time.sleep(2 * schedule.POLL_S + 0.5)
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("one_job_each", [False, True], ids=["shared-worker", "one-job-each"])
def test_a_worker_killed_in_a_job_fails_that_job_alone_and_a_fresh_worker_takes_the_rest(tmp_path, one_job_each):
    out = io.StringIO()
    jobs = ["a", "die", "b", "c"]
    summary = schedule.run(jobs, ["cpu"], functools.partial(_note_process_or_die, str(tmp_path)), out=out,
                           one_job_each=one_job_each)
    text = out.getvalue()
    assert [o.name for o in summary.failed] == ["die"]
    died = summary.failed[0]
    assert died.out_of_memory and died.peak_mb > 50  # a python process with torch imported
    assert re.search(r"^\[cpu\] die: FAILED: its worker process was killed \(SIGKILL, most likely by the system for "
                     r"lack of memory; it had reached at least [\d,]+ MB resident, of [\d,]+ MB\)$", text, re.M)
    for job in ("a", "b", "c"):
        assert re.search(rf"^\[cpu\] {job}: finished in \d+s$", text, re.M)
    assert re.search(r"^4 runs in \d+s on cpu: 3 finished, 1 failed$", text, re.M)
    processes = {job: (tmp_path / f"{job}.pid").read_text() for job in jobs}
    if one_job_each:
        assert len(set(processes.values())) == 4
    else:  # the worker that died had run "a"; its successor ran the rest
        assert processes["a"] == processes["die"] != processes["b"] == processes["c"]


@pytest.mark.parametrize("one_job_each", [False, True], ids=["shared-worker", "one-job-each"])
def test_a_worker_killed_at_once_still_fails_its_own_job_and_no_other(tmp_path, one_job_each):
    out = io.StringIO()
    jobs = ["a", "die-at-once", "b"]
    summary = schedule.run(jobs, ["cpu"], functools.partial(_note_process_or_die, str(tmp_path)), out=out,
                           one_job_each=one_job_each)
    assert [o.name for o in summary.failed] == ["die-at-once"] and summary.failed[0].out_of_memory
    assert [o.error for o in summary.outcomes if o.name != "die-at-once"] == ["", ""]
    with pytest.raises(ValueError, match="no device"):
        schedule.run(jobs, [], functools.partial(_note_process_or_die, str(tmp_path)))
