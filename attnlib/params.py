"""Typed notebook parameters, loaded from params/<profile>/<notebook>.yaml and checked before work starts.

A parameter file may set any field of the notebook's dataclass and nothing else. An unknown key, a
wrong type or an impossible value (NaN or infinity anywhere, a key given twice, a schedule that cannot
work, a run too long to be meant) raises ParamsError with one line naming the file and the key; so does
a file that is empty, not UTF-8 or not a file. `python -m attnlib.params FILE...` checks files from the
shell (exit status 2 on the first error).
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from attnlib.data import DATASETS
from attnlib.results import one_line
from attnlib.train import TrainConfig

PRECISIONS = ("fp32", "bf16")
SCHEDULES = ("cosine", "step", "constant")
PROFILES = ("smoke", "quick", "evidence", "paper")
REPO_ROOT = Path(__file__).resolve().parent.parent  # params/, results/ and data/ are found from here
PATH_FIELDS = ("data_root", "params_dir", "results_dir")
# Training fields a model may set for itself under per_model; the data set decides the DATA_OPTIONS.
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "seed")
DATA_OPTIONS = ("image_size", "in_channels", "num_classes")
MAX_EPOCHS = 10_000  # the paper trains 300; more is a typo, not a run
MAX_SEED = 2**32  # seeds are in [0, 2**32): torch's generators take them, times the loader's epoch stride
MAX_IMAGE_SIZE = 1024  # generated images (synthetic_image_size)


class ParamsError(ValueError):
    """Bad parameters; the message is one line naming the key and what to fix."""


def _fail(where: str, key: str, why: str):
    raise ParamsError(f"{where}: {key} {why}")


def _finite(value) -> bool:
    """False for a NaN or an infinity, also inside lists and mappings (YAML's .nan and .inf)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def _check_model_option(bad, key: str, name: str, value):
    """Checks a model's config does not make itself: list items' types, dropout ranges, finite numbers."""
    if not _finite(value):
        bad(key, f"must be a finite number, got {value!r}")
    if isinstance(value, list) and any(isinstance(v, (str, bool)) or not isinstance(v, (int, float)) for v in value):
        bad(key, f"must be a list of numbers, got {value!r}")
    if name.endswith("dropout") and isinstance(value, (int, float)) and not 0 <= value < 1:
        bad(key, f"must be in [0, 1), got {value}")


def _check_device(bad, device: str):
    if device != "auto" and not (device == "cpu" or device.startswith("cuda")):
        bad("device", f"must be auto, cpu or cuda[:N], got {device!r}")


def _check_common(p, where: str):
    """The checks every notebook's parameters share: profile and dataset."""
    for key, choices in (("profile", PROFILES), ("dataset", DATASETS)):
        if getattr(p, key) not in choices:
            _fail(where, key, f"must be one of {', '.join(choices)}, got {getattr(p, key)!r}")


@dataclass
class TrainParams:
    """Parameters of a training notebook (01_learned_2d, 02_quadratic, ...). Defaults: the paper's."""

    profile: str = "paper"
    # data
    dataset: str = "auto"  # auto | cifar10 | fashion_mnist | synthetic
    data_root: str = "data"
    download: bool = True  # CIFAR-10 may be downloaded where the network allows
    train_subset: int = 0  # 0: the whole training set
    test_subset: int = 0
    synthetic_image_size: int = 16  # only for dataset=synthetic
    # Every combination of models x heads x hierarchical x seeds is trained. The architecture fields
    # go to every model whose config has a field of that name and are ignored by the others (ResNet
    # has no heads); per_model sets anything model-specific.
    models: list[str] = field(default_factory=lambda: ["sa_quadratic"])
    heads: list[int] = field(default_factory=lambda: [9])
    layers: int = 6
    hidden: int = 400
    head_dim: int = 0  # 0: the model's default (SA: equal to hidden, as in the paper; ViT: hidden // heads)
    ff: int = 512
    downsample: int = 2  # each d x d block of pixels becomes one token (SA: invertible downsampling; ViT: patch size)
    dropout: float = 0.1  # on hidden states and attention probabilities
    hierarchical: list[bool] = field(default_factory=lambda: [False])  # [Re]'s weight sharing; [False, True]: both
    # {model: {key: value}}: that model's own options (e.g. widths for SAN, width for ResNet) and the
    # training fields it trains with instead of the ones above (e.g. lr, milestones).
    per_model: dict = field(default_factory=dict)
    # training (docs/paper.md section 3)
    epochs: int = 300
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine: linear warm-up then cosine to 0; step: x gamma at milestones
    warmup: float = 0.05  # fraction of all steps spent in linear warm-up
    milestones: list[int] = field(default_factory=list)  # epochs, for schedule=step
    gamma: float = 0.1
    label_smoothing: float = 0.0
    augment: bool = True  # the paper's random crop (padding 4) and horizontal flip of training images
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    seeds: list[int] = field(default_factory=lambda: [42])
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    results_dir: str = "results"

    def validate(self, where: str = "parameters") -> "TrainParams":
        bad = functools.partial(_fail, where)
        _check_common(self, where)
        from attnlib.models import config_fields, list_models, model_config
        for m in self.models:
            if m not in list_models():
                bad("models", f"names unknown model {m!r}; choose from {', '.join(list_models())}")
        if not self.models:
            bad("models", "is empty: name at least one model")
        for key in ("heads", "hierarchical", "seeds"):
            if not getattr(self, key):
                bad(key, "is empty")
        for key in ("layers", "hidden", "ff", "downsample", "synthetic_image_size"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1, got {getattr(self, key)}")
        if self.synthetic_image_size > MAX_IMAGE_SIZE:
            bad("synthetic_image_size", f"must be at most {MAX_IMAGE_SIZE}, got {self.synthetic_image_size}")
        if any(h < 1 for h in self.heads):
            bad("heads", f"must all be at least 1, got {self.heads}")
        if any(not 0 <= seed < MAX_SEED for seed in self.seeds):
            bad("seeds", f"must all be in [0, 2**32), got {self.seeds}")
        for key in ("train_subset", "test_subset", "head_dim"):
            if getattr(self, key) < 0:
                bad(key, f"must not be negative, got {getattr(self, key)}")
        if not 0 <= self.dropout < 1:
            bad("dropout", f"must be in [0, 1), got {self.dropout}")
        self._check_training(bad)
        sizes = {"cifar10": [32], "fashion_mnist": [28], "auto": [32, 28],
                 "synthetic": [self.synthetic_image_size]}[self.dataset]
        if any({"downsample", "patch_size"} & config_fields(m) for m in self.models):
            for size in sizes:
                if size % self.downsample:
                    bad("downsample", f"{self.downsample} does not divide the {size}-pixel images of dataset={self.dataset}")
        _check_device(bad, self.device)
        self._check_per_model(bad)
        channels = {"cifar10": [3], "fashion_mnist": [1], "auto": [3, 1], "synthetic": [3]}[self.dataset]
        for name in self.models:  # every model can be built for every image size the data set may have
            for size in sizes:
                for c in channels:
                    for heads, shared in itertools.product(self.heads_for(name), self.hierarchical_for(name)):
                        try:
                            model_config(name, **self.model_overrides(name, heads, shared), image_size=size,
                                         in_channels=c)
                        except (ValueError, TypeError) as err:
                            key = f"per_model.{name}" if name in self.per_model else "models"
                            bad(key, f"gives {name} an invalid configuration for {size}x{size}x{c} images: {err}")
        return self

    def _check_training(self, bad):
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1, got {getattr(self, key)}")
        if self.epochs > MAX_EPOCHS:
            bad("epochs", f"must be at most {MAX_EPOCHS:,} (the paper trains 300), got {self.epochs:,}")
        for key in ("lr", "momentum", "weight_decay", "warmup", "gamma", "label_smoothing"):
            if not _finite(getattr(self, key)):
                bad(key, f"must be a finite number, got {getattr(self, key)}")
        for key in ("weight_decay", "momentum", "label_smoothing"):
            if getattr(self, key) < 0:
                bad(key, f"must not be negative, got {getattr(self, key)}")
        if self.momentum >= 1:
            bad("momentum", f"must be below 1 (SGD diverges otherwise), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            bad("nesterov", "needs a momentum above 0")
        if not 0 <= self.warmup < 1:
            bad("warmup", f"must be a fraction of the steps in [0, 1), got {self.warmup}")
        if not self.lr > 0:
            bad("lr", f"must be positive, got {self.lr}")
        if self.label_smoothing >= 1:
            bad("label_smoothing", f"must be below 1, got {self.label_smoothing}")
        if self.precision not in PRECISIONS:
            bad("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.gamma <= 1:
            bad("gamma", f"must be in (0, 1], the factor of the lr at each milestone, got {self.gamma}")
        if any(m < 1 for m in self.milestones):
            bad("milestones", f"must be epochs, at least 1, got {self.milestones}")
        if any(a >= b for a, b in zip(self.milestones, self.milestones[1:])):
            bad("milestones", f"must be increasing epochs, each once, got {self.milestones}")
        if self.schedule == "step" and not self.milestones:
            bad("milestones", "must list epochs when schedule is step")

    def _check_per_model(self, bad):
        from attnlib.models import config_fields
        hints = typing.get_type_hints(TrainParams)
        for name, options in self.per_model.items():
            if name not in self.models:
                bad("per_model", f"names {name!r}, which is not in models {self.models}")
            if not isinstance(options, dict):
                bad(f"per_model.{name}", f"must be a mapping of option: value, got {options!r}")
            # heads and hierarchical are the grid's axes, set at the top level for every model
            allowed = sorted((config_fields(name) - {"heads", "hierarchical", *DATA_OPTIONS}) | set(TRAIN_FIELDS))
            for key, value in options.items():
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    bad(f"per_model.{name}", f"has unknown option {key!r}{hint}; options: {', '.join(allowed)}")
                if key in TRAIN_FIELDS and not _check_type(value, hints[key]):
                    bad(f"per_model.{name}.{key}", f"must be {_type_name(hints[key])}, got {value!r}")
                _check_model_option(bad, f"per_model.{name}.{key}", key, value)
            self.for_model(name)._check_training(lambda key, why: bad(f"per_model.{name}.{key}", why))

    def for_model(self, name: str) -> "TrainParams":
        """These parameters with the training fields per_model sets for `name` (lr, epochs, ...)."""
        train = {k: v for k, v in self.per_model.get(name, {}).items() if k in TRAIN_FIELDS}
        return dataclasses.replace(self, **train) if train else self

    def heads_for(self, name: str) -> list[int | None]:
        """The head counts to train `name` with: `heads`, or [None] for a model without heads."""
        from attnlib.models import config_fields
        return list(self.heads) if "heads" in config_fields(name) else [None]

    def hierarchical_for(self, name: str) -> list[bool]:
        """The weight-sharing settings to train `name` with: `hierarchical`, or [False] where it has none."""
        from attnlib.models import config_fields
        return list(dict.fromkeys(self.hierarchical)) if "hierarchical" in config_fields(name) else [False]

    def model_overrides(self, name: str, heads: int | None, hierarchical: bool = False) -> dict:
        """The options `name` is built with: the architecture fields its config has, then per_model's."""
        from attnlib.models import config_fields
        have = config_fields(name)
        common = dict(heads=heads, layers=self.layers, hidden=self.hidden, head_dim=self.head_dim, ff=self.ff,
                      downsample=self.downsample, patch_size=self.downsample, dropout=self.dropout,
                      attn_dropout=self.dropout, hierarchical=hierarchical)
        out = {k: v for k, v in common.items() if k in have and v is not None}
        out.update({k: v for k, v in self.per_model.get(name, {}).items() if k not in TRAIN_FIELDS})
        return out


# Which dataclass each notebook's parameters cell follows. Notebooks not named here take TrainParams.
NOTEBOOK_PARAMS: dict[str, type] = {}


@dataclass
class ConvParams:
    """Parameters of notebook 00 (Theorem 1: a convolution as an attention layer). Defaults: the quick profile's."""

    profile: str = "paper"
    dataset: str = "auto"  # the image comes from this data set's test split
    data_root: str = "data"
    download: bool = True
    synthetic_image_size: int = 32  # only for dataset=synthetic
    image_index: int = 0  # which test image
    blur_kernel_size: int = 5  # Gaussian blur, one output channel per input channel
    blur_sigma: float = 1.0
    random_kernel_size: int = 5  # a random convolution with bias
    random_out_channels: int = 8
    alpha: float = 46.0  # sharpness of every head; attnlib.conv_as_attention.DEFAULT_ALPHA (a test keeps them equal)
    alphas: list[float] = field(default_factory=lambda: [0.5, 1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 25, 30, 35,
                                                         40, 46, 60, 80, 120])  # the error-vs-alpha sweep
    dtypes: list[str] = field(default_factory=lambda: ["float32", "float64"])
    seed: int = 0
    results_dir: str = "results"

    def validate(self, where: str = "parameters") -> "ConvParams":
        bad = functools.partial(_fail, where)
        _check_common(self, where)
        for key in ("blur_kernel_size", "random_kernel_size"):
            k = getattr(self, key)
            if k < 1 or k % 2 == 0:
                bad(key, f"must be odd and at least 1 (Theorem 1 needs a centre tap), got {k}")
        for key in ("random_out_channels", "synthetic_image_size"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1, got {getattr(self, key)}")
        if self.image_index < 0:
            bad("image_index", f"must not be negative, got {self.image_index}")
        if not self.blur_sigma > 0:
            bad("blur_sigma", f"must be positive, got {self.blur_sigma}")
        if not self.alpha > 0:
            bad("alpha", f"must be positive, got {self.alpha}")
        if not self.alphas:
            bad("alphas", "is empty: list the sharpness values of the error-vs-alpha plot")
        if any(not a > 0 for a in self.alphas):
            bad("alphas", f"must all be positive, got {self.alphas}")
        if not self.dtypes or any(d not in ("float32", "float64") for d in self.dtypes):
            bad("dtypes", f"must name float32 or float64, got {self.dtypes}")
        return self


NOTEBOOK_PARAMS["00_conv_as_attention"] = ConvParams


@dataclass
class TimingParams:
    """Parameters of notebook 06 (throughput, latency, FLOPs of every model). Defaults: the paper's."""

    profile: str = "paper"
    dataset: str = "auto"  # unused by the timing itself (random batches); kept so --dataset applies to all notebooks
    models: list[str] = field(default_factory=list)  # empty: every registered model
    hierarchical_models: list[str] = field(default_factory=lambda: ["sa_quadratic", "sa_learned_content", "vit"])
    per_model: dict = field(default_factory=dict)  # {model: {option: value}}; empty: the published size
    image_size: int = 32
    in_channels: int = 3
    train_batches: list[int] = field(default_factory=lambda: [8, 32])
    infer_batches: list[int] = field(default_factory=lambda: [32])
    precisions: list[str] = field(default_factory=lambda: ["fp32", "bf16"])
    warmup: int = 2
    reps: int = 5
    latency_reps: int = 20  # batch-1 inference calls
    remeasure: bool = False  # False: rows already in the CSV for the same settings are kept, not timed again
    device: str = "auto"
    results_dir: str = "results"

    def validate(self, where: str = "parameters") -> "TimingParams":
        bad = functools.partial(_fail, where)
        _check_common(self, where)
        from attnlib.models import list_models, model_config
        for key in ("models", "hierarchical_models"):
            for m in getattr(self, key):
                if m not in list_models():
                    bad(key, f"names unknown model {m!r}; choose from {', '.join(list_models())}")
        for key in ("train_batches", "infer_batches"):
            if any(b < 1 for b in getattr(self, key)):
                bad(key, f"must all be at least 1, got {getattr(self, key)}")
        for key in ("image_size", "in_channels", "warmup", "reps", "latency_reps"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1 (no timing without warm-up), got {getattr(self, key)}")
        if not self.precisions or any(p not in PRECISIONS for p in self.precisions):
            bad("precisions", f"must name {' or '.join(PRECISIONS)}, got {self.precisions}")
        _check_device(bad, self.device)
        for name, options in self.per_model.items():
            if name not in list_models():
                bad("per_model", f"names unknown model {name!r}")
            if not isinstance(options, dict):
                bad(f"per_model.{name}", f"must be a mapping of option: value, got {options!r}")
            for key, value in options.items():
                _check_model_option(bad, f"per_model.{name}.{key}", key, value)
        for name in self.timed_models():
            for shared in ([False, True] if name in self.hierarchical_models else [False]):
                try:
                    model_config(name, **self.model_overrides(name, shared))
                except (ValueError, TypeError) as err:
                    bad(f"per_model.{name}" if name in self.per_model else "models", f"gives {name} an invalid "
                        f"configuration: {err}")
        return self

    def timed_models(self) -> list[str]:
        from attnlib.models import list_models
        return list(self.models) or list_models()

    def model_overrides(self, name: str, hierarchical: bool = False) -> dict:
        out = {**self.per_model.get(name, {}), "image_size": self.image_size, "in_channels": self.in_channels}
        return {**out, "hierarchical": True} if hierarchical else out


NOTEBOOK_PARAMS["06_timing"] = TimingParams


@dataclass
class VizParams:
    """Parameters of notebook 07 (what the heads do), which reads the runs that notebooks 01-04 trained."""

    profile: str = "paper"
    dataset: str = ""  # "": the data set each training notebook's file names; else as the runner's --dataset
    data_root: str = "data"
    params_dir: str = "params"  # where <profile>/<notebook>.yaml of the training notebooks are
    results_dir: str = "results"
    experiments: list[str] = field(default_factory=lambda: ["01_learned_2d", "02_quadratic", "03_san", "04_vit"])
    centers_experiment: str = "02_quadratic"  # whose recorded centers are drawn (quadratic models)
    trajectory_layer: int = 1  # the layer whose centers are followed across training
    image_index: int = 0  # the test image of the per-query figures
    query_row: int = -1  # query pixel; -1: the middle of the image
    query_col: int = -1
    average_images: int = 100  # the paper averages content-based attention over 100 test images
    max_heads: int = 16  # columns per figure (SAN has many weight groups)
    zoom: bool = True  # per-query figures show the 7x7 token neighbourhood of the query, as the paper's
    device: str = "auto"
    # results/<profile>/explorer.html (the static explorer): this many test images, each run's maps on them
    page_images: int = 6
    own_image: str = ""  # an image file of yours, explored like a test image (and put in the page); "": none

    def validate(self, where: str = "parameters") -> "VizParams":
        bad = functools.partial(_fail, where)
        if self.profile not in PROFILES:
            bad("profile", f"must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.dataset and self.dataset not in DATASETS:
            bad("dataset", f"must be empty (each notebook's own) or one of {', '.join(DATASETS)}, got {self.dataset!r}")
        if not self.experiments:
            bad("experiments", "is empty: name the training notebooks whose runs to show, e.g. 02_quadratic")
        training = training_notebooks()
        for name in [*self.experiments, self.centers_experiment]:
            if name not in training:
                close = difflib.get_close_matches(str(name), training, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                bad("experiments" if name in self.experiments else "centers_experiment",
                    f"names {name!r}, which is not a training notebook under notebooks/{hint}; choose from "
                    f"{', '.join(training)}")
        for key in ("trajectory_layer", "average_images", "max_heads", "page_images"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1, got {getattr(self, key)}")
        if self.image_index < 0:
            bad("image_index", f"must not be negative, got {self.image_index}")
        for key in ("query_row", "query_col"):
            if getattr(self, key) < -1:
                bad(key, f"must be a pixel index or -1 (the middle), got {getattr(self, key)}")
        _check_device(bad, self.device)
        return self


NOTEBOOK_PARAMS["07_visualizations"] = VizParams


@dataclass
class ReportParams:
    """Parameters of notebook 08 (the report), which reads results/<profile>/ and never trains."""

    profile: str = "paper"
    dataset: str = ""  # unused: the report states each result's own data set; kept so --dataset applies to all
    results_dir: str = "results"

    def validate(self, where: str = "parameters") -> "ReportParams":
        if self.profile not in PROFILES:
            _fail(where, "profile", f"must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        return self


NOTEBOOK_PARAMS["08_report"] = ReportParams


def params_class(notebook: str) -> type:
    return NOTEBOOK_PARAMS.get(Path(notebook).stem, TrainParams)


def training_notebooks() -> list[str]:
    """The numbered notebooks under notebooks/ that train (their parameters are TrainParams)."""
    return sorted(nb.stem for nb in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")
                  if params_class(nb.stem) is TrainParams)


def _check_type(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_check_type(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    return hint.__name__


def from_mapping(cls: type, values: dict, where: str = "parameters"):
    """Build and validate `cls` from a mapping; unknown keys and wrong types raise ParamsError."""
    if not isinstance(values, dict):
        raise ParamsError(f"{where}: expected a mapping of key: value, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ParamsError(f"{where}: unknown key {key!r}{hint}")
        if not _check_type(value, hints[key]):
            raise ParamsError(f"{where}: {key} must be {_type_name(hints[key])}, got {value!r}")
        if not _finite(value) and key != "per_model":  # per_model's options are checked one by one
            raise ParamsError(f"{where}: {key} must be {'finite numbers' if isinstance(value, list) else 'a finite number'}"
                              f", got {value!r}")
        kwargs[key] = float(value) if hints[key] is float else value
    obj = cls(**kwargs)
    return obj.validate(where) if hasattr(obj, "validate") else obj


class _DuplicateKey(Exception):
    def __init__(self, key, first: int, again: int):
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error instead of the last one
    silently winning."""


def _construct_unique_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # the safe loader reports unhashable keys itself
        line = key_node.start_mark.line + 1
        if key in seen:
            raise _DuplicateKey(key, seen[key], line)
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: str | Path):
    """The YAML in a parameter file; anything that keeps it from being one (no file, a folder, not UTF-8, not
    YAML, a key given twice) raises ParamsError in one line naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ParamsError(f"{path}: is a folder, not a parameter file (name a .yaml file)")
    if not path.exists():
        raise ParamsError(f"{path}: no such parameter file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParamsError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                          "save it as UTF-8") from None
    except OSError as err:
        raise ParamsError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as err:
        raise ParamsError(f"{path}: key {err.key!r} is given twice (lines {err.first} and {err.again}); "
                          "keep one") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = one_line(getattr(err, "problem", None) or err)
        raise ParamsError(f"{path}: not valid YAML{at}: {problem}") from None


def load(path: str | Path, cls: type | None = None):
    """Load and validate a parameter file; the class defaults to the notebook's (by file name). A file under
    a profile's folder (params/quick/...) must name that profile, or none. An empty file is refused: it would
    silently mean the dataclass's defaults, which are the paper's settings."""
    path = Path(path)
    values = read_yaml(path)
    folder = path.parent.name
    if values is None or values == {}:
        example = folder if folder in PROFILES else "smoke"
        raise ParamsError(f"{path}: is empty; name at least its profile (profile: {example}) and the settings to "
                          f"change (see params/{example}/ for examples); an empty file would mean the paper's settings")
    if isinstance(values, dict) and folder in PROFILES and values.get("profile", folder) != folder:
        raise ParamsError(f"{path}: profile is {values['profile']!r} but the file lies in the {folder!r} profile's "
                          f"folder; set profile: {folder} or move the file")
    return from_mapping(cls or params_class(path.stem), values, where=str(path))


def load_with(path: str | Path, overrides: dict, where: str | None = None):
    """A parameter file with some fields replaced (the runner's command line, notebook 07's profile and
    folders), checked as a whole again."""
    base = load(path)
    return from_mapping(type(base), {**dataclasses.asdict(base), **overrides}, where=where or f"{path} (with overrides)")


def for_notebook(notebook: str, namespace: dict):
    """A notebook's parameters: params/<profile>/<notebook>.yaml, the one source of its settings, for the
    profile the notebook's globals name, with every field its globals set on top (papermill's injected cell,
    or a user's own line in the parameters cell). Relative folders are taken from the repository's root, so
    a notebook runs the same from JupyterLab, from the runner and from `papermill -f FILE`."""
    cls = params_class(notebook)
    given = {f.name: namespace[f.name] for f in dataclasses.fields(cls) if f.name in namespace}
    profile = given.get("profile", "smoke")
    params_dir = _from_root(namespace.get("params_dir", "params"))
    path = Path(params_dir) / str(profile) / f"{notebook}.yaml"
    base = dataclasses.asdict(load(path, cls)) if str(profile) in PROFILES else {}
    values = {**base, **given}
    for key in PATH_FIELDS:
        if key in values:
            values[key] = _from_root(values[key])
    return from_mapping(cls, values, where=f"{path} with the notebook's parameters")


def _from_root(folder: str) -> str:
    """A relative folder as seen from the repository's root (absolute ones are kept)."""
    return folder if Path(folder).is_absolute() else str(REPO_ROOT / folder)


def main(argv: list[str] | None = None) -> int:
    files = sys.argv[1:] if argv is None else argv
    for f in files:
        try:
            load(f)
        except ParamsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(f"ok: {len(files)} parameter file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
