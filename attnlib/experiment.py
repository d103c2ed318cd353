"""Run a notebook's grid of training runs (models x heads x seeds) from its TrainParams.

Each run gets an id that names it and fingerprints everything that shapes its numbers (model
config, training config, data set), so changed parameters start a new run instead of resuming
an old checkpoint, and an unchanged finished run is read back instead of retrained.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass, fields

import pandas as pd
import torch

from attnlib import results
from attnlib.data import Dataset, load_dataset
from attnlib.models import count_parameters, create_model, model_config
from attnlib.params import TrainParams
from attnlib.train import RunInfo, TrainConfig, TrainingError, fit, resolve_device


def load_data(p: TrainParams) -> Dataset:
    return load_dataset(p.dataset, p.data_root, p.train_subset, p.test_subset, download=p.download,
                        image_size=p.synthetic_image_size)


def train_config(p: TrainParams, seed: int) -> TrainConfig:
    """The training fields of the notebook's parameters (same names), for one seed."""
    values = {f.name: getattr(p, f.name) for f in fields(TrainConfig) if f.name != "seed"}
    return TrainConfig(**copy.deepcopy(values), seed=seed)


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


def plan(p: TrainParams, data: Dataset) -> list[PlannedRun]:
    """Every (model, heads, seed) run of `p` on `data`, with its id, model overrides and training config."""
    runs = []
    for model_name in p.models:
        for heads, shared in itertools.product(p.heads_for(model_name), p.hierarchical_for(model_name)):
            overrides = {**p.model_overrides(model_name, heads, shared), **data.model_overrides()}
            for seed in p.seeds:
                cfg = train_config(p.for_model(model_name), seed)
                fingerprint = {"model": model_name, "config": asdict(model_config(model_name, **overrides)),
                               "train": asdict(cfg), "data": [data.name, len(data.x_train), len(data.x_test)]}
                runs.append(PlannedRun(run_id(model_name, heads, seed, fingerprint, shared), model_name, heads, seed,
                                       variant_name(heads, shared), overrides, cfg, shared))
    return runs


def run_grid(p: TrainParams, experiment: str, data: Dataset | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every planned run of `p` (resuming or skipping finished ones); return their metric rows."""
    data = data or load_data(p)
    device = resolve_device(p.device)
    runs = plan(p, data)
    results.remove_stale_temp_files(results.profile_dir(p.results_dir, p.profile))  # left by a killed run
    for i, r in enumerate(runs, 1):
        torch.manual_seed(r.seed)
        model = create_model(r.model, **r.overrides)
        if progress:
            print(f"--- run {i}/{len(runs)} {r.run_id}: {r.model}, {r.variant}, seed {r.seed}, "
                  f"{count_parameters(model):,} parameters, {r.train.epochs} epochs on {data.name} ({device})", flush=True)
        info = RunInfo(r.run_id, experiment, r.model, r.variant, data.name, p.profile)
        fit(model, data, r.train, info, p.results_dir, device, progress=progress)
    df = results.read_metrics(results.metrics_path(p.results_dir, p.profile, experiment))
    return df[df["run_id"].isin([r.run_id for r in runs])].reset_index(drop=True)


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
