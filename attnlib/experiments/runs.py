"""A training notebook's planned runs (attnlib.experiments.grid) trained, resumed or read back, on one device or
spread over several (attnlib.training.schedule), and summarised one row per run."""
from __future__ import annotations

import functools

import pandas as pd
import torch

from attnlib import messages, results
from attnlib.data import Dataset
from attnlib.experiments.grid import PlannedRun, batch_sizes, plan, train_config
from attnlib.experiments.modes import mode_of
from attnlib.experiments.settings import TrainParams
from attnlib.models import count_parameters, create_model
from attnlib.training import schedule
from attnlib.training.records import RunInfo
from attnlib.training.train import TrainingError, resolve_device


def data_key(p: TrainParams) -> tuple:
    """What decides the data that load_data(p) gives: notebooks with equal keys share one load."""
    return (p.dataset, p.data_root, p.train_subset, p.test_subset, p.synthetic_image_size,
            *mode_of(p).data_key(p, batch_sizes(p)))


def load_data(p: TrainParams) -> Dataset:
    """The notebook's data; in a dry run, enough of it (or of generated images of its shape) for its steps."""
    return mode_of(p).load_data(p, batch_sizes(p))


def train_run(p: TrainParams, experiment: str, run: PlannedRun, data: Dataset, device: torch.device,
              progress: bool = True, label: str = "", lead: bool = True) -> list[dict]:
    """Train one planned run (or resume it, or read it back when finished) on `device`: its metric rows. In a
    dry run (attnlib.experiments.modes) it trains on its share of `data` and records what it measured. Under DDP
    (attnlib.experiments.distributed) every rank calls it, and only the `lead` rank (0) records."""
    torch.manual_seed(run.seed)
    model = create_model(run.model, **run.overrides)
    if progress:
        print(f"--- run {label}{run.run_id}: {run.model}, {run.variant}, seed {run.seed}, "
              f"{count_parameters(model):,} parameters, {run.train.epochs} epochs on {data.name} ({device})",
              flush=True)
    info = RunInfo(run.run_id, experiment, run.model, run.variant, data.name, p.profile)
    if run.shuffled:  # a control: the same images, steps and seed, on permuted training labels
        data = data.with_shuffled_labels(run.seed)
    return mode_of(p).train(p, run, model, data, device, info, progress, lead, full_epochs(p, run))


def full_epochs(p: TrainParams, run: PlannedRun) -> int:
    """The epochs a run trains as the profile plans it (a dry run trains one epoch of a few steps of it)."""
    return train_config(p, run.seed, run.model).epochs


def run_grid(p: TrainParams, experiment: str, data: Dataset | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every planned run of `p` (resuming or skipping finished ones); return their metric rows. On several
    devices (`p.devices`; none listed: every visible GPU when device is auto) the runs are spread over them, one
    worker each (attnlib.training.schedule), with the same ids and numbers; a failed run stops no other, and
    afterwards TrainingError names the failed ones in one line. A dry run (attnlib.experiments.modes) trains every
    run in a process of its own: a run that does not fit in memory is recorded as such, and the others go on."""
    data = data or load_data(p)
    mode = mode_of(p)
    devices = schedule.devices(p.devices, p.device)
    runs = plan(p, data)
    results.remove_stale_temp_files(results.profile_dir(p.results_dir, p.profile))  # left by a killed run
    labels = {r.run_id: f"{i}/{len(runs)} " for i, r in enumerate(runs, 1)}
    done = mode.read_back(p, experiment, runs)  # read back here; the others train here or in workers
    todo = [r for r in runs if r not in done]
    spread = bool(todo) and (mode.one_job_each or (len(devices) > 1 and len(runs) > 1))
    for r in done + ([] if spread else todo):
        train_run(p, experiment, r, data, resolve_device(devices[0]), progress, label=labels[r.run_id])
    if spread:
        _spread(p, experiment, data, progress, [(labels[r.run_id], r) for r in todo], devices, mode)
    planned = [r.run_id for r in runs]
    if not mode.steps:  # the notebook's CSVs hold the runs it plans now: none of older code or settings stays
        for key, (_, columns) in results.RECORDS.items():
            results.keep_runs(results.record_path(p.results_dir, p.profile, experiment, key), planned, columns)
    df = results.read_metrics(results.metrics_path(p.results_dir, p.profile, experiment),
                              planned={r.run_id: r.train.epochs for r in runs})
    df = df[df["run_id"].isin(planned)]
    if len(devices) > 1:  # the rows in the plan's order, as one device writes them
        order = {r.run_id: i for i, r in enumerate(runs)}
        df = df.sort_values("run_id", key=lambda ids: ids.map(order), kind="stable")
    return df.reset_index(drop=True)


def _spread(p: TrainParams, experiment: str, data: Dataset, progress: bool, jobs: list[tuple[str, PlannedRun]],
            devices: list[str], mode) -> None:
    """Train `jobs` in workers over `devices` (attnlib.training.schedule); TrainingError names the failed ones."""
    devices = [str(resolve_device(d)) for d in devices]  # auto: what it means here
    summary = schedule.run(jobs, devices, functools.partial(_train_job, p, experiment, data, progress),
                           name=_job_name, one_job_each=mode.one_job_each)
    failed = [o for job, o in zip(jobs, summary.outcomes)
              if mode.failed(p, experiment, job, o, data, full_epochs(p, job[1]))]
    if failed:
        raise TrainingError(summary.error(failed))


def _train_job(p: TrainParams, experiment: str, data: Dataset, progress: bool, job: tuple[str, PlannedRun],
               device: torch.device):
    """One run of a grid spread over devices, in a worker of attnlib.training.schedule."""
    label, run = job
    train_run(p, experiment, run, data, device, progress, label=label)


def _job_name(job: tuple[str, PlannedRun]) -> str:
    return job[1].run_id


def load_trained(p: TrainParams, run: PlannedRun, device: str = "cpu"):
    """The model of a planned run with the weights of its last checkpoint, in eval mode. A damaged checkpoint
    is moved aside (NAME.pt.damaged) and the stamps of the notebooks that train the run are dropped, so that
    running the same command again retrains it; the error says so in one line."""
    path = results.checkpoint_path(p.results_dir, p.profile, run.run_id)
    model = create_model(run.model, **run.overrides)
    try:
        state = results.load_checkpoint(path, run.run_id)
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise results.DamagedCheckpoint(path, messages.error_line(err)) from None
    except results.DamagedCheckpoint as err:
        aside = results.move_aside(path)
        metrics = results.profile_dir(p.results_dir, p.profile) / "metrics"
        owners = [csv.stem for csv in sorted(metrics.glob("*.csv")) if _mentions(csv, run.run_id)]
        results.forget_stamps(results.stamps_path(results.profile_dir(p.results_dir, p.profile)), owners)
        raise TrainingError(f"{path} is damaged ({err.reason}): moved aside to {aside.name}; run the same command "
                            f"again (make reproduce) to train run {run.run_id} again") from None
    return model.to(device).eval()


def _mentions(path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except OSError:
        return False


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: final and best test accuracy, epochs, training time, parameters."""
    if df.empty:
        return pd.DataFrame()
    g = df.sort_values("epoch").groupby("run_id", sort=False)
    out = g.agg(model=("model", "first"), variant=("variant", "first"), dataset=("dataset", "first"),
                profile=("profile", "first"), seed=("seed", "first"), epochs=("epoch", "max"),
                final_test_acc=("test_acc", "last"), best_test_acc=("test_acc", "max"),
                train_seconds=("seconds", "sum"), params=("params", "first"), precision=("precision", "first"))
    return out.reset_index()
