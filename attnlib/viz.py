"""Figures: accuracy curves (and, as the project grows, attention maps and head centers)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
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
