"""The parameters of every notebook as typed dataclasses, with the checks of their values: TrainParams for the
training notebooks (01-05), ConvParams (00), TimingParams (06), VizParams (07), ReportParams (08). Defaults are
the paper's; the profiles' YAML files (attnlib.experiments.params) set what differs."""
from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path

from attnlib import schema
from attnlib.data import DATASETS
from attnlib.models import config_class, config_fields, list_models, model_config
from attnlib.schema import ParamsError
from attnlib.training import schedule
from attnlib.training.train import FASTEST, PRECISIONS, TrainSettings

PROFILES = ("smoke", "quick", "evidence", "paper")

REPO_ROOT = Path(__file__).resolve().parents[2]  # params/, results/ and data/ are found from here


MAX_SEED = 2**32  # seeds are in [0, 2**32): torch's generators take them, times the loader's epoch stride


MAX_IMAGE_SIZE = 1024  # generated images (synthetic_image_size)


def _fail(where: str, key: str, why: str):
    raise ParamsError(f"{where}: {key} {why}")


def _check_device(bad, device: str):
    if device != "auto" and not (device == "cpu" or device.startswith("cuda")):
        bad("device", f"must be auto, cpu or cuda[:N], got {device!r}")


def _check_common(p, where: str):
    """The checks every notebook's parameters share: profile and dataset."""
    for key, choices in (("profile", PROFILES), ("dataset", DATASETS)):
        if getattr(p, key) not in choices:
            _fail(where, key, f"must be one of {', '.join(choices)}, got {getattr(p, key)!r}")


def _check_models(bad, key: str, names: list[str]):
    for m in names:
        if m not in list_models():
            bad(key, f"names unknown model {m!r}; choose from {', '.join(list_models())}")


@dataclass
class TrainParams(TrainSettings):
    """Parameters of a training notebook (01_learned_2d, 02_quadratic, ...): the training settings
    (attnlib.training.train.TrainSettings: epochs, lr, schedule, ...), the data, and the grid of runs. Defaults: the
    paper's. How the grid resolves into runs is attnlib.experiments.runs's (one place)."""

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
    seeds: list[int] = field(default_factory=lambda: [42])
    # shuffled-label controls: the models of the grid also train with these of its seeds on permuted training labels,
    # with the same steps, schedule and learning rate; what they change in the attention is the learning verdicts'
    # baseline. control_models: the models of the grid that get them (empty: every model)
    control_seeds: list[int] = field(default_factory=list)
    control_models: list[str] = field(default_factory=list)
    retrain: bool = False  # true: every run trains from its first epoch, its checkpoint replaced (the runner's --force)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # the runs spread over these, one worker each (attnlib.training.schedule): cpu, cuda, cuda:N or N (cuda:N); a device
    # may repeat (two workers on it). Empty: every visible GPU when device is auto, else device. Not in a run's id
    devices: list[str] = field(default_factory=list)
    # speed options (attnlib.training.speed.options(p) -> fit's speed): float rounding only, not part of a run's id
    tf32: bool = False  # TF32 matrix products and convolutions on CUDA; a no-op on the CPU
    compile: bool = False  # torch.compile of the model that trains
    channels_last: bool = False  # ResNet, SAN and a ViT's conv stem in channels-last memory format; else ignored
    results_dir: str = "results"
    # N > 0: a dry run (attnlib.training.dry_run): every run at its size for one epoch of N steps, timed and measured
    dry_run: int = 0

    def validate(self, where: str = "parameters") -> "TrainParams":
        bad = functools.partial(_fail, where)
        _check_common(self, where)
        _check_models(bad, "models", self.models)
        if not self.models:
            bad("models", "is empty: name at least one model")
        for key in ("heads", "hierarchical", "seeds"):
            if not getattr(self, key):
                bad(key, "is empty")
        for key in ("models", "heads", "hierarchical", "seeds", "control_seeds", "control_models"):
            values = getattr(self, key)
            if (twice := next((v for i, v in enumerate(values) if v in values[:i]), None)) is not None:
                bad(key, f"lists {twice!r} twice, which would train the same runs twice; keep one")
        for key in ("layers", "hidden", "ff", "downsample", "synthetic_image_size"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1, got {getattr(self, key)}")
        if self.synthetic_image_size > MAX_IMAGE_SIZE:
            bad("synthetic_image_size", f"must be at most {MAX_IMAGE_SIZE}, got {self.synthetic_image_size}")
        if any(h < 1 for h in self.heads):
            bad("heads", f"must all be at least 1, got {self.heads}")
        _check_models(bad, "control_models", self.control_models)  # those not in models get no control
        if set(self.control_seeds) - set(self.seeds):
            bad("control_seeds", f"must be among seeds {self.seeds} (a control has the seeds of the runs it controls), "
                                 f"got {self.control_seeds}")
        for key in ("seeds", "control_seeds"):
            if any(not 0 <= seed < MAX_SEED for seed in getattr(self, key)):
                bad(key, f"must all be in [0, 2**32), got {getattr(self, key)}")
        for key in ("train_subset", "test_subset", "head_dim", "dry_run"):
            if getattr(self, key) < 0:
                bad(key, f"must not be negative, got {getattr(self, key)}")
        if not 0 <= self.dropout < 1:
            bad("dropout", f"must be in [0, 1), got {self.dropout}")
        _check_device(bad, self.device)
        for device in self.devices:
            try:
                schedule.canonical(device)
            except ValueError as err:
                bad("devices", str(err))
        return self




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
    # fp32, bf16, or "fastest": the one whose GEMM peak measures highest on this machine (attnlib.report.timing)
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
        for key in ("models", "hierarchical_models"):
            _check_models(bad, key, getattr(self, key))
        for key in ("train_batches", "infer_batches"):
            if any(b < 1 for b in getattr(self, key)):
                bad(key, f"must all be at least 1, got {getattr(self, key)}")
        for key in ("image_size", "in_channels", "warmup", "reps", "latency_reps"):
            if getattr(self, key) < 1:
                bad(key, f"must be at least 1 (no timing without warm-up), got {getattr(self, key)}")
        if not self.precisions or any(p not in (*PRECISIONS, FASTEST) for p in self.precisions):
            bad("precisions", f"must name {', '.join(PRECISIONS)} or {FASTEST}, got {self.precisions}")
        _check_device(bad, self.device)
        for name, options in self.per_model.items():
            _check_models(bad, "per_model", [name])
            schema.check_options(where, f"per_model.{name}", options,
                                 dict.fromkeys(sorted(config_fields(name)), config_class(name)))
        for name in self.timed_models():
            for shared in ([False, True] if name in self.hierarchical_models else [False]):
                try:
                    model_config(name, **self.model_overrides(name, shared))
                except ValueError as err:
                    bad(f"per_model.{name}" if name in self.per_model else "models", f"gives {name} an invalid "
                        f"configuration: {err}")
        return self

    def timed_models(self) -> list[str]:
        return list(self.models) or list_models()

    def model_overrides(self, name: str, hierarchical: bool = False) -> dict:
        out = {**self.per_model.get(name, {}), "image_size": self.image_size, "in_channels": self.in_channels}
        return {**out, "hierarchical": True} if hierarchical else out


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
    # N > 0: show the runs of a dry run of N steps (attnlib.training.dry_run), as the training notebooks planned them
    dry_run: int = 0

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
        if self.dry_run < 0:
            bad("dry_run", f"must not be negative, got {self.dry_run}")
        if self.image_index < 0:
            bad("image_index", f"must not be negative, got {self.image_index}")
        for key in ("query_row", "query_col"):
            if getattr(self, key) < -1:
                bad(key, f"must be a pixel index or -1 (the middle), got {getattr(self, key)}")
        _check_device(bad, self.device)
        return self


@dataclass
class ReportParams:
    """Parameters of notebook 08 (the report), which reads results/<profile>/ and never trains."""

    profile: str = "paper"
    dataset: str = ""  # unused: the report states each result's own data set; kept so --dataset applies to all
    results_dir: str = "results"
    params_dir: str = "params"  # the training notebooks' <profile>/<notebook>.yaml: how many images their runs used

    def validate(self, where: str = "parameters") -> "ReportParams":
        if self.profile not in PROFILES:
            _fail(where, "profile", f"must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        return self


# Which dataclass each notebook's parameters cell follows. Notebooks not named here take TrainParams.
NOTEBOOK_PARAMS: dict[str, type] = {"00_conv_as_attention": ConvParams, "06_timing": TimingParams,
                                    "07_visualizations": VizParams, "08_report": ReportParams}




def params_class(notebook: str) -> type:
    return NOTEBOOK_PARAMS.get(Path(notebook).stem, TrainParams)


def numbered_notebooks() -> list[Path]:
    """The numbered notebooks under notebooks/ (00_conv_as_attention.ipynb ... 08_report.ipynb), in order."""
    return sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def training_notebooks() -> list[str]:
    """The numbered notebooks under notebooks/ that train (their parameters are TrainParams)."""
    return [nb.stem for nb in numbered_notebooks() if params_class(nb.stem) is TrainParams]
