"""How a training notebook's grid trains: for real, or as a dry run. The one place that decides what a dry run
changes; attnlib.experiments.grid and .runs ask `mode_of(p)` once and call its methods, without branching.

A dry run of N steps (TrainParams.dry_run = N, the runner's `--dry-run N`) changes four things:
- the data: enough of the profile's data set for N batches, or generated images of its shape where it cannot be
  had (`load_data`);
- the plan: every run trains one epoch of N steps on the first N batches, and its id says so (`sized`);
- what is measured and where it is recorded: its peak memory, seconds per step and the projection of the full
  run, in metrics/<notebook>_dry_run.csv (`train`, attnlib.training.dry_run);
- how the runs are spread: each in a process of its own, so that its peak memory is its own, and a run that does
  not fit in memory is recorded as such instead of failing the grid (`spread`, `failed`).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from attnlib import results
from attnlib.data import Dataset, load_dataset
from attnlib.models import count_parameters, create_model
from attnlib.training import dry_run, schedule, speed
from attnlib.training.records import RunInfo
from attnlib.training.train import TrainConfig, fit


class RealRun:
    """Every run trains its planned epochs on the whole data set; runs share workers."""

    steps = 0
    one_job_each = False  # runs of a grid share a worker per device

    def data_key(self, p, batch_sizes: list[int]) -> tuple:
        """What besides the data settings decides the data that load_data gives."""
        return ()

    def load_data(self, p, batch_sizes: list[int]) -> Dataset:
        return load_dataset(p.dataset, p.data_root, p.train_subset, p.test_subset, download=p.download,
                            image_size=p.synthetic_image_size)

    def sized(self, cfg: TrainConfig, n_train: int) -> tuple[TrainConfig, int, int]:
        """A run's training config, how many training images it trains on, and the train_images it records (0:
        all of them)."""
        return cfg, n_train, 0

    def read_back(self, p, experiment: str, runs: list) -> list:
        """The runs to read back in the notebook's process before the others are spread over workers."""
        return []

    def train(self, p, run, model, data: Dataset, device: torch.device, info: RunInfo, progress: bool, lead: bool,
              full_epochs: int) -> list[dict]:
        """Train (or resume, or read back) one planned run (`info` its RunInfo): its metric rows. `full_epochs`: the
        epochs of the run as the profile plans it."""
        options = speed.options(p)  # TF32, torch.compile, channels-last: not part of the run's id
        if lead:
            set_aside_beyond_plan(p, run)
        return fit(model, data, run.train, info, p.results_dir, device, progress=progress, speed=options,
                   fresh=p.retrain)

    def failed(self, p, experiment: str, job, outcome: schedule.Outcome, data: Dataset, full_epochs: int) -> bool:
        """Whether a worker's outcome is a failure of the grid (else it has been recorded as what was found)."""
        return bool(outcome.error)


def set_aside_beyond_plan(p, run) -> None:
    """A checkpoint of planned run `run` that is whole but claims more than the run plans (epoch 4 of a 2-epoch run,
    rows written for another number of epochs) is none that training wrote: it is moved aside with one line, as a
    damaged one, and the run trains again from epoch 1 instead of being read back as finished."""
    path = results.checkpoint_path(p.results_dir, p.profile, run.run_id)
    if not path.is_file():
        return
    try:
        state = results.load_checkpoint(path, run.run_id, mmap=True)
    except results.DamagedCheckpoint:
        return  # training itself moves a damaged one aside
    planned = run.train.epochs
    claimed = sorted({r.get("epochs") for r in state["history"]} - {planned}, key=str)
    if state["epoch"] <= planned and not claimed:
        return
    why = (f"it claims epoch {state['epoch']} of a run planned for {planned}" if state["epoch"] > planned
           else f"its rows say {claimed[0]} epochs where the run plans {planned}")
    aside = results.move_aside(path)
    print(f"{path} is damaged ({why}): moved aside to {aside.name}; run {run.run_id} starts again from epoch 1",
          flush=True)


class DryRun(RealRun):
    """Every run at its real size for one epoch of `steps` steps, measured and recorded (attnlib.training.dry_run)."""

    one_job_each = True  # each run in a process of its own: its peak memory is its own

    def __init__(self, steps: int):
        self.steps = steps

    def data_key(self, p, batch_sizes: list[int]) -> tuple:
        return (self.steps, tuple(batch_sizes))

    def load_data(self, p, batch_sizes: list[int]) -> Dataset:
        return dry_run.data(p.dataset, p.data_root, self.steps, batch_sizes, p.download, p.synthetic_image_size)

    def sized(self, cfg: TrainConfig, n_train: int) -> tuple[TrainConfig, int, int]:
        n_train = min(n_train, self.steps * cfg.batch_size)
        return replace(cfg, epochs=1), n_train, n_train

    def read_back(self, p, experiment: str, runs: list) -> list:
        return [r for r in runs if dry_run.measured(p.results_dir, p.profile, experiment, r.run_id)]

    def train(self, p, run, model, data: Dataset, device: torch.device, info: RunInfo, progress: bool, lead: bool,
              full_epochs: int) -> list[dict]:
        data = dry_run.run_data(data, self.steps, run.train.batch_size)
        if dry_run.measured(p.results_dir, p.profile, info.experiment, run.run_id):  # read back like a finished run
            return super().train(p, run, model, data, device, info, progress, lead, full_epochs)
        with dry_run.PeakMemory(device) as peak:
            history = super().train(p, run, model, data, device, info, progress, lead, full_epochs)
        if lead:
            dry_run.finish(run, info.experiment, p.profile, p.results_dir, model, data, history, peak, device,
                           full_epochs, full_dataset(p, data))
        return history

    def failed(self, p, experiment: str, job, outcome: schedule.Outcome, data: Dataset, full_epochs: int) -> bool:
        if not outcome.out_of_memory:
            return bool(outcome.error)
        _, run = job  # what a dry run finds out, not its failure: recorded as not fitting at its batch size
        device = torch.device(outcome.worker.partition("#")[0] or "cpu")
        with torch.device("meta"):  # its parameters counted without their memory
            params = count_parameters(create_model(run.model, **run.overrides))
        dry_run.does_not_fit(run, experiment, p.profile, p.results_dir, data.name, device, params, outcome.error,
                             outcome.peak_mb, full_epochs, full_dataset(p, data))
        return False


def full_dataset(p, data: Dataset) -> str:
    """The data set a dry run's projection is for: the profile's (CIFAR-10 where it trained on its stand-in)."""
    return p.dataset if p.dataset in dry_run.FULL_SIZE else data.name


def mode_of(p) -> RealRun:
    """The mode a notebook's TrainParams train in: a dry run of p.dry_run steps, or the real thing."""
    return DryRun(p.dry_run) if p.dry_run else RealRun()
