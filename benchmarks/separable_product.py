"""Would the isotropic heads' separable product pay? The attention product alone, dense against separable.

An isotropic Gaussian head's score is a row term plus a column term (attnlib.attention.QuadraticScore), so its
softmax over the H x W keys is the product of a softmax over key rows and one over key columns:
P[(i, j), (a, c)] = R[i, a] C[j, c], and P X is R applied along the rows of the image X, then C along its
columns: (H + W) / T of the dense product's FLOPs (1/8 at the paper's 16 x 16 tokens). It is exact only where
no attention dropout is applied (a dropped entry of P breaks the product); the paper's networks train with
attention dropout 0.1.

Timed here: forward and backward of the product for the 9 heads (softmax of the scores, the product with the
values, the gradient to the values and to the centers and spreads), dense as attnlib computes it against the
separable one (columns, then rows), in float32 and bf16 autocast, at the paper's size (batch 8, 16 x 16 tokens,
width 400) and the quick profile's (batch 32, 7 x 7, width 64); medians of alternating rounds. It checks first
that the two agree.

    .venv/bin/python benchmarks/separable_product.py [--reps 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from attnlib import results
from attnlib.attention import QuadraticScore, flush_denormals
from attnlib.report import timing

SIZES = {"paper": (8, 16, 400), "quick": (32, 7, 64)}  # batch, grid side, width
HEADS = 9
# Each factor's entries below sqrt(tiny) are zeroed, so that no product of two kept factors is subnormal (the
# dense path flushes P's entries below tiny, flush_denormals).
FACTOR_FLOOR = torch.finfo(torch.float32).tiny ** 0.5


def dense(score: QuadraticScore, x: torch.Tensor, side: int) -> torch.Tensor:
    probs = flush_denormals(torch.softmax(score(side, side), dim=-1)).to(x.dtype)  # (h, T, T)
    return torch.einsum("hqk,bkd->bqhd", probs, x)  # (B, T, h, D)


def separable(score: QuadraticScore, x: torch.Tensor, side: int) -> torch.Tensor:
    rows, cols = score.separated_terms(side, side)  # (h, H, H), (h, W, W): score = row term + column term

    def factor(term):
        p = torch.softmax(term, dim=-1)
        return p.masked_fill(p < FACTOR_FLOOR, 0.0).to(x.dtype)
    b, t, d = x.shape
    image = x.view(b, side, side, d)
    by_columns = torch.einsum("hjc,bacd->bhajd", factor(cols), image)  # C along each row of the image
    return torch.einsum("hia,bhajd->bijhd", factor(rows), by_columns).reshape(b, t, score.heads, d)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    device = torch.device("cpu")
    print(f"machine: {results.device_name(device)}; torch {torch.__version__}")
    for size, (batch, side, width) in SIZES.items():
        torch.manual_seed(0)
        score = QuadraticScore(HEADS)
        x = torch.randn(batch, side * side, width, requires_grad=True)
        gap = (dense(score, x, side) - separable(score, x, side)).abs().max().item()
        print(f"{size} size (batch {batch}, {side}x{side} tokens, width {width}): largest difference {gap:.1e}")
        grad = torch.randn(batch, side * side, HEADS, width)
        fns = {}
        for precision in ("fp32", "bf16"):
            for name, product in (("dense", dense), ("separable", separable)):
                def step(product=product, precision=precision):
                    with timing.autocast(device, precision):
                        out = product(score, x.to(torch.bfloat16) if precision == "bf16" else x, side)
                    out.backward(grad.to(out.dtype))
                fns[(name, precision)] = step
        times = timing.alternating(fns, device, warmup=2, reps=args.reps)
        for precision in ("fp32", "bf16"):
            d, s = (statistics.median(times[(n, precision)]) * 1e3 for n in ("dense", "separable"))
            print(f"  {precision}: dense {d:.1f} ms, separable {s:.1f} ms: {d / s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
