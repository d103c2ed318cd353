"""Figures: accuracy curves, head centers, attention maps per query pixel, timing."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
import pandas as pd
import seaborn as sns


def plot_curves(df: pd.DataFrame, title: str, path: str | Path | None = None, published: dict | None = None):
    """Test accuracy against epoch, one line per (model, variant); dashed lines at published accuracies."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if not df.empty:
        d = df.assign(run=df["model"] + " (" + df["variant"] + ")")
        sns.lineplot(data=d, x="epoch", y="test_acc", hue="run", marker="o", ax=ax,
                     errorbar=("sd") if d.groupby(["run", "epoch"]).size().max() > 1 else None)
        datasets = ", ".join(sorted(d["dataset"].unique()))
        profiles = ", ".join(sorted(d["profile"].unique()))
        ax.set_title(f"{title}\n{datasets}, profile {profiles}")
    by_acc: dict[float, list[str]] = {}
    for label, acc in (published or {}).items():
        by_acc.setdefault(acc, []).append(label)
    for acc, labels in by_acc.items():  # one line and one label per accuracy, however many share it
        ax.axhline(acc, ls="--", lw=0.8, color="grey")
        ax.annotate(" = ".join(labels), (ax.get_xlim()[0], acc), fontsize=7, color="grey", va="bottom")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def gaussian_contour(center, inv_cov, mass: float, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the ellipse enclosing `mass` of a 2-D Gaussian with this center and Sigma^-1:
    (x - mu)^T Sigma^-1 (x - mu) = -2 ln(1 - mass)."""
    radius = np.sqrt(-2.0 * np.log(1.0 - mass))
    eigval, eigvec = np.linalg.eigh(np.asarray(inv_cov, dtype=float))  # Sigma^-1 = V diag(l) V^T
    t = np.linspace(0, 2 * np.pi, points)
    circle = np.stack([np.cos(t), np.sin(t)])  # (2, points)
    offsets = eigvec @ (circle * (radius / np.sqrt(np.maximum(eigval, 1e-12)))[:, None])
    return center[0] + offsets[0], center[1] + offsets[1]


def plot_centers(centers: pd.DataFrame, path: str | Path | None = None, extent: float | None = None, subtitle: str = ""):
    """Centers of attention of every head, one panel per (run, layer); the query sits at (0, 0).

    `centers` has columns model, variant, layer, head, row, col (offsets in tokens, key minus query).
    With the inverse covariances (inv_cov_rr, inv_cov_rc, inv_cov_cc, as in results.CENTER_COLUMNS)
    each head also gets the ellipses enclosing 50% (solid) and 90% (dotted) of its Gaussian's mass,
    as in the paper's figure. Rows of the image grow downwards, as in the images themselves.
    """
    contours = {"inv_cov_rr", "inv_cov_rc", "inv_cov_cc"} <= set(centers.columns)
    if extent is None:  # wide enough for every center, at least the 9x9 neighbourhood
        extent = max(4.5, float(centers[["row", "col"]].abs().max().max()) + 0.5)
    runs = list(dict.fromkeys(zip(centers["model"], centers["variant"])))
    layers = sorted(centers["layer"].unique())
    fig, axes = plt.subplots(len(runs), len(layers), figsize=(2.2 * len(layers), 2.3 * len(runs)), squeeze=False)
    for i, (model, variant) in enumerate(runs):
        for j, layer in enumerate(layers):
            ax = axes[i][j]
            d = centers[(centers["model"] == model) & (centers["variant"] == variant) & (centers["layer"] == layer)]
            colors = [plt.cm.tab20((int(h) - 1) % 20) for h in d["head"]]
            ax.scatter(d["col"], d["row"], c=colors, s=30, zorder=3)
            for color, (_, r) in zip(colors, d.iterrows()):
                ax.annotate(str(int(r["head"])), (r["col"], r["row"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
                if contours:
                    inv = np.array([[r["inv_cov_rr"], r["inv_cov_rc"]], [r["inv_cov_rc"], r["inv_cov_cc"]]])
                    for mass, style in ((0.5, "-"), (0.9, ":")):
                        rows, cols = gaussian_contour((r["row"], r["col"]), inv, mass)
                        ax.plot(cols, rows, style, color=color, lw=0.8)
            ax.plot(0, 0, "k+", ms=10, zorder=4)
            ax.set_xlim(-extent, extent)
            ax.set_ylim(extent, -extent)
            ax.set_xticks(range(-int(extent), int(extent) + 1))
            ax.set_yticks(range(-int(extent), int(extent) + 1))
            ax.tick_params(labelsize=5)
            ax.grid(alpha=0.3)
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(f"layer {layer}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{model}\n{variant}\nrow offset", fontsize=7)
            if i == len(runs) - 1:
                ax.set_xlabel("column offset", fontsize=7)
    fig.suptitle("centers of attention (+: the query pixel)" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_timing(df: pd.DataFrame, path: str | Path | None = None, subtitle: str = ""):
    """Bar charts from timing.time_models rows: training and inference images/s at the largest batch
    measured, and batch-1 latency, one bar per (model, variant) and precision."""
    d = df.assign(name=df["model"] + df["variant"].map(lambda v: "" if v == "standard" else f" ({v})"))
    panels = []
    for mode, value, label in (("train", "images_per_s", "training images/s"), ("infer", "images_per_s", "inference images/s"),
                               ("latency", "latency_ms", "latency at batch 1 (ms)")):
        part = d[d["mode"] == mode]
        if part.empty:
            continue
        batch = part["batch"].max()
        panels.append((part[part["batch"] == batch], value, f"{label}" + ("" if mode == "latency" else f", batch {batch}")))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.35 * d["name"].nunique() + 1.8), sharey=True,
                             squeeze=False)
    order = sorted(d["name"].unique())
    for ax, (part, value, label) in zip(axes[0], panels):
        sns.barplot(data=part, y="name", x=value, hue="precision", order=order, ax=ax, orient="h")
        ax.set_xlabel(label)
        ax.set_ylabel("")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Throughput and latency" + (f" ({subtitle})" if subtitle else ""))
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


# -- attention maps (notebook 07) -----------------------------------------------------------------
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
    fig, axes = plt.subplots(len(layers), shown + 1, figsize=(1.45 * (shown + 1), 1.55 * len(layers) + 0.6),
                             squeeze=False)
    for row, layer in enumerate(layers):
        token = layer.pixel_to_token(*pixel)
        maps = layer.query_map(token, image_index)
        first = axes[row][0]
        first.imshow(img, cmap="gray", interpolation="nearest")
        first.add_patch(Rectangle((token[1] * layer.scale - 0.5, token[0] * layer.scale - 0.5), layer.scale,
                                  layer.scale, fill=False, ec="cyan", lw=1.2))
        first.set_xticks([])
        first.set_yticks([])
        first.set_ylabel(layer.name, fontsize=7)
        for head in range(shown):
            ax = axes[row][head + 1]
            if head >= layer.heads:
                ax.axis("off")
                continue
            HeadPanel(ax, img).update(layer, token, maps[head], zoom)
            if row == 0:
                ax.set_title(f"head {head + 1}", fontsize=7)
    what = what or (f"image {image_index} of the batch" if image_index is not None
                    else f"mean over {layers[0].weights.shape[0]} images")
    more = f"; first {shown} of {max(l.heads for l in layers)} heads" if shown < max(l.heads for l in layers) else ""
    fig.suptitle(f"{title}\nquery pixel {tuple(pixel)}, {what}{', 7x7 zoom' if zoom else ''}{more}", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_offset_average(layers, max_heads: int = 16, extent: int = 3, title: str = "", path: str | Path | None = None):
    """Attention by relative offset (key minus query), averaged over images and all query pixels, per layer
    (rows) and head (columns); the cross marks offset (0, 0). Global attention is shown within +-`extent`
    tokens, SAN's windows whole."""
    shown = min(max(layer.heads for layer in layers), max_heads)
    fig, axes = plt.subplots(len(layers), shown, figsize=(1.3 * shown + 0.4, 1.35 * len(layers) + 0.6), squeeze=False)
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
            ax.imshow(avg[head, c0 - r:c0 + r + 1, c1 - r:c1 + r + 1], cmap="inferno", extent=(-r - .5, r + .5, r + .5, -r - .5))
            ax.plot(0, 0, "c+", ms=5)
            if row == 0:
                ax.set_title(f"head {head + 1}", fontsize=7)
            if head == 0:
                ax.set_ylabel(layer.name, fontsize=7)
    fig.suptitle(f"{title}\nattention by offset from the query, mean over all query pixels", fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_center_trajectories(centers: pd.DataFrame, layer: int = 1, path: str | Path | None = None, subtitle: str = ""):
    """How the centers of one layer's heads move during training (results.CENTER_COLUMNS rows, all
    epochs): one panel per run, a line per head from its initial center (open circle) to its
    last (filled, numbered), with the 50% contour of the last epoch."""
    d = centers[centers["layer"] == layer]
    runs = list(dict.fromkeys(zip(d["model"], d["variant"], d["seed"], d["run_id"])))
    fig, axes = plt.subplots(1, max(len(runs), 1), figsize=(3.0 * max(len(runs), 1), 3.3), squeeze=False)
    extent = max(4.5, float(d[["row", "col"]].abs().max().max()) + 0.5) if not d.empty else 4.5
    for ax, (model, variant, seed, run_id) in zip(axes[0], runs):
        run = d[d["run_id"] == run_id]
        last_epoch = run["epoch"].max()
        for head, h in run.sort_values("epoch").groupby("head"):
            color = plt.cm.tab20((int(head) - 1) % 20)
            ax.plot(h["col"], h["row"], "-", color=color, lw=0.9, alpha=0.8)
            ax.plot(h["col"].iloc[0], h["row"].iloc[0], "o", mfc="none", color=color, ms=4)
            end = h[h["epoch"] == last_epoch].iloc[0]
            ax.plot(end["col"], end["row"], "o", color=color, ms=5, zorder=3)
            ax.annotate(str(int(head)), (end["col"], end["row"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
            if {"inv_cov_rr", "inv_cov_rc", "inv_cov_cc"} <= set(end.index):
                inv = np.array([[end["inv_cov_rr"], end["inv_cov_rc"]], [end["inv_cov_rc"], end["inv_cov_cc"]]])
                rows, cols = gaussian_contour((end["row"], end["col"]), inv, 0.5)
                ax.plot(cols, rows, "-", color=color, lw=0.5, alpha=0.6)
        ax.plot(0, 0, "k+", ms=10, zorder=4)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(extent, -extent)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=6)
        ax.set_title(f"{model}\n{variant}, seed {seed}, epochs 0-{last_epoch}", fontsize=8)
    fig.suptitle(f"centers of layer {layer} during training (o: initial, \u25cf: last)" + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_conv_likeness(df: pd.DataFrame, path: str | Path | None = None, subtitle: str = "", columns: int = 3):
    """attention_maps.conv_likeness rows of several runs (a `run` column): per run, the share of each head's
    attention on its top offset (colour, per layer and head) and, per layer, how many distinct offsets
    its heads cover (right of each row)."""
    runs = list(dict.fromkeys(df["run"]))
    heads, layers = int(df["heads"].max()), int(df.groupby("run")["layer"].nunique().max())
    cols = min(columns, len(runs))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * (0.32 * heads + 2.6), rows * (0.3 * layers + 1.0) + 0.6),
                             squeeze=False)
    for ax, run in zip(axes.ravel(), runs):
        d = df[df["run"] == run]
        grid = d.pivot(index="layer_name", columns="head", values="top_mass").reindex(
            list(dict.fromkeys(d.sort_values("layer")["layer_name"])))
        sns.heatmap(grid, vmin=0, vmax=1, cmap="viridis", annot=heads <= 16, fmt=".2f", annot_kws={"fontsize": 5},
                    cbar=False, ax=ax)
        distinct = d.groupby("layer_name")["distinct_offsets"].first().reindex(grid.index)
        for i, n in enumerate(distinct):
            ax.text(grid.shape[1] + 0.2, i + 0.5, f"{n} offsets", va="center", fontsize=6)
        ax.set_xticklabels([str(int(h) + 1) for h in grid.columns], fontsize=5)
        ax.tick_params(axis="y", labelsize=6, rotation=0)
        ax.set_xlabel("head", fontsize=6)
        ax.set_ylabel("")
        ax.set_title(run, fontsize=7)
    for ax in axes.ravel()[len(runs):]:
        ax.axis("off")
    fig.suptitle("share of attention on each head's top offset (1: one kernel tap; uniform: 1 / number of keys)"
                 + (f"\n{subtitle}" if subtitle else ""), fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def plot_attention_development(attention: pd.DataFrame, path: str | Path | None = None, subtitle: str = ""):
    """How each attention model's heads changed from initialisation (epoch 0) to the last epoch, per layer:
    the mean share on each head's top offset and the mean attention distance from the query (results.
    ATTENTION_COLUMNS rows of every run; lines: mean over seeds, bands: their standard deviation). Dotted:
    uniform attention."""
    models = list(dict.fromkeys(attention["model"] + " (" + attention["variant"] + ")"))
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 5.6), squeeze=False, sharex=True, sharey="row")
    per_layer = attention.assign(run=attention["model"] + " (" + attention["variant"] + ")", layer=attention["layer"] + 1)
    per_layer = per_layer.groupby(["run", "run_id", "layer", "epoch"], as_index=False).agg(
        top_mass=("top_mass", "mean"), mean_distance=("mean_distance", "mean"), uniform_mass=("uniform_mass", "first"),
        uniform_distance=("uniform_distance", "first"))
    several = per_layer.groupby(["run", "layer", "epoch"]).size().max() > 1
    for j, run in enumerate(models):
        d = per_layer[per_layer["run"] == run]
        for i, (measure, label, uniform) in enumerate([("top_mass", "share on top offset", "uniform_mass"),
                                                       ("mean_distance", "attention distance (tokens)", "uniform_distance")]):
            ax = axes[i, j]
            sns.lineplot(data=d, x="epoch", y=measure, hue="layer", palette="viridis", marker="o", ax=ax,
                         errorbar="sd" if several else None, legend=(i == 0 and j == len(models) - 1))
            ax.axhline(d[uniform].iloc[0], ls=":", color="grey", lw=1)
            ax.set_ylim(bottom=0)
            ax.set_ylabel(label if j == 0 else "")
            ax.set_title(run if i == 0 else "", fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    fig.suptitle("Attention from initialisation (epoch 0) to the end of training" + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
