"""A training notebook's grid of runs (models x heads x hierarchical x seeds), resolved from its TrainParams:
checked and planned, each run with its id.

Each run gets an id that names it and fingerprints everything that shapes its numbers (model
config, training config, data set, whether its labels are shuffled, and the code that trains and records it:
attnlib.experiments.code_digest), so changed parameters or code start a new run instead of resuming an old
checkpoint, and an unchanged finished run is read back instead of retrained.

Beside the trained runs, a grid may hold shuffled-label controls (`control_seeds`): each model again, with the same
steps, schedule, learning rate and seed, on permuted training labels. What such a run changes in the attention is
what training does without learning the task, the baseline of every learning verdict (attnlib.evidence.claims).

The grid is resolved here and only here: which head counts and weight-sharing settings a model is
trained with, the options it is built with (the shared architecture fields it has, then its own
`per_model` options), and the training fields it trains with (the shared ones, or its `per_model` ones).
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import asdict, dataclass
from typing import Iterator

from attnlib import results, schema
from attnlib.data import Dataset, image_shapes
from attnlib.experiments.code_digest import training_code
from attnlib.experiments.modes import mode_of
from attnlib.experiments.settings import TrainParams
from attnlib.models import config_class, config_fields, model_config
from attnlib.schema import ParamsError
from attnlib.training.train import TRAIN_FIELDS, TrainConfig, TrainSettings

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


def variant_name(heads: int | None, hierarchical: bool, shuffled: bool = False) -> str:
    """What sets this run apart within its model: head count, weight sharing ("standard" otherwise), and for a
    control its shuffled labels."""
    parts = [f"{heads} heads"] if heads else []
    if hierarchical:
        parts.append("hierarchical")
    if shuffled:
        parts.append(results.SHUFFLED_LABELS)
    return ", ".join(parts) or "standard"


def run_id(model: str, heads: int | None, seed: int, fingerprint: dict, hierarchical: bool = False,
           shuffled: bool = False) -> str:
    kind = f"{f'-h{heads}' if heads else ''}{'-hier' if hierarchical else ''}{'-shuffled' if shuffled else ''}"
    return f"{model}{kind}-s{seed}-{results.digest(fingerprint)}"


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
    shuffled: bool = False  # a shuffled-label control: trained on permuted training labels


def plan(p: TrainParams, data: Dataset) -> list[PlannedRun]:
    """Every (model, heads, hierarchical, seed) run of `p` on `data`, with its id, model overrides and training
    config, then the shuffled-label controls (`p.control_seeds` of `p.control_models`, each at the first head count
    and without weight sharing, the variant the claims read); in a dry run (attnlib.experiments.modes) one epoch of
    its steps each."""
    mode = mode_of(p)
    runs = []
    controlled = [m for m in p.models if m in p.control_models] if p.control_models else p.models
    for shuffled, seeds in ((False, p.seeds), (True, p.control_seeds)):
        for name in (controlled if shuffled else p.models):
            for heads, shared in (list(variants(p, name))[:1] if shuffled else variants(p, name)):
                overrides = {**model_overrides(p, name, heads, shared), **data.model_overrides()}
                for seed in seeds:
                    cfg, n_train, train_images = mode.sized(train_config(p, seed, name), len(data.x_train))
                    fingerprint = {"model": name, "config": asdict(model_config(name, **overrides)),
                                   "train": asdict(cfg), "data": [data.name, n_train, len(data.x_test)],
                                   "code": training_code(), **({"labels": "shuffled"} if shuffled else {})}
                    runs.append(PlannedRun(run_id(name, heads, seed, fingerprint, shared, shuffled), name, heads,
                                           seed, variant_name(heads, shared, shuffled), overrides, cfg, shared,
                                           train_images, shuffled))
    return runs
