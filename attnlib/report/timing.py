"""Throughput and latency, measured honestly: warm-up first, synchronised clocks, medians.

Every measurement returns a `Timing` that records how it was taken (warm-up and timed repetitions,
batch size, precision, device) and one sentence saying exactly what was inside the timer. On a GPU
the clock is a pair of CUDA events around each repetition; on a CPU, `time.perf_counter`.

    t = timing.train_throughput(model, batch=32)      # forward + loss + backward + SGD step
    t.images_per_s, t.median_s, t.describe()
"""
from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from attnlib.loaders import loaders
from attnlib.training.train import FASTEST, PRECISIONS, autocast

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
                     warmup: int = 2, reps: int = 5, label: str = "", image_shape=None,
                     min_seconds: float = 0.0) -> Timing:
    """Images per second of training steps (forward, loss, backward, SGD) at one batch size."""
    device = torch.device(device)
    model = model.to(device)
    x, y = _inputs(model, batch, device, image_shape)
    times = measure(train_step_fn(model, x, y, precision), device, warmup, reps, min_seconds)
    return _timing(label or type(model).__name__, "train", batch, precision, device, warmup, times, WHAT["train"])


def infer_throughput(model: nn.Module, batch: int = 32, precision: str = "fp32", device: str = "cpu",
                     warmup: int = 2, reps: int = 5, label: str = "", image_shape=None,
                     min_seconds: float = 0.0) -> Timing:
    """Images per second of inference (eval mode, no_grad); batch=1 gives the latency."""
    device = torch.device(device)
    model = model.to(device).eval()
    x, _ = _inputs(model, batch, device, image_shape)

    def forward():
        with torch.no_grad(), autocast(device, precision):
            model(x)
    times = measure(forward, device, warmup, reps, min_seconds)
    return _timing(label or type(model).__name__, "infer", batch, precision, device, warmup, times, WHAT["infer"])


def matmul_rate(n: int = 2048, precision: str = "fp32", device: str = "cpu", warmup: int = 2,
                reps: int = 5) -> tuple[float, Timing]:
    """The machine's measured matrix-product rate in GFLOP/s (2 n^3 FLOPs per n x n product)."""
    device = torch.device(device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    times = measure(lambda: torch.mm(a, b), device, warmup, reps)
    t = _timing(f"matmul {n}^3", "matmul", 0, precision, device, warmup, times, WHAT["matmul"])
    return 2 * n ** 3 / t.median_s / 1e9, t


PEAK_SIZES = (1024, 2048, 3072)  # square products whose best rate stands for the machine's GEMM peak
PEAK_WARMUP, PEAK_REPS = 2, 5  # gemm_peak's untimed and timed products per size, unless told


def gemm_peak(precision: str = "fp32", device: str = "cpu", sizes=None, warmup: int = PEAK_WARMUP,
              reps: int = PEAK_REPS) -> tuple[float, int]:
    """The machine's GEMM peak at `precision`: (GFLOP/s, n), the best median rate of n x n products over
    `sizes` (None: PEAK_SIZES, read when called; a small product leaves cores idle, a large one can fall out of
    cache: neither alone is the peak), each size after `warmup` untimed products, the median of `reps` timed ones."""
    rates = {n: matmul_rate(n, precision, device, warmup=warmup, reps=reps)[0] for n in sizes or PEAK_SIZES}
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


def flops_per_image(model: nn.Module, mode: str = "infer", image_shape=None, batch: int = 2,
                    plain: bool = False) -> float:
    """FLOPs per image counted by torch.utils.flop_counter (matrix products, convolutions, attention;
    a multiply-add counts 2). mode "train" counts forward + backward.

    By default on the path the model runs at this batch: the work it does (content attention as x M x'^T where
    that pays, attnlib.content_algebra), with torch's fused attention run by its math backend, whose products
    the counter sees (it does not see the fused CPU kernel's). `plain=True` counts the layers' plain paths: the
    network's FLOPs as the paper counts them, whatever a faster path skips."""
    device = next(model.parameters()).device
    x, y = _inputs(model, batch, device, image_shape)
    counter = FlopCounterMode(display=False)
    fused = [(m, m.fused) for m in model.modules() if plain and isinstance(getattr(m, "fused", None), bool)]
    for m, _ in fused:
        m.fused = False
    try:
        with sdpa_kernel(SDPBackend.MATH):
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



def machine_peak(precisions=PRECISIONS, device: str = "cpu", warmup: int = PEAK_WARMUP, reps: int = PEAK_REPS,
                 earlier: dict[str, float] | None = None) -> dict[str, float]:
    """The measured GEMM peak (GFLOP/s, gemm_peak with `warmup` and `reps`) per precision, in this process; with
    `earlier` (an earlier machine_peak), the higher of the two per precision, and its other precisions as they were:
    on a shared machine a measurement can only come out slow (another job took the cores), so the best is the peak."""
    earlier = dict(earlier or {})
    now = {p: gemm_peak(p, device, warmup=warmup, reps=reps)[0] for p in precisions}
    return {**earlier, **{p: max(rate, earlier.get(p, 0.0)) for p, rate in now.items()}}


def fastest_precision(peak: dict[str, float]) -> str:
    """The precision whose measured GEMM peak is highest."""
    return max(peak, key=peak.get)


def timed_precisions(asked, peak: dict[str, float]) -> list[str]:
    """The precisions notebook 06 times: those asked for, "fastest" resolved by the measured `peak`."""
    return list(dict.fromkeys(fastest_precision(peak) if p == FASTEST else p for p in asked))


def precision_note(peak: dict[str, float], asked) -> str:
    """One line: the measured GEMM peaks, which precision is fastest here, and what is timed."""
    rates = ", ".join(f"{p} {r:,.0f} GFLOP/s" for p, r in peak.items())
    return (f"GEMM peak measured here (best of n x n torch.mm, n in {', '.join(map(str, PEAK_SIZES))}, before the "
            f"models and again after any were timed): {rates}; "
            f"fastest precision here: {fastest_precision(peak)}; timed in: {', '.join(timed_precisions(asked, peak))}")


