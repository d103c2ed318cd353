"""Attention maps of trained models: per query pixel, by offset from the query, and how convolution-like
each head is (notebook 07 and the explorer)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Rectangle

from attnlib.viz.saving import PAGE_WIDTH, SMALLEST_TEXT, save


def image_for_display(image) -> np.ndarray:
    """(C, H, W) uint8 or float tensor -> (H, W, 3) or (H, W) array for imshow."""
    raw = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    x = raw.astype(float) / 255.0 if raw.dtype == np.uint8 else raw.astype(float)
    return x.transpose(1, 2, 0) if x.shape[0] == 3 else x[0]


def zoom_limits(layer, token, tokens: int = 7) -> tuple[tuple[float, float], tuple[float, float]]:
    """(xlim, ylim) in image pixels of the `tokens` x `tokens` neighbourhood of a query token."""
    s, half = layer.scale, tokens / 2
    cr, cc = (token[0] + 0.5) * s, (token[1] + 0.5) * s
    return (cc - half * s, cc + half * s), (cr + half * s, cr - half * s)


class HeadPanel:
    """One head's attention for one query, drawn over the image; `update` changes it in place."""

    def __init__(self, ax, image: np.ndarray, cmap: str = "inferno", gray: bool = True):
        self.ax, self.height, self.width = ax, image.shape[0], image.shape[1]
        if gray and image.ndim == 3:  # the map's colours read better over a grey image
            image = image @ np.array([0.299, 0.587, 0.114])
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, extent=(0, self.width, self.height, 0), interpolation="nearest")
        self.overlay = ax.imshow(np.zeros((1, 1)), cmap=cmap, alpha=0.7, interpolation="nearest", zorder=2)
        self.query = Rectangle((0, 0), 1, 1, fill=False, ec="cyan", lw=1.2, zorder=3)
        ax.add_patch(self.query)
        ax.set_xlim(0, self.width)
        ax.set_ylim(self.height, 0)
        ax.set_xticks([])
        ax.set_yticks([])

    def mark(self, layer, token):
        """Frame the query token."""
        s = layer.scale
        self.query.set_xy((token[1] * s, token[0] * s))
        self.query.set_width(s)
        self.query.set_height(s)

    def update(self, layer, token, values: np.ndarray, zoom: bool):
        lo, hi = float(min(values.min(), 0.0)), float(values.max())
        self.overlay.set_data(values)
        self.overlay.set_extent(layer.key_extent(token))
        self.overlay.set_clim(lo, hi if hi > lo else lo + 1e-12)
        self.mark(layer, token)
        if zoom:
            xlim, ylim = zoom_limits(layer, token)
        else:
            xlim, ylim = (0, self.width), (self.height, 0)
        self.ax.set_xlim(*xlim)
        self.ax.set_ylim(*ylim)


def plot_query_attention(layers, image, pixel: tuple[int, int], image_index: int | None = 0, zoom: bool = False,
                         max_heads: int = 16, title: str = "", path: str | Path | None = None, what: str = ""):
    """Attention of every head (columns) of every layer (rows) for the query at image pixel `pixel`,
    over the image (first column, query framed in cyan). `layers`: attention_maps.attention_maps of
    a batch of images; `image_index` picks one image, None averages over the batch. zoom: the 7x7
    token neighbourhood of the query, as in the paper's figures. At most `max_heads` heads per row
    (SAN has many weight groups)."""
    shown = min(max(layer.heads for layer in layers), max_heads)
    img = image_for_display(image)
    panel = min(1.45, (PAGE_WIDTH - 0.3) / (shown + 1))  # every head in a row, the row no wider than a page
    size = (panel * (shown + 1) + 0.3, (panel + 0.15) * len(layers) + 0.6)
    fig, axes = plt.subplots(len(layers), shown + 1, figsize=size, squeeze=False)
    for row, layer in enumerate(layers):
        token = layer.pixel_to_token(*pixel)
        maps = layer.query_map(token, image_index)
        first = axes[row][0]
        first.imshow(img, cmap="gray", interpolation="nearest")
        first.add_patch(Rectangle((token[1] * layer.scale - 0.5, token[0] * layer.scale - 0.5), layer.scale,
                                  layer.scale, fill=False, ec="cyan", lw=1.2))
        first.set_xticks([])
        first.set_yticks([])
        first.set_ylabel(layer.name, fontsize=SMALLEST_TEXT)
        for head in range(shown):
            ax = axes[row][head + 1]
            if head >= layer.heads:
                ax.axis("off")
                continue
            HeadPanel(ax, img).update(layer, token, maps[head], zoom)
            if row == 0:
                ax.set_title(str(head + 1) if panel < 0.75 else f"head {head + 1}", fontsize=SMALLEST_TEXT)
    what = what or (f"image {image_index} of the batch" if image_index is not None
                    else f"mean over {layers[0].weights.shape[0]} images")
    more = f"; first {shown} of {max(l.heads for l in layers)} heads" if shown < max(l.heads for l in layers) else ""
    heads = "heads, left to right; " if panel < 0.75 else ""
    fig.suptitle(f"{title}\n{heads}query pixel {tuple(pixel)}, {what}{', 7x7 zoom' if zoom else ''}{more}", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_offset_average(layers, max_heads: int = 16, extent: int = 3, title: str = "", path: str | Path | None = None):
    """Attention by relative offset (key minus query), averaged over images and all query pixels, per layer
    (rows) and head (columns); the cross marks offset (0, 0). Global attention is shown within +-`extent`
    tokens, SAN's windows whole."""
    shown = min(max(layer.heads for layer in layers), max_heads)
    panel = min(1.3, (PAGE_WIDTH - 0.4) / shown)
    fig, axes = plt.subplots(len(layers), shown, figsize=(panel * shown + 0.4, (panel + 0.1) * len(layers) + 0.7),
                             squeeze=False)
    for row, layer in enumerate(layers):
        avg = layer.offset_average()
        c0, c1 = (avg.shape[1] - 1) // 2, (avg.shape[2] - 1) // 2
        r = min(extent, c0, c1)
        for head in range(shown):
            ax = axes[row][head]
            ax.set_xticks([])
            ax.set_yticks([])
            if head >= layer.heads:
                ax.axis("off")
                continue
            ax.imshow(avg[head, c0 - r:c0 + r + 1, c1 - r:c1 + r + 1], cmap="inferno",
                      extent=(-r - .5, r + .5, r + .5, -r - .5))
            ax.plot(0, 0, "c+", ms=5)
            if row == 0:
                ax.set_title(str(head + 1) if panel < 0.75 else f"head {head + 1}", fontsize=SMALLEST_TEXT)
            if head == 0:
                ax.set_ylabel(layer.name, fontsize=SMALLEST_TEXT)
    fig.suptitle(f"{title}\nattention by offset from the query, mean over all query pixels"
                 + ("; heads left to right" if panel < 0.75 else ""), fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def _slots(widths: list[float]) -> list[tuple[int, slice]]:
    """(row, columns) of a two-column grid for panels of these widths (inches): two side by side where both fit half
    a page, a wider one across the whole row; in the order given."""
    slots, row, col = [], 0, 0
    for w in widths:
        if w > PAGE_WIDTH / 2:
            row, col = (row + 1, 0) if col else (row, 0)
            slots.append((row, slice(0, 2)))
            row += 1
        else:
            slots.append((row, slice(col, col + 1)))
            row, col = (row + 1, 0) if col else (row, 1)
    return slots


def plot_conv_likeness(df: pd.DataFrame, path: str | Path | None = None, subtitle: str = ""):
    """attention_maps.conv_likeness rows of several runs (a `run` column): per run, the share of each head's
    attention on its top offset (colour, per layer and head) and, per layer, how many distinct offsets
    its heads cover (beside the layer's name). Two runs side by side where their heads fit half a page."""
    runs = list(dict.fromkeys(df["run"]))
    heads = {run: int(df.loc[df["run"] == run, "heads"].max()) for run in runs}
    layers = int(df.groupby("run")["layer"].nunique().max())
    slots = _slots([0.24 * heads[run] + 1.4 for run in runs])  # a cell per head, and the layers' names
    rows = max(r for r, _ in slots) + 1
    height = rows * (0.28 * layers + 0.95) + 0.6
    fig = plt.figure(figsize=(PAGE_WIDTH, height))
    grid_spec = fig.add_gridspec(rows, 2)
    for run, (row, cols) in zip(runs, slots):
        ax = fig.add_subplot(grid_spec[row, cols])
        d = df[df["run"] == run]
        grid = d.pivot(index="layer_name", columns="head", values="top_mass").reindex(
            list(dict.fromkeys(d.sort_values("layer")["layer_name"])))
        distinct = d.groupby("layer_name")["distinct_offsets"].first().reindex(grid.index)
        grid.index = [f"{name} ({n} offsets)" for name, n in zip(grid.index, distinct)]
        sns.heatmap(grid, vmin=0, vmax=1, cmap="viridis", annot=heads[run] <= 16, fmt=".2f",
                    annot_kws={"fontsize": SMALLEST_TEXT}, cbar=False, ax=ax)
        ax.set_xticklabels([str(int(h) + 1) for h in grid.columns], fontsize=SMALLEST_TEXT)
        ax.tick_params(axis="y", labelsize=SMALLEST_TEXT, rotation=0)
        ax.set_xlabel("head", fontsize=SMALLEST_TEXT)
        ax.set_ylabel("")
        ax.set_title(run, fontsize=8)
    fig.suptitle("share of attention on each head's top offset (1: one kernel tap; uniform: 1 / number of keys)"
                 + (f"\n{subtitle}" if subtitle else ""), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height))  # the title's two lines above the panels
    return save(fig, path)
