"""Speed options that change what training computes by float rounding only, each off by default, and their
parity check is attnlib.training.parity (`python -m attnlib.training.parity parity [--device cuda] [--steps N]`).

- `tf32`: TF32 matrix products and convolutions on CUDA (`torch.backends.cuda.matmul.allow_tf32` and
  `torch.backends.cudnn.allow_tf32`): float32 inputs rounded to a 10-bit mantissa inside the product, float32
  accumulation. A no-op on the CPU, which has no TF32. On CUDA, fit given a SpeedOptions sets both flags of the
  process to `tf32` (False: strict float32; torch's own default leaves cuDNN's convolutions in TF32), and leaves
  them so; fit(speed=None) leaves them as they are.
- `compile`: `torch.compile` of the module that trains (the model, or the model in DDP), with Inductor's
  `fallback_random`, so that dropout draws the same masks from the same RNG as without it. Evaluation and the
  checkpoint use the plain module (its state dict keeps its keys; `compiled._orig_mod` is that module).
- `channels_last`: the networks that convolve NCHW images, and their input batches, in channels-last memory
  format: ResNet, SAN, and a ViT with a convolutional stem (its stem and patch embedding, the model's only 4-D
  weights). Ignored for the self-attention networks and a ViT without a stem, whose convolutions are none or a
  single patch embedding.

bf16 autocast is a precision of its own (TrainSettings.precision) and changes the numbers by more than the
above; the parity check measures it beside them. None of these options enters a run's id: they are fields of
TrainParams (`speed.options(p)`), not of TrainSettings/TrainConfig, so switching one on resumes the same run.

    opts = speed.options(p)                  # from a notebook's TrainParams
    fit(model, data, cfg, run, speed=opts)   # attnlib.training.train.fit
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from attnlib.models.resnet import CifarResNet
from attnlib.models.san import SAN
from attnlib.models.vit import ViT

OPTIONS = ("tf32", "compile", "channels_last")
COMPILE_OPTIONS = {"fallback_random": True}  # Inductor draws random numbers as eager torch does: same dropout masks
COMPILE_BACKEND = "inductor"  # torch.compile's default; tests use "eager" (tracing only, seconds instead of minutes)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The plain module inside a torch.compile'd and/or DDP-wrapped one."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)  # DDP


def family(model: nn.Module) -> str:
    """resnet, san or attention (self-attention networks and ViTs)."""
    model = _unwrapped(model)
    return "resnet" if isinstance(model, CifarResNet) else "san" if isinstance(model, SAN) else "attention"


def takes_channels_last(model: nn.Module) -> bool:
    """Whether channels_last applies to `model`: the networks that convolve NCHW images (ResNet, SAN, a ViT's
    convolutional stem). For the quick ViT (16-channel stem on 28x28 images, batch 32) a training step took
    46.7 ms against 52.1 ms (medians of 10 rounds, 2-core AMD EPYC)."""
    model = _unwrapped(model)
    return isinstance(model, (CifarResNet, SAN)) or (isinstance(model, ViT) and model.cfg.stem)


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA matrix products and cuDNN convolutions, process-wide."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


@contextlib.contextmanager
def tf32_flags(enabled: bool):
    """The TF32 flags set to `enabled` inside the block and restored after it."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_tf32(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@dataclass(frozen=True)
class SpeedOptions:
    """How fit runs, not what it computes (beyond float rounding). Each off by default."""

    tf32: bool = False
    compile: bool = False
    channels_last: bool = False

    def prepare(self, model: nn.Module, device: torch.device | str) -> torch.memory_format | None:
        """Apply the options to `model` in place, before its optimizer is made: channels_last (ResNet, SAN, a
        ViT's stem: takes_channels_last); on
        CUDA the TF32 flags (set to self.tf32). Returns the memory format input batches must be given in
        (torch.channels_last), or None to leave them as they are."""
        if torch.device(device).type == "cuda":
            set_tf32(self.tf32)
        if self.channels_last and takes_channels_last(model):
            model.to(memory_format=torch.channels_last)  # parameters keep their identity (and their state dict keys)
            return torch.channels_last
        return None

    def compiled(self, net: nn.Module) -> nn.Module:
        """The module that trains: `net` compiled when self.compile, else `net` itself."""
        if not self.compile:
            return net
        options = COMPILE_OPTIONS if COMPILE_BACKEND == "inductor" else None
        return torch.compile(net, backend=COMPILE_BACKEND, dynamic=False, options=options)

    def batch(self, x: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """An input batch for `model`, in channels-last memory format where the options and model take it."""
        if self.channels_last and takes_channels_last(model) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def notes(self, model: nn.Module | None = None, device: torch.device | str = "cpu") -> list[str]:
        """What of these options does nothing here, and why."""
        out = []
        if self.tf32 and torch.device(device).type != "cuda":
            out.append("tf32: not applicable on CPU (no TF32 there): a no-op")
        if self.channels_last and model is not None and not takes_channels_last(model):
            out.append("channels_last: ignored for the attention models without a convolutional stem (self-attention, "
                       "ViT without stem); ResNet, SAN and ViT's stem only")
        return out

    def describe(self) -> str:
        on = [name for name in OPTIONS if getattr(self, name)]
        return ", ".join(on) if on else "none"


def options(p) -> SpeedOptions:
    """The SpeedOptions of a notebook's TrainParams (its tf32, compile and channels_last fields)."""
    return SpeedOptions(**{name: bool(getattr(p, name, False)) for name in OPTIONS})
