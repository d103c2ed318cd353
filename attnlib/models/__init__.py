"""Models picked by name: `create_model(name, **overrides)` and `list_models()`.

Each registered name is a small factory with the published defaults; overrides are checked
against the model's config dataclass by attnlib.schema, so a misspelt or ill-typed override fails at once.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

from attnlib import schema
from attnlib.models.resnet import CifarResNet, ResNetConfig
from attnlib.models.sa_net import ReSAConfig, SAConfig, SelfAttentionNet
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
    """The config dataclass a model would be built with (defaults, then overrides), checked by the same
    schema as the parameter files (attnlib.schema): an unknown option or a wrong type raises ParamsError,
    an impossible value the config's own ValueError."""
    _, config_cls, defaults, _ = _spec(name)
    return schema.build(config_cls, {**defaults, **overrides}, where=f"model {name!r}", noun="option")


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model; e.g. create_model('sa_quadratic', heads=16, layers=2)."""
    builder = _spec(name)[0]
    model = builder(model_config(name, **overrides))
    model.model_name = name
    return model


def config_class(name: str) -> type:
    """The config dataclass of a registered model."""
    return _spec(name)[1]


def config_fields(name: str) -> set[str]:
    """The option names a model accepts (its config dataclass's fields)."""
    return {f.name for f in dataclasses.fields(config_class(name))}


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
         "ViT from scratch in [Re]'s shape (conv stem + one ResNet18 stage, 2x2 patches, hidden 400, 9 heads) "
         "with the usual ViT internals (heads of width hidden // heads); vit_re is [Re]'s own network", stem=True)
register("vit_plain", ViT, ViTConfig, "ViT on 2x2 patches of the image, no convolutional stem", stem=False)

# [Re]'s own networks (docs/paper.md 6.2), so that [Re]'s accuracies are compared with the networks that
# earned them; the models above follow the original paper and code, or are sized as 6.3 says.
register("sa_quadratic_re", SelfAttentionNet, ReSAConfig,
         "[Re]'s quadratic network: no post-attention dense layer, no hidden dropout, ReLU feed-forward",
         positional="quadratic")
register("sa_learned_re", SelfAttentionNet, ReSAConfig,
         "[Re]'s learned 2-D network: as sa_quadratic_re, per-head embedding maps with bias",
         positional="learned", positional_bias=True)
register("sa_learned_content_re", SelfAttentionNet, ReSAConfig,
         "close to [Re]'s learned 2-D + content network: as sa_learned_re, with our query-dependent "
         "positional term (full-width embeddings, plus the query-independent term; sa_net.py)",
         positional="learned", content=True, relative_query=True)
_SAN_RE = dict(widths=[256] * 4, stem=256, sam_bias=False, preact=False, pool_first=True)
register("san_pairwise_re", SAN, SANConfig,
         "[Re]'s SAN, pairwise: 256 channels throughout, a pool before every stage", sa_type="pairwise", **_SAN_RE)
register("san_patchwise_re", SAN, SANConfig,
         "[Re]'s SAN, patchwise: 256 channels throughout, a pool before every stage", sa_type="patchwise", **_SAN_RE)
register("vit_re", ViT, ViTConfig,
         "[Re]'s ViT: heads 400 wide, residuals from LN(x), a random 'cls' token averaged in",
         stem=True, head_dim=400, qkv_bias=False, residual_from_norm=True, random_cls=True, final_norm=False,
         layer_norm_eps=1e-5, dropout=0.0, init="torch")

__all__ = ["create_model", "list_models", "describe", "model_config", "count_parameters", "register",
           "config_fields", "SAConfig", "ReSAConfig", "SelfAttentionNet", "ResNetConfig", "CifarResNet", "ViTConfig",
           "ViT", "SANConfig", "SAN"]
