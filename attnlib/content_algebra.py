"""Content attention on the CPU with less work: the fused path of attention.py's layer, the same attention.

A head's content score, with queries q = x W_q^T + b_q and keys k = x W_k^T + b_k (the head's rows of the maps), is

    q . k' = x M x'^T + x' . u + x . (W_q^T b_k) + b_q . b_k,      M = W_q^T W_k (D x D),  u = W_k^T b_q

for a query token x and a key token x'. So the scores need x M + u, one (B*T, D) @ (D, h*D) product where the
plain path needs two of them, q and k, when the heads are as wide as the model (the paper: 9 heads of 400 on
width 400), and M once per step. The last two terms are the same for every key of a query: the softmax ignores
them, but they are kept (one more column of the product), so that b_k gets the gradient it gets on the plain
path. [Re]'s query-dependent positional term q . (e_row + e_col) is x . (W_q^T e_row) + b_q . e_row and the same
for columns: more columns of the one product, with the embeddings mapped once per step.

Every other term of a score is a row term plus a column term: a number per query and key row, and one per query
and key column (the learned and the isotropic Gaussian positional scores, the query-dependent term, the per-query
constant). They are added to the scores in place, broadcast over the key columns and rows, with no (T, T) index.

Scores are laid out (B, T, h, T), queries first: x M + u comes out of its product as (B, T, h, D) and the context
out of its product as (B, T, h, D), which W_out reads as it is, with no transposes of (B, h, T, D) tensors.
Exact in exact arithmetic (tests/test_attention.py checks it against the plain path in float64: the layer's
outputs and the gradients to its input and every parameter). `pays` decides by counting the products' FLOPs.
"""
from __future__ import annotations

import torch

from attnlib.dropout import product_dtype, scaled


def _shift_columns(layer) -> tuple[int, int]:
    """Columns per head of the query-dependent positional term: 2H-1 row shifts and 2W-1 column shifts."""
    if not layer.relative_query:
        return 0, 0
    return layer.positional.row_embeddings.num_embeddings, layer.positional.col_embeddings.num_embeddings


def pays(layer, batch: int) -> bool:
    """Whether x M x'^T does fewer FLOPs than q . k for `batch` images (forward; the backward scales alike)."""
    d, dh, h = layer.dim, layer.head_dim, layer.heads
    t = layer.grid[0] * layer.grid[1]
    n, shifts = batch * t, sum(_shift_columns(layer))
    plain = 2 * n * d * h * dh * 2 + 2 * n * h * t * dh + 2 * n * h * dh * shifts  # q, k; q . k; q . e
    algebra = 2 * h * d * dh * (d + 1 + shifts) + 2 * n * d * h * (d + 1 + shifts) + 2 * n * h * t * d
    return algebra < plain


def query_maps(layer) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Two (weight, bias) pairs, scaled by 1/sqrt(D_h): x @ weight + bias gives per head x M + u, (D, h*D) and
    (h*D,); and the per-query constant, with the query-dependent term x . (W_q^T e) + b_q . e for each row shift
    and each column shift after it, (D, h*K) and (h*K,). Two products, not one cut in two: the backward of a cut
    fills and copies the whole product's gradient.

    W_q and b_q are scaled before any product, in the parameters' precision, and the maps cast to the products'
    dtype once (under bf16 autocast M is rounded once, not again by the scale). M is formed as (h, D, D) blocks of
    M_h^T, whose transpose is the (D, h*D) weight: a view, where a (D, h, D) einsum output was a permuted copy."""
    h, dh, d = layer.heads, layer.head_dim, layer.dim
    scale = dh ** -0.5
    dtype = product_dtype(layer.query.weight)
    wq = (layer.query.weight * scale).view(h, dh, d).to(dtype)  # (h, D_h, D), scaled
    wk = layer.key.weight.view(h, dh, d).to(dtype)
    bq, bk = layer.query.bias.view(h, dh) * scale, layer.key.bias.view(h, dh)
    weight = torch.bmm(wk.transpose(1, 2), wq).reshape(h * d, d).t()  # (D, h*D): M_h[d, e] at column (h, e)
    bias = torch.einsum("hke,hk->he", wk, bq).reshape(-1)  # (h*D,): u
    keys = [bk[..., None]]  # (h, D_h, K): what each query meets beyond x'; b_k, then the shifts' embeddings
    if layer.relative_query:
        for emb in (layer.positional.row_embeddings.weight, layer.positional.col_embeddings.weight):  # (2H-1, D_h)
            keys.append(emb.t().expand(h, dh, -1))
    keys = torch.cat(keys, dim=2)
    extra_weight = torch.einsum("hkd,hkr->dhr", wq, keys.to(dtype)).reshape(d, -1)  # (D, h*K)
    extra_bias = torch.einsum("hk,hkr->hr", bq, keys).reshape(-1)  # (h*K,)
    return (weight, bias), (extra_weight, extra_bias)


def _axis_terms(layer, extra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The scores' row terms (B, T, h, H or 1) and column terms (T or B, T, h, W) or None, from the product's
    columns beyond x M + u (`extra`, (B, T, h, 1 + shifts)) and the positional score where it separates."""
    (height, width), pos = layer.grid, layer.positional
    wide = torch.promote_types(extra.dtype, torch.float32)  # the terms add to float32 scores, or wider
    rows, cols = extra[..., :1].to(wide), None  # the per-query constant: (B, T, h, 1)
    if pos is not None and not getattr(pos, "anisotropic", False):
        with torch.autocast(extra.device.type, enabled=False):
            row_term, col_term = pos.separated_terms(height, width)  # (h, H, H), (h, W, W)
        rows = rows + row_term.transpose(0, 1).repeat_interleave(width, dim=0)  # (T, h, H): query row t // W
        cols = col_term.transpose(0, 1).repeat(height, 1, 1)  # (T, h, W): query column t % W
    if layer.relative_query:
        b, t, h, _ = extra.shape
        n_rows, _ = _shift_columns(layer)
        token = torch.arange(t, device=extra.device)
        for axis, (size, built, shifts) in enumerate(((height, pos.height, extra[..., 1:1 + n_rows]),
                                                      (width, pos.width, extra[..., 1 + n_rows:]))):
            query = token // width if axis == 0 else token % width  # the query's row or column
            key = torch.arange(size, device=extra.device)
            index = (key[None, :] - query[:, None] + built - 1).view(1, t, 1, size)  # (1, T, 1, H or W)
            term = shifts.gather(-1, index.expand(b, t, h, size)).to(wide)  # (B, T, h, H or W): e at key - query
            if axis == 0:
                rows = rows + term
            else:
                cols = term if cols is None else cols + term
    return rows, cols


def context(layer, x: torch.Tensor) -> torch.Tensor:
    """x: (B, T, D) -> (B, T, h, D): each head's attention probabilities, with attention dropout, applied to x."""
    b, t, d = x.shape
    h, (height, width) = layer.heads, layer.grid
    (weight, bias), (extra_weight, extra_bias) = query_maps(layer)
    tokens = x.reshape(b * t, d)
    xm = torch.addmm(bias, tokens, weight).view(b, t * h, d)  # (B, T*h, D): x M + u
    extra = torch.addmm(extra_bias, tokens, extra_weight).view(b, t, h, -1)  # (B, T, h, K)
    scores = torch.bmm(xm, x.transpose(1, 2)).view(b, t, h, height, width)  # (x M + u) . x' for key (row, col)
    rows, cols = _axis_terms(layer, extra)
    scores = scores + rows[..., :, None]  # a new tensor (not a view: in-place adds stay cheap), float32 or wider
    if cols is not None:
        scores.add_(cols[..., None, :])
    if getattr(layer.positional, "anisotropic", False):
        scores.add_(layer.position_scores().transpose(0, 1).reshape(t, h, height, width))  # no row, column terms
    probs = torch.softmax(scores.view(b, t, h, t), dim=-1).to(product_dtype(x))  # (B, T, h, T)
    probs, scale = layer.attn_dropout.drop(probs)  # dropped in the product's dtype; the scale goes on x
    return torch.bmm(probs.view(b, t * h, t), scaled(x, scale)).view(b, t, h, d)  # (B, T, h, D)
