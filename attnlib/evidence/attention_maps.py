"""Where each head looks: attention weights of every layer of a trained model, in one shape for all.

`attention_maps(model, images)` returns one `LayerMaps` per layer (SAN: per bottleneck) holding the
attention of every head (SAN: every weight group) for every query token of every image:

- global attention (self-attention networks of 01/02, ViT): weights[b, head, query, key] over the whole
  token grid, exactly the probabilities the forward pass multiplies the values with;
- local attention (SAN): weights[b, group, query, tap] over the K x K window centered on the query.

`mean_attention(model, images)` is their mean over many images (a batch of one), computed a batch at a time.

Query and key positions are tokens; `pixel_to_token` maps an image pixel to the token that holds it,
so one query pixel can be followed through layers of different resolutions (SAN's stages). Everything
here is computed once per image batch; picking a query only indexes the stored tensors.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from attnlib.attention import relative_offsets
from attnlib.models.common import eval_mode
from attnlib.models.san import SAN


@dataclass
class LayerMaps:
    name: str                 # "layer 1", "stage 2, block 1"
    weights: torch.Tensor     # (B, heads, H*W, keys): keys = H*W (global) or K*K (window), float32, CPU
    grid: tuple[int, int]     # (H, W) query tokens; keys on the same grid
    stride: int               # image pixels per token along each side (SAN stage i: 2**i; a 28-pixel image
                              # pooled to 3x3 leaves its last pixels to the last token)
    window: int = 0           # 0: global attention; K: a K x K window centered on each query
    normalized: bool = True   # rows are probabilities (False: SAN patchwise, whose weights are not)

    @property
    def heads(self) -> int:
        return self.weights.shape[1]

    @property
    def scale(self) -> int:
        """Image pixels per token."""
        return self.stride

    def pixel_to_token(self, row: int, col: int) -> tuple[int, int]:
        h, w = self.grid
        return min(row // self.stride, h - 1), min(col // self.stride, w - 1)

    def query_map(self, token: tuple[int, int], image: int | None = 0) -> np.ndarray:
        """(heads, H, W) for global attention, (heads, K, K) for a window: the weights of query `token`
        over the keys; `image=None` averages over all images of the batch."""
        h, w = self.grid
        q = token[0] * w + token[1]
        weights = self.weights[:, :, q] if image is None else self.weights[image:image + 1, :, q]
        side = (self.window, self.window) if self.window else (h, w)
        return weights.mean(0).reshape(self.heads, *side).numpy()

    def key_token(self, token: tuple[int, int], index: int) -> tuple[int, int]:
        """The (row, col) token of key `index` of query `token`'s map (a window's taps are row-major)."""
        if not self.window:
            return divmod(index, self.grid[1])
        r = self.window // 2
        return token[0] + index // self.window - r, token[1] + index % self.window - r

    def key_extent(self, token: tuple[int, int]) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) in image pixels of the keys of `query_map`, for imshow(extent=...)."""
        s = self.scale
        if not self.window:
            return (0.0, self.grid[1] * s, self.grid[0] * s, 0.0)
        r = self.window // 2
        return ((token[1] - r) * s, (token[1] + r + 1) * s, (token[0] + r + 1) * s, (token[0] - r) * s)

    def offset_average(self) -> np.ndarray:
        """Attention by relative offset (key minus query), averaged over images and every query pixel:
        (heads, 2H-1, 2W-1) for global attention with offset (0, 0) in the middle, (heads, K, K) for a
        window. An offset that lies off the grid for a query counts as 0 for it, so each map sums to
        1 for probabilities."""
        b, heads, t, _ = self.weights.shape
        mean = self.weights.double().mean(0)  # (heads, T, keys)
        if self.window:
            return mean.mean(1).reshape(heads, self.window, self.window).numpy()
        h, w = self.grid
        index = offset_index(h, w)
        out = torch.zeros(heads, (2 * h - 1) * (2 * w - 1), dtype=torch.float64)
        out.index_add_(1, index.flatten(), mean.reshape(heads, -1))
        return (out / t).reshape(heads, 2 * h - 1, 2 * w - 1).numpy()


def offset_index(height: int, width: int) -> torch.Tensor:
    """(T, T): for query i and key j on a row-major grid, the index of their offset (key minus query)
    among the (2H-1)(2W-1) offsets, offset (dr, dc) at (dr + H - 1) * (2W - 1) + dc + W - 1."""
    delta = relative_offsets(height, width)  # (T, T, 2)
    return (delta[..., 0] + height - 1) * (2 * width - 1) + delta[..., 1] + width - 1


def _san_blocks(model: nn.Module):
    """(name, SAM module, image pixels per token) at every depth of every stage, in the order the forward
    pass runs them; every stage after the first halves the resolution (and the first too with [Re]'s
    `pool_first`)."""
    first = 1 if model.cfg.pool_first else 0
    for i in range(len(model.stages)):
        for j, block in enumerate(model.stage_blocks(i)):
            yield f"stage {i + 1}, block {j + 1}", block.sam, 2 ** (i + first)


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> list[LayerMaps]:
    """Attention weights of every layer of `model` for `images` (normalised, as the model takes them),
    in eval mode. Works for the self-attention networks (attention_probs), ViT and SAN."""
    if len(images) == 0:
        raise ValueError("attention_maps needs at least one image")
    chunks = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    if isinstance(model, SAN):
        names = [name for name, _, _ in _san_blocks(model)]
        strides = [stride for _, _, stride in _san_blocks(model)]
        per_layer: list[list[torch.Tensor]] = [[] for _ in names]
        grids: list[tuple[int, int]] = [(0, 0)] * len(names)
        sams = [sam for _, sam, _ in _san_blocks(model)]
        seen: list[int] = []

        def hook(module, inputs, _output):
            x = inputs[0]
            i = next(k for k, sam in enumerate(sams) if sam is module and k not in seen)  # shared: next depth
            seen.append(i)
            grids[i] = tuple(x.shape[-2:])
            per_layer[i].append(module.weights(x).permute(0, 1, 3, 2).float().cpu())  # (B, groups, HW, K*K)

        handles = [sam.register_forward_hook(hook) for sam in {id(s): s for s in sams}.values()]
        try:
            with eval_mode(model):
                for chunk in chunks:
                    seen.clear()
                    model(chunk)
        finally:
            for h in handles:
                h.remove()
        k = model.cfg.kernel_size
        normalized = model.cfg.sa_type == "pairwise"
        return [LayerMaps(name, torch.cat(ws), grid, stride, window=k, normalized=normalized)
                for name, ws, grid, stride in zip(names, per_layer, grids, strides)]
    if not hasattr(model, "attention_probs"):
        raise TypeError(f"{type(model).__name__} has no attention to show (no attention_probs, not a SAN)")
    per_layer = []
    for chunk in chunks:
        for i, p in enumerate(model.attention_probs(chunk)):
            if len(per_layer) <= i:
                per_layer.append([])
            per_layer[i].append(p.float().cpu())
    grid, stride = _grid_of(model)
    return [LayerMaps(f"layer {i + 1}", torch.cat(ps), grid, stride) for i, ps in enumerate(per_layer)]


@torch.no_grad()
def mean_attention(model: nn.Module, images: torch.Tensor, batch_size: int = 50) -> list[LayerMaps]:
    """attention_maps averaged over `images`, one batch at a time (the paper averages over 100 test
    images for the content-based models): each LayerMaps holds a batch of one, the mean."""
    if len(images) == 0:
        raise ValueError("mean_attention needs at least one image")
    total: list[LayerMaps] | None = None
    for start in range(0, len(images), batch_size):
        chunk = attention_maps(model, images[start:start + batch_size], batch_size)
        sums = [layer.weights.double().sum(0, keepdim=True) for layer in chunk]
        if total is None:
            total = [dataclasses.replace(layer, weights=s) for layer, s in zip(chunk, sums)]
        else:
            for layer, s in zip(total, sums):
                layer.weights += s
    return [dataclasses.replace(layer, weights=(layer.weights / len(images)).float()) for layer in total]


def _grid_of(model: nn.Module) -> tuple[tuple[int, int], int]:
    """(token grid, image pixels per token)."""
    if hasattr(model, "grid"):
        return tuple(model.grid), 1  # ConvAsAttention: one token per pixel (plus the zero-pad ring)
    cfg = model.cfg
    if hasattr(cfg, "grid"):
        return tuple(cfg.grid), cfg.downsample  # the self-attention networks
    side = cfg.image_size // cfg.patch_size  # ViT: the stem keeps the resolution
    return (side, side), cfg.patch_size


def _window_offsets(k: int) -> np.ndarray:
    """(K*K, 2) offsets (dr, dc) of a K x K window's taps in row-major order (as SAN's weights)."""
    r = k // 2
    return np.array([(dr, dc) for dr in range(-r, r + 1) for dc in range(-r, r + 1)])


def _queries(h: int, w: int, margin: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each query's row and column on an h x w grid (row-major), and whether it lies `margin` from every edge."""
    qr, qc = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
    return qr, qc, (qr >= margin) & (qr < h - margin) & (qc >= margin) & (qc < w - margin)


def _inside_around_key(qr: torch.Tensor, qc: torch.Tensor, offsets: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(heads, T): the queries whose key at the head's top offset lies on the grid with its 3 x 3 neighbourhood
    (on a grid narrower than 3, the key alone); a head for which no query qualifies keeps every query whose key
    is on the grid. A softmax renormalises over the keys on the grid, so a key at the edge, whose neighbours fall
    off it, takes a larger share for no other reason: these queries leave that out."""
    pad = 1 if min(h, w) >= 3 else 0
    kr, kc = qr[None] + offsets[:, :1], qc[None] + offsets[:, 1:]  # (heads, T)
    on_grid = (kr >= 0) & (kr < h) & (kc >= 0) & (kc < w)
    inside = (kr >= pad) & (kr < h - pad) & (kc >= pad) & (kc < w - pad)
    return torch.where(inside.any(-1, keepdim=True), inside, on_grid)


def conv_likeness(layers: list[LayerMaps], margin: int = 0) -> pd.DataFrame:
    """How much each head attends like one tap of a convolution kernel, from `attention_maps`.

    Per layer and head: `top_row, top_col`, the offset (key minus query, in tokens) receiving the most
    attention mass per query that has it on the grid, averaged over images, among the offsets that at least a
    quarter of the queries have (a total over queries would favour offsets near (0, 0), which more queries have;
    an offset that few have is too noisy to be told top); `top_mass`, the attention a query puts on the
    key at that offset, averaged over images and over the queries for which that key lies on the grid with its
    3 x 3 neighbourhood, so that the softmax's renormalisation at the image's edge adds nothing (`_inside_around_key`;
    and at least `margin` tokens from every edge; `queries` counts them): 1 for a head that attends
    like one kernel tap, 1/T for uniform attention (`uniform_mass`). SAN's windows: the mean weight of
    the top tap; for patchwise weights, which are not probabilities, |w_top| / sum |w| over the window.
    `distinct_offsets`: how many different top offsets the layer's heads cover (K^2 for the heads of a
    K x K convolution). `mean_distance`: how far from its query a head attends, the attention-weighted
    Euclidean distance to the keys in tokens, averaged over images and queries (at least `margin` from
    every edge); `uniform_distance` is the same for uniform attention. `layer` counts from 0;
    `layer_name` is the LayerMaps name.
    """
    rows = []
    for number, layer in enumerate(layers):
        heads, (h, w) = layer.heads, layer.grid
        qr, qc, inner = _queries(h, w, margin)
        weights = layer.weights.double()
        if layer.window:
            if not layer.normalized:
                weights = weights.abs() / weights.abs().sum(-1, keepdim=True).clamp(min=1e-300)
            per_query = weights.mean(0)  # (heads, T, K*K)
            top = per_query.sum(1).argmax(-1)  # (heads,)
            share = per_query[torch.arange(heads), :, top]  # (heads, T)
            valid = inner[None].expand(heads, -1)  # reflection padding: every tap is on the image
            offsets = torch.as_tensor(_window_offsets(layer.window))[top]
            uniform = 1.0 / layer.window ** 2
            tap_distance = torch.as_tensor(_window_offsets(layer.window), dtype=torch.float64).norm(dim=-1)  # (K*K,)
            distance = per_query @ tap_distance  # (heads, T)
            uniform_distance = float(tap_distance.mean())
        else:
            index = offset_index(h, w)  # (T, T)
            summed = weights.sum(0)  # (heads, T, T)
            mass = torch.zeros(heads, (2 * h - 1) * (2 * w - 1), dtype=torch.float64)
            mass.index_add_(1, index.flatten(), summed.reshape(heads, -1))  # total mass per offset
            pairs = torch.bincount(index.flatten(), minlength=mass.shape[1])  # the queries that have each offset
            common = pairs >= max(1, h * w // 4)  # an offset that few queries have is too noisy to be told top
            top = (mass / pairs).masked_fill(~common, -1.0).argmax(-1)  # the most attention per query that has it
            on_top = index[None] == top[:, None, None]  # (heads, T, T): the key at the top offset, per query
            offsets = torch.stack([top // (2 * w - 1) - (h - 1), top % (2 * w - 1) - (w - 1)], -1)
            valid = _inside_around_key(qr, qc, offsets, h, w) & inner[None]
            share = (summed * on_top).sum(-1) / weights.shape[0]
            uniform = 1.0 / (h * w)
            key_distance = relative_offsets(h, w).double().norm(dim=-1)  # (T, T): query to key, in tokens
            distance = (summed * key_distance).sum(-1) / weights.shape[0]  # (heads, T)
            uniform_distance = float(key_distance.mean(-1)[inner].mean()) if inner.any() else 0.0
        top_mass = (share * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        mean_distance = (distance * inner).sum(-1) / inner.sum().clamp(min=1)
        distinct = len({tuple(o) for o in offsets.tolist()})
        for head in range(heads):
            rows.append(dict(layer=number, head=head, top_row=int(offsets[head, 0]), top_col=int(offsets[head, 1]),
                             top_mass=float(top_mass[head]), queries=int(valid[head].sum()),
                             distinct_offsets=distinct, heads=heads, layer_name=layer.name, uniform_mass=uniform,
                             mean_distance=float(mean_distance[head]), uniform_distance=uniform_distance))
    return pd.DataFrame(rows)
