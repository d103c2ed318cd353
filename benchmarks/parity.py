"""Do the faster paths move accuracy? Short training runs of the exact path and of each faster one, over seeds.

The exact path is float32 with torch's own dropout (attnlib.dropout.torch_masks). Against it:
- "fp32": float32 with attnlib's dropout masks, what the profiles train with (the same arithmetic, another
  random draw of the masks);
- "bf16": bf16 autocast with attnlib's masks (other arithmetic; the masks are those of "fp32" for the same seed,
  so the same-seed difference between the two is the arithmetic's alone);
- "plain": float32 with attnlib's masks on the layers' plain, readable path (`fused=False`), against "fp32",
  whose fused path computes content attention as x M x'^T (attnlib.content_algebra) where that pays. Exact in
  exact arithmetic; the attention's dropout masks fall on other elements (the scores are laid out queries first),
  so for a content network this is another draw of the masks, as "fp32" is of "exact". For positional-only
  attention the fused path lays the probabilities that every image shares out queries first, (T, h, T), and
  applies them image by image (attnlib.shared_product): the same products, another draw of the masks again.
Each is trained from the same initial weights and batches for every seed: the quick profile's networks
(params/quick), on its data, for `--epochs` epochs. Printed per network: each path's test accuracy per seed,
their mean, and the differences: same-seed against "fp32" (bf16), and of the means against the exact path,
beside the exact path's own spread over the seeds. Verdicts (`verdict`), each against TOLERANCE first and, beyond
it, against the noise of the seeds:
- fp32 against the exact path: another random draw of the masks, so a seed's difference is as large as a change
  of seed; the difference of the means is set against its standard error over the seeds.
- bf16 against fp32: the same masks and batches, so a difference is the arithmetic's. A short run amplifies any
  difference in rounding (another order of summation would do it too) into another trajectory, so the seeds'
  paired differences are set against their own standard error.
- fused ("fp32") against "plain": the difference of the means, as for "fp32" against the exact path.
Within the two-sided 95% interval of Student's t (`t_quantile`: at 3 seeds, 4.3 standard errors for the paired
differences, 2.8-4.3 for two means by Welch's degrees of freedom, where twice the standard error would call a
difference in one run in five to nine when there is none), a path agrees within the seeds' noise: those seeds cannot
resolve TOLERANCE, and the verdict says so; beyond it, it differs.

    .venv/bin/python benchmarks/parity.py [--seeds 0 1 2] [--epochs 2] [--networks sa_quadratic sa_learned_content]
                                          [--paths exact fp32 bf16 plain]
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace

import torch

from attnlib import dropout, results
from attnlib.evidence import accuracy_order
from attnlib.evidence.accuracy_order import t_sf
from attnlib.experiments import grid, params
from attnlib.experiments import runs as experiment
from attnlib.models import create_model
from attnlib.training.records import RunInfo
from attnlib.training.train import fit

TOLERANCE = 0.01  # test accuracy, absolute: one percentage point
NOTEBOOK = {"sa_quadratic": "02_quadratic", "sa_learned_content": "01_learned_2d", "sa_learned": "01_learned_2d",
            "vit": "04_vit"}
PATHS = {"exact": ("fp32", dropout.torch_masks, True), "fp32": ("fp32", contextlib.nullcontext, True),
         "bf16": ("bf16", contextlib.nullcontext, True), "plain": ("fp32", contextlib.nullcontext, False)}
AGAINST = {"fp32": "exact", "bf16": "fp32", "plain": "fp32"}  # what each path's verdict compares it with


def quick_setup(name: str):
    """The quick profile's parameters, data and model overrides for `name`, loaded once per network."""
    p = params.load(f"params/quick/{NOTEBOOK[name]}.yaml")
    data = experiment.load_data(p)
    heads = grid.heads_for(p, name)[0]
    return p, data, {**grid.model_overrides(p, name, heads), **data.model_overrides()}


def test_accuracy(name: str, setup, path: str, seed: int, epochs: int) -> float:
    p, data, overrides = setup
    precision, masks, fused = PATHS[path]
    cfg = replace(grid.train_config(p, seed, name), epochs=epochs, precision=precision)
    torch.manual_seed(seed)
    model = create_model(name, **overrides, fused=fused)
    with tempfile.TemporaryDirectory() as d, masks():
        rows = fit(model, data, cfg, RunInfo(f"{name}-{path}-s{seed}", "parity", name, path, data.name, "parity"),
                   results_dir=d, progress=False)
    return rows[-1]["test_acc"]


def verdict(acc: dict[str, list[float]], path: str) -> str:
    """Whether `path` agrees with AGAINST[path]: "bf16" with "fp32" seed by seed, the others by their means, from
    each path's test accuracy per seed (the same seeds, in the same order, under every path); one line, saying
    what decided it (module doc)."""
    base, n = AGAINST[path], len(acc[path])
    if path == "bf16":
        diffs = [b - f for b, f in zip(acc[path], acc[base])]
        diff, what = statistics.mean(diffs), f"same seed, {path} - {base}, mean"
    else:
        diff, what = statistics.mean(acc[path]) - statistics.mean(acc[base]), f"mean {path} - {base}"
    if abs(diff) <= TOLERANCE:
        return f"agrees: {what} {diff:+.4f} (tolerance {TOLERANCE:.2f})"
    if n < 2:
        return f"DIFFERS: {what} {diff:+.4f} (tolerance {TOLERANCE:.2f}; one seed gives no noise to set it against)"
    if path == "bf16":
        error, df = statistics.stdev(diffs) / math.sqrt(n), n - 1
    else:
        error, df = welch(acc[path], acc[base])
    t = t_quantile(0.975, df)
    bound = t * error
    noise = f"{bound:.4f} ({t:.2f} standard errors of {error:.4f}, Student's t at {df:.1f} " \
            f"degrees of freedom, 95%) over {n} seeds"
    if abs(diff) <= bound:
        return (f"agrees within the seeds' noise: {what} {diff:+.4f}, within {noise}, which cannot resolve the "
                f"tolerance {TOLERANCE:.2f}")
    return f"DIFFERS: {what} {diff:+.4f}, beyond {noise}"


def welch(a: list[float], b: list[float]) -> tuple[float, float]:
    """The standard error of mean(a) - mean(b) and its Welch-Satterthwaite degrees of freedom, as the accuracy
    order's test takes them (accuracy_order.welch)."""
    se, df = accuracy_order.welch(statistics.variance(a) / len(a), statistics.variance(b) / len(b), len(a), len(b))
    return float(se), float(df)


def t_quantile(p: float, df: float) -> float:
    """The p-quantile (0.5 < p < 1) of Student's t with df > 0 degrees of freedom (any real): the library's t_sf
    (the accuracy order's test) inverted by bisection."""
    if not (0.5 < p < 1 and df > 0):
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df > 0, not p={p}, df={df}")
    low, high = 0.0, 1.0
    while float(t_sf(high, df)) > 1 - p:
        low, high = high, 2 * high
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if float(t_sf(middle, df)) > 1 - p else (low, middle)
    return (low + high) / 2


def with_baselines(paths: list[str]) -> list[str]:
    """`paths` and what their verdicts compare them with, in PATHS' order."""
    wanted = set(paths) | {AGAINST[p] for p in paths if p in AGAINST}
    return [p for p in PATHS if p in wanted]


def summary(name: str, acc: dict[str, list[float]], seeds: list[int], epochs: int) -> list[str]:
    """Printed lines per network: each path's mean and its difference from what its verdict compares it with."""
    first = next(iter(acc))
    spread = statistics.stdev(acc[first]) if len(seeds) > 1 else float("nan")
    lines = [f"\n{name}, {epochs} epochs, seeds {seeds}: the {first} path's spread over seeds {spread:.4f}"]
    for path, values in acc.items():
        line = f"  {path:<5} mean {statistics.mean(values):.4f}"
        if AGAINST.get(path) in acc:
            base = AGAINST[path]
            line += f"  mean - {base} {statistics.mean(values) - statistics.mean(acc[base]):+.4f}"
            line += f"  same seed, {path} - {base}: " + ", ".join(f"{a - b:+.4f}" for a, b in zip(values, acc[base]))
        lines.append(line)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--networks", nargs="+", default=["sa_quadratic", "sa_learned_content"], choices=list(NOTEBOOK))
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS),
                    help="the paths to train (with what their verdicts compare them with)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    verdicts = []
    for name in args.networks:
        acc = {path: [] for path in with_baselines(args.paths)}
        setup = quick_setup(name)
        for seed in args.seeds:
            for path in acc:
                acc[path].append(test_accuracy(name, setup, path, seed, args.epochs))
                print(f"{name} seed {seed} {path}: test acc {acc[path][-1]:.4f}", flush=True)
        print("\n".join(summary(name, acc, args.seeds, args.epochs)) + "\n")
        verdicts += [f"{name} {path}: {verdict(acc, path)}" for path in args.paths if path in AGAINST]
    print("\n".join(verdicts))
    print(f"{time.perf_counter() - start:.0f} s on {results.device_name(torch.device('cpu'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
