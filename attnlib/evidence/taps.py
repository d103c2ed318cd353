"""Whether a layer's heads form the grid of a convolution's taps around the query (the paper's Figure 4).

A K x K convolution reads the K^2 offsets {-K//2, ..., K - 1 - K//2}^2 around each pixel
(attnlib.conv_as_attention's `kernel_shifts`: -1, 0, 1 for K = 3; -2 to 1 for K = 4); Lemma 1 builds it from
K^2 heads whose attention centers sit one on each offset. For a layer of N_h heads the grid is that of
K = ceil(sqrt(N_h)). The *matched grid distance* is how far the heads' centers
are from it: the mean Euclidean distance, in tokens, from each head's center to the grid offset it is matched
to, under the one-to-one matching of heads to offsets that makes the mean smallest. 0 means the heads sit on a
grid; heads piled at the query, or spread at random, are far from it.

The matching is exact (dynamic programming over the sets of offsets already taken, 2^(K^2) states: 512 for 9
heads, 65,536 for 16), so the measure needs no library beyond numpy.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pandas as pd

from attnlib.conv_as_attention import kernel_shifts

MAX_OFFSETS = 16  # 16 heads (a 4x4 grid): 65,536 states; more would be slow in pure Python


def grid_offsets(heads: int) -> np.ndarray:
    """(K^2, 2): the offsets (row, col) of the K x K grid that `heads` heads can form, K = ceil(sqrt(heads))."""
    side = math.isqrt(heads - 1) + 1 if heads > 0 else 0
    if side * side > MAX_OFFSETS or heads < 1:
        raise ValueError(f"the grid of {heads} heads is not measured (1 to {MAX_OFFSETS} heads)")
    return kernel_shifts(side).numpy().astype(float)


def matched_offsets(centers: np.ndarray) -> np.ndarray:
    """(heads, 2): the grid offset each head's center (rows of `centers`, (heads, 2) as (row, col)) is matched to,
    under the one-to-one matching of heads to offsets with the smallest mean distance."""
    centers = np.asarray(centers, dtype=float)
    offsets = grid_offsets(len(centers))
    cost = np.linalg.norm(centers[:, None, :] - offsets[None, :, :], axis=-1)  # (heads, offsets)
    return offsets[list(_best_matching(tuple(map(tuple, cost.round(12)))))]


def matched_grid_distance(centers: np.ndarray) -> float:
    """The mean distance (tokens) from each head's center to its grid offset under the best matching; NaN where a
    center is not finite (a run whose weights diverged) or the layer has more heads than MAX_OFFSETS."""
    centers = np.asarray(centers, dtype=float)
    if not np.isfinite(centers).all() or len(centers) > MAX_OFFSETS:
        return math.nan
    return float(np.linalg.norm(centers - matched_offsets(centers), axis=-1).mean())


@lru_cache(maxsize=4096)
def _best_matching(cost: tuple[tuple[float, ...], ...]) -> tuple[int, ...]:
    """The column (offset) of each row (head) in the matching of smallest total cost: dynamic programming over the
    set of columns already taken, each state keeping its cost and the columns chosen so far."""
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}  # taken columns -> (cost, columns in order)
    for row in cost:
        nxt: dict[int, tuple[float, tuple[int, ...]]] = {}
        for mask, (total, cols) in best.items():
            for col, value in enumerate(row):
                if not mask >> col & 1 and total + value < nxt.get(mask | 1 << col, (math.inf,))[0]:
                    nxt[mask | 1 << col] = (total + value, cols + (col,))
        best = nxt
    return min(best.values())[1]


def grid_distances(centers: pd.DataFrame, layer: int | None = 1) -> pd.DataFrame:
    """Per run, layer and epoch (0: at initialisation), the matched grid distance of the layer's heads, from the
    centers a run records (attnlib.results.CENTER_COLUMNS; layers count from 1); `layer`: that layer only, None:
    every layer. Columns run_id, model, variant, seed, layer, epoch, heads, grid_distance."""
    columns = ["run_id", "model", "variant", "seed", "layer", "epoch", "heads", "grid_distance"]
    part = centers if layer is None else centers[centers["layer"] == layer]
    rows = []
    for (run_id, at, epoch), heads in part.groupby(["run_id", "layer", "epoch"], sort=True):
        first = heads.iloc[0]
        rows.append(dict(run_id=run_id, model=first["model"], variant=first["variant"], seed=int(first["seed"]),
                         layer=int(at), epoch=int(epoch), heads=len(heads),
                         grid_distance=matched_grid_distance(heads.sort_values("head")[["row", "col"]].to_numpy())))
    return pd.DataFrame(rows, columns=columns)
