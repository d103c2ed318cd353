"""Dropout whose mask is cheaper to draw on the CPU: the models' one dropout (hidden states and attention).

The same layer as torch's inverted dropout: each element is zeroed with probability p and the others are
scaled by 1 / (1 - p). On the CPU, torch draws its mask with one Bernoulli draw per element: 11-13% of a
training step of the paper's networks in bf16, measured on a 2-core AMD EPYC. Here the mask is drawn as
random bits instead, 16 per element, 64 at a time: an element is kept when its 16 bits, read as a signed
integer, are at least round(p * 2^16) - 2^15, so the drop probability is p to within 2^-17 (0.1 drops
6,554 of 65,536 values, 0.1000061). Drawing 16 bits rather than 32 took the mask of the paper's content
attention (8 x 256 x 9 x 256) from 31 to 9 ms on a 2-core Xeon.

`drop` zeroes the same elements without the scale and returns it, so that attention can scale the values
(B x T x D numbers) instead of the probabilities (B x h x T x T), and drop in the precision of the product
that reads them: in bf16 that is half the bytes, and a pass over the probabilities fewer each way.

The bits come from torch's default CPU generator, so torch.manual_seed and a checkpoint's saved generator
state decide the masks as they decide torch's. The masks are another draw than torch's, so a run is not
bit-identical to one with torch's dropout for the same seed; what the layer does in distribution is
tested (tests/test_dropout.py). On other devices this is torch's dropout (one fused kernel on CUDA).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

_torch_masks = False  # set by torch_masks()


@contextlib.contextmanager
def torch_masks():
    """Within it, `dropout` is torch's own on the CPU too (benchmarks/parity.py compares the two)."""
    global _torch_masks
    saved, _torch_masks = _torch_masks, True
    try:
        yield
    finally:
        _torch_masks = saved


def random_bits16(n: int) -> torch.Tensor:
    """n uniformly random int16s from torch's default CPU generator, drawn as ceil(n / 4) full-range int64s."""
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)  # every one of the 2^64 values
    return words.view(torch.int16)[:n]


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """A tensor of `shape`, each element 0 (False) with probability p (to within 2^-17), else 1, independently.

    Drawn in the dtype of the tensor it multiplies: a product of bf16 and bool converts the mask on the fly,
    13 times slower than a product of two bf16 tensors (9.5 against 0.7 ms on 8 x 256 x 9 x 256, 2-core Xeon)."""
    threshold = round(p * 2 ** 16) - 2 ** 15  # int16s below it: round(p * 2^16) of the 2^16 values
    bits = random_bits16(torch.Size(shape).numel()).view(shape)
    return torch.ge(bits, threshold, out=torch.empty(shape, dtype=dtype))


def _torch_draws(x: torch.Tensor) -> bool:
    return x.device.type != "cpu" or _torch_masks


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with the cheaper mask when x is on the CPU."""
    if not training or p == 0.0 or p == 1.0 or _torch_draws(x):
        return F.dropout(x, p, training)
    return x * keep_mask(x.shape, p, x.dtype) * (1.0 / (1.0 - p))


def drop(x: torch.Tensor, p: float, training: bool = True) -> tuple[torch.Tensor, float]:
    """(x with each element zeroed with probability p, the others not scaled; the scale 1 / (1 - p)), so that
    the caller applies the scale to whichever factor of a product is smaller. `dropout`'s mask for the same
    generator state: dropped * scale is dropout(x, p) to rounding (torch's own mask off the CPU and within
    torch_masks, drawn as torch's dropout draws it on the CPU)."""
    if not training or p == 0.0:
        return x, 1.0
    if p == 1.0:
        return torch.zeros_like(x), 1.0
    if _torch_draws(x):
        return x * torch.empty_like(x).bernoulli_(1.0 - p), 1.0 / (1.0 - p)
    return x * keep_mask(x.shape, p, x.dtype), 1.0 / (1.0 - p)


def product_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matrix product of x runs in: autocast's where it is on for x's device and casts x (float32;
    it leaves float64 alone), else x's own."""
    on = torch.is_autocast_enabled(x.device.type) and x.dtype == torch.float32
    return torch.get_autocast_dtype(x.device.type) if on else x.dtype


def scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x times dropout's 1 / (1 - p), applied to the values rather than to the (larger) probabilities."""
    return x if scale == 1.0 else x * scale


class Dropout(nn.Dropout):
    """nn.Dropout with the cheaper CPU mask of `dropout` (no parameters: the same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)

    def drop(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """`drop` with this layer's p, in training mode only: (x dropped but not scaled, the scale)."""
        return drop(x, self.p, self.training)
