"""Throughput and latency of every model (notebook 06)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from attnlib.viz.saving import save


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
    return save(fig, path)
