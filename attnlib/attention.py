"""Multi-head self-attention over a 2-D grid of tokens, with pluggable positional scores.

Read top to bottom: relative offsets -> positional score modules (quadratic isotropic,
quadratic anisotropic, learned relative 2-D) -> the attention layer.

Notation follows the paper (Cordonnier et al., ICLR 2020, docs/paper.md section 1):
a query pixel q and a key pixel k on an H x W grid, delta = k - q (row, col), and per head h

    A^h_{q,k} = [content]  q_h(X_q) . k_h(X_k) / sqrt(D_h)
              + [position] score^h(delta)            (a module from this file)
    SA_h(X)_q = sum_k softmax(A^h_{q,:})_k X_k
    MHSA(X)   = concat_h[SA_h(X)] W_out + b_out

As in the paper's code, the per-head value matrix W_val^h is folded into W_out (the product
W_val^h W_out^h is one D x D_out matrix per head, Lemma 1), so the layer attends over the input
features themselves and W_out maps heads * D -> D_out. The layer does attention only: residuals,
norms and the feed-forward block belong to the model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnlib import content_algebra
from attnlib.dropout import Dropout, product_dtype, scaled
from attnlib.shared_product import SharedProduct

POSITIONAL = ("quadratic", "quadratic_aniso", "learned", "none")


def relative_offsets(height: int, width: int, device=None) -> torch.Tensor:
    """delta[q, k] = position(k) - position(q) as (row, col), shape (T, T, 2), T = height * width.

    Tokens are numbered row-major: token t sits at row t // width, column t % width.
    """
    rows = torch.arange(height, device=device).repeat_interleave(width)  # (T,)
    cols = torch.arange(width, device=device).repeat(height)  # (T,)
    pos = torch.stack([rows, cols], dim=-1)  # (T, 2)
    return pos[None, :, :] - pos[:, None, :]  # (T, T, 2): key minus query


def flush_denormals(probs: torch.Tensor) -> torch.Tensor:
    """Set probabilities below the smallest normal float (1.2e-38) to 0.

    A Gaussian head's softmax puts numbers like exp(-95) on far-away keys: subnormal floats, which
    x86 CPUs multiply tens of times more slowly than normal ones. A few percent of them made the
    attention matrix products 7x slower here. Zeroing them changes no output by more than 1e-38
    times the inputs' size (tests/test_attention.py checks the layer against the formula).
    """
    return probs.masked_fill(probs < torch.finfo(probs.dtype).tiny, 0.0)


def broadcast_terms(row_term: torch.Tensor, col_term: torch.Tensor) -> torch.Tensor:
    """A score that is a row term (h, H query rows, H key rows) plus a column term (h, W, W), as (h, T, T).

    Token (i, j) is i * W + j, for queries and keys alike; one broadcast add, no (T, T) index (whose backward,
    an index_put on (T, T), took a tenth of the learned network's training step)."""
    heads, height, width = row_term.shape[0], row_term.shape[1], col_term.shape[1]
    t = height * width
    return (row_term[:, :, None, :, None] + col_term[:, None, :, None, :]).reshape(heads, t, t)


def sdpa_pays(x: torch.Tensor) -> bool:
    """Whether the fused content layer hands `x` to torch's scaled_dot_product_attention: off the CPU only.

    On the CPU, torch's attention with a bias was slower than the plain einsum path in every case measured
    on a 2-core AMD EPYC, sa_learned_content at batch 8 and its published size: a training step took 5.22 s
    fused against 3.89 s plain in float32, and ran at 3.14 against 4.24 images/s in bf16, where it falls
    back to a math path that expands the values per head, converts between dtypes and draws its dropout
    mask one element at a time; inference took 1.43 s against 1.22 s in float32. At the quick size (width
    64, batch 32) a training step took 106 against 83 ms."""
    return x.device.type != "cpu"


class QuadraticScore(nn.Module):
    """Gaussian (quadratic) positional score, the paper's Lemma 2 generalised.

    score^h(delta) = -1/2 (delta - mu_h)^T Sigma_h^-1 (delta - mu_h)

    isotropic:   Sigma_h^-1 = s_h^2 I                      (s_h init 1 + N(0, 0.01))
    anisotropic: Sigma_h^-1 = (Sigma_h^-1/2)^T Sigma_h^-1/2 (a learned 2x2 matrix, init I + N(0, 0.01))
    mu_h init N(0, 2.0). The head attends around key = query + mu_h; with Sigma^-1 = 2 alpha I this
    is Lemma 2's  -alpha ||delta - Delta||^2  up to a constant that softmax ignores.
    """

    def __init__(self, heads: int, anisotropic: bool = False, center_std: float = 2.0, spread_std: float = 0.01):
        super().__init__()
        self.heads, self.anisotropic = heads, anisotropic
        self.centers = nn.Parameter(torch.randn(heads, 2) * center_std)  # (h, 2): (row, col)
        if anisotropic:
            self.inv_sqrt_cov = nn.Parameter(torch.eye(2).repeat(heads, 1, 1) + spread_std * torch.randn(heads, 2, 2))
        else:
            self.spreads = nn.Parameter(1.0 + spread_std * torch.randn(heads))

    def inverse_covariance(self) -> torch.Tensor:
        """Sigma^-1 per head, shape (h, 2, 2)."""
        if self.anisotropic:
            a = self.inv_sqrt_cov
            return a.transpose(1, 2) @ a
        eye = torch.eye(2, device=self.spreads.device, dtype=self.spreads.dtype)
        return self.spreads.pow(2)[:, None, None] * eye

    def forward(self, height: int, width: int) -> torch.Tensor:
        if not self.anisotropic:
            return self._isotropic(height, width)
        delta = relative_offsets(height, width, self.centers.device).to(self.centers.dtype)  # (T, T, 2)
        d = delta[None] - self.centers[:, None, None, :]  # (h, T, T, 2)
        sd = d @ self.inverse_covariance()[:, None]  # (h, T, T, 2): Sigma^-1 (delta - mu), Sigma^-1 symmetric
        return -0.5 * (sd * d).sum(-1)  # (h, T, T)

    def _isotropic(self, height: int, width: int) -> torch.Tensor:
        """The same score, separated: a row term plus a column term (separated_terms), broadcast to (h, T, T)
        by one add."""
        return broadcast_terms(*self.separated_terms(height, width))

    def separated_terms(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The isotropic score's two parts: -s^2/2 ((d_row - mu_row)^2 + (d_col - mu_col)^2) is a row term
        (h, H query rows, H key rows) plus a column term (h, W, W)."""
        if self.anisotropic:
            raise ValueError("an anisotropic score does not separate into a row and a column term")
        s2 = -0.5 * self.spreads.pow(2)[:, None, None]  # (h, 1, 1)
        rows = torch.arange(height, device=self.centers.device, dtype=self.centers.dtype)
        cols = torch.arange(width, device=self.centers.device, dtype=self.centers.dtype)
        d_row = rows[None, :] - rows[:, None]  # (H, H): key row minus query row
        d_col = cols[None, :] - cols[:, None]  # (W, W)
        row_term = s2 * (d_row - self.centers[:, 0, None, None]).pow(2)  # (h, Hq, Hk)
        col_term = s2 * (d_col - self.centers[:, 1, None, None]).pow(2)  # (h, Wq, Wk)
        return row_term, col_term


class LearnedRelativeScore(nn.Module):
    """Learned relative 2-D positional score (the paper's "learned embedding").

    A row embedding for each of the 2H-1 row shifts and a column embedding for each of the 2W-1
    column shifts; per head, score^h(delta) = w_row^h . e_row[delta_row] + w_col^h . e_col[delta_col]
    (a bias-free linear map of each, the query-independent term v^T What_key r_delta).

    `query_term` gives [Re]'s optional query-dependent variant q_h . (e_row + e_col) / sqrt(D_h).
    """

    def __init__(self, heads: int, height: int, width: int, dim: int):
        super().__init__()
        self.height, self.width = height, width
        self.row_embeddings = nn.Embedding(2 * height - 1, dim)
        self.col_embeddings = nn.Embedding(2 * width - 1, dim)
        self.head_keys_row = nn.Linear(dim, heads, bias=False)
        self.head_keys_col = nn.Linear(dim, heads, bias=False)

    def _check_grid(self, height: int, width: int):
        if height > self.height or width > self.width:
            raise ValueError(f"grid {height}x{width} is larger than the {self.height}x{self.width} the embeddings were "
                             "built for")

    def _shift_index(self, height: int, width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_grid(height, width)
        delta = relative_offsets(height, width, device)  # (T, T, 2)
        return delta[..., 0] + self.height - 1, delta[..., 1] + self.width - 1  # (T, T) each, >= 0

    def _axis_shifts(self, size: int, built: int, device) -> torch.Tensor:
        """(size, size) index of key minus query along one axis, shifted to the embeddings' rows (>= 0)."""
        pos = torch.arange(size, device=device)
        return pos[None, :] - pos[:, None] + built - 1

    def separated_terms(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The score's two parts: w_row . e_row[delta_row], a row term (h, H query rows, H key rows), plus the
        column term (h, W, W)."""
        self._check_grid(height, width)
        device = self.row_embeddings.weight.device
        row = self.head_keys_row(self.row_embeddings.weight)  # (2H-1, h)
        col = self.head_keys_col(self.col_embeddings.weight)  # (2W-1, h)
        row_term = row[self._axis_shifts(height, self.height, device)].permute(2, 0, 1)  # (h, H, H)
        col_term = col[self._axis_shifts(width, self.width, device)].permute(2, 0, 1)  # (h, W, W)
        return row_term, col_term

    def forward(self, height: int, width: int) -> torch.Tensor:
        """(h, T, T): score^h(delta) for every query and key, a row term plus a column term broadcast."""
        return broadcast_terms(*self.separated_terms(height, width))

    def query_term(self, q: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """q: (B, h, T, d) with d = embedding dim -> (B, h, T, T) scores q . (e_row + e_col) / sqrt(d)."""
        row_idx, col_idx = self._shift_index(height, width, q.device)
        scale = q.shape[-1] ** -0.5
        qr = q @ self.row_embeddings.weight.t()  # (B, h, T, 2H-1)
        qc = q @ self.col_embeddings.weight.t()  # (B, h, T, 2W-1)
        # score[b, h, i, j] = qr[b, h, i, row_idx[i, j]] + qc[b, h, i, col_idx[i, j]]
        b, h, t, _ = q.shape
        qr = qr.gather(-1, row_idx.expand(b, h, t, t))
        qc = qc.gather(-1, col_idx.expand(b, h, t, t))
        return (qr + qc) * scale


class MultiHeadSelfAttention(nn.Module):
    """MHSA on tokens of an H x W grid: content term on/off plus one positional score.

    Args:
        dim: input (and value) width D.
        heads: number of heads N_h, any positive number.
        grid: (H, W), the token grid the positional scores are built for.
        positional: one of POSITIONAL.
        content: add the content term q.k / sqrt(D_h).
        head_dim: query/key width per head D_h (default dim); independent of dim.
        out_dim: output width (default dim).
        relative_query: [Re]'s query-dependent positional term (learned positional only, needs content).
        attn_dropout: dropout on the attention probabilities.
        fused: fused path (default) or the plain, readable one; they compute the same thing.

    Fused path: with a content term, torch's scaled_dot_product_attention with the positional scores as an
    additive bias, where it pays (sdpa_pays: off the CPU); on the CPU, the scores as x M_h x^T with
    M_h = W_q^h^T W_k^h where that does fewer FLOPs (content_algebra; not with keys given). Positional-only
    attention does not depend on the image, so both paths compute its probabilities once per forward (fused: laid
    out queries first, see _positional_context) and apply them to the whole batch (SDPA would redo the same
    softmax for every image). Attention dropout on positional-only probabilities is likewise one mask shared by
    the batch. Dropout's 1 / (1 - p) goes on the values, not on the probabilities (attnlib.dropout.drop)."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], positional: str = "quadratic",
                 content: bool = False, head_dim: int | None = None, out_dim: int | None = None,
                 relative_query: bool = False, attn_dropout: float = 0.0, fused: bool = True):
        super().__init__()
        if positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {positional!r}")
        if positional == "none" and not content:
            raise ValueError("attention with neither a positional score nor content is uniform; enable one")
        if relative_query and not (content and positional == "learned"):
            raise ValueError("relative_query needs content=True and positional='learned'")
        self.dim, self.heads, self.grid = dim, heads, tuple(grid)
        self.head_dim = head_dim or dim
        self.positional_kind, self.content, self.relative_query = positional, content, relative_query
        self.fused = fused
        if positional in ("quadratic", "quadratic_aniso"):
            self.positional = QuadraticScore(heads, anisotropic=positional == "quadratic_aniso")
        elif positional == "learned":
            self.positional = LearnedRelativeScore(heads, *self.grid, self.head_dim)
        else:
            self.positional = None
        if content:
            self.query = nn.Linear(dim, heads * self.head_dim)
            self.key = nn.Linear(dim, heads * self.head_dim)
        self.value = nn.Linear(heads * dim, out_dim or dim)  # W_out (W_val^h folded in, see module doc)
        self.attn_dropout = Dropout(attn_dropout)

    # -- pieces -------------------------------------------------------------------------------
    def _split(self, y: torch.Tensor) -> torch.Tensor:
        b, t, _ = y.shape
        return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, h, T, D_h)

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """Keys for the content term, (B, h, T, D_h). Hierarchical models compute them once and reuse them."""
        return self._split(self.key(x))

    def position_scores(self) -> torch.Tensor | None:
        """Positional scores (h, T, T), or None. Always float32 or wider: under bf16 autocast the
        quadratic form of offsets up to +-2W would lose the precision its centers need."""
        if self.positional is None:
            return None
        device_type = next(self.positional.parameters()).device.type
        with torch.autocast(device_type, enabled=False):
            return self.positional(*self.grid)

    def scores(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Attention logits: (h, T, T) when positional only, else (B, h, T, T)."""
        pos = self.position_scores()
        if not self.content:
            return pos
        q = self._split(self.query(x))  # (B, h, T, D_h)
        k = self.keys(x) if keys is None else keys  # (B, h, T, D_h)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, h, T, T)
        if pos is not None:
            s = s + pos
        if self.relative_query:
            s = s + self.positional.query_term(q, *self.grid)
        return s

    def attention_probs(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax of the scores, (B, h, T, T), rows summing to 1, no dropout."""
        s = self.scores(x, keys)
        p = torch.softmax(s.to(torch.promote_types(s.dtype, torch.float32)), dim=-1)
        return p.expand(x.shape[0], *p.shape[-3:]) if p.dim() == 3 else p

    def _positional_context(self, x: torch.Tensor) -> torch.Tensor:
        """Positional-only attention, (B, T, D) -> (B, T, h, D): the probabilities, which do not depend on the
        image, computed once, with one dropout mask, and applied to every image.

        Plain path: (h, T, T) probabilities, one einsum, which runs as one (h*T, T) @ (T, B*D) product and then
        permutes its (h, T, B, D) output for W_out. Fused path: the probabilities laid out queries first,
        (T, h, T), and one (T*h, T) @ (T, D) product per image, which writes (B, T, h, D) as W_out reads it,
        with no permute forward or backward (their copies were a tenth of [Re]'s quadratic network's bf16 step);
        the same FLOPs. Attention product and W_out, forward and backward, at the paper's size (batch 8, 9 heads,
        width 400, 16 x 16 tokens) on a 2-core Xeon with AMX: 54 ms against the einsum's 66 in bf16, 155 against
        164 in float32.
        """
        b, t, d = x.shape
        scores = self.position_scores()  # (h, T, T), float32 or wider
        if self.fused:
            scores = scores.transpose(0, 1).contiguous()  # (T, h, T)
        probs = flush_denormals(torch.softmax(scores, dim=-1))
        probs, scale = self.attn_dropout.drop(probs.to(product_dtype(x)))  # dropped, not yet scaled
        if not self.fused:
            return torch.einsum("hqk,bkd->bqhd", probs, scaled(x, scale))
        values = scaled(x, scale).to(probs.dtype)
        return SharedProduct.apply(probs.view(t * self.heads, t), values).view(b, t, self.heads, d)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, D) with T = H * W tokens in row-major order -> (B, T, D_out)."""
        b, t, d = x.shape
        if t != self.grid[0] * self.grid[1]:
            raise ValueError(f"expected {self.grid[0]}x{self.grid[1]}={self.grid[0] * self.grid[1]} tokens, got {t}")
        if not self.content:
            ctx = self._positional_context(x)  # (B, T, h, D)
        elif self.fused and sdpa_pays(x):
            q = self._split(self.query(x))  # (B, h, T, D_h)
            k = self.keys(x) if keys is None else keys  # (B, h, T, D_h)
            bias = self.position_scores()  # (h, T, T) or None
            if self.relative_query:
                bias = bias + self.positional.query_term(q, *self.grid)  # (B, h, T, T)
            v = x.unsqueeze(1).expand(b, self.heads, t, d)  # (B, h, T, D): every head attends over x
            bias = None if bias is None else bias.to(q.dtype)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=bias,
                                                 dropout_p=self.attn_dropout.p if self.training else 0.0)
            ctx = ctx.transpose(1, 2)  # (B, T, h, D)
        elif self.fused and keys is None and content_algebra.pays(self, b):
            ctx = content_algebra.context(self, x)  # (B, T, h, D): x M x'^T, the same attention with less work
        else:
            probs = self.attn_dropout(torch.softmax(self.scores(x, keys), dim=-1))  # (B, h, T, T)
            ctx = torch.einsum("bhqk,bkd->bqhd", probs, x)  # (B, T, h, D)
        return self.value(ctx.reshape(b, t, self.heads * d))  # (B, T, D_out)
