"""Figures of training runs: accuracy curves, centers of attention and their paths, attention from
initialisation to the end of training (notebooks 01-05, 07 and 08)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from attnlib.viz.saving import PAGE_WIDTH, SMALLEST_TEXT, save


def run_colours(runs: list[str]) -> dict[str, tuple]:
    """A colour per run that no other run shares: the trained runs from tab10 (tab20 beyond 10), each shuffled-label
    control in a grey of its own."""
    trained = [r for r in runs if "shuffled labels" not in r]
    controls = [r for r in runs if "shuffled labels" in r]
    palette = sns.color_palette("tab10" if len(trained) <= 10 else "tab20", len(trained))
    greys = [str(g) for g in np.linspace(0.35, 0.7, max(len(controls), 1))]
    return {**dict(zip(trained, palette)), **dict(zip(controls, greys))}


def _label_heights(values: list[float], gap: float) -> list[float]:
    """Heights (data units) for labels at `values`, highest first, each at most at its value and at least `gap`
    below the one above it, so that labels of close values do not print over each other."""
    heights: list[float] = []
    for v in values:
        heights.append(min(v, heights[-1] - gap) if heights else v)
    return heights


def plot_curves(df: pd.DataFrame, title: str, path: str | Path | None = None, published: dict | None = None):
    """Test accuracy against epoch, one line per (model, variant) in a colour of its own (shuffled-label controls
    grey and dashed), the legend beside the axes; dashed lines at published accuracies, labelled at the left where
    the curves start low, the labels of close accuracies stacked instead of printed over each other."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.0))
    if not df.empty:
        d = df.assign(run=df["model"] + " (" + df["variant"] + ")")
        runs = list(dict.fromkeys(d["run"]))
        colours = run_colours(runs)
        spread = "sd" if d.groupby(["run", "epoch"]).size().max() > 1 else None
        for controls in (False, True):
            part = d[d["run"].str.contains("shuffled labels") == controls]
            if not part.empty:
                order = [r for r in runs if r in set(part["run"])]
                sns.lineplot(data=part, x="epoch", y="test_acc", hue="run", hue_order=order, palette=colours,
                             marker="o", ms=4, ax=ax, errorbar=spread, ls="--" if controls else "-")
        ax.legend(title="run", fontsize=SMALLEST_TEXT, title_fontsize=SMALLEST_TEXT + 1, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), frameon=False)
        datasets = ", ".join(sorted(d["dataset"].unique()))
        profiles = ", ".join(sorted(d["profile"].unique()))
        ax.set_title(f"{title}\n{datasets}, profile {profiles}", fontsize=9)
    by_acc: dict[float, list[str]] = {}
    for label, acc in (published or {}).items():
        by_acc.setdefault(acc, []).append(label)
    accs = sorted(by_acc, reverse=True)
    for acc, height in zip(accs, _label_heights(accs, gap=0.045)):  # one line and label per accuracy
        ax.axhline(acc, ls="--", lw=0.8, color="grey")
        ax.annotate(" = ".join(by_acc[acc]), (0.01, height - 0.005), xycoords=("axes fraction", "data"),
                    fontsize=SMALLEST_TEXT, color="0.35", va="top")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def _wrapped(run: str) -> str:
    """A run's name on two lines: the model, then its variant (a panel's title fits its panel)."""
    return run.replace(" (", "\n(", 1)


def gaussian_contour(center, inv_cov, mass: float, points: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the ellipse enclosing `mass` of a 2-D Gaussian with this center and Sigma^-1:
    (x - mu)^T Sigma^-1 (x - mu) = -2 ln(1 - mass)."""
    radius = np.sqrt(-2.0 * np.log(1.0 - mass))
    eigval, eigvec = np.linalg.eigh(np.asarray(inv_cov, dtype=float))  # Sigma^-1 = V diag(l) V^T
    t = np.linspace(0, 2 * np.pi, points)
    circle = np.stack([np.cos(t), np.sin(t)])  # (2, points)
    offsets = eigvec @ (circle * (radius / np.sqrt(np.maximum(eigval, 1e-12)))[:, None])
    return center[0] + offsets[0], center[1] + offsets[1]


def plot_centers(centers: pd.DataFrame, path: str | Path | None = None, extent: float | None = None,
                 subtitle: str = ""):
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
    panel = min(2.2, (PAGE_WIDTH - 0.6) / len(layers))
    size = (panel * len(layers) + 0.6, (panel + 0.1) * len(runs) + 0.5)
    fig, axes = plt.subplots(len(runs), len(layers), figsize=size, squeeze=False)
    for i, (model, variant) in enumerate(runs):
        for j, layer in enumerate(layers):
            ax = axes[i][j]
            d = centers[(centers["model"] == model) & (centers["variant"] == variant) & (centers["layer"] == layer)]
            colors = [plt.cm.tab20((int(h) - 1) % 20) for h in d["head"]]
            ax.scatter(d["col"], d["row"], c=colors, s=30, zorder=3)
            for color, (_, r) in zip(colors, d.iterrows()):
                ax.annotate(str(int(r["head"])), (r["col"], r["row"]), fontsize=SMALLEST_TEXT, xytext=(3, 3),
                            textcoords="offset points")
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
            ax.tick_params(labelsize=SMALLEST_TEXT)
            ax.grid(alpha=0.3)
            ax.set_aspect("equal")
            if i == 0:
                ax.set_title(f"layer {layer}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{model}\n{variant}\nrow offset", fontsize=SMALLEST_TEXT)
            if i == len(runs) - 1:
                ax.set_xlabel("column offset", fontsize=SMALLEST_TEXT)
    fig.suptitle("centers of attention (+: the query pixel)" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def plot_center_trajectories(centers: pd.DataFrame, layer: int = 1, path: str | Path | None = None, subtitle: str = ""):
    """How the centers of one layer's heads move during training (results.CENTER_COLUMNS rows, all
    epochs): one panel per run, a line per head from its initial center (open circle) to its
    last (filled, numbered), with the 50% contour of the last epoch."""
    d = centers[centers["layer"] == layer]
    runs = list(dict.fromkeys(zip(d["model"], d["variant"], d["seed"], d["run_id"])))
    n_cols = min(max(len(runs), 1), 3)  # in rows a page wide
    n_rows = -(-max(len(runs), 1) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(PAGE_WIDTH, 2.75 * n_rows + 0.5), squeeze=False)
    for ax in axes.ravel()[len(runs):]:
        ax.axis("off")
    extent = max(4.5, float(d[["row", "col"]].abs().max().max()) + 0.5) if not d.empty else 4.5
    for ax, (model, variant, seed, run_id) in zip(axes.ravel(), runs):
        run = d[d["run_id"] == run_id]
        last_epoch = run["epoch"].max()
        for head, h in run.sort_values("epoch").groupby("head"):
            color = plt.cm.tab20((int(head) - 1) % 20)
            ax.plot(h["col"], h["row"], "-", color=color, lw=0.9, alpha=0.8)
            ax.plot(h["col"].iloc[0], h["row"].iloc[0], "o", mfc="none", color=color, ms=4)
            end = h[h["epoch"] == last_epoch].iloc[0]
            ax.plot(end["col"], end["row"], "o", color=color, ms=5, zorder=3)
            ax.annotate(str(int(head)), (end["col"], end["row"]), fontsize=SMALLEST_TEXT, xytext=(3, 3),
                        textcoords="offset points")
            if {"inv_cov_rr", "inv_cov_rc", "inv_cov_cc"} <= set(end.index):
                inv = np.array([[end["inv_cov_rr"], end["inv_cov_rc"]], [end["inv_cov_rc"], end["inv_cov_cc"]]])
                rows, cols = gaussian_contour((end["row"], end["col"]), inv, 0.5)
                ax.plot(cols, rows, "-", color=color, lw=0.5, alpha=0.6)
        ax.plot(0, 0, "k+", ms=10, zorder=4)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(extent, -extent)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=SMALLEST_TEXT)
        ax.set_title(f"{model}\n{variant}, seed {seed}, epochs 0-{last_epoch}", fontsize=8)
    fig.suptitle(f"centers of layer {layer} during training\n(o: initial, \u25cf: last)"
                 + (f"; {subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def plot_attention_development(attention: pd.DataFrame, path: str | Path | None = None, subtitle: str = ""):
    """How each attention model's heads changed from initialisation (epoch 0) to the last epoch, per layer:
    the mean share on each head's top offset and the mean attention distance from the query (results.
    ATTENTION_COLUMNS rows of every run; lines: mean over seeds, bands: their standard deviation). Dotted:
    uniform attention."""
    models = list(dict.fromkeys(attention["model"] + " (" + attention["variant"] + ")"))
    cols = min(len(models), 3)
    groups = -(-len(models) // cols)  # rows of models, each a row of shares above a row of distances
    fig, axes = plt.subplots(2 * groups, cols, figsize=(PAGE_WIDTH, 3.7 * groups + 0.6), squeeze=False, sharex=True)
    per_layer = attention.assign(run=attention["model"] + " (" + attention["variant"] + ")",
                                 layer=attention["layer"] + 1)
    per_layer = per_layer.groupby(["run", "run_id", "layer", "epoch"], as_index=False).agg(
        top_mass=("top_mass", "mean"), mean_distance=("mean_distance", "mean"), uniform_mass=("uniform_mass", "first"),
        uniform_distance=("uniform_distance", "first"))
    several = per_layer.groupby(["run", "layer", "epoch"]).size().max() > 1
    tops = {"top_mass": max(per_layer["top_mass"].max(), 0.1) * 1.05,
            "mean_distance": max(per_layer["mean_distance"].max(), per_layer["uniform_distance"].max()) * 1.05}
    for ax in axes.ravel():  # the panels of models drawn are shown again below
        ax.set_visible(False)
    for n, run in enumerate(models):
        d = per_layer[per_layer["run"] == run]
        group, j = divmod(n, cols)
        for i, (measure, label, uniform) in enumerate([("top_mass", "share on\ntop offset", "uniform_mass"),
                                                       ("mean_distance", "attention\ndistance (tokens)",
                                                        "uniform_distance")]):
            ax = axes[2 * group + i, j]
            ax.set_visible(True)
            sns.lineplot(data=d, x="epoch", y=measure, hue="layer", palette="viridis", marker="o", ms=4, ax=ax,
                         errorbar="sd" if several else None, legend=(i == 0 and n == 0))
            if i == 0 and n == 0:
                handles, labels = ax.get_legend_handles_labels()
                ax.get_legend().remove()
            ax.axhline(d[uniform].iloc[0], ls=":", color="grey", lw=1)
            ax.set_ylim(0, tops[measure])
            ax.set_ylabel(label if j == 0 else "", fontsize=8)
            ax.set_xlabel("epoch" if i == 1 else "", fontsize=8)
            ax.tick_params(labelsize=SMALLEST_TEXT, labelbottom=True)
            ax.set_title(_wrapped(run) if i == 0 else "", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    # the legend in the first free panel, else in the first one's lower right, where its lines are not
    free = axes[2 * (groups - 1), len(models) % cols] if len(models) % cols else None
    if free is not None:
        free.set_visible(True)
        free.axis("off")
    (free or axes[0, 0]).legend(handles, labels, title="layer", fontsize=SMALLEST_TEXT, title_fontsize=SMALLEST_TEXT,
                                frameon=False, loc="center" if free is not None else "lower right")
    fig.suptitle("Attention from initialisation (epoch 0) to the end of training"
                 + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.tight_layout()
    return save(fig, path)
