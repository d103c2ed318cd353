"""Dropout whose mask is cheaper to draw on the CPU: the models' one dropout (hidden states and attention).

The same layer as torch's inverted dropout: each element is zeroed with probability p and the others are
scaled by 1 / (1 - p). On the CPU, torch draws its mask with one Bernoulli draw per element: 11-13% of a
training step of the paper's networks in bf16, measured on a 2-core AMD EPYC. Here the mask is drawn as
random bits instead, 64 at a time, read as two 32-bit integers: an element is kept when its integer is at
least round(p * 2^32) - 2^31, so the drop probability is p to within 2^-33 (torch's float32 uniform draws
are no finer than 2^-24). Forward and backward together, on the attention probabilities of the paper's
networks (8 x 9 x 256 x 256) on that machine: 2.1x faster than torch's dropout in float32, 1.8x in bf16.

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


def random_bits32(n: int) -> torch.Tensor:
    """n uniformly random int32s from torch's default CPU generator, drawn as ceil(n / 2) full-range int64s."""
    words = torch.empty((n + 1) // 2, dtype=torch.int64).random_(-2 ** 63, None)  # every one of the 2^64 values
    return words.view(torch.int32)[:n]


def keep_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """A bool tensor of `shape`, each element False with probability p (to within 2^-33), independently."""
    threshold = round(p * 2 ** 32) - 2 ** 31  # int32s below it: round(p * 2^32) of the 2^32 values
    return random_bits32(torch.Size(shape).numel()).view(shape) >= threshold


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """F.dropout(x, p, training), with the cheaper mask when x is on the CPU."""
    if not training or p == 0.0 or p == 1.0 or x.device.type != "cpu" or _torch_masks:
        return F.dropout(x, p, training)
    return torch.where(keep_mask(x.shape, p), x * (1.0 / (1.0 - p)), 0.0)


class Dropout(nn.Dropout):
    """nn.Dropout with the cheaper CPU mask of `dropout` (no parameters: the same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
