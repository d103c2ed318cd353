"""Theorem 1 made executable: the attention layer that computes a given convolution, and back.

Read top to bottom: what the theorem covers (`check_supported`) -> one head per kernel tap
(`kernel_shifts`) -> the layer (`ConvAsAttention`, built by `attention_from_conv`) -> its error
against the convolution (`construction_error`) -> the converse measure for trained models
(`conv_likeness`) -> the records notebook 00 writes (`error_table`, `alpha_sweep`, `write_records`).
Its figures are in attnlib.viz (construction.py).

The construction (docs/paper.md section 1). A K x K convolution with C_in inputs and C_out outputs,
stride 1, zero padding K//2, computes at pixel q

    conv(x)_q = b + sum_{(i, j)} W[:, :, i, j] x_{q + (i - K//2, j - K//2)}

one term per kernel tap. Lemma 1: give the attention layer N_h = K^2 heads, head h = (i, j) putting
all its attention on the pixel at shift Delta^h = (i - K//2, j - K//2) (key minus query, row and
column); since the layer attends over its input features and W_out holds one C_in -> C_out block per
head, setting that block to W[:, :, i, j] and b_out = b makes the layer equal to the convolution.
Lemma 2: the quadratic positional score -alpha ||delta - Delta^h||^2 (attnlib's isotropic
QuadraticScore with center mu = Delta^h and spread s = sqrt(2 alpha)) is maximal, at 0, exactly at
delta = Delta^h, and softmax turns it into (nearly) one-hot attention as alpha grows.

Borders. At a border pixel the shift of some taps points outside the image, where the convolution
reads its zero padding. The layer reproduces this literally: it runs on the image padded by K//2
zero tokens on every side (grid (H + 2p) x (W + 2p), p = K//2) and its output is read at the H x W
interior. Every interior query then finds its target key on the grid (a pad token holding zeros
where the convolution reads padding), so the same softmax and the same W_out serve every pixel,
borders included; the outputs at the pad tokens are computed and thrown away. Without the pad
tokens a head whose target is missing would spread its mass over the nearest existing keys, and
border pixels would differ from the convolution.

Sharpness. On the padded grid the nearest competing keys are at distance 1 from the target: four
of them, each with weight exp(-alpha) relative to the target (four more at distance sqrt 2 with
exp(-2 alpha), and so on). The output error is therefore about 4 exp(-alpha) times the size of the
neighbouring inputs, until it falls below the rounding of the arithmetic. DEFAULT_ALPHA = 46 (the
paper's value): 4 exp(-46) = 4e-20 is below half an ulp of 1 in float64 (1.1e-16) and float32
(6e-8), so the target's probability rounds to exactly 1.0 in both and the leak is 1e-4 of float64's
rounding relative to the output's scale; what remains is the rounding of the two summations (the
leak shows only as ~1e-20 absolute where the convolution's output is exactly 0, e.g. on a flat
background). Any alpha above about 20 (float32) or 40 (float64) gives the same errors; notebook 00
plots the error against alpha. Larger alpha costs nothing (scores stay far from overflow).

The learned relative 2-D encoding can express the same thing: with embeddings e(d) = (d^2, d, 1)
for every row shift and every column shift (dimension 3, the paper's D_p >= 3) and head keys
w^h = -alpha (1, -2 a, a^2) for the head's target row a (resp. column b), its score
w_row^h . e_row(dr) + w_col^h . e_col(dc) = -alpha ((dr - a)^2 + (dc - b)^2) is exactly the quadratic
one, a sum of two 1-D quadratics (`positional="learned"`).
"""
from __future__ import annotations

import copy
import math
from typing import Iterable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from attnlib.attention import MultiHeadSelfAttention

DEFAULT_ALPHA = 46.0  # see "Sharpness" in the module docstring
ENCODINGS = ("quadratic", "learned")
LEARNED_DIM = 3  # e(d) = (d^2, d, 1)


# -- what the theorem covers -------------------------------------------------------------------
def check_supported(conv: nn.Module) -> int:
    """The kernel size K of `conv` if Theorem 1's construction covers it; else one-line ValueError.

    Covered: nn.Conv2d, stride 1, dilation 1, groups 1, a square odd kernel, zero padding K//2
    (padding='same', or 'valid' for K = 1).
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected a torch.nn.Conv2d, got {type(conv).__name__}")
    kh, kw = conv.kernel_size

    def bad(why: str):
        raise ValueError(f"Theorem 1's construction does not cover this convolution: {why}")

    if kh != kw:
        bad(f"kernel {kh}x{kw} is not square")
    if kh % 2 == 0:
        bad(f"kernel size {kh} is even (no centre tap; zero padding K//2 would shift the output)")
    if tuple(conv.stride) != (1, 1):
        bad(f"stride {tuple(conv.stride)} is not 1")
    if tuple(conv.dilation) != (1, 1):
        bad(f"dilation {tuple(conv.dilation)} is not 1")
    if conv.groups != 1:
        bad(f"groups={conv.groups} (each head carries one C_in -> C_out block; grouped convs would need zero blocks)")
    padding = conv.padding
    if isinstance(padding, str):
        padding = (kh // 2, kh // 2) if padding == "same" else (0, 0)
    if tuple(padding) != (kh // 2, kh // 2):
        bad(f"padding {conv.padding} is not K//2 = {kh // 2} ('same'); the output would not be H x W")
    if conv.padding_mode != "zeros":
        bad(f"padding_mode {conv.padding_mode!r} is not 'zeros'")
    return kh


def kernel_shifts(kernel_size: int) -> torch.Tensor:
    """(K^2, 2): the shift (row, col), key minus query, that head h = i*K + j reads; tap (i, j) of the kernel."""
    p = kernel_size // 2
    taps = torch.arange(kernel_size)
    return torch.stack(torch.meshgrid(taps, taps, indexing="ij"), dim=-1).reshape(-1, 2) - p  # (K^2, 2)


def _size2(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(s) for s in image_size)
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {tuple(image_size)}")
    return h, w


# -- the layer ----------------------------------------------------------------------------------
class ConvAsAttention(nn.Module):
    """An attnlib MultiHeadSelfAttention (K^2 heads) used as a K x K convolution on H x W images.

    forward: (B, C_in, H, W) -> pad K//2 zero pixels on every side -> tokens of the padded grid
    (row-major) -> attention -> read the H x W interior -> (B, C_out, H, W). See the module docstring.
    """

    def __init__(self, attention: MultiHeadSelfAttention, kernel_size: int, image_size: tuple[int, int]):
        super().__init__()
        self.attention = attention
        self.kernel_size = kernel_size
        self.padding = kernel_size // 2
        self.image_size = image_size
        self.in_channels = attention.dim
        self.out_channels = attention.value.out_features

    @property
    def grid(self) -> tuple[int, int]:
        """The padded token grid the attention runs on."""
        return self.attention.grid

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, (H+2p)(W+2p), C_in): zero-padded image, one token per pixel."""
        b, c, h, w = x.shape
        if (c, h, w) != (self.in_channels, *self.image_size):
            raise ValueError(f"expected input (B, {self.in_channels}, {self.image_size[0]}, {self.image_size[1]}), "
                             f"got {tuple(x.shape)}")
        p = self.padding
        return F.pad(x, (p, p, p, p)).flatten(2).transpose(1, 2)  # (B, T, C_in), row-major

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hp, wp = self.grid
        p, (h, w) = self.padding, self.image_size
        y = self.attention(self.tokens(x))  # (B, T, C_out)
        y = y.view(x.shape[0], hp, wp, self.out_channels)[:, p:p + h, p:p + w]  # (B, H, W, C_out): interior
        return y.permute(0, 3, 1, 2)  # (B, C_out, H, W)

    def attention_probs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[(B, K^2, T, T)] over the padded grid, in the shape of SelfAttentionNet.attention_probs (one layer)."""
        with torch.no_grad():
            return [self.attention.attention_probs(self.tokens(x))]


@torch.no_grad()
def attention_from_conv(conv: nn.Conv2d, image_size: int | Sequence[int], alpha: float | None = None,
                        positional: str = "quadratic", fused: bool = True) -> ConvAsAttention:
    """The attention layer equal to `conv` on images of `image_size` (int or (H, W)).

    positional: "quadratic" (Lemma 2: centers on the kernel taps, spread sqrt(2 alpha)) or "learned"
    (the relative 2-D embedding set to the same quadratic score, embedding dimension 3).
    alpha: sharpness of every head, DEFAULT_ALPHA when None. The layer has conv's dtype and device.
    """
    k = check_supported(conv)
    if positional not in ENCODINGS:
        raise ValueError(f"positional must be one of {ENCODINGS}, got {positional!r}")
    alpha = DEFAULT_ALPHA if alpha is None else float(alpha)
    if not alpha > 0 or math.isinf(alpha):
        raise ValueError(f"alpha must be positive and finite, got {alpha}")
    h, w = _size2(image_size)
    p = k // 2
    c_out, c_in = conv.out_channels, conv.in_channels
    weight = conv.weight.detach()  # (C_out, C_in, K, K)
    attn = MultiHeadSelfAttention(c_in, k * k, (h + 2 * p, w + 2 * p), positional=positional, out_dim=c_out,
                                  head_dim=LEARNED_DIM if positional == "learned" else None, fused=fused)
    attn = attn.to(device=weight.device, dtype=weight.dtype)
    shifts = kernel_shifts(k).to(device=weight.device, dtype=weight.dtype)  # (K^2, 2)
    if positional == "quadratic":
        attn.positional.centers.copy_(shifts)
        attn.positional.spreads.fill_(math.sqrt(2 * alpha))  # -1/2 s^2 ||.||^2 = -alpha ||.||^2
    else:
        score = attn.positional
        for emb, keys, target, n in ((score.row_embeddings, score.head_keys_row, shifts[:, 0], score.height),
                                     (score.col_embeddings, score.head_keys_col, shifts[:, 1], score.width)):
            d = torch.arange(-(n - 1), n, device=weight.device, dtype=weight.dtype)  # shift of each embedding row
            emb.weight.copy_(torch.stack([d * d, d, torch.ones_like(d)], dim=-1))  # (2n-1, 3): e(d) = (d^2, d, 1)
            # w^h . e(d) = -alpha (d - a_h)^2
            keys.weight.copy_(-alpha * torch.stack([torch.ones_like(target), -2 * target, target * target], dim=-1))
    # W_out: head h = tap (i, j) maps its C_in features with W[:, :, i, j] (Lemma 1).
    attn.value.weight.copy_(weight.permute(0, 2, 3, 1).reshape(c_out, k * k * c_in))  # (C_out, heads * C_in)
    if conv.bias is not None:
        attn.value.bias.copy_(conv.bias.detach())
    else:
        attn.value.bias.zero_()
    return ConvAsAttention(attn, k, (h, w)).eval()


# -- error against the convolution ------------------------------------------------------------
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def compare(reference: torch.Tensor, output: torch.Tensor) -> tuple[float, float]:
    """(max absolute error over every element, that divided by the largest |reference|)."""
    err = (output - reference).abs().max().item()
    return err, err / max(reference.abs().max().item(), torch.finfo(reference.dtype).tiny)


@torch.no_grad()
def construction_error(conv: nn.Conv2d, image_size: int | Sequence[int], alphas: Iterable[float] = (DEFAULT_ALPHA,),
                       dtypes: Iterable[str] = ("float32", "float64"), positional: str = "quadratic",
                       x: torch.Tensor | None = None, batch: int = 2, seed: int = 0) -> pd.DataFrame:
    """Max error of the attention layer against `conv` on every pixel, for each alpha and dtype.

    Both sides run in the same dtype (conv is copied and cast), on `x` (B, C_in, H, W) or on a seeded
    standard-normal batch. rel_error = max_abs_error / max |conv(x)|. One row per (dtype, alpha).
    """
    h, w = _size2(image_size)
    if x is None:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, conv.in_channels, h, w, generator=g)
    rows = []
    for name in dtypes:
        dt = DTYPES[name]
        c = copy.deepcopy(conv).to(dt)
        xd = x.to(device=c.weight.device, dtype=dt)
        ref = c(xd)
        for alpha in alphas:
            out = attention_from_conv(c, (h, w), alpha, positional)(xd)
            abs_err, rel_err = compare(ref, out)
            rows.append(dict(positional=positional, kernel=c.kernel_size[0], in_channels=c.in_channels,
                             out_channels=c.out_channels, height=h, width=w, dtype=name, alpha=float(alpha),
                             max_abs_error=abs_err, rel_error=rel_err))
    return pd.DataFrame(rows)


def example_convolutions(in_channels: int, blur_kernel_size: int = 5, blur_sigma: float = 1.0,
                         random_kernel_size: int = 5, random_out_channels: int = 8,
                         seed: int = 0) -> dict[str, nn.Conv2d]:
    """Notebook 00's cases, all with zero padding K//2:

    edge: Sobel x and Sobel y (3x3) of the channel mean, 2 outputs, no bias;
    blur: a normalised Gaussian (K x K, sigma) on each channel separately (a diagonal C -> C conv), no bias;
    random: K x K, C -> random_out_channels, torch's default initialisation with a bias, seeded.
    """
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    edge = nn.Conv2d(in_channels, 2, 3, padding=1, bias=False)
    blur = nn.Conv2d(in_channels, in_channels, blur_kernel_size, padding=blur_kernel_size // 2, bias=False)
    r = torch.arange(blur_kernel_size, dtype=torch.float32) - blur_kernel_size // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * blur_sigma ** 2))
    with torch.no_grad():
        edge.weight.copy_(torch.stack([sobel_x, sobel_x.t()])[:, None].expand(2, in_channels, 3, 3) / in_channels)
        blur.weight.zero_()
        for c in range(in_channels):
            blur.weight[c, c] = g / g.sum()
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        random = nn.Conv2d(in_channels, random_out_channels, random_kernel_size, padding=random_kernel_size // 2)
    return {"edge": edge, "blur": blur, "random": random}


