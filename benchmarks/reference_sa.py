"""Straightforward implementations of the paper's quadratic and learned-2-D-with-content networks.

Written the way the public implementations write them, as the baselines `make bench` compares attnlib
against: attention scores (Gaussian; or query.key plus the learned row and column embeddings' scores),
softmax, dropout, einsum with the values, concatenated heads, value projection, BERT-style output and
feed-forward blocks. They are the same networks as `create_model("sa_quadratic")` and
`create_model("sa_learned_content")` (same parameter names, so they load those models' weights;
tests/test_timing.py checks the outputs agree) and are kept out of the library on purpose.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class GaussianAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, side: int, attn_dropout: float):
        super().__init__()
        self.heads, self.side = heads, side
        self.positional = nn.Module()
        self.positional.centers = nn.Parameter(torch.randn(heads, 2) * 2.0)
        self.positional.spreads = nn.Parameter(1.0 + 0.01 * torch.randn(heads))
        self.value = nn.Linear(heads * hidden, hidden)
        self.dropout = nn.Dropout(attn_dropout)

    def probs(self) -> torch.Tensor:
        r = torch.arange(self.side, dtype=torch.float32, device=self.positional.centers.device)
        rows, cols = r.repeat_interleave(self.side), r.repeat(self.side)  # token t = (t // side, t % side)
        d_row = rows[None, :] - rows[:, None]  # (T, T): key minus query
        d_col = cols[None, :] - cols[:, None]
        mu, s = self.positional.centers, self.positional.spreads
        scores = -0.5 * s[:, None, None] ** 2 * ((d_row - mu[:, 0, None, None]) ** 2 + (d_col - mu[:, 1, None, None]) ** 2)
        return torch.softmax(scores, dim=-1)  # (h, T, T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        probs = self.dropout(self.probs())
        heads = torch.einsum("hqk,bkd->bqhd", probs, x)  # every head attends over the input itself
        return self.value(heads.reshape(b, t, self.heads * d))


class LearnedContentAttention(nn.Module):
    """Content (query.key) plus learned relative 2-D scores: a row embedding per row shift and a column
    embedding per column shift, each mapped to one score per head."""

    def __init__(self, hidden: int, heads: int, side: int, attn_dropout: float):
        super().__init__()
        self.heads, self.side = heads, side
        self.query = nn.Linear(hidden, heads * hidden)
        self.key = nn.Linear(hidden, heads * hidden)
        self.positional = nn.Module()
        self.positional.row_embeddings = nn.Embedding(2 * side - 1, hidden)
        self.positional.col_embeddings = nn.Embedding(2 * side - 1, hidden)
        self.positional.head_keys_row = nn.Linear(hidden, heads, bias=False)
        self.positional.head_keys_col = nn.Linear(hidden, heads, bias=False)
        self.value = nn.Linear(heads * hidden, hidden)
        self.dropout = nn.Dropout(attn_dropout)

    def position_scores(self) -> torch.Tensor:
        pos = self.positional
        r = torch.arange(self.side, device=pos.row_embeddings.weight.device)
        rows, cols = r.repeat_interleave(self.side), r.repeat(self.side)  # token t = (t // side, t % side)
        d_row = rows[None, :] - rows[:, None] + self.side - 1  # (T, T): key minus query, shifted to >= 0
        d_col = cols[None, :] - cols[:, None] + self.side - 1
        row = pos.head_keys_row(pos.row_embeddings(d_row))  # (T, T, h)
        col = pos.head_keys_col(pos.col_embeddings(d_col))
        return (row + col).permute(2, 0, 1)  # (h, T, T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.query(x).view(b, t, self.heads, d).transpose(1, 2)  # (B, h, T, D)
        k = self.key(x).view(b, t, self.heads, d).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d) + self.position_scores()
        probs = self.dropout(torch.softmax(scores, dim=-1))  # (B, h, T, T)
        heads = torch.einsum("bhqk,bkd->bqhd", probs, x)  # every head attends over the input itself
        return self.value(heads.reshape(b, t, self.heads * d))


ATTENTION = {"quadratic": GaussianAttention, "learned_content": LearnedContentAttention}


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, side: int, ff: int, dropout: float, attention: str = "quadratic"):
        super().__init__()
        self.attn = ATTENTION[attention](hidden, heads, side, dropout)
        self.attn_out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ff_in = nn.Linear(hidden, ff)
        self.ff_out = nn.Linear(ff, hidden)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn_out(self.attn(x))))
        return self.norm2(x + self.dropout(self.ff_out(F.gelu(self.ff_in(x)))))


class ReferenceQuadraticNet(nn.Module):
    """sa_quadratic's network: 2x2 invertible downsampling, `layers` blocks, mean pool, classifier."""
    attention = "quadratic"

    def __init__(self, layers: int = 6, heads: int = 9, hidden: int = 400, ff: int = 512, image_size: int = 32,
                 in_channels: int = 3, num_classes: int = 10, downsample: int = 2, dropout: float = 0.1):
        super().__init__()
        self.downsample = downsample
        self.embed = nn.Linear(in_channels * downsample ** 2, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, image_size // downsample, ff, dropout, self.attention)
                                    for _ in range(layers))
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.pixel_unshuffle(images, self.downsample).flatten(2).transpose(1, 2)
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x.mean(dim=1))


class ReferenceLearnedContentNet(ReferenceQuadraticNet):
    """sa_learned_content's network: the same, with content and learned relative 2-D attention."""
    attention = "learned_content"


REFERENCES = {"sa_quadratic": ReferenceQuadraticNet, "sa_learned_content": ReferenceLearnedContentNet}
