"""The matched grid distance (attnlib.evidence.taps): how far a layer's heads are from a convolution's grid of taps.

Covers: a hand-built grid reads 0 in any order of its heads; a grid shifted by half a token reads 0.5; heads
piled on the query read the mean distance of the taps from the centre; the exact matching agrees with brute
force over every assignment; the per-epoch table from recorded centers; the report's figure of it (viz.plot_taps).
"""
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from attnlib.evidence.taps import grid_distances, grid_offsets, matched_grid_distance
from attnlib.viz import plot_taps


def test_a_grid_of_nine_heads_in_any_order_is_at_distance_zero():
    grid = grid_offsets(9)
    assert sorted(map(tuple, grid)) == [(r, c) for r in (-1, 0, 1) for c in (-1, 0, 1)]
    shuffled = np.random.default_rng(0).permutation(grid)
    assert matched_grid_distance(shuffled) == pytest.approx(0.0, abs=1e-12)


def test_a_shifted_grid_and_heads_piled_on_the_query():
    assert matched_grid_distance(grid_offsets(9) + [0.5, 0.0]) == pytest.approx(0.5)
    piled = np.zeros((9, 2))
    assert matched_grid_distance(piled) == pytest.approx((4 * 1 + 4 * math.sqrt(2)) / 9)


@pytest.mark.parametrize("heads", [2, 4, 5, 6])
def test_the_matching_is_the_best_of_all_assignments(heads):
    rng = np.random.default_rng(heads)
    offsets = grid_offsets(heads)
    for _ in range(5):
        centers = rng.normal(scale=2.0, size=(heads, 2))
        cost = np.linalg.norm(centers[:, None] - offsets[None], axis=-1)
        brute = min(sum(cost[h, cols[h]] for h in range(heads))
                    for cols in itertools.permutations(range(len(offsets)), heads)) / heads
        assert matched_grid_distance(centers) == pytest.approx(brute)


def test_sixteen_heads_use_a_four_by_four_grid_and_more_are_refused():
    assert len(grid_offsets(16)) == 16 and len(grid_offsets(10)) == 16
    with pytest.raises(ValueError, match="17 heads"):
        grid_offsets(17)


def test_the_table_per_run_and_epoch_from_recorded_centers():
    grid = grid_offsets(4)
    rows = [dict(run_id="r", model="sa_quadratic", variant="4 heads", seed=0, epoch=epoch, layer=layer, head=h + 1,
                 row=grid[h, 0] * (1 + epoch), col=grid[h, 1] * (1 + epoch))
            for epoch in (0, 1) for layer in (1, 2) for h in range(4)]
    table = grid_distances(pd.DataFrame(rows))
    assert list(table["epoch"]) == [0, 1] and list(table["heads"]) == [4, 4]
    assert table["grid_distance"].iloc[0] == pytest.approx(0.0)
    assert table["grid_distance"].iloc[1] > 0.5  # the grid twice as wide: no longer the taps around the query


def test_the_figure_draws_every_seed_and_the_distance_per_epoch(tmp_path):
    grid = grid_offsets(9)
    rows = [dict(run_id=f"r{seed}", model="sa_quadratic", variant="9 heads", seed=seed, epoch=epoch, layer=1,
                 head=h + 1, row=grid[h, 0] + 0.3 * (2 - epoch), col=grid[h, 1])
            for seed in (0, 1) for epoch in (0, 1, 2) for h in range(9)]
    fig = plot_taps(pd.DataFrame(rows), tmp_path / "taps.png", within=1.0)
    assert (tmp_path / "taps.png").stat().st_size > 0
    assert len(fig.axes) == 3  # two seeds and the distance per epoch
    assert [ax.get_title() for ax in fig.axes[:2]] == ["seed 0:\n0.60 -> 0.00 tokens", "seed 1:\n0.60 -> 0.00 tokens"]


def test_a_diverged_run_and_too_many_heads_read_nan_not_a_crash():
    centers = grid_offsets(9).copy()
    centers[3] = np.nan
    assert math.isnan(matched_grid_distance(centers))
    assert math.isnan(matched_grid_distance(np.zeros((25, 2))))  # 25 heads: beyond the exact matching's reach
