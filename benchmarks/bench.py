"""`make bench`: attnlib's training step against [Re]'s way of computing the same networks, per precision, here.

[Re]'s three 9-head networks at their published size (6 layers, hidden 400, 32x32 images): quadratic, learned 2-D,
learned 2-D + content, as our `sa_quadratic_re`, `sa_learned_re` and `sa_learned_content_re`; one training step
(forward, cross-entropy, backward, SGD) on a fixed batch, in float32 and in bf16 autocast. Each network's
implementations and precisions are timed in turn within each round (A, B, C, D, A, B, ...) after a warm-up round;
medians reported. The reference, benchmarks/reference_sa.py, computes each network with [Re]'s layouts and einsums;
benchmarks/peer.py times it against [Re]'s own modules (fetched outside this repository). Printed, as one report:

- the machine: CPU model, the flags that decide its speed (AVX512-BF16, AMX, ...), threads;
- its GEMM peak per precision (attnlib.report.timing.gemm_peak: the best median rate of n x n products), and that
  n x n product timed again in every round beside the steps, so that each share of the peak is taken against the
  peak of the same minutes (on a shared machine with AMX the bf16 peak read 918 and 1,918 GFLOP/s three minutes
  apart, and a share against the wrong one reads 77% or 19% for the same step);
- per network and precision: ours and the reference in images/s, their ratio, and ours as a share of that
  precision's peak (training FLOPs per image of the work our path does, counted by torch.utils.flop_counter on our
  network's own path at the timed batch, attention products included: work a faster path skips is not counted);
- the fastest precision of each network, measured here, and the targets: at least 70% of the peak there, and
  ours / reference at least 1.0x at every precision (1.2x for the content network at its fastest), each met or not;
- what dominates our step at that precision (torch.profiler, self CPU time by operator), and for a share short of
  its target, the rate the matrix products reach while they run (the share over their part of the step): below the
  target, no cut outside them can meet it; above it, how much of the step may stay outside them.

    .venv/bin/python benchmarks/bench.py [--batch 8] [--reps 5] [--networks sa_quadratic ...] [--csv FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_sa import REFERENCES, SAME_AS_OURS  # noqa: E402

from attnlib import results  # noqa: E402
from attnlib.data import make_synthetic  # noqa: E402
from attnlib.models import create_model  # noqa: E402
from attnlib.report import timing

PRECISIONS = ("fp32", "bf16")
SHARE_TARGET = 0.70  # of the machine's GEMM peak at the precision
PARITY = 1.0  # ours / reference at every precision, same run
RATIO_TARGETS = {"sa_learned_content_re": 1.2}  # at the fastest precision, where more than parity is asked


def peak_product(n: int, precision: str, device: torch.device):
    """One n x n product at `precision`, as gemm_peak times it: the peak's stand-in within the rounds."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    return lambda: torch.mm(a, b)


def time_network(name: str, batch: int, reps: int, device: torch.device,
                 peak_sizes: dict[str, int]) -> tuple[list[dict], dict]:
    """One network: ours and the reference, in every precision, timed in alternating rounds with the GEMM peak's
    n x n product (`peak_sizes`: n per precision). Returns (a row per precision, the step functions by
    (implementation, precision))."""
    torch.manual_seed(0)
    ours = create_model(name).to(device)
    ref = REFERENCES[name]()
    if name in SAME_AS_OURS:
        ref.load_state_dict(ours.state_dict())
    ref.to(device)
    flops = timing.flops_per_image(ours, "train", image_shape=(3, 32, 32), batch=batch)  # the work our path does
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    fns = {(impl, p): timing.train_step_fn(model, x, y, p)
           for p in PRECISIONS for impl, model in (("ours", ours), ("reference", ref))}
    fns.update({("peak", p): peak_product(n, p, device) for p, n in peak_sizes.items()})
    print(f"{name}: {flops / 1e9:.1f} GFLOP per training image; timing {len(fns)} steps in turn, "
          f"and the peak's product, 1 warm-up round + {reps} rounds ...", flush=True)
    times = timing.alternating(fns, device, warmup=1, reps=reps)
    rows = []
    for p in PRECISIONS:
        ours_ips = batch / statistics.median(times[("ours", p)])
        ref_ips = batch / statistics.median(times[("reference", p)])
        peak_in_rounds = 2 * peak_sizes[p] ** 3 / statistics.median(times[("peak", p)]) / 1e9
        rows.append(dict(network=name, precision=p, batch=batch, ours_img_s=ours_ips, reference_img_s=ref_ips,
                         ratio=ours_ips / ref_ips, gflop_per_image=flops / 1e9, ours_gflop_s=ours_ips * flops / 1e9,
                         peak_gflop_s=peak_in_rounds, reps=reps))
    return rows, fns


GEMM_OPS = ("aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention_cpu")


def fastest(rows: pd.DataFrame) -> pd.DataFrame:
    """Each network's row at the precision our step is fastest in, by network."""
    return rows.loc[rows.groupby("network", sort=False)["ours_img_s"].idxmax()].set_index("network")


def _what_would_meet(share: float, ops: list[tuple[str, float]]) -> str:
    """Why a share of the peak falls short, from the step's profile: the part of the step outside matrix products,
    and the rate the products reach while they run (the share over their part of the step), which bounds the
    share: at that rate, the target needs at most 1 - target / rate of the step outside them."""
    outside = [(op, sh) for op, sh in ops if op not in GEMM_OPS]
    outside_share = sum(sh for _, sh in outside)
    text = (f"{outside_share:.0%} of the step's CPU time is outside matrix products ("
            + ", ".join(f"{op} {sh:.0%}" for op, sh in outside[:3]) + ")")
    if outside_share >= 1:
        return text
    while_running = share / (1 - outside_share)
    if while_running < SHARE_TARGET:
        return (text + f"; the products themselves run at {while_running:.0%} of the peak at this step's shapes, "
                "below the target with nothing outside them: only products nearer their peak would meet it")
    return (text + f"; the products run at {while_running:.0%} of the peak at this step's shapes, so the target "
            f"needs at most {1 - SHARE_TARGET / while_running:.0%} of the step outside them")


def _peak(row, peak: dict[str, float]) -> float:
    """The GEMM peak a row's share is taken against: the one timed in its own rounds, where the row has it."""
    in_rounds = row.get("peak_gflop_s")
    return in_rounds if in_rounds is not None and in_rounds == in_rounds else peak[row["precision"]]


def verdicts(rows: pd.DataFrame, peak: dict[str, float], profiles: dict[str, list] | None = None) -> list[str]:
    """Per network, at its fastest precision here: each target, met or not, with the measured figure, and for a
    target not met the measured reason and what would meet it (`profiles`: step_profile of our step there)."""
    lines = []
    for name, best in fastest(rows).iterrows():
        other = rows[(rows["network"] == name) & (rows["precision"] != best["precision"])]
        why = (f" ({', '.join(f'{r.precision} {r.ours_img_s:.2f} img/s' for r in other.itertuples())})"
               if len(other) else "")
        lines.append(f"{name}: fastest here in {best['precision']}, {best['ours_img_s']:.2f} img/s{why}")
        share = best["ours_gflop_s"] / _peak(best, peak)
        line = (f"  share of the {best['precision']} GEMM peak: {share:.0%} (target {SHARE_TARGET:.0%}): "
                + ("met" if share >= SHARE_TARGET else "NOT met"))
        ops = (profiles or {}).get(name)
        if share < SHARE_TARGET and ops:
            line += "; " + _what_would_meet(share, ops)
        lines.append(line)
        for r in rows[rows["network"] == name].itertuples():
            target = RATIO_TARGETS.get(name, PARITY) if r.precision == best["precision"] else PARITY
            line = (f"  ours / reference in {r.precision}: {r.ratio:.2f}x (target {target:.1f}x): "
                    + ("met" if r.ratio >= target else "NOT met"))
            if r.ratio < target:
                theirs = r.ours_gflop_s / _peak(r._asdict(), peak) / r.ratio
                need = target * theirs
                line += (f"; the reference runs our work at {theirs:.0%} of the {r.precision} peak, so {target:.1f}x "
                         f"of it needs {need:.0%}" + (", beyond the peak: only less work can meet it" if need > 1
                                                      else ""))
            lines.append(line)
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--networks", nargs="+", default=list(REFERENCES), choices=list(REFERENCES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--csv", default="", help="also write the rows to this CSV file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)

    print(f"machine: {results.device_name(device)}; torch {torch.__version__}", flush=True)
    peaks = {p: timing.gemm_peak(p, device) for p in PRECISIONS}
    peak = {p: rate for p, (rate, _) in peaks.items()}
    print("GEMM peak (best median rate of n x n torch.mm, n in "
          f"{', '.join(map(str, timing.PEAK_SIZES))}): "
          + ", ".join(f"{p} {rate:,.0f} GFLOP/s (n={n})" for p, (rate, n) in peaks.items()), flush=True)

    rows, steps = [], {}
    for name in args.networks:
        network_rows, fns = time_network(name, args.batch, args.reps, device, {p: n for p, (_, n) in peaks.items()})
        rows += network_rows
        steps[name] = fns
    df = pd.DataFrame(rows)
    df["share_of_peak"] = df["ours_gflop_s"] / df["peak_gflop_s"]

    print(f"\nbatch {args.batch}, training step (forward, loss, backward, SGD), medians of {args.reps} rounds")
    print(f"{'network':<22} {'prec':<5} {'ours img/s':>10} {'reference':>10} {'ours/ref':>9} "
          f"{'ours GFLOP/s':>12} {'peak':>6} {'of peak':>8}")
    for r in df.itertuples():
        print(f"{r.network:<22} {r.precision:<5} {r.ours_img_s:>10.2f} {r.reference_img_s:>10.2f} "
              f"{r.ratio:>8.2f}x {r.ours_gflop_s:>12.0f} {r.peak_gflop_s:>6.0f} {r.share_of_peak:>8.0%}")
    print("peak: the GEMM peak's n x n product at the same precision, timed in the same rounds (GFLOP/s); "
          "of peak: our achieved FLOP rate over it.\n")

    profiles = {}
    for name, best in fastest(df)["precision"].items():
        profiles[name] = timing.step_profile(steps[name][("ours", best)], top=None)
        print(f"what dominates our {name} step in {best} (self CPU time, 2 steps): "
              + ", ".join(f"{op} {share:.0%}" for op, share in profiles[name][:6]))
    print()
    for line in verdicts(df, peak, profiles):
        print(line)

    ds = make_synthetic(4096, 16, image_size=32)
    pipe = timing.pipeline_throughput(ds, 32, device)
    top_rate = df["ours_img_s"].max()
    print(f"\ninput pipeline: {pipe.images_per_s:,.0f} images/s at batch 32 ({pipe.images_per_s / top_rate:,.0f}x the "
          f"fastest training step above); {pipe.what}")
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
