"""The paper's self-attention network for images (docs/paper.md section 3).

image (B, C, H, W) -> 2x2 invertible downsampling (B, H/2 * W/2, 4C) -> linear 4C -> hidden
-> `layers` BERT-style blocks (MHSA, output dense, post-LayerNorm, GELU feed-forward, post-LayerNorm)
-> mean over tokens -> linear classifier.

With the defaults this is the CIFAR-10 network of the original code: 12,086,844 parameters with
quadratic attention, 12,278,682 with learned relative embeddings and 29,601,882 with learned
embeddings plus content (tests/test_models.py checks these).

The `_re` models are [Re]'s networks (its main/models/), so that [Re]'s accuracies are compared with
the same networks: no dense layer after the attention (`attn_dense=False`), no hidden-state dropout,
ReLU in the feed-forward block, LayerNorm eps 1e-5 (PyTorch's default, which [Re] keeps). The learned
model's per-head maps carry a bias (`positional_bias`). 11,124,444 (quadratic) and 11,316,390
(learned) parameters, [Re]'s counts.

`sa_learned_content_re` is only close to [Re]'s: [Re] scores q.k plus q.r, where a head's first 200
query features meet a 200-wide row embedding and its last 200 a 200-wide column embedding, with no
query-independent positional term and no query/key biases. attention.py's learned score has no such
form (its `relative_query` term is q . (e_row + e_col) with 400-wide embeddings, added to the
query-independent w . r, and its query/key maps have biases), and attention.py is shared by every
model, so this model uses that: 28,639,482 parameters where [Re]'s has 28,478,682 (6 layers x (12,400
wider embeddings + 7,200 head maps + 7,200 query/key biases) = 160,800 more).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnlib.attention import POSITIONAL, LearnedRelativeScore, MultiHeadSelfAttention
from attnlib.dropout import Dropout
from attnlib.models.common import eval_mode

INITS = ("original", "bert")
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


@dataclass
class SAConfig:
    positional: str = "quadratic"  # one of attention.POSITIONAL
    content: bool = False  # add the content term q.k / sqrt(D_h)
    relative_query: bool = False  # [Re]'s query-dependent positional term (learned + content only)
    layers: int = 6
    heads: int = 9
    hidden: int = 400
    head_dim: int = 0  # query/key width per head; 0 means `hidden` (the paper: 9 heads of 400)
    ff: int = 512
    dropout: float = 0.1  # on hidden states
    attn_dropout: float = 0.1  # on attention probabilities
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10
    downsample: int = 2  # invertible downsampling factor (pixel unshuffle)
    layer_norm_eps: float = 1e-12
    hierarchical: bool = False  # [Re]: one block applied `layers` times, keys computed once
    fused: bool = True
    # "original": PyTorch's default initialisation of every linear map and embedding, as the original
    # code leaves them (its BertImage applies no initialiser; docs/paper.md section 3.1); "bert": BERT's
    # normal(0, 0.02) weights and zero biases. The Gaussian centers and spreads keep their own either way.
    init: str = "original"
    # The paper's choices where [Re]'s code differs. Plain class attributes, not fields: ReSAConfig makes
    # them options, and the fields of SAConfig (which fingerprint every run) stay those of the paper's model.
    attn_dense = True  # BERT's dense layer after the attention
    activation = "gelu"  # the feed-forward's nonlinearity, one of ACTIVATIONS
    positional_bias = False  # a bias in the learned embeddings' per-head maps

    def __post_init__(self):
        if self.positional not in POSITIONAL:
            raise ValueError(f"positional must be one of {POSITIONAL}, got {self.positional!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        for name in ("layers", "heads", "hidden", "ff", "image_size", "in_channels", "num_classes", "downsample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "attn_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size {self.image_size} is not divisible by downsample {self.downsample}")

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.downsample
        return side, side


@dataclass
class ReSAConfig(SAConfig):
    """[Re]'s self-attention networks (the `_re` models): SAConfig with [Re]'s choices as options."""
    attn_dense: bool = False  # no dense layer after the attention: W_out feeds the residual
    activation: str = "relu"
    positional_bias: bool = False  # [Re]'s learned model: True (see _bias_head_maps)
    layer_norm_eps: float = 1e-5  # PyTorch's default, which [Re] keeps
    dropout: float = 0.0  # no hidden-state dropout; attention dropout stays 0.1

    def __post_init__(self):
        super().__post_init__()
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {self.activation!r}")
        if self.positional_bias and self.positional != "learned":
            raise ValueError(f"positional_bias needs positional='learned', got {self.positional!r}")


def _bias_head_maps(score: LearnedRelativeScore):
    """Give the per-head maps of the learned embeddings a bias, as [Re]'s have. A bias adds one number
    to a head's score for every key, which the softmax removes: it changes no output and gets no
    gradient (up to rounding), but it is part of [Re]'s parameter count."""
    for name in ("head_keys_row", "head_keys_col"):
        plain = getattr(score, name)
        setattr(score, name, nn.Linear(plain.in_features, plain.out_features))


class Block(nn.Module):
    """Attention -> dense -> dropout -> residual -> LayerNorm -> GELU feed-forward -> residual -> LayerNorm.

    `attn_dense=False` ([Re]) leaves the dense layer out: the attention's own output map W_out feeds the
    residual. `activation` picks the feed-forward's nonlinearity.
    """

    def __init__(self, cfg: SAConfig):
        super().__init__()
        self.attn = MultiHeadSelfAttention(
            cfg.hidden, cfg.heads, cfg.grid, positional=cfg.positional, content=cfg.content,
            head_dim=cfg.head_dim or cfg.hidden, relative_query=cfg.relative_query,
            attn_dropout=cfg.attn_dropout, fused=cfg.fused)
        if cfg.positional_bias:
            _bias_head_maps(self.attn.positional)
        self.attn_out = nn.Linear(cfg.hidden, cfg.hidden) if cfg.attn_dense else nn.Identity()
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.ff_in = nn.Linear(cfg.hidden, cfg.ff)
        self.act = ACTIVATIONS[cfg.activation]
        self.ff_out = nn.Linear(cfg.ff, cfg.hidden)
        self.norm2 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn_out(self.attn(x, keys))))
        return self.norm2(x + self.dropout(self.ff_out(self.act(self.ff_in(x)))))


class SelfAttentionNet(nn.Module):
    def __init__(self, cfg: SAConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.in_channels * cfg.downsample ** 2, cfg.hidden)
        n_blocks = 1 if cfg.hierarchical else cfg.layers
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(n_blocks))
        self.classifier = nn.Linear(cfg.hidden, cfg.num_classes)
        if cfg.init == "bert":
            self.apply(self._bert_init)

    @staticmethod
    def _bert_init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def config(self) -> dict:
        return asdict(self.cfg)

    def layer_blocks(self) -> list[Block]:
        """The block used at each of the `layers` depths (the same object repeated when hierarchical)."""
        return [self.blocks[0]] * self.cfg.layers if self.cfg.hierarchical else list(self.blocks)

    def no_weight_decay(self) -> set[str]:
        """Names of parameters excluded from weight decay: the Gaussian centers and spreads."""
        return {n for n, _ in self.named_parameters()
                if n.endswith(("positional.centers", "positional.spreads", "positional.inv_sqrt_cov"))}

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, hidden): invertible downsampling then the linear embedding."""
        b, c, h, w = images.shape
        if (c, h, w) != (self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size):
            raise ValueError(f"expected images of shape (B, {self.cfg.in_channels}, {self.cfg.image_size}, "
                             f"{self.cfg.image_size}), got {tuple(images.shape)}")
        x = F.pixel_unshuffle(images, self.cfg.downsample)  # (B, 4C, H/2, W/2)
        x = x.flatten(2).transpose(1, 2)  # (B, T, 4C), row-major tokens
        return self.embed(x)

    def _run(self, images: torch.Tensor, probs: list | None = None) -> torch.Tensor:
        x = self.tokens(images)
        keys = None
        for i, block in enumerate(self.layer_blocks()):
            if self.cfg.hierarchical and self.cfg.content and i == 0:
                keys = block.attn.keys(x)  # [Re]: keys of the first pass are reused at every depth
            if probs is not None:
                probs.append(block.attn.attention_probs(x, keys))
            x = block(x, keys)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self._run(images).mean(dim=1))

    @torch.no_grad()
    def attention_probs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One (B, heads, T, T) tensor per layer, rows summing to 1, in eval mode (as for figures)."""
        with eval_mode(self):
            probs: list[torch.Tensor] = []
            self._run(images, probs)
            return probs

    @torch.no_grad()
    def attention_centers(self) -> torch.Tensor:
        """(layers, heads, 2): per head the (row, col) offset, in tokens, from a query to where it attends most."""
        if self.cfg.positional not in ("quadratic", "quadratic_aniso"):
            raise AttributeError(f"attention_centers needs quadratic attention, this model has {self.cfg.positional!r}")
        return torch.stack([b.attn.positional.centers.detach().clone() for b in self.layer_blocks()])
