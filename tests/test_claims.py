"""The learning claims compare trained runs with the same runs at initialisation (attnlib.evidence.claims).

The null: ten draws of three untrained networks per model, each compared with another untrained draw (what
random initialisation alone can differ by) and with itself, must all read "not shown". Hand-built heads that
do what the paper's figures show, measured through the same recording as training uses, must read
"reproduced"; too few seeds read "not shown" whatever the numbers. The accuracy order (Table 1) tells
differences of mean accuracies from the spread over seeds by one-sided Welch t-tests: 1,000 simulated draws of
chance-level models, and of four equally good models, must read "partly" or "reproduced" fewer than 10 times.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from attnlib.evidence import accuracy_order, claims, verdicts
from attnlib.models import create_model
from attnlib.training.records import attention_rows, center_rows

SMALL = dict(heads=9, layers=3, hidden=16, ff=32, image_size=28, in_channels=1, downsample=4)  # a 7x7 token grid
GRID = [(r, c) for r in (-1, 0, 1) for c in (-1, 0, 1)]
LEARNING_CLAIMS = [claims.claim_quadratic_grid, claims.claim_deeper_wider, claims.claim_learned_locality]


def build(model: str, seed: int):
    torch.manual_seed(seed)
    return create_model(model, **SMALL)


def records(model_name: str, seed: int, start, end, probe, control: bool = False) -> tuple[list[dict], list[dict]]:
    """Attention and center rows of one run: `start` as epoch 0, `end` as its last epoch (1); a shuffled-label
    control's with `control`."""
    variant = "9 heads, shuffled labels" if control else "9 heads"
    meta = dict(run_id=f"{model_name}{'-shuffled' if control else ''}-s{seed}", experiment="x", model=model_name,
                variant=variant, dataset="synthetic", profile="test", seed=seed)
    attention = attention_rows(start, probe, meta, 0) + attention_rows(end, probe, meta, 1)
    centers = center_rows(start, meta, 0) + center_rows(end, meta, 1)
    return attention, centers


def effects_of(runs) -> pd.DataFrame:
    attention, centers = [], []
    for a, c in runs:
        attention += a
        centers += c
    return claims.layer_effects(pd.DataFrame(attention), pd.DataFrame(centers) if centers else None)


@pytest.fixture(scope="module")
def probe():
    return torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def nudged(model, seed: int, size: float = 1e-4):
    """`model` after a step at a learning rate of about 0: every weight moved by noise of `size`."""
    g = torch.Generator().manual_seed(seed)
    for param in model.parameters():
        param.add_(size * torch.randn(param.shape, generator=g))
    return model


@pytest.mark.parametrize("draw", range(10))
def test_untrained_networks_show_no_learning_claim(draw, probe):
    """Three seeds of untrained networks of every model, with a control each: against a fresh untrained draw,
    against themselves, and after training at a learning rate of about 0."""
    seeds = torch.randint(0, 2**31, (3,), generator=torch.Generator().manual_seed(draw)).tolist()
    for pair in ("redrawn", "unchanged", "lr 0"):
        runs = []
        for model in ("sa_quadratic", "sa_learned", "sa_learned_content"):
            for seed in seeds + [seeds[0] + 7]:
                start = build(model, seed)
                end = (build(model, seed + 1) if pair == "redrawn" else start if pair == "unchanged"
                       else nudged(build(model, seed), seed))
                runs.append(records(model, seed, start, end, probe, control=seed not in seeds))
        effects = effects_of(runs)
        for claim in LEARNING_CLAIMS:
            got = claim(effects)
            assert got["verdict"] == "not shown", (pair, claim.__name__, got["evidence"])


@torch.no_grad()
def trained_like_quadratic(model):
    """Layer 1: nine sharp heads on the taps of a 3x3 kernel. Deeper layers: broad heads 3 tokens out."""
    blocks = model.layer_blocks()
    first = blocks[0].attn.positional
    first.centers.copy_(torch.tensor(GRID, dtype=torch.float32))
    first.spreads.fill_(3.0)
    for block in blocks[1:]:
        block.attn.positional.centers.copy_(torch.tensor([(3.0, 0.0)] * 9).roll(0))
        block.attn.positional.spreads.fill_(0.4)
    return model


@torch.no_grad()
def trained_like_learned(model, sharpness: float):
    """Every layer: head h's positional score -sharpness * |delta - tap_h|^2, written into the row and column
    embeddings (one feature per head) and read out by the per-head maps."""
    for block in model.layer_blocks():
        pos = block.attn.positional
        for table, keys, axis in ((pos.row_embeddings, pos.head_keys_row, 0), (pos.col_embeddings, pos.head_keys_col, 1)):
            side = (table.weight.shape[0] + 1) // 2
            shifts = torch.arange(table.weight.shape[0]) - (side - 1)
            table.weight.zero_()
            for h, tap in enumerate(GRID):
                table.weight[:, h] = -sharpness * (shifts - tap[axis]).float() ** 2
            keys.weight.zero_()
            keys.weight[:, :9] = torch.eye(9)
    return model


def test_trained_like_heads_read_reproduced(probe):
    runs = [records(model, 9, build(model, 9), build(model, 9), probe, control=True)  # controls that learned nothing
            for model in ("sa_quadratic", "sa_learned")]
    for seed in (0, 1, 2):
        runs.append(records("sa_quadratic", seed, build("sa_quadratic", seed),
                            trained_like_quadratic(build("sa_quadratic", seed)), probe))
        runs.append(records("sa_learned", seed, build("sa_learned", seed),
                            trained_like_learned(build("sa_learned", seed), 2.0), probe))
        runs.append(records("sa_learned_content", seed, build("sa_learned_content", seed),
                            build("sa_learned_content", seed), probe))  # with content: unchanged
    effects = effects_of(runs)
    for claim in LEARNING_CLAIMS:
        got = claim(effects)
        assert got["verdict"] == "reproduced", (claim.__name__, got["evidence"])
    assert "untrained" in claims.claim_quadratic_grid(effects)["evidence"]  # it says what it was measured against

    one_seed = effects[effects["seed"].isin([0, 9])]
    for claim in LEARNING_CLAIMS:
        got = claim(one_seed)
        assert got["verdict"] == "not shown" and "1 seed" in got["evidence"], claim.__name__
        assert "±" not in got["evidence"], claim.__name__
    for claim in LEARNING_CLAIMS:
        assert claim(pd.DataFrame())["verdict"] == "not measured"

    without_control = effects[~effects["variant"].str.contains("shuffled")]
    for claim in LEARNING_CLAIMS:
        got = claim(without_control)
        assert got["verdict"] == "not shown" and "control" in got["evidence"], claim.__name__

    table = claims.effect_table(effects)
    row = table[(table["model"] == "sa_quadratic") & (table["variant"] == "9 heads") & (table["layer"] == 1)
                & (table["measure"] == "share on top offset")]
    assert row["seeds"].item() == 3 and row["change"].item() > claims.CRITERIA.sharper


def order_table(accs: dict[str, tuple[float, float]], seeds: int = 3) -> pd.DataFrame:
    variant = {"resnet18": "standard"}
    return pd.DataFrame([dict(model=m, variant=variant.get(m, "9 heads"), dataset="fashion_mnist", acc=a, acc_sd=sd,
                              seeds=seeds) for m, (a, sd) in accs.items()])


def test_accuracy_order_tells_differences_from_the_spread_over_seeds():
    clear = {"resnet18": (0.90, 0.002), "sa_quadratic": (0.85, 0.003), "sa_learned": (0.80, 0.004),
             "sa_learned_content": (0.75, 0.002)}
    assert accuracy_order.claim_accuracy_order(order_table(clear))["verdict"] == "reproduced"
    noisy = {**clear, "sa_learned": (0.84, 0.02)}  # in order, but within the spread of its neighbours
    got = accuracy_order.claim_accuracy_order(order_table(noisy))
    assert got["verdict"] == "partly" and "within the spread" in got["evidence"]
    assert accuracy_order.claim_accuracy_order(order_table(clear, seeds=1))["verdict"] == "not shown"
    reversed_ = {m: (1.6 - a, sd) for m, (a, sd) in clear.items()}
    assert accuracy_order.claim_accuracy_order(order_table(reversed_))["verdict"] == "not reproduced"
    assert accuracy_order.claim_accuracy_order(order_table({"resnet18": (0.9, 0.0)}))["verdict"] == "not measured"


MODELS = [m for m, _ in accuracy_order.ORDER]


def test_accuracy_order_by_welch_test():
    """A clear published order is reproduced; one pair clearly reversed is not; a model at chance shows nothing."""
    clear = dict(zip(MODELS, [(0.93, 0.005), (0.90, 0.005), (0.87, 0.005), (0.84, 0.005)]))
    got = accuracy_order.claim_accuracy_order(order_table(clear))
    assert got["verdict"] == "reproduced" and "Welch" in got["evidence"], got["evidence"]
    swapped = {**clear, "sa_quadratic": (0.87, 0.005), "sa_learned": (0.90, 0.005)}
    got = accuracy_order.claim_accuracy_order(order_table(swapped))
    assert got["verdict"] == "not reproduced" and "reversed" in got["evidence"], got["evidence"]
    at_chance = {**clear, "sa_learned_content": (0.10, 0.005)}  # its pair is in order, far beyond the spread
    got = accuracy_order.claim_accuracy_order(order_table(at_chance))
    assert got["verdict"] == "not shown" and "sa_learned_content (p =" in got["evidence"], got["evidence"]
    reversed_at_chance = {m: (0.10 + 0.001 * i, 0.0005) for i, m in enumerate(MODELS)}
    assert accuracy_order.claim_accuracy_order(order_table(reversed_at_chance))["verdict"] == "not shown"


def test_welch_degrees_of_freedom_by_hand():
    """a = 1, 2, 3 and b = 2, 4, 6: squared standard errors 1/3 and 4/3, df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2)
    = 50/17; with no spread at all, na + nb - 2. Elementwise on arrays, as the order's test takes its pairs."""
    se, df = accuracy_order.welch([1 / 3, 0.0], [4 / 3, 0.0], [3, 3], [3, 4])
    assert se == pytest.approx([math.sqrt(5 / 3), 0.0]) and df == pytest.approx([50 / 17, 5.0])


def test_accuracy_order_with_one_seed_prints_no_spread():
    clear = dict(zip(MODELS, [(0.93, 0.0), (0.90, 0.0), (0.87, 0.0), (0.84, 0.0)]))
    got = accuracy_order.claim_accuracy_order(order_table(clear, seeds=1))
    assert got["verdict"] == "not shown" and "±" not in got["evidence"] and "1 seed" in got["evidence"]
    assert verdicts.pm([0.5]) == "+0.50 (1 seed)" and verdicts.pm([0.5, 0.7]) == "+0.60 ± 0.14"


def test_t_tail_matches_closed_forms():
    """Student's t tail without scipy: df 1 (Cauchy) and 2 have closed forms; t(0.995; 4) = 4.604 from tables."""
    t = np.linspace(-30, 30, 121)
    assert np.allclose(accuracy_order.t_sf(t, 1.0), 0.5 - np.arctan(t) / math.pi, rtol=1e-10, atol=1e-14)
    assert np.allclose(accuracy_order.t_sf(t, 2.0), 0.5 - t / (2 * np.sqrt(2 + t * t)), rtol=1e-10, atol=1e-14)
    assert accuracy_order.t_sf(4.604, 4.0) == pytest.approx(0.005, abs=2e-6)
    assert accuracy_order.t_sf(1.959964, 1e6) == pytest.approx(0.025, abs=1e-6)


def simulated_verdicts(means, sd: float, draws: int = 1000, seeds: int = 3, rng_seed: int = 0) -> np.ndarray:
    """`draws` tables of the four models, each model's seeds drawn around its mean: their verdicts, all at once."""
    accs = np.random.default_rng(rng_seed).normal(np.reshape(means, (-1, 1)), sd, (draws, len(MODELS), seeds))
    got = accuracy_order.order_tests(accs.mean(-1), accs.std(-1, ddof=1), np.full(accs.shape[:2], seeds))["verdict"]
    for i in range(20):  # claim_accuracy_order reads a table through the same tests
        table = order_table({m: (accs[i, j].mean(), accs[i, j].std(ddof=1)) for j, m in enumerate(MODELS)}, seeds)
        assert accuracy_order.claim_accuracy_order(table)["verdict"] == got[i]
    return got


@pytest.mark.parametrize("mean, sd", [(0.10, 0.005), (0.85, 0.01)], ids=["at chance", "equal above chance"])
def test_equal_models_rarely_read_as_ordered(mean, sd):
    verdicts = simulated_verdicts([mean] * len(MODELS), sd)
    assert np.isin(verdicts, ["partly", "reproduced"]).sum() < 10


def test_controls_that_change_as_much_show_nothing(probe):
    """A shuffled-label control whose heads reach the same grid as the trained runs: nothing is shown, whatever
    the trained runs did, since training without learning made the same change."""
    runs = []
    for seed in (0, 1, 2, 9):
        for model in ("sa_quadratic", "sa_learned"):
            end = (trained_like_quadratic(build(model, seed)) if model == "sa_quadratic"
                   else trained_like_learned(build(model, seed), 2.0))
            runs.append(records(model, seed, build(model, seed), end, probe, control=seed == 9))
    effects = effects_of(runs)
    for claim in (claims.claim_quadratic_grid, claims.claim_learned_locality):
        got = claim(effects)
        assert got["verdict"] == "not shown", (claim.__name__, got["evidence"])
        assert "shuffled-label control (1 seed)" in got["evidence"], got["evidence"]


def gaussian_layer(center: tuple[float, float], alpha: float = 0.5, side: int = 7):
    """One head of Gaussian attention on a side x side grid: score -alpha |key - query - center|^2."""
    from attnlib.evidence.attention_maps import LayerMaps
    from attnlib.attention import relative_offsets
    delta = relative_offsets(side, side).double()  # (T, T, 2): key minus query
    score = -alpha * ((delta - torch.tensor(center, dtype=torch.float64)) ** 2).sum(-1)
    return LayerMaps("layer 1", score.softmax(-1)[None, None].float(), (side, side), 1)


def test_a_center_moved_toward_the_border_earns_nothing():
    """At a fixed spread, a center 5 columns out instead of 3 puts a larger share on its key at the image's edge
    only because the softmax renormalises over fewer keys; the share measured earns nothing from it."""
    from attnlib.evidence.attention_maps import conv_likeness
    share = {col: conv_likeness([gaussian_layer((0.0, col))])["top_mass"].item() for col in (0, 3, 5)}
    assert abs(share[5] - share[3]) < 0.01 and abs(share[5] - share[0]) < 0.01, share
    # the same share over every query whose key is on the grid rises by more than that: what is left out
    layer = gaussian_layer((0.0, 5.0))
    naive = np.mean([layer.weights[0, 0, q, q + 5].item() for q in range(49) if q % 7 + 5 < 7])
    assert naive - share[5] > 0.02, (naive, share)
