"""`make bench`: attnlib's training step against a straightforward float32 implementation.

The paper's quadratic network at its published size (6 layers, 9 heads, hidden 400, 32x32 images),
one training step (forward, cross-entropy, backward, SGD) on a fixed batch. Implementations are
timed in turn within each round (A, B, C, A, B, C, ...) after a warm-up round; medians reported.
FLOPs are counted once with torch.utils.flop_counter on the reference (the same network, so the
same count for every row) and set against the matrix-product rate this machine reaches in the
same process (2048^3 torch.mm, fp32 and bf16).

    .venv/bin/python benchmarks/bench.py [--batches 8 32] [--bf16-batches 8] [--reps 3] [--csv FILE]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_sa import ReferenceQuadraticNet  # noqa: E402

from attnlib import timing  # noqa: E402
from attnlib.attention import flush_denormals  # noqa: E402
from attnlib.data import make_synthetic  # noqa: E402
from attnlib.models import create_model  # noqa: E402


class ReferenceFlushed(ReferenceQuadraticNet):
    """The reference with one change, its subnormal probabilities set to zero: shows how much of
    the difference comes from that alone."""

    def __init__(self):
        super().__init__()
        for block in self.blocks:
            probs = block.attn.probs
            block.attn.probs = lambda probs=probs: flush_denormals(probs())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--bf16-batches", type=int, nargs="*", default=[8], help="bf16 rows only at these batches")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--csv", default="", help="also write the rows to this CSV file")
    args = ap.parse_args(argv)
    device = torch.device(args.device)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}")
    peak = {p: timing.matmul_rate(2048, p, device)[0] for p in ("fp32", "bf16")}
    print(f"measured matrix-product rate (2048^3 torch.mm, median of 5 after 2 warm-up): "
          f"fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")

    torch.manual_seed(0)
    ours = create_model("sa_quadratic").to(device)
    state = ours.state_dict()
    impls = {"attnlib": ours, "reference": ReferenceQuadraticNet(), "reference, subnormals flushed": ReferenceFlushed()}
    for name in ("reference", "reference, subnormals flushed"):
        impls[name].load_state_dict(state)
        impls[name].to(device)
    flops = timing.flops_per_image(impls["reference"], "train", image_shape=(3, 32, 32))
    print(f"training FLOPs per image (forward + backward, flop counter): {flops / 1e9:.1f} GFLOP")

    rows = []
    for batch in args.batches:
        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
        y = torch.randint(0, 10, (batch,), generator=g).to(device)
        precisions = ["fp32"] + (["bf16"] if batch in args.bf16_batches else [])
        fns = {(name, p): timing.train_step_fn(model, x, y, p)
               for p in precisions for name, model in impls.items()
               if not (p == "bf16" and name == "reference, subnormals flushed")}
        print(f"batch {batch}: timing {len(fns)} implementations in turn, 1 warm-up round + {args.reps} rounds ...",
              flush=True)
        times = timing.alternating(fns, device, warmup=1, reps=args.reps)
        base = batch / statistics.median(times[("reference", "fp32")])
        for (name, p), ts in times.items():
            ips = batch / statistics.median(ts)
            rows.append(dict(batch=batch, implementation=name, precision=p, images_per_s=ips,
                             step_ms=1000 * statistics.median(ts), vs_reference_fp32=ips / base,
                             gflops=ips * flops / 1e9, fraction_of_peak=ips * flops / 1e9 / peak[p], reps=len(ts)))

    print(f"\n{'batch':>5}  {'implementation':<30} {'prec':<5} {'img/s':>7} {'step ms':>8} {'vs ref fp32':>11} "
          f"{'GFLOP/s':>8} {'of peak':>8}")
    for r in rows:
        print(f"{r['batch']:>5}  {r['implementation']:<30} {r['precision']:<5} {r['images_per_s']:>7.2f} "
              f"{r['step_ms']:>8.0f} {r['vs_reference_fp32']:>10.2f}x {r['gflops']:>8.0f} {r['fraction_of_peak']:>8.0%}")
    print("\nof peak: achieved FLOP rate over the measured 2048^3 matrix-product rate of the same precision.")

    ds = make_synthetic(4096, 16, image_size=32)
    pipe = timing.pipeline_throughput(ds, 32, device)
    fastest = max(r["images_per_s"] for r in rows)
    print(f"input pipeline: {pipe.images_per_s:,.0f} images/s at batch 32 ({pipe.images_per_s / fastest:,.0f}x the "
          f"fastest training step above); {pipe.what}")
    if args.csv:
        import pandas as pd
        pd.DataFrame(rows).to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
