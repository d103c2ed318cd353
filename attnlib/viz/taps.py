"""Whether layer 1's quadratic heads form a convolution's grid of taps (the paper's Figure 4), per seed.

One panel per seed: every head's center at initialisation (hollow) and after training (filled), the grid of taps
around the query (grey crosses), and a line from each trained center to the tap it is matched to
(attnlib.evidence.taps). The last panel: the matched grid distance after every epoch, per seed and its mean over
seeds, with the line a grid must come under.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from attnlib import results
from attnlib.evidence.taps import grid_distances, grid_offsets, matched_grid_distance, matched_offsets
from attnlib.viz.saving import PAGE_WIDTH, SMALLEST_TEXT, save


def plot_taps(centers: pd.DataFrame, path: str | Path | None = None, within: float | None = None, layer: int = 1,
              subtitle: str = ""):
    """`centers`: one model's recorded centers (results.CENTER_COLUMNS) over its seeds and epochs, with its
    shuffled-label controls if it has any (a panel each, and a dashed curve); `within`: the grid distance (tokens) a
    grid must end under, drawn as a dashed line."""
    part = centers[centers["layer"] == layer]
    control = results.is_control(part["variant"])
    runs = [(part[control == c], seed, c) for c in (False, True)
            for seed in sorted(part[control == c]["seed"].unique())]
    cols = min(len(runs) + 1, 3)  # a panel per seed and control, then the distances: in rows a page wide
    rows = -(-(len(runs) + 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PAGE_WIDTH, 2.75 * rows + 0.7), squeeze=False)
    panels = list(axes.ravel())
    for ax in panels[len(runs) + 1:]:
        ax.axis("off")
    for ax, (rows_, seed, c) in zip(panels, runs):
        _seed_panel(ax, rows_[rows_["seed"] == seed], f"seed {seed}{', shuffled labels' if c else ''}")
    handles, labels = panels[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    distances = grid_distances(part, layer)
    _distance_panel(panels[len(runs)], distances[~results.is_control(distances["variant"])],
                    distances[results.is_control(distances["variant"])], within)
    fig.suptitle(f"layer {layer}: heads against the grid of taps" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0.5 / (2.75 * rows + 0.7), 1, 1))  # room for the legend below
    return save(fig, path)


def _seed_panel(ax, runs: pd.DataFrame, name: str):
    first, last = runs[runs["epoch"] == 0], runs[runs["epoch"] == runs["epoch"].max()]
    start, end = (d.sort_values("head")[["row", "col"]].to_numpy() for d in (first, last))
    taps = grid_offsets(len(end))
    ax.scatter(taps[:, 1], taps[:, 0], marker="x", color="0.6", s=40, zorder=2, label="grid of taps")
    ax.scatter(start[:, 1], start[:, 0], facecolors="none", edgecolors="tab:blue", s=28, zorder=3, label="epoch 0")
    ax.scatter(end[:, 1], end[:, 0], color="tab:red", s=28, zorder=4, label=f"epoch {int(last['epoch'].max())}")
    if np.isfinite(end).all():  # a diverged run's centers are NaN: nothing to match
        for (r, c), (tr, tc) in zip(end, matched_offsets(end)):
            ax.plot([c, tc], [r, tr], color="tab:red", lw=0.8, alpha=0.7, zorder=3)
    extent = max(2.5, float(np.nanmax(np.abs(np.concatenate([start, end])), initial=0.0)) + 0.5)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(extent, -extent)  # rows grow downwards, as in the image
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    d0, d1 = (matched_grid_distance(x) for x in (start, end))
    ax.set_title(f"{name}:\n{d0:.2f} -> {d1:.2f} tokens", fontsize=8)
    ax.set_xlabel("column offset (tokens)", fontsize=8)
    ax.set_ylabel("row offset (tokens)", fontsize=8)


def _distance_panel(ax, table: pd.DataFrame, controls: pd.DataFrame, within: float | None):
    by_epoch = table.pivot_table(index="epoch", columns="seed", values="grid_distance")
    for i, (seed, rows) in enumerate(controls.groupby("seed")):
        rows = rows.sort_values("epoch")
        ax.plot(rows["epoch"], rows["grid_distance"], color="tab:blue", ls="--", lw=1.2,
                label="shuffled-label control" if i == 0 else None)
    for seed in by_epoch.columns:
        ax.plot(by_epoch.index, by_epoch[seed], color="0.6", lw=0.8)
    mean, sd = by_epoch.mean(axis=1), by_epoch.std(axis=1).fillna(0.0)
    ax.plot(mean.index, mean, color="tab:red", lw=2, label=f"mean of {by_epoch.shape[1]} seed(s)")
    ax.fill_between(mean.index, mean - sd, mean + sd, color="tab:red", alpha=0.2)
    if within is not None:
        ax.axhline(within, color="k", ls="--", lw=0.8, label=f"a grid: under {within:g}")
    ax.set_ylim(0, max(2.0, float(pd.concat([table, controls])["grid_distance"].max()) + 0.2))
    ax.set_xlabel("epoch (0: initialisation)", fontsize=8)
    ax.set_ylabel("distance from the grid (tokens)", fontsize=8)
    ax.set_title("matched grid distance\nper epoch", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=SMALLEST_TEXT)
