"""Throughput and latency of every model (notebook 06)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from attnlib.viz.saving import PAGE_WIDTH, SMALLEST_TEXT, save


def plot_timing(df: pd.DataFrame, path: str | Path | None = None, subtitle: str = ""):
    """Bar charts from timing.time_models rows: training and inference images/s at the largest batch
    measured, and batch-1 latency, one bar per (model, variant) and precision."""
    d = df.assign(name=df["model"] + df["variant"].map(lambda v: "" if v == "standard" else f" ({v})"))
    panels = []
    for mode, value, label in (("train", "images_per_s", "training images/s"),
                               ("infer", "images_per_s", "inference images/s"),
                               ("latency", "latency_ms", "latency at batch 1 (ms)")):
        part = d[d["mode"] == mode]
        if part.empty:
            continue
        batch = part["batch"].max()
        panels.append((part[part["batch"] == batch], value,
                       f"{label}" + ("" if mode == "latency" else f", batch {batch}")))
    fig, axes = plt.subplots(1, len(panels), figsize=(PAGE_WIDTH, 0.3 * d["name"].nunique() + 1.6), sharey=True,
                             squeeze=False)
    order = sorted(d["name"].unique())
    for i, (ax, (part, value, label)) in enumerate(zip(axes[0], panels)):
        sns.barplot(data=part, y="name", x=value, hue="precision", order=order, ax=ax, orient="h", legend=i == 0)
        ax.set_xlabel(label.replace(", batch", "\nbatch").replace(" at batch 1", "\nat batch 1"), fontsize=8)
        ax.set_ylabel("")
        ax.tick_params(labelsize=SMALLEST_TEXT)
        ax.grid(axis="x", alpha=0.3)
    if panels:
        axes[0][0].legend(title="precision", fontsize=SMALLEST_TEXT, title_fontsize=SMALLEST_TEXT, frameon=False)
    fig.suptitle("Throughput and latency" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    fig.tight_layout()
    return save(fig, path)
