"""A dry run of a profile: every run of its grid at its real size, a few optimizer steps each.

`make reproduce PROFILE=paper DRY_RUN=N` (the runner's `--dry-run N`) runs every notebook with `dry_run: N`.
A training notebook then plans its runs as the profile says (models, sizes, batch, precision) but trains
each for one epoch of N steps (`experiment.plan`), on the profile's data where it can be had and otherwise
on generated images of the same shape (CIFAR-10: 32x32x3, 10 classes), through the same code as the real
run: checkpoint, resume, metric rows, attention records. Results go to results/dry-run/<profile>/, apart
from the real ones.

Per run it measures and records (metrics/<notebook>_dry_run.csv, DRY_RUN_COLUMNS):
- peak memory: the process's resident memory, sampled while the run trains (CPU), or
  `torch.cuda.max_memory_allocated` (CUDA);
- seconds per optimizer step: the run's training time over its N steps (the first step included, so with
  few steps an upper bound);
- seconds per test image of the evaluation, timed once after training;
- the projected time of the full run on this device: steps per epoch of the real training set x epochs x
  seconds per step, plus the evaluation of the real test set after every epoch.

Every run trains in a process of its own (attnlib.training.schedule's `one_job_each`), so that its peak memory is its
own and a run that does not fit ends only its process. Such a run (the system's out-of-memory killer, or
torch's OutOfMemoryError) gets a row too, its `outcome` saying that it does not fit at its batch size and
how much memory it had reached; the dry run goes on with the others.
"""
from __future__ import annotations

import math
import os
import resource
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from attnlib import messages, results
from attnlib.data import DataError, Dataset, load_dataset, make_synthetic
from attnlib.loaders import loaders
from attnlib.training.train import evaluate

RESULTS_DIR = "results/dry-run"  # where the runner puts a dry run's results, apart from the real ones
# the real data sets' sizes, for projecting a full run from a dry one
FULL_SIZE = {"cifar10": (50_000, 10_000), "fashion_mnist": (60_000, 10_000)}
TEST_IMAGES = 32  # a dry run's test split: notebook 07 averages over these; each costs a forward pass at full size
DRY_RUN_COLUMNS = ["run_id", "experiment", "model", "variant", "dataset", "profile", "device", "params", "batch_size",
                   "precision", "steps", "seconds_per_step", "eval_seconds_per_image", "peak_memory_mb",
                   "memory_kind", "full_epochs", "full_steps_per_epoch", "projected_hours", "outcome"]
MEASURED = "measured"  # the outcome of a run that trained its steps; otherwise why it did not


def data(dataset: str, data_root: str, steps: int, batch_sizes: list[int], download: bool = False,
         synthetic_image_size: int = 16) -> Dataset:
    """The data of a dry run: the real data set when it can be had, else generated images of its shape; the
    training split holds `steps` batches of the largest batch size, the test split TEST_IMAGES images."""
    n_train = steps * max(batch_sizes)
    try:
        return load_dataset(dataset, data_root, n_train, TEST_IMAGES, download=download,
                            image_size=synthetic_image_size)
    except DataError as err:
        if dataset not in ("cifar10", "auto"):
            raise
        print(f"dry run: {err}; using generated images of CIFAR-10's shape (32x32x3, 10 classes) instead", flush=True)
        return make_synthetic(n_train, TEST_IMAGES, image_size=32, channels=3)


def run_data(data: Dataset, steps: int, batch_size: int) -> Dataset:
    """`data` with exactly `steps` training batches of `batch_size` (or all it has)."""
    n = min(len(data.x_train), steps * batch_size)
    return replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])


class PeakMemory:
    """The peak memory of what runs inside `with PeakMemory(device) as peak:`, in MB (`peak.mb`): on CUDA the
    tensors allocated on the device, on the CPU the process's resident set, sampled every `every` seconds."""

    def __init__(self, device: torch.device, every: float = 0.02):
        self.device, self.every, self.mb, self.kind = torch.device(device), every, float("nan"), ""
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda max_memory_allocated"
        else:
            self.kind = "process RSS"
            self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.every):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.mb = max(self._peak, _rss_bytes()) / 2**20
        return False


def _rss_bytes() -> int:
    """The process's resident set now (Linux: /proc/self/statm); elsewhere its peak so far (getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def eval_seconds_per_image(model: nn.Module, data: Dataset, device: torch.device, precision: str,
                           batch_size: int) -> float:
    """Seconds per test image of one evaluation pass over `data`'s test split (the model as trained), in test
    batches of the run's `batch_size`, as fit evaluates."""
    _, test = loaders(data, batch_size, device)
    start = time.perf_counter()
    evaluate(model, test, device, precision)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / max(1, len(data.x_test))


def measures(history: list[dict], steps: int, batch_size: int, full_epochs: int, full_dataset: str,
             eval_s_per_image: float) -> dict:
    """The dry run's rates, from its metric rows (`seconds`: the training time of its `steps` steps), and the
    projected hours of the full run: `full_epochs` epochs of `full_dataset`'s training set, each followed by
    an evaluation of its test set."""
    n_train, n_test = FULL_SIZE.get(full_dataset, FULL_SIZE["cifar10"])
    per_step = history[-1]["seconds"] / max(1, steps)
    full_steps = math.ceil(n_train / batch_size)
    hours = full_epochs * (full_steps * per_step + n_test * eval_s_per_image) / 3600
    return dict(steps=steps, seconds_per_step=round(per_step, 4), eval_seconds_per_image=round(eval_s_per_image, 6),
                full_epochs=full_epochs, full_steps_per_epoch=full_steps, projected_hours=round(hours, 2))


def path(results_dir, profile: str, experiment: str) -> Path:
    return results.profile_dir(results_dir, profile) / "metrics" / f"{experiment}_dry_run.csv"


def measured(results_dir, profile: str, experiment: str, run_id: str) -> bool:
    """Whether the run's dry run finished and was measured: its row is recorded and its checkpoint is there (a
    rerun reads it back instead of measuring the reading)."""
    recorded = outcomes(results_dir, profile, experiment).get(run_id) == MEASURED  # not one that did not fit
    return recorded and results.checkpoint_path(results_dir, profile, run_id).exists()


def outcomes(results_dir, profile: str, experiment: str) -> dict[str, str]:
    """{run id: outcome} of the runs the notebook's dry run recorded (none when its CSV is absent or damaged)."""
    try:
        if messages.not_a_file(csv := path(results_dir, profile, experiment)):  # a named pipe would be read forever
            return {}
        rows = pd.read_csv(csv)
        return dict(zip(rows["run_id"], _outcome(rows)))
    except (OSError, ValueError, KeyError, pd.errors.ParserError, UnicodeDecodeError):
        return {}


def _outcome(rows: pd.DataFrame) -> pd.Series:
    """Each row's outcome; rows written before outcomes were recorded were all measured."""
    return rows["outcome"].fillna(MEASURED) if "outcome" in rows else pd.Series(MEASURED, index=rows.index)


def record(csv: Path, row: dict) -> None:
    """Put a run's row into the notebook's dry-run CSV, replacing the run's earlier row, under the CSV's lock
    (runs on several devices record at once)."""
    results.write_run_rows(csv, row["run_id"], [row], DRY_RUN_COLUMNS, read=_read_or_set_aside)


def _read_or_set_aside(csv: Path, columns: list[str]) -> pd.DataFrame:
    """The dry-run CSV's rows; one that cannot be read is moved aside (NAME.csv.damaged) with one line saying so,
    and started anew (no checkpoint holds its rows)."""
    if not csv.exists():
        return pd.DataFrame(columns=columns)
    try:
        if (kind := messages.not_a_file(csv)):  # a named pipe would be read forever
            raise ValueError(f"it is {kind}, not a file")
        rows = pd.read_csv(csv)
        if list(rows.columns) == columns[:-1]:  # written before runs that did not fit were recorded
            rows["outcome"] = MEASURED
        if list(rows.columns) != columns:
            raise ValueError("its columns are not the dry run's")
        return rows
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        aside = results.move_aside(csv)
        print(f"{csv} is damaged ({messages.error_line(err)}): moved aside to {aside.name}; written anew", flush=True)
        return pd.DataFrame(columns=columns)


def finish(run, experiment: str, profile: str, results_dir, model: nn.Module, data: Dataset, history: list[dict],
           peak: PeakMemory, device: torch.device, full_epochs: int, full_dataset: str) -> dict:
    """After a planned run's dry run (`run`: an experiment.PlannedRun, trained on `data` by fit while `peak`
    watched): time its evaluation, record its row in metrics/<experiment>_dry_run.csv, print one line."""
    steps = math.ceil(len(data.x_train) / run.train.batch_size)
    eval_s = eval_seconds_per_image(model, data, device, run.train.precision, run.train.batch_size)
    row = dict(_planned(run, experiment, profile, data.name, device, sum(p.numel() for p in model.parameters())),
               peak_memory_mb=round(peak.mb, 1), memory_kind=peak.kind, outcome=MEASURED,
               **measures(history, steps, run.train.batch_size, full_epochs, full_dataset, eval_s))
    record(path(results_dir, profile, experiment), row)
    print(describe(row), flush=True)
    return row


def does_not_fit(run, experiment: str, profile: str, results_dir, dataset: str, device: torch.device, params: int,
                 why: str, peak_mb: float, full_epochs: int, full_dataset: str) -> dict:
    """Record that a planned run's dry run ran out of memory (`why`: how its process ended; `peak_mb`: the
    highest resident memory it was seen at, NaN when unknown) and print one line: no times, no projection."""
    n_train, _ = FULL_SIZE.get(full_dataset, FULL_SIZE["cifar10"])
    row = dict(_planned(run, experiment, profile, dataset, device, params), steps=0, seconds_per_step=float("nan"),
               eval_seconds_per_image=float("nan"), peak_memory_mb=round(peak_mb, 1),
               memory_kind="" if math.isnan(peak_mb) else "worker process peak RSS (VmHWM), sampled every 0.5 s",
               full_epochs=full_epochs, full_steps_per_epoch=math.ceil(n_train / run.train.batch_size),
               projected_hours=float("nan"),
               outcome=f"does not fit in memory at batch {run.train.batch_size}: {why}")
    record(path(results_dir, profile, experiment), row)
    print(describe(row), flush=True)
    return row


def _planned(run, experiment: str, profile: str, dataset: str, device: torch.device, params: int) -> dict:
    """The columns of a dry-run row that the plan decides."""
    return dict(run_id=run.run_id, experiment=experiment, model=run.model, variant=run.variant, dataset=dataset,
                profile=profile, device=results.device_name(device), params=params,
                batch_size=run.train.batch_size, precision=run.train.precision)


def describe(row: dict) -> str:
    """One line for the console: what the dry run of one run measured and projects."""
    if row["outcome"] != MEASURED:
        return f"dry run {row['run_id']}: {row['outcome']} ({row['device']})"
    return (f"dry run {row['run_id']}: {row['steps']} steps of {row['batch_size']}, "
            f"{row['seconds_per_step']:.2f} s/step, peak {row['peak_memory_mb']:,.0f} MB ({row['memory_kind']}); "
            f"the full run ({row['full_epochs']} epochs of {row['full_steps_per_epoch']} steps) would take about "
            f"{row['projected_hours']:,.1f} h on {row['device']}")


def table(rows: pd.DataFrame) -> pd.DataFrame:
    """The dry run's rows as a reader wants them: per run, memory, seconds per step and projected hours."""
    if rows.empty:
        return rows
    out = rows[["experiment", "model", "variant", "params", "batch_size", "steps", "peak_memory_mb", "seconds_per_step",
                "projected_hours", "device"]].copy()
    out["projected_days"] = (rows["projected_hours"] / 24).round(1)
    out["outcome"] = _outcome(rows)
    return out.sort_values(["experiment", "model", "variant"]).reset_index(drop=True)
