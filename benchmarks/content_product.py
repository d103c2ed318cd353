"""Would the content scores as x M_h x^T pay? The attention probabilities of `sa_learned_content_re`, plain against
the algebra that needs no queries and keys.

A head's content score with queries q = x W_q^T + b_q and keys k = x W_k^T + b_k (rows of the head's block) is

    q . k = x M x'^T + x' . (W_k^T b_q) + [x . (W_q^T b_k) + b_q . b_k],   M = W_q^T W_k  (D x D, per head)

and the bracket is the same for every key of a query, which the softmax removes. The query's positional term
q . (e_row + e_col) is x . (W_q^T e_row) + b_q . e_row (and the same for columns): a product with the embeddings
mapped once per step. So the probabilities need x M (one projection's work where the heads are as wide as the
model, against two for q and k), M and the mapped embeddings once per step, and no q or k at all. Exact in exact
arithmetic, with the same parameters.

Timed here: forward and backward of the probabilities (projections, scores, softmax; the gradient to x and to
every parameter) at the paper's size (batch 8, 16 x 16 tokens, width 400, 9 heads), plain as attnlib computes them
against the algebra, in float32 and bf16 autocast; medians of alternating rounds. It checks first, in float64,
that the two give the same probabilities and gradients. attnlib does not use it yet: its training code is digested
into the run ids, so taking it means training the committed series again.

    .venv/bin/python benchmarks/content_product.py [--reps 7]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from attnlib import results
from attnlib.models import create_model
from attnlib.report import timing
from attnlib.training.train import autocast


def softmax(scores: torch.Tensor) -> torch.Tensor:
    """Over the keys, in float32 or wider, as attnlib's attention_probs."""
    return torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)


def plain(attn, x: torch.Tensor) -> torch.Tensor:
    """The probabilities as attnlib computes them (no dropout)."""
    return softmax(attn.scores(x))


def algebra(attn, x: torch.Tensor) -> torch.Tensor:
    """The same probabilities from x M_h x^T and the mapped embeddings: no queries or keys."""
    heads, width = attn.heads, attn.head_dim
    pos = attn.positional
    wq = attn.query.weight.view(heads, width, -1)  # (h, D_h, D)
    wk = attn.key.weight.view(heads, width, -1)
    bq = attn.query.bias.view(heads, width)
    m = torch.einsum("hkd,hke->hde", wq, wk)  # (h, D, D): W_q^T W_k per head
    per_key = torch.einsum("hkd,hk->hd", wk, bq)  # (h, D)
    rows = torch.einsum("hkd,rk->hdr", wq, pos.row_embeddings.weight)  # (h, D, 2H-1)
    cols = torch.einsum("hkd,rk->hdr", wq, pos.col_embeddings.weight)
    row_bias = bq @ pos.row_embeddings.weight.t()  # (h, 2H-1)
    col_bias = bq @ pos.col_embeddings.weight.t()
    xm = torch.einsum("btd,hde->bhte", x, m)  # (B, h, T, D)
    scores = xm @ x.transpose(1, 2).unsqueeze(1)  # (B, h, T, T)
    scores = scores + torch.einsum("btd,hd->bht", x, per_key).unsqueeze(2)
    row_idx, col_idx = pos._shift_index(*attn.grid, x.device)  # (T, T) each
    qr = torch.einsum("btd,hdr->bhtr", x, rows) + row_bias[None, :, None, :]
    qc = torch.einsum("btd,hdr->bhtr", x, cols) + col_bias[None, :, None, :]
    b, h, t, _ = qr.shape
    scores = scores + qr.gather(-1, row_idx.expand(b, h, t, t)) + qc.gather(-1, col_idx.expand(b, h, t, t))
    scores = scores / width ** 0.5 + attn.position_scores()
    return softmax(scores)


def step(fn, attn, x: torch.Tensor, precision: str):
    """Forward and backward of `fn`'s probabilities, as a training step runs them."""
    def run():
        with autocast(x.device, precision):
            probs = fn(attn, x)
        (probs * probs).sum().backward()  # any function of the probabilities: its gradient reaches every input
        attn.zero_grad(set_to_none=True)
        x.grad = None
    return run


def check(attn, x: torch.Tensor) -> float:
    """Largest difference of probabilities and gradients, plain against algebra, in float64, relative to the largest
    of them (b_k's gradient is 0 in exact arithmetic: the algebra does not use b_k)."""
    attn, x = attn.double(), x.double().requires_grad_()
    worst = 0.0
    outs = []
    for fn in (plain, algebra):
        probs = fn(attn, x).double()
        (probs * probs).sum().backward()
        outs.append([probs.detach(), x.grad.clone(), *(torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                                       for p in attn.parameters())])  # b_k's: 0, or rounding
        attn.zero_grad(set_to_none=True)
        x.grad = None
    scale = max(o.abs().max().item() for o in outs[0])
    for a, b in zip(*outs):
        worst = max(worst, (a - b).abs().max().item() / scale)
    attn.float()
    return worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    attn = create_model("sa_learned_content_re", layers=1).blocks[0].attn
    x = torch.randn(8, 256, 400) * 0.5
    small = create_model("sa_learned_content_re", layers=1, hidden=24, heads=3, image_size=8).blocks[0].attn
    print(f"float64, small layer: largest relative difference of probabilities and gradients "
          f"{check(small, torch.randn(2, 16, 24)):.1e}", flush=True)
    print(f"machine: {results.device_name(torch.device('cpu'))}; torch {torch.__version__}; batch 8, 16x16 tokens, "
          f"width 400, 9 heads; forward + backward of the probabilities, medians of {args.reps} rounds", flush=True)
    x.requires_grad_()
    fns = {(name, p): step(fn, attn, x, p) for p in ("fp32", "bf16") for name, fn in (("plain", plain),
                                                                                     ("algebra", algebra))}
    times = timing.alternating(fns, "cpu", warmup=1, reps=args.reps)
    for p in ("fp32", "bf16"):
        t_plain, t_alg = (statistics.median(times[(n, p)]) for n in ("plain", "algebra"))
        print(f"{p}: plain {t_plain * 1e3:.0f} ms, algebra {t_alg * 1e3:.0f} ms: {t_plain / t_alg:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
