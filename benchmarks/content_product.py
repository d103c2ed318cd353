"""Does the content attention as x M_h x^T pay? One layer of `sa_learned_content_re`, its plain path against its
fused path, which on the CPU computes the scores that way (attnlib.content_algebra).

A head's content score with queries q = x W_q^T + b_q and keys k = x W_k^T + b_k (rows of the head's block) is

    q . k = x M x'^T + x' . (W_k^T b_q) + [x . (W_q^T b_k) + b_q . b_k],   M = W_q^T W_k  (D x D, per head)

and the query's positional term q . (e_row + e_col) is x . (W_q^T e_row) + b_q . e_row (and the same for columns):
a product with the embeddings mapped once per step. So the scores need x M (one projection's work where the heads
are as wide as the model, against two for q and k) and no q or k at all. Exact in exact arithmetic, with the same
parameters.

Timed here: forward and backward of one attention layer (scores, softmax, the products with x and W_out; the
gradient to x and to every parameter) at the paper's size (batch 8, 16 x 16 tokens, width 400, 9 heads, no
dropout), plain against fused, in float32 and bf16 autocast; medians of alternating rounds. It checks first, in
float64, that the two give the same outputs and gradients.

    .venv/bin/python benchmarks/content_product.py [--reps 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from attnlib import content_algebra, results
from attnlib.models import create_model
from attnlib.report import timing
from attnlib.training.train import autocast


def layer_output(attn, x: torch.Tensor, fused: bool) -> torch.Tensor:
    """The layer's output on its plain or its fused path (at any batch: the algebra is taken wherever fused)."""
    if fused:
        b, t, _ = x.shape
        return attn.value(content_algebra.context(attn, x).reshape(b, t, -1))
    attn.fused = False
    try:
        return attn(x)
    finally:
        attn.fused = True


def step(attn, x: torch.Tensor, fused: bool, precision: str):
    """Forward and backward of the layer's output, as a training step runs them."""
    def run():
        with autocast(x.device, precision):
            out = layer_output(attn, x, fused)
        out.float().square().sum().backward()  # any function of the output: its gradient reaches every input
        attn.zero_grad(set_to_none=True)
        x.grad = None
    return run


def check(attn, x: torch.Tensor) -> float:
    """Largest difference of outputs and gradients, plain against fused, in float64, relative to the largest of
    them."""
    attn, x = attn.double(), x.double().requires_grad_()
    outs = []
    for fused in (False, True):
        out = layer_output(attn, x, fused)
        outs.append([out.detach(), *torch.autograd.grad(out.sin().sum(), [x, *attn.parameters()])])
    scale = max(o.abs().max().item() for o in outs[0])
    attn.float()
    return max((a - b).abs().max().item() / scale for a, b in zip(*outs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    attn = create_model("sa_learned_content_re", layers=1, attn_dropout=0.0).blocks[0].attn
    x = torch.randn(8, 256, 400) * 0.5
    small = create_model("sa_learned_content_re", layers=1, hidden=24, heads=3, image_size=8, attn_dropout=0.0)
    print(f"float64, small layer: largest relative difference of outputs and gradients "
          f"{check(small.blocks[0].attn, torch.randn(2, 16, 24)):.1e}", flush=True)
    print(f"machine: {results.device_name(torch.device('cpu'))}; torch {torch.__version__}; batch 8, 16x16 tokens, "
          f"width 400, 9 heads; forward + backward of one layer, medians of {args.reps} rounds", flush=True)
    x.requires_grad_()
    fns = {(name, p): step(attn, x, name == "fused", p) for p in ("fp32", "bf16") for name in ("plain", "fused")}
    times = timing.alternating(fns, "cpu", warmup=1, reps=args.reps)
    for p in ("fp32", "bf16"):
        t_plain, t_fused = (statistics.median(times[(n, p)]) for n in ("plain", "fused"))
        print(f"{p}: plain {t_plain * 1e3:.0f} ms, fused {t_fused * 1e3:.0f} ms: {t_plain / t_fused:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
