"""Throughput and latency, measured honestly: warm-up first, synchronised clocks, medians.

Every measurement returns a `Timing` that records how it was taken (warm-up and timed repetitions,
batch size, precision, device) and one sentence saying exactly what was inside the timer. On a GPU
the clock is a pair of CUDA events around each repetition; on a CPU, `time.perf_counter`.

    t = timing.train_throughput(model, batch=32)      # forward + loss + backward + SGD step
    t.images_per_s, t.median_s, t.describe()
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnlib import messages, results
from attnlib.data import make_synthetic
from attnlib.experiments import grid, params, settings
from attnlib.loaders import loaders
from attnlib.models import count_parameters, create_model, model_config
from attnlib.report.tables import published_table
from attnlib.training import dry_run
from attnlib.training.progress import Bar
from attnlib.training.train import FASTEST, PRECISIONS, autocast, resolve_device

WHAT = {
    "train": "one training step on a fixed random batch already on the device: forward, cross-entropy, "
             "backward and an SGD step (momentum 0.9); no data loading or augmentation",
    "infer": "one forward pass in eval mode under torch.no_grad on a fixed random batch already on the "
             "device; no data loading",
    "matmul": "one square matrix product torch.mm(a, b) of random matrices already on the device",
}


@dataclass
class Timing:
    label: str
    mode: str  # train | infer | matmul
    batch: int
    precision: str
    device: str
    warmup: int
    reps: int
    median_s: float
    mean_s: float
    std_s: float
    min_s: float
    max_s: float
    what: str

    @property
    def images_per_s(self) -> float:
        return self.batch / self.median_s

    @property
    def latency_ms(self) -> float:
        return 1000 * self.median_s

    def row(self) -> dict:
        return dict(asdict(self), images_per_s=self.images_per_s, latency_ms=self.latency_ms)

    def describe(self) -> str:
        return (f"{self.label}: median {self.latency_ms:.1f} ms per call (mean {1000 * self.mean_s:.1f} +- "
                f"{1000 * self.std_s:.1f} ms), {self.images_per_s:.1f} images/s at batch {self.batch}, "
                f"{self.precision}, {self.device}; {self.reps} timed calls after {self.warmup} warm-up calls. "
                f"Timed: {self.what}.")


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device | str = "cpu", warmup: int = 3, reps: int = 10,
            min_seconds: float = 0.0) -> list[float]:
    """Seconds per call of `fn`, after `warmup` untimed calls; at least `reps` calls, more until
    `min_seconds` of timed work. CUDA: events around each call; CPU: perf_counter."""
    device = torch.device(device)
    if warmup < 1:
        raise ValueError("no timing without warm-up: warmup must be at least 1")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times: list[float] = []
    while len(times) < reps or sum(times) < min_seconds:
        times += measure_once(fn, device)
    return times


def alternating(fns: dict[str, Callable[[], object]], device: torch.device | str = "cpu", warmup: int = 2,
                reps: int = 5) -> dict[str, list[float]]:
    """Seconds per call of several functions timed in turn (A, B, C, A, B, C, ...), after `warmup`
    untimed rounds, so that slow drift of the machine (heat, other jobs) hits all of them alike."""
    device = torch.device(device)
    if warmup < 1:
        raise ValueError("no timing without warm-up: warmup must be at least 1")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name] += measure_once(fn, device)
    return times


def measure_once(fn: Callable[[], object], device: torch.device) -> list[float]:
    synchronize(device)
    if device.type == "cuda":
        with torch.cuda.device(device):  # events on the stream of the device that runs fn
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
        return [start.elapsed_time(end) / 1000]
    t0 = time.perf_counter()
    fn()
    return [time.perf_counter() - t0]


def _timing(label, mode, batch, precision, device, warmup, times, what) -> Timing:
    return Timing(label, mode, batch, precision, str(device), warmup, len(times), statistics.median(times),
                  statistics.fmean(times), statistics.stdev(times) if len(times) > 1 else 0.0, min(times),
                  max(times), what)


def _inputs(model: nn.Module, batch: int, device: torch.device, image_shape: tuple[int, int, int] | None):
    cfg = getattr(model, "cfg", None)
    shape = image_shape or (cfg.in_channels, cfg.image_size, cfg.image_size)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *shape, generator=g).to(device)
    y = torch.randint(0, getattr(cfg, "num_classes", 10), (batch,), generator=g).to(device)
    return x, y


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32", lr: float = 0.01):
    """A closure doing one SGD step of `model` on (x, y); the model's weights change with each call."""
    device = x.device
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()

    def step():
        with autocast(device, precision):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def train_throughput(model: nn.Module, batch: int = 32, precision: str = "fp32", device: str = "cpu",
                     warmup: int = 2, reps: int = 5, label: str = "", image_shape=None, min_seconds: float = 0.0) -> Timing:
    """Images per second of training steps (forward, loss, backward, SGD) at one batch size."""
    device = torch.device(device)
    model = model.to(device)
    x, y = _inputs(model, batch, device, image_shape)
    times = measure(train_step_fn(model, x, y, precision), device, warmup, reps, min_seconds)
    return _timing(label or type(model).__name__, "train", batch, precision, device, warmup, times, WHAT["train"])


def infer_throughput(model: nn.Module, batch: int = 32, precision: str = "fp32", device: str = "cpu",
                     warmup: int = 2, reps: int = 5, label: str = "", image_shape=None, min_seconds: float = 0.0) -> Timing:
    """Images per second of inference (eval mode, no_grad); batch=1 gives the latency."""
    device = torch.device(device)
    model = model.to(device).eval()
    x, _ = _inputs(model, batch, device, image_shape)

    def forward():
        with torch.no_grad(), autocast(device, precision):
            model(x)
    times = measure(forward, device, warmup, reps, min_seconds)
    return _timing(label or type(model).__name__, "infer", batch, precision, device, warmup, times, WHAT["infer"])


def matmul_rate(n: int = 2048, precision: str = "fp32", device: str = "cpu", warmup: int = 2, reps: int = 5) -> tuple[float, Timing]:
    """The machine's measured matrix-product rate in GFLOP/s (2 n^3 FLOPs per n x n product)."""
    device = torch.device(device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    times = measure(lambda: torch.mm(a, b), device, warmup, reps)
    t = _timing(f"matmul {n}^3", "matmul", 0, precision, device, warmup, times, WHAT["matmul"])
    return 2 * n ** 3 / t.median_s / 1e9, t


PEAK_SIZES = (1024, 2048, 3072)  # square products whose best rate stands for the machine's GEMM peak


def gemm_peak(precision: str = "fp32", device: str = "cpu", sizes=PEAK_SIZES) -> tuple[float, int]:
    """The machine's GEMM peak at `precision`: (GFLOP/s, n), the best median rate of n x n products over
    `sizes` (a small product leaves cores idle, a large one can fall out of cache: neither alone is the peak)."""
    rates = {n: matmul_rate(n, precision, device, warmup=1, reps=3)[0] for n in sizes}
    best = max(rates, key=rates.get)
    return rates[best], best


def step_profile(step: Callable[[], object], steps: int = 2, top: int | None = 6) -> list[tuple[str, float]]:
    """What dominates `step` (after one untimed call): the `top` operators (None: all) by self CPU time over
    `steps` calls, each with its share of the total self CPU time."""
    step()
    with _native_stderr_silenced(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [(e.key, e.self_cpu_time_total / total) for e in ranked]


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 sent to /dev/null: the profiler's C++ side logs its start and stop (and, without a GPU,
    an error about counting GPUs) there, past Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def flops_per_image(model: nn.Module, mode: str = "infer", image_shape=None, batch: int = 2) -> float:
    """FLOPs per image counted by torch.utils.flop_counter (matrix products, convolutions, attention;
    a multiply-add counts 2). mode "train" counts forward + backward."""
    device = next(model.parameters()).device
    x, y = _inputs(model, batch, device, image_shape)
    counter = FlopCounterMode(display=False)
    # The plain attention paths (same arithmetic, explicit matmuls): the counter misses torch's fused
    # CPU attention kernel, so fused models would be counted without their attention products.
    fused = [(m, m.fused) for m in model.modules() if isinstance(getattr(m, "fused", None), bool)]
    for m, _ in fused:
        m.fused = False
    try:
        if mode == "train":
            model.train()
            with counter:
                F.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)
        else:
            model.eval()
            with counter, torch.no_grad():
                model(x)
    finally:
        for m, flag in fused:
            m.fused = flag
    return counter.get_total_flops() / batch


def pipeline_throughput(ds, batch: int = 32, device: str = "cpu", epochs: int = 3) -> Timing:
    """Images per second of the training input pipeline alone (attnlib.loaders.BatchLoader: shuffle,
    gather, crop + flip augmentation, normalisation, move to the device), one epoch per repetition."""
    device = torch.device(device)
    train, _ = loaders(ds, batch, device)

    def epoch():
        for _ in train:
            pass
    times = measure(epoch, device, warmup=1, reps=epochs)
    per_batch = [t / len(train) for t in times]
    return _timing("input pipeline", "pipeline", batch, "uint8 -> fp32", device, 1, per_batch,
                   f"one pass over {len(ds.x_train)} {ds.channels}x{ds.image_size}x{ds.image_size} images in batches "
                   f"of {batch} (shuffle, gather, random crop + flip, normalisation, move to {device}), per batch")


# -- notebook 06: every model ------------------------------------------------------------------------
KEY = ["model", "variant", "config", "mode", "batch", "precision", "device", "image_size", "in_channels"]


def machine_peak(precisions=PRECISIONS, device: str = "cpu") -> dict[str, float]:
    """The measured GEMM peak (GFLOP/s, gemm_peak) per precision, in this process."""
    return {p: gemm_peak(p, device)[0] for p in precisions}


def fastest_precision(peak: dict[str, float]) -> str:
    """The precision whose measured GEMM peak is highest."""
    return max(peak, key=peak.get)


def timed_precisions(asked, peak: dict[str, float]) -> list[str]:
    """The precisions notebook 06 times: those asked for, "fastest" resolved by the measured `peak`."""
    return list(dict.fromkeys(fastest_precision(peak) if p == FASTEST else p for p in asked))


def precision_note(peak: dict[str, float], asked) -> str:
    """One line: the measured GEMM peaks, which precision is fastest here, and what is timed."""
    rates = ", ".join(f"{p} {r:,.0f} GFLOP/s" for p, r in peak.items())
    return (f"GEMM peak measured here (best of n x n torch.mm, n in {', '.join(map(str, PEAK_SIZES))}): {rates}; "
            f"fastest precision here: {fastest_precision(peak)}; timed in: {', '.join(timed_precisions(asked, peak))}")


def _read_rows(path) -> list[dict]:
    """The rows already measured; a damaged CSV (cut off, not a CSV, without the key columns) is moved aside as
    NAME.csv.damaged with one line, and every model is timed again."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return []
    try:
        text = path.read_text(encoding="utf-8")
        if not text.endswith("\n"):
            raise ValueError("cut off in its last line" if text.strip() else "empty")
        df = pd.read_csv(io.StringIO(text))
        if set(KEY) - set(df.columns) or df[list(KEY)].isna().any().any():
            raise ValueError("its rows lack the columns that say what was measured")
    except (OSError, ValueError) as err:
        aside = results.move_aside(path)
        print(f"{path} was damaged ({messages.error_line(err)}): moved aside to {aside.name}; every model is "
              "timed again", flush=True)
        return []
    return df.to_dict("records")


def time_models(p, path, progress: bool = True):
    """Time every model of TimingParams `p` (and the hierarchical variants it names): parameters,
    FLOPs per image, training and inference throughput, batch-1 latency. Rows are written to the
    CSV at `path` after each model, atomically; rows already there for the same settings are kept
    and not timed again unless p.remeasure, so an interrupted notebook continues where it stopped."""
    device = resolve_device(p.device)
    dev_name, commit = results.device_name(device), results.git_commit()
    old = _read_rows(path)

    def row_key(r: dict) -> tuple:
        return tuple(str(r.get(k)) for k in KEY)

    def key(model, variant, config, mode, batch, prec):
        return tuple(map(str, (model, variant, config, mode, batch, prec, dev_name, p.image_size, p.in_channels)))
    done = set() if p.remeasure else {row_key(r) for r in old}
    peak = machine_peak(PRECISIONS, device)  # every precision: which is fastest here is measured, not assumed
    precisions = timed_precisions(p.precisions, peak)
    plan, wanted = [], set()
    for name in p.timed_models():
        for shared in ([False, True] if name in p.hierarchical_models else [False]):
            variant = "hierarchical" if shared else "standard"
            # a fingerprint of the model's configuration: changed options mean new measurements
            config = results.digest(asdict(model_config(name, **p.model_overrides(name, shared))))
            todo = []
            for prec in precisions:
                for mode, batches in (("train", p.train_batches), ("infer", p.infer_batches), ("latency", [1])):
                    for b in batches:
                        k = key(name, variant, config, mode, b, prec)
                        wanted.add(k)
                        if k not in done:
                            todo.append((mode, b, prec))
            if todo:
                plan.append((name, shared, variant, config, todo))
    retimed = {key(name, variant, config, *t) for name, _, variant, config, todo in plan for t in todo}
    rows = [r for r in old if row_key(r) not in retimed]  # other devices, sizes, settings: kept in the file
    bar, timed = Bar("timing", sum(len(t) for *_, t in plan), enabled=progress), 0
    for name, shared, variant, config, todo in plan:
        torch.manual_seed(0)
        model = create_model(name, **p.model_overrides(name, shared)).to(device)
        shape = (p.in_channels, p.image_size, p.image_size)
        gflops = {"infer": flops_per_image(model, "infer", shape) / 1e9, "train": flops_per_image(model, "train", shape) / 1e9}
        gflops["latency"] = gflops["infer"]
        n_params = count_parameters(model)
        for mode, batch, prec in todo:
            bar.update(timed, f"{name} ({variant}) {mode} batch {batch} {prec}")
            if mode == "train":
                t = train_throughput(model, batch, prec, device, p.warmup, p.reps, name, shape)
            else:
                t = infer_throughput(model, batch, prec, device, p.warmup, p.latency_reps if mode == "latency" else p.reps,
                                     name, shape)
            rate = t.images_per_s * gflops[mode]
            rows.append(dict(profile=p.profile, model=name, variant=variant, config=config, mode=mode, batch=batch, precision=prec,
                             device=dev_name, image_size=p.image_size, in_channels=p.in_channels, params=n_params,
                             gflops_per_image=gflops[mode], images_per_s=t.images_per_s, latency_ms=t.latency_ms,
                             mean_ms=1000 * t.mean_s, std_ms=1000 * t.std_s, min_ms=1000 * t.min_s,
                             warmup=t.warmup, reps=t.reps, achieved_gflops=rate, peak_gflops=peak[prec],
                             fraction_of_peak=rate / peak[prec], what=t.what, torch=torch.__version__,
                             git=commit))
            timed += 1
            bar.update(timed, f"{name} ({variant}) {mode} batch {batch} {prec}")
        results.atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
    bar.close()
    df = pd.DataFrame(rows)
    return df[[row_key(r) in wanted for r in rows]].reset_index(drop=True), peak  # only what `p` asks for


# -- notebook 06: its tables ----------------------------------------------------------------------------
MODE_COLUMNS = {"train": "train img/s", "infer": "infer img/s", "latency": "latency ms"}


def per_model_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, variant) of time_models rows: parameters, GFLOPs per image (forward, training),
    images/s (latency in ms at batch 1) per mode, batch and precision, and the best training step's fraction
    of the measured matrix-product rate. Notebook 06 writes it as <results>/<profile>/metrics/06_timing_summary.csv."""
    d = df.assign(value=df["images_per_s"].where(df["mode"] != "latency", df["latency_ms"]))
    d["column"] = d["mode"].map(MODE_COLUMNS) + " b" + d["batch"].astype(str) + " " + d["precision"]
    wide = d.pivot_table(index=["model", "variant"], columns="column", values="value").round(2)
    info = df.groupby(["model", "variant"]).agg(params=("params", "first"))
    flops = df.pivot_table(index=["model", "variant"], columns="mode", values="gflops_per_image")[["infer", "train"]]
    flops.columns = ["GFLOPs/img forward", "GFLOPs/img training"]
    best = df[df["mode"] == "train"].groupby(["model", "variant"])["fraction_of_peak"].max().rename("best train of peak")
    return info.join(flops.round(2)).join(wide).join(best.map("{:.0%}".format)).reset_index()


def attention_products_gflops(name: str, **overrides) -> float:
    """GFLOPs per image of a self-attention network's attention products, which a counter hooked on layers
    (Linear, Conv) does not see: attention x values (width hidden) per layer and head, and with content
    also queries x keys (width head_dim); T^2 products of each width, a multiply-add counting 2."""
    cfg = model_config(name, **overrides)
    t = (cfg.image_size // cfg.downsample) ** 2
    width = cfg.hidden + ((cfg.head_dim or cfg.hidden) if cfg.content else 0)
    return 2 * cfg.layers * cfg.heads * t * t * width / 1e9


def published_costs(df: pd.DataFrame, p) -> pd.DataFrame:
    """The paper's parameters and GFLOPs (report.published_table, the models it gives them for) beside ours
    (the forward pass of the standard variant in time_models rows `df`, TimingParams `p`), and ours without
    the attention products for the self-attention networks (the paper's FLOPs leave them out)."""
    ours = df[(df["mode"] == "infer") & (df["variant"] == "standard")].groupby("model").first()
    pub = published_table().dropna(subset=["paper_params"]).set_index("model")[["paper_params", "paper_gflops"]]
    side = pub.join(ours[["params", "gflops_per_image"]], how="left")
    side["ours_minus_attention_products"] = [
        row.gflops_per_image - attention_products_gflops(name, **p.model_overrides(name)) if name.startswith("sa_")
        else row.gflops_per_image for name, row in side.iterrows()]
    return side


def cifar_pipeline_throughput(device: str = "auto", images: int = 4096, batch: int = 32) -> Timing:
    """pipeline_throughput on `images` synthetic CIFAR-sized images (3 x 32 x 32), on resolve_device(device)."""
    return pipeline_throughput(make_synthetic(images, 16, image_size=32), batch=batch, device=resolve_device(device))


def pipeline_against_training(pipe: Timing, df: pd.DataFrame) -> str:
    """One line: the input pipeline's images/s against the fastest training throughput in time_models rows."""
    fastest = df[df["mode"] == "train"]["images_per_s"].max()
    return (f"{pipe.images_per_s:,.0f} images/s: {pipe.images_per_s / fastest:,.0f}x the fastest training throughput "
            f"above ({fastest:,.1f} images/s)")


def measurement_notes(df: pd.DataFrame) -> str:
    """What was and was not measured: the device of time_models rows `df`, whether a GPU was present, the precisions."""
    precisions = list(dict.fromkeys(df["precision"]))
    lines = [f"All rows above were measured on: {df['device'].iloc[0]}."]
    if not torch.cuda.is_available():
        lines.append("No GPU was present: nothing here was measured on a GPU. On one, the same code runs with CUDA-event "
                     "timing, device synchronisation and torch's fused attention (scaled_dot_product_attention).")
    lines.append("Precisions measured: " + ", ".join(precisions) + " | bf16 is autocast; whether it is faster than fp32 "
                 "depends on the CPU and on torch's kernels for it (CPUs with the same flags have measured either way "
                 "here): the GEMM peaks above say which is fastest on this one.")
    return "\n".join(lines)


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
                return flops_per_image(create_model(name, **overrides), "train", batch=1) / 1e9
        except Exception:  # an operation whose shapes depend on values (ViT): count on real tensors
            return flops_per_image(create_model(name, **overrides), "train", batch=1) / 1e9


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
