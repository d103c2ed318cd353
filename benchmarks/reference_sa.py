"""[Re]'s three self-attention networks, computed the way [Re]'s own modules compute them: the reference of
`make bench`.

[Re] (github.com/NishantPrabhu/Self-Attention-and-Convolutions, `main/models/attention.py`) keeps the hidden states
as an image, (B, H, W, D), and writes each attention as einsums over that layout:

- quadratic: a buffer of relative offsets and their squares and product, R (H, W, H, W, 5), contracted with one
  5-vector per head into the scores (H, W, h, H, W); softmax over the keys, dropout on those probabilities (one mask
  shared by the batch), then `einsum('ijhkl,bkld->bijhd')` with the hidden states and the value map;
- learned 2-D: each head's score of a row shift and of a column shift, computed once per shift pair on (H, H) and
  (W, W) and broadcast to (1, H, W, h, H, W), expanded to the batch, softmax, dropout, `einsum('bijhkl,bkld->bijhd')`;
- learned 2-D + content: queries and keys (B, H, W, h, D), `einsum('bijhd,bklhd->bijhkl')` for the content, the
  query's positional score as one einsum against the row embeddings (per query row) and one against the column
  embeddings (per query column), broadcast to (B, H, W, h, H, W), then as above.

Written here in this project's words, not copied: the same layouts and the same contractions, so that they cost
what [Re]'s cost (`benchmarks/peer.py` times them against [Re]'s own modules). The quadratic and learned networks are
the same functions as our `sa_quadratic_re` and `sa_learned_re` (same parameter names, so they load those weights,
and the same outputs; tests/test_timing.py checks both). The content network is [Re]'s own, which our
`sa_learned_content_re` only approaches (its positional term uses full-width embeddings and adds the
query-independent term, attnlib/models/sa_net.py): the same parameter count as [Re]'s, checked against the formula.
Kept out of the library on purpose.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _relative_features(height: int, width: int) -> torch.Tensor:
    """R[i, j, k, l] = (dr, dc, dr^2, dc^2, dr*dc) with (dr, dc) = key (k, l) minus query (i, j): (H, W, H, W, 5)."""
    grid = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij"), dim=-1)  # (H, W, 2)
    rel = (grid[None, None] - grid[:, :, None, None]).float()  # (H, W, H, W, 2)
    return torch.cat([rel, rel ** 2, (rel[..., 0] * rel[..., 1])[..., None]], dim=-1)


class QuadraticAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, side: int, attn_dropout: float):
        super().__init__()
        self.heads = heads
        self.positional = nn.Module()
        self.positional.centers = nn.Parameter(torch.randn(heads, 2) * 2.0)
        self.positional.spreads = nn.Parameter(1.0 + 0.01 * torch.randn(heads))
        self.register_buffer("relative", _relative_features(side, side), persistent=False)
        self.value = nn.Linear(heads * hidden, hidden)
        self.dropout = nn.Dropout(attn_dropout)

    def head_vectors(self) -> torch.Tensor:
        """Per head, the 5-vector whose product with R is -s^2/2 |delta - mu|^2 up to a constant per query."""
        a = self.positional.spreads ** 2
        mu_r, mu_c = self.positional.centers[:, 0], self.positional.centers[:, 1]
        zero = torch.zeros_like(a)
        return -0.5 * torch.stack([-2 * a * mu_r, -2 * a * mu_c, a, a, zero], dim=-1)  # (h, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, D)
        b, height, width, d = x.shape
        scores = torch.einsum("ijkld,hd->ijhkl", self.relative, self.head_vectors())  # (H, W, h, H, W)
        probs = F.softmax(scores.reshape(height, width, self.heads, -1), dim=-1).view(scores.shape)
        probs = self.dropout(probs)
        context = torch.einsum("ijhkl,bkld->bijhd", probs, x)  # (B, H, W, h, D)
        return self.value(context.reshape(b, height, width, -1))


class LearnedAttention(nn.Module):
    """Learned 2-D relative scores: per head, a score of each row shift and of each column shift."""

    def __init__(self, hidden: int, heads: int, side: int, attn_dropout: float):
        super().__init__()
        self.heads = heads
        self.positional = nn.Module()
        self.positional.row_embeddings = nn.Embedding(2 * side - 1, hidden)
        self.positional.col_embeddings = nn.Embedding(2 * side - 1, hidden)
        self.positional.head_keys_row = nn.Linear(hidden, heads)
        self.positional.head_keys_col = nn.Linear(hidden, heads)
        shifts = torch.arange(side)[None, :] - torch.arange(side)[:, None] + side - 1  # key minus query, >= 0
        self.register_buffer("shifts", shifts, persistent=False)
        self.value = nn.Linear(heads * hidden, hidden)
        self.dropout = nn.Dropout(attn_dropout)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(1, H, W, h, H, W): one score per head and shift pair, computed on (H, H) and (W, W)."""
        _, height, width, _ = x.shape
        pos = self.positional
        rows = pos.row_embeddings(self.shifts[:height, :height].reshape(-1))  # (H*H, D)
        cols = pos.col_embeddings(self.shifts[:width, :width].reshape(-1))  # (W*W, D)
        row_scores = pos.head_keys_row(rows).view(height, 1, height, 1, self.heads)
        col_scores = pos.head_keys_col(cols).view(1, width, 1, width, self.heads)
        return (row_scores + col_scores).permute(0, 1, 4, 2, 3).unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, D)
        b, height, width, _ = x.shape
        scores = self.scores(x)
        probs = F.softmax(scores.reshape(*scores.shape[:4], -1), dim=-1).view(scores.shape)
        probs = self.dropout(probs.expand(b, *scores.shape[1:]))
        context = torch.einsum("bijhkl,bkld->bijhd", probs, x)  # (B, H, W, h, D)
        return self.value(context.reshape(b, height, width, -1))


class LearnedContentAttention(LearnedAttention):
    """[Re]'s learned 2-D + content attention: q . k plus the query's score of each shift, the first half of the
    query's width against a row embedding and the second half against a column embedding (each half as wide),
    queries and keys without a bias, no per-head maps of the embeddings."""

    def __init__(self, hidden: int, heads: int, side: int, attn_dropout: float):
        super().__init__(hidden, heads, side, attn_dropout)
        self.positional.row_embeddings = nn.Embedding(2 * side - 1, hidden // 2)
        self.positional.col_embeddings = nn.Embedding(2 * side - 1, hidden - hidden // 2)
        del self.positional.head_keys_row, self.positional.head_keys_col
        self.query = nn.Linear(hidden, heads * hidden, bias=False)
        self.key = nn.Linear(hidden, heads * hidden, bias=False)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, h, H, W)."""
        b, height, width, d = x.shape
        pos, half = self.positional, d // 2
        rows = pos.row_embeddings(self.shifts[:height, :height].reshape(-1)).view(height, height, half)
        cols = pos.col_embeddings(self.shifts[:width, :width].reshape(-1)).view(width, width, d - half)
        q = self.query(x).view(b, height, width, self.heads, d)
        k = self.key(x).view(b, height, width, self.heads, d)
        q_rows = torch.einsum("bijhd,ikd->bijhk", q[..., :half], rows)  # (B, H, W, h, H)
        q_cols = torch.einsum("bijhd,jld->bijhl", q[..., half:], cols)  # (B, H, W, h, W)
        content = torch.einsum("bijhd,bklhd->bijhkl", q, k)
        return (content + q_rows[..., None] + q_cols[..., None, :]) / math.sqrt(d)


class Block(nn.Module):
    """[Re]'s encoder block: attention (its value map feeding the residual), LayerNorm, ReLU feed-forward, LayerNorm."""

    def __init__(self, attention: nn.Module, hidden: int, ff: int):
        super().__init__()
        self.attn = attention
        self.norm1 = nn.LayerNorm(hidden)
        self.ff_in = nn.Linear(hidden, ff)
        self.ff_out = nn.Linear(ff, hidden)
        self.norm2 = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.ff_out(F.relu(self.ff_in(x))))


class ReferenceNet(nn.Module):
    """2x2 invertible downsampling, `layers` blocks on (B, H, W, D), mean pool, classifier."""
    positional = "quadratic"
    content = False

    def __init__(self, layers: int = 6, heads: int = 9, hidden: int = 400, ff: int = 512, image_size: int = 32,
                 in_channels: int = 3, num_classes: int = 10, downsample: int = 2, attn_dropout: float = 0.1):
        super().__init__()
        self.downsample, side = downsample, image_size // downsample
        self.embed = nn.Linear(in_channels * downsample ** 2, hidden)

        def attention():
            kind = {"quadratic": QuadraticAttention, "learned": LearnedAttention}[self.positional]
            return (LearnedContentAttention if self.content else kind)(hidden, heads, side, attn_dropout)
        self.blocks = nn.ModuleList(Block(attention(), hidden, ff) for _ in range(layers))
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(F.pixel_unshuffle(images, self.downsample).permute(0, 2, 3, 1))  # (B, H, W, D)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.flatten(1, 2).mean(dim=1))


class ReferenceLearnedNet(ReferenceNet):
    positional = "learned"


class ReferenceLearnedContentNet(ReferenceNet):
    positional = "learned"
    content = True


REFERENCES = {"sa_quadratic_re": ReferenceNet, "sa_learned_re": ReferenceLearnedNet,
              "sa_learned_content_re": ReferenceLearnedContentNet}
SAME_AS_OURS = ("sa_quadratic_re", "sa_learned_re")  # the same functions as ours: they load our weights
