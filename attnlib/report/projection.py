"""How long the paper profile would train on this machine: every run its parameter files plan, its training FLOPs
counted at the published size, and the time that follows from the throughput notebook 06 measured here for the
nearest configuration it timed."""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch

from attnlib.experiments import grid, params, settings
from attnlib.models import create_model, model_config
from attnlib.report.timing import flops_per_image
from attnlib.training import dry_run

# -- notebook 06: how long the paper profile would train here ---------------------------------------------------
CIFAR10_TRAIN, CIFAR10_TEST = dry_run.FULL_SIZE["cifar10"]


# The cost of a configuration: fields that change it only through what projected_runs scales by FLOPs (heads,
# weight sharing, [Re]'s switches) may differ between a timed row and a planned run; these must be equal.
SIZE_FIELDS = ("layers", "hidden", "ff", "downsample", "patch_size", "width", "blocks", "widths", "stem_channels",
               "kernel_size", "rel_ratio", "mid_ratio", "share_planes", "image_size", "in_channels")


NEUTRAL_FIELDS = ("dropout", "attn_dropout", "init", "layer_norm_eps", "num_classes")  # no change to the cost


PROJECTION_COLUMNS = ["notebook", "run_id", "model", "variant", "seed", "epochs", "batch", "precision", "measured_row",
                      "flops_scale", "train_img_s", "eval_img_s", "hours"]


def paper_runs(profile: str = "paper", params_dir: str | Path | None = None) -> list[tuple[str, grid.PlannedRun]]:
    """(notebook, planned run) of every training notebook's file in params/<profile>/, planned on CIFAR-10's
    name, sizes (50,000 / 10,000 images) and shape, as the paper profile trains them (the same run ids)."""
    folder = Path(params_dir) if params_dir else settings.REPO_ROOT / "params"
    data = SimpleNamespace(name="cifar10", x_train=range(CIFAR10_TRAIN), x_test=range(CIFAR10_TEST),
                           model_overrides=lambda: {"image_size": 32, "in_channels": 3, "num_classes": 10})
    out = []
    for nb in settings.training_notebooks():
        path = folder / profile / f"{nb}.yaml"
        if path.exists():
            out += [(nb, run) for run in grid.plan(params.load(path), data)]
    return out


def training_gflops(name: str, **overrides) -> float:
    """FLOPs of one training step per image (forward + backward, flops_per_image) of model `name` built with
    `overrides`, counted on shapes only where torch can (no arithmetic), else on the CPU; cached."""
    return _training_gflops(name, json.dumps(overrides, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _training_gflops(name: str, overrides_json: str) -> float:
    overrides = json.loads(overrides_json)
    with torch.random.fork_rng(devices=[]):
        try:
            from torch._subclasses.fake_tensor import FakeTensorMode
            with FakeTensorMode(allow_non_fake_inputs=True):
                return flops_per_image(create_model(name, **overrides), "train", batch=1, plain=True) / 1e9
        except Exception:  # an operation whose shapes depend on values (ViT): count on real tensors
            return flops_per_image(create_model(name, **overrides), "train", batch=1, plain=True) / 1e9


def _pick(rows: pd.DataFrame, model: str, variant: str, mode: str, precision: str, batch: int):
    """The measured row of (model, variant, mode, precision) at the largest batch up to `batch` (else the
    smallest above it), or None."""
    c = rows[(rows["model"] == model) & (rows["variant"] == variant) & (rows["mode"] == mode)
             & (rows["precision"] == precision)]
    if c.empty:
        return None
    below = c[c["batch"] <= batch]
    return below.loc[below["batch"].idxmax()] if len(below) else c.loc[c["batch"].idxmin()]


def _candidates(model: str, hierarchical: bool) -> list[tuple[str, str]]:
    """Measured (model, variant) to project a run from, best first: its own; the other weight-sharing variant;
    then the same for the counterpart of one of [Re]'s networks (sa_quadratic for sa_quadratic_re)."""
    variants = ["hierarchical", "standard"] if hierarchical else ["standard", "hierarchical"]
    models = [model] + ([model[:-3]] if model.endswith("_re") else [])
    return [(m, v) for m in models for v in variants]


def project_run(rows: pd.DataFrame, timing_params, model: str, overrides: dict, hierarchical: bool, batch: int,
                precision: str, epochs: int, train_images: int = CIFAR10_TRAIN,
                test_images: int = CIFAR10_TEST) -> dict:
    """One run's projected hours on the device of time_models rows `rows` (timed with TimingParams
    `timing_params`): every epoch trains `train_images` at the measured training throughput and evaluates
    `test_images` at the measured inference throughput. The row used is named in `measured_row`; where the timed
    configuration differs from the run's other than in size (heads, weight sharing, [Re]'s switches), throughput
    is scaled by their training FLOPs (`flops_scale`). Not projected (NaN hours, `measured_row` says why): no row
    of the model at the run's precision, or every such row timed at another size."""
    planned = asdict(model_config(model, **overrides))
    why = f"no {precision} training row of {model}"
    for cand, variant in _candidates(model, hierarchical):
        train = _pick(rows, cand, variant, "train", precision, batch)
        if train is None:
            continue
        timed = asdict(model_config(cand, **timing_params.model_overrides(cand, variant == "hierarchical")))
        size = [f for f in SIZE_FIELDS if f in timed and f in planned and timed[f] != planned[f]]
        if size:
            why = f"{cand} ({variant}) was timed at another size ({', '.join(size)})"
            continue
        differ = sorted(f for f in set(timed) | set(planned)
                        if f not in NEUTRAL_FIELDS and timed.get(f) != planned.get(f))
        scale = train["gflops_per_image"] / training_gflops(model, **overrides) if differ else 1.0
        infer = _pick(rows, cand, variant, "infer", precision, batch)
        train_ips = train["images_per_s"] * scale
        eval_ips = infer["images_per_s"] * scale if infer is not None else math.nan
        seconds = train_images / train_ips + (test_images / eval_ips if infer is not None else 0.0)
        basis = f"{cand} ({variant}) train b{int(train['batch'])} {precision}: {train['images_per_s']:.3g} img/s"
        if infer is not None:
            basis += f"; infer b{int(infer['batch'])}: {infer['images_per_s']:.3g} img/s"
        else:
            basis += "; no inference row: evaluation not counted"
        if differ:
            basis += f"; x{scale:.2f} by training FLOPs ({', '.join(differ)} differ)"
        return dict(measured_row=basis, flops_scale=round(scale, 3), train_img_s=train_ips, eval_img_s=eval_ips,
                    hours=epochs * seconds / 3600)
    return dict(measured_row=f"not projected: {why}", flops_scale=math.nan, train_img_s=math.nan,
                eval_img_s=math.nan, hours=math.nan)


def present_devices(rows: pd.DataFrame) -> int:
    """How many devices like the one of time_models rows `rows` this machine has: its GPUs, or 1 (the CPU)."""
    on_cpu = rows["device"].astype(str).str.startswith("cpu").all() if len(rows) else True
    return 1 if on_cpu or not torch.cuda.is_available() else torch.cuda.device_count()


def paper_projection(rows: pd.DataFrame, timing_params, profile: str = "paper", params_dir: str | Path | None = None,
                     devices: int | None = None) -> tuple[pd.DataFrame, str]:
    """(one row per planned run of the paper profile's training notebooks with its projected hours on one device
    of notebook 06's measured throughput `rows` (time_models rows, timed with TimingParams `timing_params`) and the
    measured row it uses; one paragraph with the total, and the total divided over the `devices` present
    (default: present_devices))."""
    devices = devices or present_devices(rows)
    out = []
    for nb, run in paper_runs(profile, params_dir):
        out.append(dict(notebook=nb, run_id=run.run_id, model=run.model, variant=run.variant, seed=run.seed,
                        epochs=run.train.epochs, batch=run.train.batch_size, precision=run.train.precision,
                        **project_run(rows, timing_params, run.model, run.overrides, run.hierarchical,
                                      run.train.batch_size, run.train.precision, run.train.epochs)))
    df = pd.DataFrame(out, columns=PROJECTION_COLUMNS)
    done = df["hours"].notna()
    total = df.loc[done, "hours"].sum()
    device = rows["device"].iloc[0] if len(rows) else "this device"
    text = (f"{len(df)} planned runs of the {profile} profile ({CIFAR10_TRAIN:,} training and {CIFAR10_TEST:,} test "
            f"images each epoch); {int(done.sum())} projected from rows measured on {device}: {total:,.0f} h "
            f"({total / 24:,.1f} days) on one device; over the {devices} device(s) present {total / devices:,.0f} h "
            f"({total / devices / 24:,.1f} days), assuming runs shared out (or DDP) without loss.")
    if not done.all():
        text += (f" Not projected: {int((~done).sum())} run(s) (their measured_row says why), not in the total.")
    text += (" Each run's throughput is the measured one at the largest timed batch up to its own (larger batches "
             "usually train faster per image, on a GPU most); checkpoints, the per-epoch attention probes and "
             "compile time are not counted.")
    return df, text
