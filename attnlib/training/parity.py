"""The speed options' parity check: the same short runs of a small network of each family, with and without
each option (channels-last, TF32, bf16, torch.compile), held to the differences that float rounding explains.
`python -m attnlib.training.parity parity [--device cuda] [--steps N]` prints the table; `make gpu-check` runs it
on a GPU."""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from attnlib.data import make_synthetic
from attnlib.models import create_model
from attnlib.training.records import RunInfo
from attnlib.training.speed import OPTIONS, SpeedOptions, takes_channels_last, tf32_flags
from attnlib.training.train import TrainConfig, fit, resolve_device

# -- parity: the same short runs with and without each option ---------------------------------------------
PARITY_MODELS = {  # small networks of each family, on 16x16 synthetic images; the attention one with dropout
    "sa_quadratic": dict(layers=2, heads=4, hidden=16, ff=32, downsample=2, dropout=0.1, attn_dropout=0.1),
    "resnet18": dict(width=8),
    "san_pairwise": dict(widths=[16, 32], blocks=[1, 1], stem=8, rel_ratio=4, mid_ratio=2, share_planes=2),
}


PARITY_OPTIONS = ("channels_last", "tf32", "bf16", "compile")  # compile, the slowest, last


# Tolerances on |difference| against the fp32 run. Training amplifies a rounding difference from step to step:
# on these small runs a difference of 1e-7 at step 3 can be 1e-3 by step 8 (ResNet's batch norm over a batch of 16
# most), so a short run's later losses cannot be held to rounding. A wrong computation shows at once, so the float32
# options (channels_last, compile) are held to rounding on the first EARLY_STEPS steps (the first step's loss is the
# forward pass, the second's after one backward pass and update): |difference| <= EARLY_TOL x the loss; after that,
# and for TF32 and bf16 (mantissas of 10 and 7 bits) throughout, losses to LOSS_REL of the fp32 loss and accuracy
# to ACC_TOL, as tests/test_train.py holds bf16.
# EARLY_TOL: float32 rounding moves these losses by ~1e-7 of themselves on the CPU; a GPU's convolution algorithms
# (Winograd, FFT) by up to ~1e-5; a wrong computation (a misplaced border, a lost term) by far more.
EARLY_STEPS, EARLY_TOL = 2, 1e-4


LOSS_REL, ACC_TOL = 0.10, 0.05  # as tests/test_train.py holds bf16 against fp32


ROUNDED = ("tf32", "bf16")


PARITY_BATCH, PARITY_IMAGE, PARITY_TEST = 16, 16, 32


DIFFS = ("early_diff", "final_loss_diff", "max_curve_diff", "acc_diff")


PARITY_COLUMNS = ["option", "model", *DIFFS, "tolerance", "result", "seconds", "note"]


def _parity_run(name: str, workdir: Path, option: str, steps: int, device: torch.device, seed: int = 0) -> list[dict]:
    """One short run of model `name`: `steps` epochs of one batch each (so the loss curve has a point per step),
    in fp32 or with `option`; same seed, data and dropout masks."""
    data = make_synthetic(n_train=PARITY_BATCH, n_test=PARITY_TEST, image_size=PARITY_IMAGE)
    torch.manual_seed(seed)
    model = create_model(name, **PARITY_MODELS[name], **data.model_overrides())
    cfg = TrainConfig(epochs=steps, batch_size=PARITY_BATCH, lr=0.05, warmup=0.1, seed=seed,
                      precision="bf16" if option == "bf16" else "fp32")
    opts = SpeedOptions(**{k: k == option for k in OPTIONS})
    run = RunInfo(f"{name}-{option}", "parity", name, option, data.name, "smoke")
    with tf32_flags(False) if device.type == "cuda" else contextlib.nullcontext():  # the baseline is strict fp32
        return fit(model, data, cfg, run, workdir / option, device, progress=False, speed=opts)


def compare(base: list[dict], other: list[dict], option: str) -> dict:
    """The differences of run `other` (with `option`) from the fp32 run `base` (fit's metric rows, one per step),
    the tolerance in words and whether they are within it."""
    curve = [abs(a["train_loss"] - b["train_loss"]) for a, b in zip(base, other)]
    out = dict(early_diff=max(curve[:EARLY_STEPS]), final_loss_diff=abs(other[-1]["test_loss"] - base[-1]["test_loss"]),
               max_curve_diff=max(curve), acc_diff=abs(other[-1]["test_acc"] - base[-1]["test_acc"]))
    scale = max(max(r["train_loss"] for r in base), base[-1]["test_loss"])
    loss_tol = LOSS_REL * scale
    early_tol = loss_tol if option in ROUNDED else EARLY_TOL * scale
    ok = (out["early_diff"] <= early_tol and out["final_loss_diff"] <= loss_tol and out["max_curve_diff"] <= loss_tol
          and out["acc_diff"] <= ACC_TOL + 1e-9)
    early = "" if option in ROUNDED else f"first {EARLY_STEPS} steps <= {early_tol:.1e}, "
    out.update(tolerance=f"{early}loss <= {loss_tol:.3f}, acc <= {ACC_TOL:.2f}", result="pass" if ok else "FAIL")
    return out


def parity(device: str | torch.device = "auto", steps: int = 8, options_: tuple[str, ...] = PARITY_OPTIONS,
           models: tuple[str, ...] = tuple(PARITY_MODELS), workdir: str | Path | None = None,
           deadline: float | None = None, say=None) -> pd.DataFrame:
    """Short same-seed runs of small models in fp32 and with each option (and bf16) on `device`: one row per
    (option, model) with the differences against fp32 (the largest per-step training loss difference over the
    first EARLY_STEPS steps and over all, the final test loss and accuracy differences), the tolerance and the
    result: pass, FAIL, or why it was not run (tf32 on the CPU, channels_last for the attention models,
    `deadline` (a time.monotonic() value) passed)."""
    device = resolve_device(device) if isinstance(device, str) else device
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    unknown = set(options_) - set(PARITY_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; choose from {', '.join(PARITY_OPTIONS)}")
    rows, bases = [], {}
    with contextlib.ExitStack() as stack:
        work = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parity-")))
        for option in options_:  # option by option, so that a deadline cuts the slowest (compile, last) first
            for name in models:
                row = dict(option=option, model=name, tolerance="", seconds=math.nan, note="")
                if option == "tf32" and device.type != "cuda":
                    rows.append(dict(row, result="n/a",
                                     note="not applicable on CPU (no TF32 there: the option is a no-op)"))
                    continue
                if option == "channels_last" and not takes_channels_last(create_model(name, **PARITY_MODELS[name])):
                    rows.append(dict(row, result="n/a",
                                     note="ignored for the attention models (identical by construction)"))
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    rows.append(dict(row, result="skipped", note="time budget spent"))
                    continue
                try:
                    if name not in bases:
                        bases[name] = _parity_run(name, work / name, "fp32", steps, device)
                    t0 = time.perf_counter()
                    other = _parity_run(name, work / name, option, steps, device)
                except Exception as err:  # a compile failure, say: reported as a failure, the others still run
                    rows.append(dict(row, result="FAIL", note=f"{type(err).__name__}: "
                                     f"{(str(err).strip().splitlines() or [''])[0][:200]}"))
                    continue
                rows.append(dict(row, **compare(bases[name], other, option), seconds=round(time.perf_counter() - t0, 1),
                                 note=f"{steps} steps on {device.type}"))
                if say:
                    say(f"parity {option} {name}: {rows[-1]['result']}")
    return pd.DataFrame(rows, columns=PARITY_COLUMNS)


def format_table(df: pd.DataFrame) -> str:
    def num(v):
        return "" if isinstance(v, float) and math.isnan(v) else f"{v:.2e}" if isinstance(v, float) else str(v)
    return df.to_string(index=False, formatters={c: num for c in DIFFS})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m attnlib.training.parity", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    pa = sub.add_parser("parity", help="short same-seed runs in fp32 and with each option; a table of differences")
    pa.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    pa.add_argument("--steps", type=int, default=8, help="training steps per run (default 8)")
    pa.add_argument("--options", nargs="+", default=list(PARITY_OPTIONS), choices=PARITY_OPTIONS)
    pa.add_argument("--models", nargs="+", default=list(PARITY_MODELS), choices=list(PARITY_MODELS))
    pa.add_argument("--out", default="", help="also write the table as CSV here")
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
        df = parity(device, args.steps, tuple(args.options), tuple(args.models))
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"parity against fp32 on {device} (torch {torch.__version__}), {args.steps} steps per run:")
    print(format_table(df))
    if args.out:
        df.to_csv(args.out, index=False)
    return 1 if (df["result"] == "FAIL").any() else 0


if __name__ == "__main__":
    sys.exit(main())
