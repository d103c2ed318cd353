"""A training notebook's grid of runs (models x heads x hierarchical x seeds): resolved from its TrainParams,
checked, planned, trained, read back and summarised.

Each run gets an id that names it and fingerprints everything that shapes its numbers (model
config, training config, data set), so changed parameters start a new run instead of resuming
an old checkpoint, and an unchanged finished run is read back instead of retrained.

The grid is resolved here and only here: which head counts and weight-sharing settings a model is
trained with, the options it is built with (the shared architecture fields it has, then its own
`per_model` options), and the training fields it trains with (the shared ones, or its `per_model` ones).
"""
from __future__ import annotations

import copy
import functools
import itertools
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Iterator

import pandas as pd
import torch

from attnlib import results
from attnlib.data import Dataset, image_shapes, load_dataset
from attnlib.experiments import schema
from attnlib.experiments.schema import ParamsError
from attnlib.models import config_class, config_fields, count_parameters, create_model, model_config
from attnlib.training import dry_run, schedule, speed
from attnlib.training.train import TRAIN_FIELDS, RunInfo, TrainConfig, TrainingError, TrainSettings, fit, resolve_device

if TYPE_CHECKING:  # the parameters are checked with this module's grid (params imports it), not the reverse
    from attnlib.experiments.params import TrainParams

GRID_AXES = ("heads", "hierarchical")  # set at the top level, for every model that has them
DATA_OPTIONS = ("image_size", "in_channels", "num_classes")  # the data set decides them


def heads_for(p: TrainParams, name: str) -> list[int | None]:
    """The head counts to train `name` with: `heads`, or [None] for a model without heads."""
    return list(p.heads) if "heads" in config_fields(name) else [None]


def hierarchical_for(p: TrainParams, name: str) -> list[bool]:
    """The weight-sharing settings to train `name` with: `hierarchical`, or [False] where it has none."""
    return list(dict.fromkeys(p.hierarchical)) if "hierarchical" in config_fields(name) else [False]


def variants(p: TrainParams, name: str) -> Iterator[tuple[int | None, bool]]:
    """Every (heads, hierarchical) `name` is trained with."""
    return itertools.product(heads_for(p, name), hierarchical_for(p, name))


def model_overrides(p: TrainParams, name: str, heads: int | None, hierarchical: bool = False) -> dict:
    """The options `name` is built with: the shared architecture fields its config has, then per_model's."""
    have = config_fields(name)
    shared = dict(heads=heads, layers=p.layers, hidden=p.hidden, head_dim=p.head_dim, ff=p.ff,
                  downsample=p.downsample, patch_size=p.downsample, dropout=p.dropout,
                  attn_dropout=p.dropout, hierarchical=hierarchical)
    out = {k: v for k, v in shared.items() if k in have and v is not None}
    out.update({k: v for k, v in p.per_model.get(name, {}).items() if k not in TRAIN_FIELDS})
    return out


def train_settings(p: TrainParams, name: str) -> dict:
    """The training fields `name` trains with: the shared ones, with per_model's on top."""
    own = {k: v for k, v in p.per_model.get(name, {}).items() if k in TRAIN_FIELDS}
    return {**{k: getattr(p, k) for k in TRAIN_FIELDS}, **own}


def train_config(p: TrainParams, seed: int, name: str | None = None) -> TrainConfig:
    """One run's training config: the notebook's training fields (those of model `name`), and the seed."""
    values = train_settings(p, name) if name else {k: getattr(p, k) for k in TRAIN_FIELDS}
    return TrainConfig(**copy.deepcopy(values), seed=seed)


def check_grid(p: TrainParams, where: str) -> None:
    """Raise ParamsError, one line naming `where` and the key, unless every model of the grid can be built and
    trained: per_model names models of the grid and options they have, with values of the right type, and
    every configuration builds for every image shape the data set may give."""
    for name, options in p.per_model.items():
        key = f"per_model.{name}"
        if name not in p.models:
            raise ParamsError(f"{where}: per_model names {name!r}, which is not in models {p.models}")
        model_options = config_fields(name) - {*GRID_AXES, *DATA_OPTIONS}  # the grid's axes are set at the top level
        schema.check_options(where, key, options, {**dict.fromkeys(model_options, config_class(name)),
                                                   **dict.fromkeys(TRAIN_FIELDS, TrainSettings)})
        try:
            train_config(p, 0, name)
        except ValueError as err:
            raise ParamsError(f"{where}: {key}.{err}") from None
    shapes = image_shapes(p.dataset, p.synthetic_image_size)
    for name in p.models:
        if {"downsample", "patch_size"} & config_fields(name):
            for side, _ in shapes:
                if side % p.downsample:
                    raise ParamsError(f"{where}: downsample {p.downsample} does not divide the {side}-pixel images "
                                      f"of dataset={p.dataset}")
        for (side, channels), (heads, shared) in itertools.product(shapes, variants(p, name)):
            try:
                model_config(name, **model_overrides(p, name, heads, shared), image_size=side, in_channels=channels)
            except ValueError as err:
                key = f"per_model.{name}" if name in p.per_model else "models"
                raise ParamsError(f"{where}: {key} gives {name} an invalid configuration for {side}x{side}x{channels} "
                                  f"images: {err}") from None


def batch_sizes(p: TrainParams) -> list[int]:
    """The batch size of each model of the grid, as it trains."""
    return [train_settings(p, name)["batch_size"] for name in p.models]


def data_key(p: TrainParams) -> tuple:
    """What decides the data that load_data(p) gives: notebooks with equal keys share one load."""
    return (p.dataset, p.data_root, p.train_subset, p.test_subset, p.synthetic_image_size, p.dry_run,
            tuple(batch_sizes(p)) if p.dry_run else ())


def load_data(p: TrainParams) -> Dataset:
    """The notebook's data; in a dry run, enough of it (or of generated images of its shape) for N steps."""
    if p.dry_run:
        return dry_run.data(p.dataset, p.data_root, p.dry_run, batch_sizes(p), p.download, p.synthetic_image_size)
    return load_dataset(p.dataset, p.data_root, p.train_subset, p.test_subset, download=p.download,
                        image_size=p.synthetic_image_size)


def variant_name(heads: int | None, hierarchical: bool) -> str:
    """What sets this run apart within its model: head count, weight sharing ("standard" otherwise)."""
    parts = [f"{heads} heads"] if heads else []
    if hierarchical:
        parts.append("hierarchical")
    return ", ".join(parts) or "standard"


def run_id(model: str, heads: int | None, seed: int, fingerprint: dict, hierarchical: bool = False) -> str:
    return f"{model}{f'-h{heads}' if heads else ''}{'-hier' if hierarchical else ''}-s{seed}-{results.digest(fingerprint)}"


@dataclass
class PlannedRun:
    run_id: str
    model: str
    heads: int | None  # None for a model without heads (ResNet, SAN)
    seed: int
    variant: str
    overrides: dict
    train: TrainConfig
    hierarchical: bool = False
    train_images: int = 0  # a dry run's: the first this many training images (one epoch of N steps); 0: all


def plan(p: TrainParams, data: Dataset) -> list[PlannedRun]:
    """Every (model, heads, hierarchical, seed) run of `p` on `data`, with its id, model overrides and training
    config."""
    runs = []
    for name in p.models:
        for heads, shared in variants(p, name):
            overrides = {**model_overrides(p, name, heads, shared), **data.model_overrides()}
            for seed in p.seeds:
                cfg = train_config(p, seed, name)
                n_train = len(data.x_train)
                if p.dry_run:  # one epoch of dry_run steps (attnlib.training.dry_run)
                    cfg, n_train = replace(cfg, epochs=1), min(n_train, p.dry_run * cfg.batch_size)
                fingerprint = {"model": name, "config": asdict(model_config(name, **overrides)),
                               "train": asdict(cfg), "data": [data.name, n_train, len(data.x_test)]}
                runs.append(PlannedRun(run_id(name, heads, seed, fingerprint, shared), name, heads, seed,
                                       variant_name(heads, shared), overrides, cfg, shared,
                                       n_train if p.dry_run else 0))
    return runs


def train_run(p: TrainParams, experiment: str, run: PlannedRun, data: Dataset, device: torch.device,
              progress: bool = True, label: str = "", lead: bool = True) -> list[dict]:
    """Train one planned run (or resume it, or read it back when finished) on `device`: its metric rows. In a
    dry run (attnlib.training.dry_run) it trains on its share of `data` and records what it measured. Under DDP
    (attnlib.experiments.distributed) every rank calls it, and only the `lead` rank (0) records."""
    torch.manual_seed(run.seed)
    model = create_model(run.model, **run.overrides)
    if progress:
        print(f"--- run {label}{run.run_id}: {run.model}, {run.variant}, seed {run.seed}, "
              f"{count_parameters(model):,} parameters, {run.train.epochs} epochs on {data.name} ({device})", flush=True)
    info = RunInfo(run.run_id, experiment, run.model, run.variant, data.name, p.profile)
    options = speed.options(p)  # TF32, torch.compile, channels-last: not part of the run's id
    measured = p.dry_run and dry_run.measured(p.results_dir, p.profile, experiment, run.run_id)
    if not p.dry_run or measured:  # a dry run already measured is read back like any finished run
        return fit(model, dry_run.run_data(data, p.dry_run, run.train.batch_size) if measured else data, run.train,
                   info, p.results_dir, device, progress=progress, speed=options)
    data = dry_run.run_data(data, p.dry_run, run.train.batch_size)
    with dry_run.PeakMemory(device) as peak:
        history = fit(model, data, run.train, info, p.results_dir, device, progress=progress, speed=options)
    if lead:
        dry_run.finish(run, experiment, p.profile, p.results_dir, model, data, history, peak, device,
                       train_config(p, run.seed, run.model).epochs, _full_dataset(p, data))
    return history


def run_grid(p: TrainParams, experiment: str, data: Dataset | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every planned run of `p` (resuming or skipping finished ones); return their metric rows. On several
    devices (`p.devices`; none listed: every visible GPU when device is auto) the runs are spread over them, one
    worker each (attnlib.training.schedule), with the same ids and numbers; a failed run stops no other, and afterwards
    TrainingError names the failed ones in one line. A dry run (attnlib.training.dry_run) trains every run in a process
    of its own: a run that does not fit in memory is recorded as such, and the others go on."""
    data = data or load_data(p)
    devices = schedule.devices(p.devices, p.device)
    runs = plan(p, data)
    results.remove_stale_temp_files(results.profile_dir(p.results_dir, p.profile))  # left by a killed run
    labels = {r.run_id: f"{i}/{len(runs)} " for i, r in enumerate(runs, 1)}
    todo = runs
    if p.dry_run:  # the runs measured already are read back here; the others each train in a process of their own
        done = [r for r in runs if dry_run.measured(p.results_dir, p.profile, experiment, r.run_id)]
        for r in done:
            train_run(p, experiment, r, data, resolve_device(devices[0]), progress, label=labels[r.run_id])
        todo = [r for r in runs if r not in done]
    if not p.dry_run and (len(devices) == 1 or len(runs) == 1):
        device = resolve_device(devices[0])
        for r in runs:
            train_run(p, experiment, r, data, device, progress, label=labels[r.run_id])
    elif todo:
        jobs = [(labels[r.run_id], r) for r in todo]
        devices = [str(resolve_device(d)) for d in devices]  # auto: what it means here
        summary = schedule.run(jobs, devices, functools.partial(_train_job, p, experiment, data, progress),
                               name=_job_name, one_job_each=bool(p.dry_run))
        for (_, r), o in zip(jobs, summary.outcomes):
            if p.dry_run and o.out_of_memory:  # what a dry run finds out, not its failure
                _does_not_fit(p, experiment, r, data, o)
        failed = [o for o in summary.failed if not (p.dry_run and o.out_of_memory)]
        if failed:
            raise TrainingError(summary.error(failed))
    df = results.read_metrics(results.metrics_path(p.results_dir, p.profile, experiment))
    df = df[df["run_id"].isin([r.run_id for r in runs])]
    if len(devices) > 1:  # the rows in the plan's order, as one device writes them
        order = {r.run_id: i for i, r in enumerate(runs)}
        df = df.sort_values("run_id", key=lambda ids: ids.map(order), kind="stable")
    return df.reset_index(drop=True)


def _train_job(p: TrainParams, experiment: str, data: Dataset, progress: bool, job: tuple[str, PlannedRun],
               device: torch.device):
    """One run of a grid spread over devices, in a worker of attnlib.training.schedule."""
    label, run = job
    train_run(p, experiment, run, data, device, progress, label=label)


def _does_not_fit(p: TrainParams, experiment: str, run: PlannedRun, data: Dataset, outcome: schedule.Outcome):
    """Record that a dry run's run ran out of memory on its worker's device."""
    device = torch.device(outcome.worker.partition("#")[0] or "cpu")
    with torch.device("meta"):  # its parameters counted without their memory
        params = count_parameters(create_model(run.model, **run.overrides))
    dry_run.does_not_fit(run, experiment, p.profile, p.results_dir, data.name, device, params, outcome.error,
                         outcome.peak_mb, train_config(p, run.seed, run.model).epochs, _full_dataset(p, data))


def _full_dataset(p: TrainParams, data: Dataset) -> str:
    """The data set a dry run's projection is for: the profile's (CIFAR-10 where it trained on its stand-in)."""
    return p.dataset if p.dataset in dry_run.FULL_SIZE else data.name


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
            raise results.DamagedCheckpoint(path, results.error_line(err)) from None
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
