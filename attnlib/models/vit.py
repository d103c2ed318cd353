"""A Vision Transformer trained from scratch, as the [Re] reproduction configured it for CIFAR-10.

`vit`:       3x3 conv stem (64 channels) + BatchNorm + ReLU + one ResNet18 stage (two BasicBlocks),
             then 2x2 patches -> 16x16 = 256 tokens of width 400.
`vit_plain`: the same transformer on 2x2 patches of the image itself (no convolutional stem), so
             what the stem contributes can be measured.
Both: learned absolute position embedding, 6 pre-norm blocks (LayerNorm -> MHSA -> residual,
LayerNorm -> GELU feed-forward 512 -> residual), 9 heads, final LayerNorm, mean over tokens, linear
classifier. Pooling is a mean, so there is no class token (the [Re] code drew its class token anew
at random on every pass; a token that is not learned carries no information).

Heads have width `head_dim` (default hidden // heads = 44 for 400 / 9) with their own query, key
and value maps and an output map, as in ViT. The fused path is torch's scaled_dot_product_attention
(except while dropping out on the CPU, where the plain path measured faster); the plain path writes the
softmax out, and `attention_probs(x)` reads it. Dropout is attnlib.dropout's.
`hierarchical=True` ([Re]): one block applied `layers` times.

`vit_re` is [Re]'s network itself (its ViT/models/networks.py), so that [Re]'s accuracy is compared
with the same network: every head 400 wide, query/key/value maps without bias, each residual added to
LN(x) instead of x, no final LayerNorm, LayerNorm eps 1e-5, no hidden-state dropout, PyTorch's default
initialisation (`init="torch"`), and a 257th token: a patch of uniform(0, 1) features, drawn anew on
every forward pass (in eval mode too, as [Re] draws it unconditionally), embedded by the patch map and
averaged with the 256 patch tokens. 37,394,506 parameters, [Re]'s count.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from attnlib.dropout import Dropout, dropout
from attnlib.models.common import eval_mode

INITS = ("vit", "torch")


@dataclass
class ViTConfig:
    stem: bool = True  # conv stem + one ResNet18 stage before the patch embedding
    stem_channels: int = 64
    patch_size: int = 2
    hidden: int = 400
    heads: int = 9
    head_dim: int = 0  # 0: hidden // heads
    layers: int = 6
    ff: int = 512
    dropout: float = 0.1  # on hidden states
    attn_dropout: float = 0.1  # on attention probabilities
    layer_norm_eps: float = 1e-6
    hierarchical: bool = False  # [Re]: one block applied `layers` times
    fused: bool = True
    qkv_bias: bool = True  # [Re]: query, key and value maps without bias
    residual_from_norm: bool = False  # [Re]: each block adds its residual to LN(x), not to x
    random_cls: bool = False  # [Re]: a uniform-random patch token, redrawn every pass, averaged with the rest
    final_norm: bool = True  # [Re]: no LayerNorm before pooling
    # "vit": truncated normal(0.02) linear maps and position embedding, zero biases, Kaiming (fan-out)
    # convolutions. "torch": [Re]'s, which applies no initialiser: PyTorch's defaults (position embedding
    # N(0, 1), an nn.Embedding's), except the ResNet18 stage, which torchvision's ResNet initialises.
    init: str = "vit"
    image_size: int = 32
    in_channels: int = 3
    num_classes: int = 10

    def __post_init__(self):
        for name in ("stem_channels", "patch_size", "hidden", "heads", "layers", "ff", "image_size",
                     "in_channels", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout", "attn_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} does not divide image_size {self.image_size}")
        if self.inner_head_dim < 1:
            raise ValueError(f"hidden {self.hidden} is smaller than heads {self.heads}: set head_dim")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")

    @property
    def inner_head_dim(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def tokens(self) -> int:
        """Patch tokens (the 16x16 grid at the default size), not counting the random "cls" token."""
        return (self.image_size // self.patch_size) ** 2


class Attention(nn.Module):
    """Multi-head self-attention with per-head query/key/value maps and an output map."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.inner_head_dim
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.heads * self.head_dim, bias=cfg.qkv_bias)
        self.out = nn.Linear(cfg.heads * self.head_dim, cfg.hidden)
        self.attn_dropout = cfg.attn_dropout
        self.fused = cfg.fused

    def _qkv(self, x: torch.Tensor):
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v  # each (B, heads, T, head_dim)

    def _softmax(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, T, T) attention probabilities, before dropout."""
        q, k, _ = self._qkv(x)
        return self._softmax(q, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        p_drop = self.attn_dropout if self.training else 0.0
        q, k, v = self._qkv(x)
        # On the CPU, torch's attention drops out in a math path that draws its mask one element at a time: a
        # training step took 4-17% longer there than the plain path (2-core AMD EPYC: vit 1.50 against 1.44 s
        # at the published size, batch 8; at the quick size, batch 32, vit 60 against 55 ms and vit_plain 38
        # against 32 ms). Without dropout (inference: 252 against 321 ms, batch 8) the fused path pays.
        if self.fused and not (p_drop > 0 and x.device.type == "cpu"):
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p_drop)
        else:
            y = dropout(self._softmax(q, k), p_drop, self.training) @ v
        return self.out(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + FF(LN(x)).

    `residual_from_norm` ([Re]): LN(x) + MHSA(LN(x)), then LN(y) + FF(LN(y)); the residual stream is
    normalised at every step, as in [Re]'s code.
    """

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.ff = nn.Sequential(nn.Linear(cfg.hidden, cfg.ff), nn.GELU(), Dropout(cfg.dropout),
                                nn.Linear(cfg.ff, cfg.hidden))
        self.dropout = Dropout(cfg.dropout)
        self.residual_from_norm = cfg.residual_from_norm

    def _residual(self, x: torch.Tensor, normed: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return (normed if self.residual_from_norm else x) + self.dropout(branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        x = self._residual(x, normed, self.attn(normed))
        normed = self.norm2(x)
        return self._residual(x, normed, self.ff(normed))


class ViT(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.stem:
            c = cfg.stem_channels
            self.stem = nn.Sequential(nn.Conv2d(cfg.in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                                      nn.ReLU(inplace=True), BasicBlock(c, c), BasicBlock(c, c))
            patch_in = c
        else:
            self.stem = nn.Identity()
            patch_in = cfg.in_channels
        # a Conv2d with stride = kernel is [Re]'s nn.Unfold + nn.Linear: the same map, the same parameters
        self.patch = nn.Conv2d(patch_in, cfg.hidden, cfg.patch_size, stride=cfg.patch_size)
        self.position = nn.Parameter(torch.zeros(1, cfg.tokens + cfg.random_cls, cfg.hidden))
        self.dropout = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(1 if cfg.hierarchical else cfg.layers))
        self.norm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps) if cfg.final_norm else nn.Identity()
        self.classifier = nn.Linear(cfg.hidden, cfg.num_classes)
        if cfg.init == "vit":
            self.apply(self._init_weights)
            nn.init.trunc_normal_(self.position, std=0.02)
        else:
            self._torch_init()

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _torch_init(self):
        """[Re]'s start: its modules keep PyTorch's defaults (the patch Conv2d's default equals its
        Linear's, same fan-in), its position embedding is an nn.Embedding's N(0, 1), and its ResNet18
        stage comes from torchvision's resnet18(), which gives convolutions Kaiming (fan-out) weights."""
        nn.init.normal_(self.position)
        for m in self.stem.modules():
            if isinstance(m, BasicBlock):
                for conv in (m.conv1, m.conv2):
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def config(self) -> dict:
        return asdict(self.cfg)

    def layer_blocks(self) -> list[Block]:
        """The block used at each of the `layers` depths (the same object repeated when hierarchical)."""
        return [self.blocks[0]] * self.cfg.layers if self.cfg.hierarchical else list(self.blocks)

    def no_weight_decay(self) -> set[str]:
        return {"position"}

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, hidden): stem, patch embedding, position embedding; with `random_cls`
        the random token comes first, T = 1 + patches."""
        b, c, h, w = images.shape
        if (c, h, w) != (self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size):
            raise ValueError(f"expected images of shape (B, {self.cfg.in_channels}, {self.cfg.image_size}, "
                             f"{self.cfg.image_size}), got {tuple(images.shape)}")
        features = self.stem(images)
        x = self.patch(features).flatten(2).transpose(1, 2)  # (B, T, hidden), row-major patches
        if self.cfg.random_cls:
            x = torch.cat([self._random_cls(features), x], dim=1)
        return self.dropout(x + self.position)

    def _random_cls(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1, hidden): [Re]'s "cls" token, a patch of the stem's output space whose features are
        uniform in [0, 1), drawn anew for every image and every pass (train and eval alike, as in [Re]'s
        PatchExtraction), embedded by the patch map. It is not learned; its position embedding is."""
        p = self.cfg.patch_size
        patch = torch.rand(features.shape[0], features.shape[1], p, p, device=features.device, dtype=features.dtype)
        return self.patch(patch).flatten(2).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.tokens(images)
        for block in self.layer_blocks():
            x = block(x)
        return self.classifier(self.norm(x).mean(dim=1))

    @torch.no_grad()
    def attention_probs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One (B, heads, T, T) tensor per layer over the T patch tokens, in eval mode (as for figures).

        Rows sum to 1, except with `random_cls`: the random token is left out as query and as key, so a
        row sums to 1 minus what the patch puts on that token, and the maps change from call to call.
        """
        first = int(self.cfg.random_cls)
        with eval_mode(self):
            x, probs = self.tokens(images), []
            for block in self.layer_blocks():
                probs.append(block.attn.probs(block.norm1(x))[:, :, first:, first:])
                x = block(x)
            return probs
