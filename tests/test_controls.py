"""Shuffled-label controls (TrainParams.control_seeds): planned beside the trained runs with the same seed and
settings, trained on permuted labels, and read by the claims beside the runs they control."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from attnlib import results
from attnlib.data import load_dataset
from attnlib.evidence import claims
from attnlib.experiments import grid, params
from attnlib.experiments.settings import TrainParams
from attnlib.schema import ParamsError
from conftest import train_smoke_runs


def test_shuffled_labels_keep_the_images_and_the_class_counts():
    data = load_dataset("synthetic", train_subset=200, test_subset=50, image_size=8)
    shuffled = data.with_shuffled_labels(3)
    assert torch.equal(shuffled.x_train, data.x_train) and torch.equal(shuffled.y_test, data.y_test)
    assert torch.equal(torch.bincount(shuffled.y_train), torch.bincount(data.y_train))
    assert (shuffled.y_train != data.y_train).float().mean() > 0.5
    assert torch.equal(data.with_shuffled_labels(3).y_train, shuffled.y_train)  # seeded: the same every time


def test_controls_are_planned_at_the_claims_variant_with_the_seeds_they_control():
    p = params.from_mapping(TrainParams, {"models": ["sa_quadratic", "sa_learned"], "heads": [9, 16],
                                          "hierarchical": [False, True], "seeds": [0, 1, 2], "control_seeds": [0],
                                          "control_models": ["sa_quadratic"], "dataset": "synthetic"})
    data = load_dataset("synthetic", train_subset=20, test_subset=10, image_size=16)
    runs = grid.plan(p, data)
    controls = [r for r in runs if r.shuffled]
    assert len(runs) == 2 * 4 * 3 + 1 and len(controls) == 1
    (c,) = controls
    assert (c.model, c.heads, c.hierarchical, c.seed) == ("sa_quadratic", 9, False, 0)
    assert c.variant == f"9 heads, {results.SHUFFLED_LABELS}" and "-shuffled-s0-" in c.run_id
    twin = next(r for r in runs if (r.model, r.heads, r.hierarchical, r.seed, r.shuffled) == ("sa_quadratic", 9,
                                                                                                False, 0, False))
    assert c.train == twin.train and c.overrides == twin.overrides and c.run_id != twin.run_id
    for bad in ({"control_seeds": [5]}, {"control_models": ["no_such_model"]}):
        with pytest.raises(ParamsError):
            params.from_mapping(TrainParams, {"seeds": [0], **bad})


def test_a_control_trains_from_the_same_start_on_permuted_labels(tmp_path):
    train_smoke_runs(tmp_path / "results", tmp_path / "params",
                     {"02_quadratic": {"models": ["sa_quadratic"], "control_seeds": [42]}})
    attention = pd.read_csv(results.attention_path(tmp_path / "results", "smoke", "02_quadratic"))
    control = results.is_control(attention["variant"])
    assert control.any() and (~control).any()
    start = attention["epoch"] == 0
    cols = ["layer", "head", "top_mass", "mean_distance"]
    pd.testing.assert_frame_equal(attention[start & control][cols].reset_index(drop=True),
                                  attention[start & ~control][cols].reset_index(drop=True))  # the same initialisation
    centers = pd.read_csv(results.centers_path(tmp_path / "results", "smoke", "02_quadratic"))
    table = claims.effect_table(claims.layer_effects(attention, centers))
    assert not results.is_control(table["variant"]).any() and table["control_change"].notna().all()
    assert (table["control_seeds"] == 1).all()


def test_every_epoch_keeps_the_attention_of_every_layer_in_the_checkpoint(tmp_path):
    """For figures of how the heads develop (an epoch slider): epoch 0 and every epoch after, every layer's maps."""
    train_smoke_runs(tmp_path / "results", tmp_path / "params",
                     {"02_quadratic": {"models": ["sa_quadratic"], "epochs": 2}})
    (path,) = (tmp_path / "results" / "smoke" / "checkpoints").glob("*.pt")
    state = results.load_checkpoint(path)
    snapshots = state["snapshots"]
    assert [s["epoch"] for s in snapshots] == [0, 1, 2]
    for s in snapshots:
        assert len(s["layers"]) == 2 and all(m.dtype == torch.float16 and m.shape == (4, 16, 16) for m in s["layers"])
        assert all(torch.allclose(m.float().sum(-1), torch.ones(4, 16), atol=1e-2) for m in s["layers"])
    assert not torch.equal(snapshots[0]["layers"][0], snapshots[-1]["layers"][0])
