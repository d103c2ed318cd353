"""Do the faster paths move accuracy? Short training runs of the exact path and of each faster one, over seeds.

The exact path is float32 with torch's own dropout (attnlib.dropout.torch_masks). Against it:
- "fp32": float32 with attnlib's dropout masks, what the profiles train with (the same arithmetic, another
  random draw of the masks);
- "bf16": bf16 autocast with attnlib's masks (other arithmetic; the masks are those of "fp32" for the same seed,
  so the same-seed difference between the two is the arithmetic's alone).
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
Within twice the standard error, a path agrees within the seeds' noise: those seeds cannot resolve TOLERANCE, and
the verdict says so; beyond it, it differs.

    .venv/bin/python benchmarks/parity.py [--seeds 0 1 2] [--epochs 2] [--networks sa_quadratic sa_learned_content]
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
from attnlib.experiments import grid, params
from attnlib.experiments import runs as experiment
from attnlib.models import create_model
from attnlib.training.records import RunInfo
from attnlib.training.train import fit

TOLERANCE = 0.01  # test accuracy, absolute: one percentage point
NOTEBOOK = {"sa_quadratic": "02_quadratic", "sa_learned_content": "01_learned_2d", "sa_learned": "01_learned_2d",
            "vit": "04_vit"}
PATHS = {"exact": ("fp32", dropout.torch_masks), "fp32": ("fp32", contextlib.nullcontext),
         "bf16": ("bf16", contextlib.nullcontext)}


def quick_setup(name: str):
    """The quick profile's parameters, data and model overrides for `name`, loaded once per network."""
    p = params.load(f"params/quick/{NOTEBOOK[name]}.yaml")
    data = experiment.load_data(p)
    heads = grid.heads_for(p, name)[0]
    return p, data, {**grid.model_overrides(p, name, heads), **data.model_overrides()}


def test_accuracy(name: str, setup, path: str, seed: int, epochs: int) -> float:
    p, data, overrides = setup
    precision, masks = PATHS[path]
    cfg = replace(grid.train_config(p, seed, name), epochs=epochs, precision=precision)
    torch.manual_seed(seed)
    model = create_model(name, **overrides)
    with tempfile.TemporaryDirectory() as d, masks():
        rows = fit(model, data, cfg, RunInfo(f"{name}-{path}-s{seed}", "parity", name, path, data.name, "parity"),
                   results_dir=d, progress=False)
    return rows[-1]["test_acc"]


def verdict(acc: dict[str, list[float]], path: str) -> str:
    """Whether `path` agrees: "fp32" with the exact path (the means), "bf16" with "fp32" (seed by seed), from each
    path's test accuracy per seed (the same seeds, in the same order, under every path); one line, saying what
    decided it (module doc)."""
    if path == "bf16":
        diffs = [b - f for b, f in zip(acc["bf16"], acc["fp32"])]
        diff, what = statistics.mean(diffs), "same seed, bf16 - fp32, mean"
        error = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    else:
        diff, what = statistics.mean(acc[path]) - statistics.mean(acc["exact"]), f"mean {path} - exact"
        n = len(acc["exact"])
        error = math.sqrt((statistics.variance(acc[path]) + statistics.variance(acc["exact"])) / n) if n > 1 else math.nan
    if abs(diff) <= TOLERANCE:
        return f"agrees: {what} {diff:+.4f} (tolerance {TOLERANCE:.2f})"
    if math.isnan(error):
        return f"DIFFERS: {what} {diff:+.4f} (tolerance {TOLERANCE:.2f}; one seed gives no noise to set it against)"
    if abs(diff) <= 2 * error:
        return (f"agrees within the seeds' noise: {what} {diff:+.4f}, within twice its standard error {error:.4f} "
                f"over {len(acc['exact'])} seeds, which cannot resolve the tolerance {TOLERANCE:.2f}")
    return f"DIFFERS: {what} {diff:+.4f}, beyond twice its standard error {error:.4f} over {len(acc['exact'])} seeds"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--networks", nargs="+", default=["sa_quadratic", "sa_learned_content"], choices=list(NOTEBOOK))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    verdicts = []
    for name in args.networks:
        acc = {path: [] for path in PATHS}
        setup = quick_setup(name)
        for seed in args.seeds:
            for path in PATHS:
                acc[path].append(test_accuracy(name, setup, path, seed, args.epochs))
                print(f"{name} seed {seed} {path}: test acc {acc[path][-1]:.4f}", flush=True)
        spread = statistics.stdev(acc["exact"]) if len(args.seeds) > 1 else float("nan")
        print(f"\n{name}, {args.epochs} epochs, seeds {args.seeds}: the exact path's spread over seeds {spread:.4f}")
        for path in PATHS:
            diff = statistics.mean(acc[path]) - statistics.mean(acc["exact"])
            line = f"  {path:<5} mean {statistics.mean(acc[path]):.4f}  mean - exact {diff:+.4f}"
            if path == "bf16":
                line += "  same seed, bf16 - fp32: " + ", ".join(f"{b - f:+.4f}" for b, f in zip(acc["bf16"], acc["fp32"]))
            print(line)
            if path != "exact":
                verdicts.append(f"{name} {path}: {verdict(acc, path)}")
        print()
    print("\n".join(verdicts))
    print(f"{time.perf_counter() - start:.0f} s on {results.device_name(torch.device('cpu'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
