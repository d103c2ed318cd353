"""`make bench`: attnlib's training step against [Re]'s way of computing the same networks, per precision, here.

[Re]'s three 9-head networks at their published size (6 layers, hidden 400, 32x32 images): quadratic, learned 2-D,
learned 2-D + content, as our `sa_quadratic_re`, `sa_learned_re` and `sa_learned_content_re`; one training step
(forward, cross-entropy, backward, SGD) on a fixed batch, in float32 and in bf16 autocast. Each network's
implementations and precisions are timed in turn within each round (A, B, C, D, A, B, ...) after a warm-up round;
medians reported. The reference, benchmarks/reference_sa.py, computes each network with [Re]'s layouts and einsums;
benchmarks/peer.py times it against [Re]'s own modules (fetched outside this repository). Printed, as one report:

- the machine: CPU model, the flags that decide its speed (AVX512-BF16, AMX, ...), threads;
- its GEMM peak per precision (attnlib.report.timing.gemm_peak: the best median rate of n x n products), read again
  the same way in every round beside the steps, so that each share of the peak is taken against the peak of the
  same minutes (on a shared machine with AMX the bf16 peak read 740 and 2,300 GFLOP/s minutes apart, and a share
  against the wrong one is off by as much); not one product timed once, which after a step read a third of the
  peak and put shares past 100%;
- per network and precision: ours and the reference in images/s, their ratio, and ours as a share of that
  precision's peak (training FLOPs per image of the work our path does, counted by torch.utils.flop_counter on our
  network's own path at the timed batch, attention products included: work a faster path skips is not counted);
- the fastest precision of each network, measured here, and the targets: at least 70% of the peak there, and
  ours / reference at least 1.0x at every precision (1.2x for the content network at its fastest), each met or not;
- our step's matrix products alone (benchmarks/product_replay.py: recorded from one step, replayed with their
  shapes, strides and dtypes, nothing between them), timed in the same rounds: their rate over the peak is what the
  step's share can reach with nothing else in it (where they run alone faster than in the step), with every operand
  made contiguous it says whether another layout would help, and their time over the step's is the part of the step
  they take; for a share short of its target, what that leaves: below the target, cutting what lies outside them
  cannot meet it (unless they run faster inside the step than alone); above it, how much of the step may stay
  outside them;
- what dominates our step at that precision (torch.profiler, self CPU time by operator).

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
import product_replay  # noqa: E402
from reference_sa import REFERENCES, SAME_AS_OURS  # noqa: E402

from attnlib import results  # noqa: E402
from attnlib.data import make_synthetic  # noqa: E402
from attnlib.models import create_model  # noqa: E402
from attnlib.report import timing

PRECISIONS = ("fp32", "bf16")
SHARE_TARGET = 0.70  # of the machine's GEMM peak at the precision
PARITY = 1.0  # ours / reference at every precision, same run
RATIO_TARGETS = {"sa_learned_content_re": 1.2}  # at the fastest precision, where more than parity is asked
WARMUP_ROUNDS = 1  # untimed rounds before the timed ones


def peak_reader(precision: str, device: torch.device, readings: list[float]):
    """A call that reads the GEMM peak at `precision` as gemm_peak reads it (the best median rate over its square
    sizes, each after its warm-up products) and appends it to `readings`: the peak, read again within the rounds.

    Not one product timed once: on a shared machine with AMX, a lone 1024 x 1024 bf16 product after a training
    step read 350-900 GFLOP/s where the same product repeated read 1,100, so a share against it passed 100%."""
    return lambda: readings.append(timing.gemm_peak(precision, device)[0])


def time_network(name: str, batch: int, reps: int, device: torch.device) -> tuple[list[dict], dict]:
    """One network: ours and the reference, in every precision, timed in alternating rounds with our step's matrix
    products replayed alone (as laid out, and contiguous) and a reading of the GEMM peak per precision. Returns (a
    row per precision, our step functions by precision)."""
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
    ours_steps = {p: fns[("ours", p)] for p in PRECISIONS}
    products = {p: product_replay.record(ours_steps[p]) for p in PRECISIONS}  # one step each, untimed
    for p in PRECISIONS:
        fns[("products", p)] = products[p].replay()
        fns[("contiguous", p)] = products[p].replay(contiguous=True)
    peaks: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    fns.update({("peak", p): peak_reader(p, device, peaks[p]) for p in PRECISIONS})
    counts = ", ".join(f"{p} {len(c.calls)}" for p, c in products.items())
    print(f"{name}: {flops / 1e9:.1f} GFLOP per training image; timing in turn ours and the reference in "
          f"{' and '.join(PRECISIONS)}, our step's matrix products alone ({counts}), and the GEMM peak, "
          f"{WARMUP_ROUNDS} warm-up round + {reps} rounds ...", flush=True)
    times = timing.alternating(fns, device, warmup=WARMUP_ROUNDS, reps=reps)
    return network_rows(name, batch, batch * flops, times, peaks, products), ours_steps


def network_rows(name: str, batch: int, step_flops: float, times: dict, peaks: dict[str, list[float]],
                 products: dict) -> list[dict]:
    """A row per precision from one network's rounds: `times` by (what, precision), what in ours, reference,
    products (the replay as laid out), contiguous; `peaks`: the GEMM peak's readings per precision, the warm-up
    rounds' first; `products`: the recorded products per precision (their count and FLOPs)."""
    rows = []
    for p in PRECISIONS:
        ours_s, product_s = (statistics.median(times[(what, p)]) for what in ("ours", "products"))
        ref_s, contiguous_s = (statistics.median(times[(what, p)]) for what in ("reference", "contiguous"))
        rows.append(dict(network=name, precision=p, batch=batch, ours_img_s=batch / ours_s,
                         reference_img_s=batch / ref_s, ratio=ref_s / ours_s, gflop_per_image=step_flops / batch / 1e9,
                         ours_gflop_s=step_flops / ours_s / 1e9,
                         peak_gflop_s=statistics.median(peaks[p][WARMUP_ROUNDS:]),  # the timed rounds' readings
                         products=len(products[p].calls), products_flops=products[p].flops / step_flops,
                         products_gflop_s=products[p].flops / product_s / 1e9,
                         contiguous_gflop_s=products[p].flops / contiguous_s / 1e9,
                         products_part=product_s / ours_s, reps=len(times[("ours", p)])))
    return rows


def fastest(rows: pd.DataFrame) -> pd.DataFrame:
    """Each network's row at the precision our step is fastest in, by network."""
    return rows.loc[rows.groupby("network", sort=False)["ours_img_s"].idxmax()].set_index("network")


REPLAY_COLUMNS = ("products", "products_flops", "products_gflop_s", "contiguous_gflop_s", "products_part")


def _what_would_meet(row, peak: float) -> str:
    """Why a share of the peak falls short, measured: the step's matrix products alone, replayed with their shapes
    and layouts (product_replay), run at some share of the peak; with every operand contiguous, at another; and
    they take a part of the step's time. Where they run alone faster than the step, their rate is what the step's
    share can reach with nothing else in it, and at that rate the target leaves 1 - target / rate of the step for
    everything else (the copies that would lay the products out otherwise included)."""
    alone, contiguous, part = row["products_gflop_s"] / peak, row["contiguous_gflop_s"] / peak, row["products_part"]
    text = (f"the step's {int(row['products'])} matrix products ({row['products_flops']:.0%} of its counted FLOPs), "
            f"replayed alone as the step lays them out, run at {alone:.0%} of the peak ({contiguous:.0%} with every "
            f"operand contiguous) and their replay lasts {part:.0%} as long as the step")
    if abs(row["products_flops"] - 1) > 0.01:
        return text + ": the replay misses some of the step's work, so it bounds nothing here"
    if part > 1:
        return text + ": alone they ran slower than the step, so the replay bounds nothing here"
    if max(alone, contiguous) < SHARE_TARGET:
        return (text + ": below the target, as laid out and contiguous, so cutting what lies outside the products "
                "cannot meet it (unless they run faster inside the step than alone)")
    if alone < SHARE_TARGET:
        return (text + f": laid out otherwise, at the contiguous rate, the target would leave at most "
                f"{1 - SHARE_TARGET / contiguous:.0%} of the step for everything else, the copies that lay them out "
                "included")
    return (text + f": at their rate the target leaves at most {1 - SHARE_TARGET / alone:.0%} of the step for "
            f"everything else, and the step's time beyond theirs is {1 - part:.0%} of it now")


def _peak(row, peak: dict[str, float]) -> float:
    """The GEMM peak a row's share is taken against: the one timed in its own rounds, where the row has it."""
    in_rounds = row.get("peak_gflop_s")
    return in_rounds if in_rounds is not None and in_rounds == in_rounds else peak[row["precision"]]


def verdicts(rows: pd.DataFrame, peak: dict[str, float]) -> list[str]:
    """Per network, at its fastest precision here: each target, met or not, with the measured figure, and for a
    share not met the measured reason and what would meet it (from the products' replay, where the rows have it)."""
    lines = []
    for name, best in fastest(rows).iterrows():
        other = rows[(rows["network"] == name) & (rows["precision"] != best["precision"])]
        why = (f" ({', '.join(f'{r.precision} {r.ours_img_s:.2f} img/s' for r in other.itertuples())})"
               if len(other) else "")
        lines.append(f"{name}: fastest here in {best['precision']}, {best['ours_img_s']:.2f} img/s{why}")
        share = best["ours_gflop_s"] / _peak(best, peak)
        line = (f"  share of the {best['precision']} GEMM peak: {share:.0%} (target {SHARE_TARGET:.0%}): "
                + ("met" if share >= SHARE_TARGET else "NOT met"))
        if share < SHARE_TARGET and all(pd.notna(best.get(c)) for c in REPLAY_COLUMNS):
            line += "; " + _what_would_meet(best, _peak(best, peak))
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
    print("GEMM peak before the rounds (best median rate of n x n torch.mm, n in "
          f"{', '.join(map(str, timing.PEAK_SIZES))}): "
          + ", ".join(f"{p} {rate:,.0f} GFLOP/s (n={n})" for p, (rate, n) in peaks.items())
          + "; each share below is taken against the peak read again in its network's rounds", flush=True)

    rows, steps = [], {}
    for name in args.networks:
        network, steps[name] = time_network(name, args.batch, args.reps, device)
        rows += network
    df = pd.DataFrame(rows)
    df["share_of_peak"] = df["ours_gflop_s"] / df["peak_gflop_s"]

    print(f"\nbatch {args.batch}, training step (forward, loss, backward, SGD), medians of {args.reps} rounds")
    print(f"{'network':<22} {'prec':<5} {'ours img/s':>10} {'reference':>10} {'ours/ref':>9} "
          f"{'ours GFLOP/s':>12} {'peak':>6} {'of peak':>8} {'products':>9} {'contig.':>8} {'their part':>10}")
    for r in df.itertuples():
        print(f"{r.network:<22} {r.precision:<5} {r.ours_img_s:>10.2f} {r.reference_img_s:>10.2f} "
              f"{r.ratio:>8.2f}x {r.ours_gflop_s:>12.0f} {r.peak_gflop_s:>6.0f} {r.share_of_peak:>8.0%} "
              f"{r.products_gflop_s / r.peak_gflop_s:>9.0%} {r.contiguous_gflop_s / r.peak_gflop_s:>8.0%} "
              f"{r.products_part:>10.0%}")
    print("peak: the median of the GEMM peak's readings at the same precision, one in each of the same rounds "
          "(GFLOP/s); of peak: our achieved FLOP rate over it;\nproducts: our step's matrix products alone, replayed "
          "as the step lays them out, their rate over the peak (contig.: every operand contiguous); their part: how "
          "long their replay lasts over how long the step does.\n")

    for name, best in fastest(df)["precision"].items():
        ops = timing.step_profile(steps[name][best], top=6)
        print(f"what dominates our {name} step in {best} (self CPU time, 2 steps): "
              + ", ".join(f"{op} {share:.0%}" for op, share in ops))
    print()
    for line in verdicts(df, peak):
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
