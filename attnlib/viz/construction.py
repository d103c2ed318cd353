"""Figures of Theorem 1's construction (notebook 00): the attention layer's output beside the convolution's,
each head's attention laid out as the kernel, and the error against alpha."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.patches import Rectangle

from attnlib.conv_as_attention import DEFAULT_ALPHA, ConvAsAttention
from attnlib.viz.saving import PAGE_WIDTH, SMALLEST_TEXT, save


def show_channels(t: torch.Tensor):
    """(C, H, W) -> an array for imshow: RGB for 3 channels, else the first channel."""
    t = t.detach().double().cpu()
    if t.shape[0] == 3:
        lo, hi = t.min(), t.max()
        return ((t - lo) / (hi - lo + 1e-12)).permute(1, 2, 0).numpy()
    return t[0].numpy()


def plot_cases(image: torch.Tensor, cases: list[tuple[str, torch.Tensor, torch.Tensor]], path: str | Path | None = None,
               title: str = ""):
    """One row per case: input image, conv(x), attention(x), |difference|. cases: (name, conv_out, attn_out), each
    (C, H, W)."""
    fig, axes = plt.subplots(len(cases), 4, figsize=(PAGE_WIDTH, 2.0 * len(cases) + 0.3), squeeze=False)
    for r, (name, ref, out) in enumerate(cases):
        diff = (out - ref).abs()
        top = diff.max().item()
        panels = [("input", show_channels(image), "gray", {}),
                  (f"{name}: convolution", show_channels(ref), "gray", {}),
                  (f"{name}: attention", show_channels(out), "gray", {}),
                  (f"|difference| (max {top:.1e})", show_channels(diff.amax(0, keepdim=True)), "magma",
                   dict(vmin=0, vmax=top if top > 0 else 1e-7))]
        for c, (label, img, cmap, scale) in enumerate(panels):
            ax = axes[r][c]
            im = ax.imshow(img, cmap=cmap, **scale)
            ax.set_title(label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 3:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=SMALLEST_TEXT)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def plot_head_maps(layer: ConvAsAttention, query: tuple[int, int], x: torch.Tensor | None = None,
                   path: str | Path | None = None, window: int | None = None):
    """Each head's attention for one query pixel, heads laid out as the K x K kernel grid.

    query: (row, col) in image coordinates. Each panel shows the padded grid around the query
    (+/- `window` tokens, default K//2 + 1); the white frame is the image border, the cross the query.
    """
    k, p = layer.kernel_size, layer.padding
    hp, wp = layer.grid
    window = p + 1 if window is None else window
    if x is None:
        x = torch.zeros(1, layer.in_channels, *layer.image_size, dtype=layer.attention.value.weight.dtype)
    probs = layer.attention_probs(x[:1])[0][0]  # (K^2, T, T)
    qr, qc = query[0] + p, query[1] + p  # padded-grid coordinates
    maps = probs[:, qr * wp + qc].reshape(k * k, hp, wp).double().cpu()
    full = torch.full((k * k, hp + 2 * window, wp + 2 * window), float("nan"), dtype=torch.float64)
    full[:, window:window + hp, window:window + wp] = maps  # NaN outside the padded grid
    crop = full[:, qr:qr + 2 * window + 1, qc:qc + 2 * window + 1]  # centred on the query
    side = min(1.3 * k + 0.6, PAGE_WIDTH)
    fig, axes = plt.subplots(k, k, figsize=(side, side), squeeze=False)
    for h in range(k * k):
        i, j = divmod(h, k)
        ax = axes[i][j]
        ax.imshow(crop[h].numpy(), cmap="viridis", vmin=0, vmax=1,
                  extent=(-window - 0.5, window + 0.5, window + 0.5, -window - 0.5))
        # the image (not the padding) spans rows -qr+p .. and cols -qc+p .. in offset coordinates
        h_img, w_img = layer.image_size
        ax.add_patch(Rectangle((p - qc - 0.5, p - qr - 0.5), w_img, h_img, fill=False, ec="white", lw=0.8))
        ax.plot(0, 0, "r+", ms=5)
        ax.set_xlim(-window - 0.5, window + 0.5)  # the frame must not widen the view
        ax.set_ylim(window + 0.5, -window - 0.5)
        ax.set_title(f"({i - p:+d},{j - p:+d})", fontsize=SMALLEST_TEXT)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"attention of each head for query pixel {tuple(query)}\n(head = kernel tap, title: its shift)",
                 fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_error_vs_alpha(df: pd.DataFrame, path: str | Path | None = None, title: str = ""):
    """Relative max error against alpha, one line per (dtype, positional encoding); log scale."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (dtype, enc), d in df.groupby(["dtype", "positional"]):
        d = d.sort_values("alpha")
        ax.plot(d["alpha"], d["rel_error"].clip(lower=1e-18), marker="o", ms=3,
                ls="-" if enc == "quadratic" else "--", label=f"{dtype}, {enc}")
    alphas = torch.tensor(sorted(df["alpha"].unique()), dtype=torch.float64)
    ax.plot(alphas.numpy(), (4 * torch.exp(-alphas)).numpy(), color="grey", lw=0.8, ls=":", label="4 exp(-alpha)")
    ax.axvline(DEFAULT_ALPHA, color="black", lw=0.8, ls="--")
    ax.annotate(f"default alpha = {DEFAULT_ALPHA:g}", (DEFAULT_ALPHA, 1e-2), fontsize=SMALLEST_TEXT, xytext=(3, 0),
                textcoords="offset points")
    ax.set_yscale("log")
    ax.set_ylim(1e-18, 10)
    ax.set_xlabel("alpha (sharpness of every head)")
    ax.set_ylabel("max |attention - conv| / max |conv|\n(exactly 0 drawn at 1e-18)")
    ax.set_title(title or "error of the attention layer against the convolution", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALLEST_TEXT)
    fig.tight_layout()
    return save(fig, path)
