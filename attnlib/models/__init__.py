"""Models picked by name: `create_model(name, **overrides)` and `list_models()`.

Each registered name is a small factory with the published defaults; overrides are checked
against the model's config dataclass, so a misspelt or ill-typed override fails at once.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

from attnlib.models.resnet import CifarResNet, ResNetConfig
from attnlib.models.sa_net import SAConfig, SelfAttentionNet
from attnlib.models.san import SAN, SANConfig
from attnlib.models.vit import ViT, ViTConfig

_REGISTRY: dict[str, tuple[Callable[..., nn.Module], type, dict, str]] = {}


def register(name: str, builder: Callable[..., nn.Module], config_cls: type, description: str, **defaults):
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = (builder, config_cls, defaults, description)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    return _spec(name)[3]


def _spec(name: str):
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    return _REGISTRY[name]


def model_config(name: str, **overrides):
    """The config dataclass a model would be built with (defaults, then overrides), validated."""
    builder, config_cls, defaults, _ = _spec(name)
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"model {name!r} has no option {key!r}; options: {', '.join(fields)}")
        expected = type(getattr(config_cls(), key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            overrides[key] = value
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ValueError(f"model option {key!r} must be {expected.__name__}, got {value!r}")
    return config_cls(**{**defaults, **overrides})


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; e.g. create_model('sa_quadratic', heads=16, layers=2)."""
    builder = _spec(name)[0]
    model = builder(model_config(name, **overrides))
    model.model_name = name
    return model


def config_fields(name: str) -> set[str]:
    """The option names a model accepts (its config dataclass's fields)."""
    return {f.name for f in dataclasses.fields(_spec(name)[1])}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


register("sa_quadratic", SelfAttentionNet, SAConfig,
         "self-attention, isotropic Gaussian (quadratic) positional attention", positional="quadratic")
register("sa_quadratic_aniso", SelfAttentionNet, SAConfig,
         "self-attention, anisotropic Gaussian positional attention", positional="quadratic_aniso")
register("sa_learned", SelfAttentionNet, SAConfig,
         "self-attention, learned relative 2-D embedding, no content", positional="learned")
register("sa_learned_content", SelfAttentionNet, SAConfig,
         "self-attention, learned relative 2-D embedding + content", positional="learned", content=True)
register("sa_content", SelfAttentionNet, SAConfig,
         "self-attention, content only (no positional encoding)", positional="none", content=True)
register("resnet18", CifarResNet, ResNetConfig,
         "ResNet18 for CIFAR (torchvision's, 3x3 stride-1 stem, no max-pool): the paper's baseline")
register("san_pairwise", SAN, SANConfig,
         "SAN pairwise self-attention (Zhao et al. 2020), stages widened as in the original SAN", sa_type="pairwise")
register("san_patchwise", SAN, SANConfig,
         "SAN patchwise self-attention (Zhao et al. 2020), stages widened as in the original SAN", sa_type="patchwise")
register("vit", ViT, ViTConfig,
         "ViT from scratch as [Re] configured it: conv stem + one ResNet18 stage, 2x2 patches", stem=True)
register("vit_plain", ViT, ViTConfig, "ViT on 2x2 patches of the image, no convolutional stem", stem=False)

__all__ = ["create_model", "list_models", "describe", "model_config", "count_parameters", "register",
           "config_fields", "SAConfig", "SelfAttentionNet", "ResNetConfig", "CifarResNet", "ViTConfig", "ViT",
           "SANConfig", "SAN"]
