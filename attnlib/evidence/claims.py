"""What training changed in the attention, measured against the same runs at initialisation, and the
verdicts on the paper's learning claims that those changes earn.

Every training run records, at initialisation (epoch 0) and after every epoch, where and how sharply each
head attends on the same test images (results.ATTENTION_COLUMNS, from attention_maps.conv_likeness) and,
for the quadratic models, each head's center and inverse covariance (results.CENTER_COLUMNS). A claim about
learning is shown only by a change from epoch 0 that every seed makes and that an untrained network cannot
make: two untrained networks differ from each other by far less than CRITERIA asks for, and an untrained
network compared with itself changes by nothing. Fewer than CRITERIA.min_seeds seeds show nothing.

Training changes attention even where the network learns nothing of the task: the softmax sharpens as the weights
grow. So each learning claim is also measured on its model's shuffled-label controls (attnlib.experiments.grid:
the same network, steps, schedule and seed on permuted labels), and a part that is a change counts only where every
trained seed changes further, in the claim's direction, than the furthest control. Without a control a learning
claim is not shown.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from attnlib import results
from attnlib.evidence.controls import beyond, control_text, controls_beside, no_control
from attnlib.evidence.taps import grid_distances
from attnlib.evidence.verdicts import VERDICTS, level, pm, sd, verdict_row, with_spread

__all__ = ["VERDICTS", "CRITERIA", "Criteria", "verdict_row", "with_spread", "layer_effects", "effect_table",
           "claim_quadratic_grid", "claim_deeper_wider", "claim_learned_locality"]


@dataclass(frozen=True)
class Criteria:
    """The sizes of change that count as shown (each one far beyond what two untrained networks differ by:
    tests/test_claims.py draws 10 of them)."""
    min_seeds: int = 3  # a learning claim needs this many seeds, each showing the change
    sharper: float = 0.05  # rise of the mean share on each head's top offset (absolute; uniform is 1/T)
    grid_fraction: float = 2 / 3  # of the heads must end at distinct offsets (a kernel's taps, not one tap)
    grid_closer: float = 0.1  # tokens: how much closer to the grid of taps layer 1's centers must come in every seed
    grid_within: float = 1.0  # tokens: how close to that grid they must end (matched grid distance, evidence.taps)
    near_query: float = 1.5  # tokens: how near the query learned embeddings' top offsets must end (Figures 5-6)
    wider: float = 0.1  # tokens: how much more the deepest layer's spread grows (or less it shrinks) than the first's
    less_with_content: float = 0.05  # the plain model's rise minus the content model's, beyond their spreads
    alpha: float = 0.01  # accuracy order: family-wise level of the one-sided Welch tests over the adjacent pairs
    classes: int = 10  # chance is 1/classes: cifar10, fashion_mnist and synthetic all have 10
    above_chance: float = 0.05  # each model's mean accuracy must exceed chance + this (one-sided t-test at alpha)


CRITERIA = Criteria()


# -- effects per run and layer ------------------------------------------------------------------------
def _first_and_last(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of each run's epoch 0 and of its last epoch."""
    last = rows["epoch"] == rows.groupby("run_id")["epoch"].transform("max")
    return rows[rows["epoch"] == 0], rows[last & (rows["epoch"] > 0)]


def layer_effects(attention: pd.DataFrame, centers: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (run, layer): each measure at initialisation (`*_init`), after the last epoch (`*_trained`)
    and their change (`*_change`): the mean share on each head's top offset (`top_mass`), the mean attention
    distance from the query in tokens (`distance`), how far the top offsets lie from the query (`top_distance`,
    mean over heads, in tokens), how many distinct top offsets the heads cover (`distinct`);
    for quadratic heads also how far their centers moved (`displacement`, mean over heads, in tokens), how far
    from the query they sit (`radius`) and their spread (`spread`: 1/sqrt of the mean of the inverse
    covariance's diagonal, in tokens; smaller is sharper). Runs without an epoch after 0 are left out."""
    if attention is None or attention.empty:
        return pd.DataFrame()
    keys = ["run_id", "model", "variant", "seed", "layer"]
    attention = attention.assign(top_distance=np.hypot(attention["top_row"], attention["top_col"]))
    first, last = _first_and_last(attention)

    def per_layer(rows):
        return rows.groupby(keys).agg(top_mass=("top_mass", "mean"), distance=("mean_distance", "mean"),
                                      top_distance=("top_distance", "mean"),
                                      distinct=("distinct_offsets", "first"), heads=("heads", "first"),
                                      uniform_mass=("uniform_mass", "first"),
                                      uniform_distance=("uniform_distance", "first"), epoch=("epoch", "first"))

    init, trained = per_layer(first), per_layer(last)
    out = init[["heads", "uniform_mass", "uniform_distance"]].join(trained[["epoch"]], how="inner")
    for m in ("top_mass", "distance", "top_distance", "distinct"):
        out[f"{m}_init"], out[f"{m}_trained"] = init[m], trained[m]
        out[f"{m}_change"] = out[f"{m}_trained"] - out[f"{m}_init"]
    out = out.reset_index().rename(columns={"epoch": "epochs"})
    if centers is not None and not centers.empty:
        out = out.merge(_center_effects(centers), on=["run_id", "layer"], how="left")
    return out


def _center_effects(centers: pd.DataFrame) -> pd.DataFrame:
    c = centers.assign(layer=centers["layer"] - 1,  # centers count layers from 1, attention rows from 0
                       radius=np.hypot(centers["row"], centers["col"]),
                       spread=1 / np.sqrt((centers["inv_cov_rr"] + centers["inv_cov_cc"]) / 2))
    first, last = _first_and_last(c)
    keys = ["run_id", "layer", "head"]
    f, l_ = first.set_index(keys), last.set_index(keys)
    moved = np.hypot(l_["row"] - f["row"], l_["col"] - f["col"]).rename("displacement")
    both = pd.concat([moved, f["radius"].rename("radius_init"), l_["radius"].rename("radius_trained"),
                      f["spread"].rename("spread_init"), l_["spread"].rename("spread_trained")], axis=1).dropna()
    out = both.groupby(["run_id", "layer"]).mean().reset_index()
    out = out.merge(_grid_effects(first, last), on=["run_id", "layer"], how="left")
    out["radius_change"] = out["radius_trained"] - out["radius_init"]
    out["spread_change"] = out["spread_trained"] - out["spread_init"]
    return out



def _grid_effects(first: pd.DataFrame, last: pd.DataFrame) -> pd.DataFrame:
    """Per (run, layer from 0): the matched grid distance of its heads' centers (evidence.taps) at initialisation
    and trained."""
    def table(rows, when):
        out = grid_distances(rows.assign(layer=rows["layer"] + 1), layer=None)
        return out.assign(layer=out["layer"] - 1).set_index(["run_id", "layer"])["grid_distance"].rename(f"grid_{when}")
    both = pd.concat([table(first, "init"), table(last, "trained")], axis=1).reset_index()
    return both.assign(grid_change=both["grid_trained"] - both["grid_init"])
MEASURES = {  # column stem -> what the effect table calls it
    "top_mass": "share on top offset", "distance": "attention distance (tokens)",
    "top_distance": "top offset's distance (tokens)", "distinct": "distinct offsets",
    "displacement": "center displacement (tokens)", "radius": "center distance from query (tokens)",
    "spread": "spread (tokens)", "grid": "distance from the grid of taps (tokens)"}


def effect_table(effects: pd.DataFrame) -> pd.DataFrame:
    """Per (model, variant, layer, measure): the value at initialisation and trained, each as mean and standard
    deviation over seeds, and the change (trained minus initialisation of the same run) likewise; beside them the
    same of the shuffled-label controls of that model and variant, if it has any."""
    if effects.empty:
        return pd.DataFrame()
    rows = []
    for (model, variant, layer), d in effects.groupby(["model", "variant", "layer"], sort=False):
        for stem, name in MEASURES.items():
            if stem == "displacement":
                if "displacement" not in d or d["displacement"].isna().all():
                    continue
                init, trained, change = pd.Series([0.0] * len(d)), d["displacement"], d["displacement"]
            elif f"{stem}_init" in d and not d[f"{stem}_init"].isna().all():
                init, trained, change = d[f"{stem}_init"], d[f"{stem}_trained"], d[f"{stem}_change"]
            else:
                continue
            rows.append(dict(model=model, variant=variant, layer=int(layer) + 1, measure=name, seeds=len(d),
                             initial=init.mean(), trained=trained.mean(), trained_sd=sd(trained),
                             change=change.mean(), change_sd=sd(change)))
    return controls_beside(pd.DataFrame(rows))


def _pick(effects: pd.DataFrame, model: str, layer: int | None = None, heads: int = 9,
          control: bool = False) -> pd.DataFrame:
    """The rows of `model` with `heads` heads (any head count if none has that many), not hierarchical, at
    `layer` (every layer if None): its trained runs, or with `control` its shuffled-label controls; empty when there
    are no effects at all."""
    if effects.empty:
        return effects
    d = effects[(effects["model"] == model) & ~effects["variant"].str.contains("hierarchical")
                & (results.is_control(effects["variant"]) == control)]
    if (d["heads"] == heads).any():
        d = d[d["heads"] == heads]
    return d if layer is None else d[d["layer"] == layer]


def _too_few(name: str, d: pd.DataFrame, what: str, c: Criteria, stem: str = "top_mass",
             label: str = "share on each head's top offset", deepest: bool = False) -> dict | None:
    """"not measured" without runs, "not shown" with fewer than c.min_seeds seeds, saying what this claim measures
    (`stem` of the effects, in the first layer or the deepest) at initialisation and trained; else None."""
    if d.empty:
        return verdict_row(name, "not measured",
                           f"no {what} run recorded its attention at initialisation and after training")
    seeds = d["seed"].nunique()
    if seeds < c.min_seeds:
        layer = d["layer"].max() if deepest else d["layer"].min()
        rows = d[d["layer"] == layer]
        if f"{stem}_init" not in rows or rows[f"{stem}_init"].isna().all():
            stem, label = "top_mass", "share on each head's top offset"
        return verdict_row(name, "not shown", f"{what} trained with {seeds} seed(s) (layer {int(layer) + 1}: {label} "
                                              f"{rows[f'{stem}_init'].mean():.3f} at initialisation, "
                                              f"{rows[f'{stem}_trained'].mean():.3f} trained); a learning claim "
                                              f"needs {c.min_seeds} seeds (the evidence profile trains them)")
    return None


# -- the claims -----------------------------------------------------------------------------------
def claim_quadratic_grid(effects: pd.DataFrame, c: Criteria = CRITERIA) -> dict:
    """Figure 4, by its three parts: layer 1's quadratic heads come to the grid of a convolution's taps around the
    query (the matched grid distance falls by >= grid_closer in every seed, further than in every shuffled-label
    control, and ends <= grid_within), they sit at distinct offsets, and they sharpen (by >= c.sharper and more
    than every control). The grid is the claim: without it the verdict is "not shown", whatever else holds; with
    it, "reproduced" when the other two parts hold too, else "partly"."""
    name = "Quadratic attention learns a grid of local heads in the first layer (Figure 4)"
    d = _pick(effects, "sa_quadratic", layer=0)
    if (early := _too_few(name, d, "sa_quadratic", c, "grid", "distance from the grid of taps (tokens)")):
        return early
    ctrl = _pick(effects, "sa_quadratic", layer=0, control=True)
    if (early := no_control(name, "sa_quadratic", ctrl)):
        return early
    heads, seeds = int(d["heads"].iloc[0]), len(d)
    has_grid = "grid_change" in d and d["grid_change"].notna().any()  # NaN: a diverged run, or > 16 heads
    grid = ((d["grid_change"] <= -c.grid_closer) & (d["grid_trained"] <= c.grid_within)
            & beyond(d["grid_change"], ctrl["grid_change"], lower=True)) if has_grid else d["heads"] < 0
    distinct = d["distinct_trained"] >= c.grid_fraction * heads
    sharper = (d["top_mass_change"] >= c.sharper) & beyond(d["top_mass_change"], ctrl["top_mass_change"], False)
    verdict = ("not shown" if not grid.all() else "reproduced" if (distinct & sharper).all() else "partly")
    grid_text = (f"distance of the heads' centers from the {heads}-tap grid around the query (best one-to-one "
                 f"matching) {level(d['grid_init'])} -> {level(d['grid_trained'])} tokens, change "
                 f"{pm(d['grid_change'])} ({control_text(ctrl['grid_change'], True)})" if has_grid
                 else "not measurable (no centers recorded, or none finite)")
    return verdict_row(name, verdict,
                       f"sa_quadratic, layer 1, {seeds} seeds, trained against the same runs untrained (epoch 0) and "
                       f"against shuffled-label controls. Grid: {grid_text}; {int(grid.sum())} of {seeds} seeds come "
                       f">= {c.grid_closer:g} token closer, further than every control, and end within "
                       f"{c.grid_within:g} token. Distinct offsets: {d['distinct_init'].mean():.1f} -> "
                       f"{d['distinct_trained'].mean():.1f} of {heads} (>= {c.grid_fraction:.0%} in "
                       f"{int(distinct.sum())} of {seeds} seeds; at initialisation "
                       f"{int((d['distinct_init'] >= c.grid_fraction * heads).sum())}; control "
                       f"{ctrl['distinct_trained'].mean():.1f}). Sharpening: share on each head's top offset "
                       f"{d['top_mass_init'].mean():.3f} -> {d['top_mass_trained'].mean():.3f} (change "
                       f"{pm(d['top_mass_change'], 3)}; {control_text(ctrl['top_mass_change'], False, digits=3)}; "
                       f">= {c.sharper:g} and beyond the control in {int(sharper.sum())} of {seeds} seeds; uniform "
                       f"{d['uniform_mass'].iloc[0]:.3f}). The grid is the claim: reproduced needs it in every seed "
                       f"and the other two parts too; sharpening alone shows nothing about a grid.")


def claim_deeper_wider(effects: pd.DataFrame, c: Criteria = CRITERIA) -> dict:
    """Figure 4: the first layer's quadratic heads narrow down; deeper layers' heads stay wider. The deepest layer's
    spread change minus the first's must be >= c.wider in every seed and larger than in every shuffled-label
    control."""
    name = "Deeper quadratic layers attend more widely than the first (Figure 4)"
    d = _pick(effects, "sa_quadratic")
    if (early := _too_few(name, d, "sa_quadratic", c, "spread", "heads' spread (tokens)", deepest=True)):
        return early
    if d["layer"].nunique() < 2 or "spread_change" not in d or d["spread_change"].isna().any():
        return verdict_row(name, "not measured", "needs sa_quadratic runs of at least 2 layers with recorded centers")
    ctrl = _pick(effects, "sa_quadratic", control=True)
    if (early := no_control(name, "sa_quadratic", ctrl)):
        return early
    spread, gap = _depth_gap(d)
    distance = d.pivot_table(index="run_id", columns="layer", values="distance_change")
    first, deepest = spread.columns.min(), spread.columns.max()
    _, control_gap = _depth_gap(ctrl) if ctrl["layer"].nunique() >= 2 else (None, pd.Series(dtype=float))
    shown = (gap >= c.wider) & beyond(gap, control_gap, lower=False)
    verdict = "reproduced" if shown.all() else "not shown"
    return verdict_row(name, verdict,
                       f"sa_quadratic, {len(gap)} seeds, against the same runs at initialisation: change of the heads' "
                       f"spread, layer 1 {pm(spread[first])} tokens, layer {deepest + 1} {pm(spread[deepest])} "
                       f"tokens; the deepest layer's minus the first's {pm(gap)} (untrained: 0; "
                       f"{control_text(control_gap, False)}). Change of the attention distance: layer 1 "
                       f"{pm(distance[first])}, layer {deepest + 1} {pm(distance[deepest])} tokens. Reproduced means "
                       f"a gap >= {c.wider:g} tokens and beyond every control in every seed; {int(shown.sum())} of "
                       f"{len(gap)} seeds.")


def _depth_gap(d: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Per run: the spread change of every layer, and the deepest layer's minus the first's."""
    spread = d.pivot_table(index="run_id", columns="layer", values="spread_change")
    return spread, spread[spread.columns.max()] - spread[spread.columns.min()]


def claim_learned_locality(effects: pd.DataFrame, c: Criteria = CRITERIA) -> dict:
    """Figures 5-6, by its parts: without content the heads concentrate on single offsets (the share on each head's
    top offset rises by >= c.sharper in every seed) and those offsets come near the query (their mean distance
    from it falls against initialisation in every seed and ends <= c.near_query tokens), each change beyond every
    shuffled-label control's; with content the concentration is smaller. Locality is the claim: without it "not
    shown"; with it "reproduced" when the other parts hold too, else "partly"."""
    name = "Learned embeddings attend locally without content, less so with content (Figures 5-6)"
    plain = _pick(effects, "sa_learned", layer=0)
    if (early := _too_few(name, plain, "sa_learned", c, "top_distance", "top offsets' distance from the query")):
        return early
    ctrl = _pick(effects, "sa_learned", layer=0, control=True)
    if (early := no_control(name, "sa_learned", ctrl)):
        return early
    content = _pick(effects, "sa_learned_content", layer=0)
    sharper = (plain["top_mass_change"] >= c.sharper) & beyond(plain["top_mass_change"], ctrl["top_mass_change"],
                                                                 lower=False)
    near = ((plain["top_distance_change"] < 0) & (plain["top_distance_trained"] <= c.near_query)
            & beyond(plain["top_distance_change"], ctrl["top_distance_change"], lower=True))
    text = (f"layer 1, {len(plain)} seeds, against the same runs untrained (epoch 0) and against shuffled-label "
            f"controls. Concentration: without content the share on each head's top offset goes "
            f"{plain['top_mass_init'].mean():.3f} -> {plain['top_mass_trained'].mean():.3f} (change "
            f"{pm(plain['top_mass_change'], 3)}; {control_text(ctrl['top_mass_change'], False, digits=3)}; "
            f"{int(sharper.sum())} of {len(plain)} seeds rise by >= {c.sharper:g} and beyond the control). Near the "
            f"query: the top offsets lie {level(plain['top_distance_init'])} -> "
            f"{level(plain['top_distance_trained'])} tokens from it (change {pm(plain['top_distance_change'])}; "
            f"{control_text(ctrl['top_distance_change'], True)}; uniform attention's mean distance "
            f"{plain['uniform_distance'].iloc[0]:.2f}); {int(near.sum())} of {len(plain)} seeds come closer, further "
            f"than the control, and end within {c.near_query:g} tokens")
    if content["seed"].nunique() < c.min_seeds:
        less = False
        text += f". With content: {content['seed'].nunique()} seed(s), too few to compare"
    else:
        gap = plain["top_mass_change"].mean() - content["top_mass_change"].mean()
        spread = sd(plain["top_mass_change"]) + sd(content["top_mass_change"])
        less = gap >= c.less_with_content and gap > spread
        text += (f". With content the share changes by {pm(content['top_mass_change'], 3)}: the plain model's rise "
                 f"minus this one's is {gap:+.3f}, their spreads together {spread:.3f}")
    verdict = "not shown" if not near.all() else "reproduced" if sharper.all() and less else "partly"
    return verdict_row(name, verdict, text + ". Locality is the claim: reproduced needs the offsets near the query in "
                       f"every seed, the concentration too, and with content a rise smaller by >= "
                       f"{c.less_with_content:g} and by more than the two spreads together; concentration alone shows "
                       "nothing about locality.")
