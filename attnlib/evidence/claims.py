"""What training changed in the attention, measured against the same runs at initialisation, and the
verdicts on the paper's learning claims that those changes earn.

Every training run records, at initialisation (epoch 0) and after every epoch, where and how sharply each
head attends on the same test images (results.ATTENTION_COLUMNS, from attention_maps.conv_likeness) and,
for the quadratic models, each head's center and inverse covariance (results.CENTER_COLUMNS). A claim about
learning is shown only by a change from epoch 0 that every seed makes and that an untrained network cannot
make: two untrained networks differ from each other by far less than CRITERIA asks for, and an untrained
network compared with itself changes by nothing. Fewer than CRITERIA.min_seeds seeds show nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

VERDICTS = ("reproduced", "partly", "not shown", "not reproduced", "not measured")


@dataclass(frozen=True)
class Criteria:
    """The sizes of change that count as shown (each one far beyond what two untrained networks differ by:
    tests/test_claims.py draws 10 of them)."""
    min_seeds: int = 3  # a learning claim needs this many seeds, each showing the change
    sharper: float = 0.05  # rise of the mean share on each head's top offset (absolute; uniform is 1/T)
    grid_fraction: float = 2 / 3  # of the heads must end at distinct offsets (a kernel's taps, not one tap)
    wider: float = 0.1  # tokens: how much more the deepest layer's spread grows (or less it shrinks) than the first's
    less_with_content: float = 0.05  # the plain model's rise minus the content model's, beyond their spreads


CRITERIA = Criteria()


def verdict_row(claim: str, verdict: str, evidence: str) -> dict:
    """One line of the report's verdict table."""
    assert verdict in VERDICTS, verdict
    return dict(claim=claim, verdict=verdict, evidence=evidence)


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
    out["radius_change"] = out["radius_trained"] - out["radius_init"]
    out["spread_change"] = out["spread_trained"] - out["spread_init"]
    return out


MEASURES = {  # column stem -> what the effect table calls it
    "top_mass": "share on top offset", "distance": "attention distance (tokens)",
    "top_distance": "top offset's distance (tokens)", "distinct": "distinct offsets",
    "displacement": "center displacement (tokens)", "radius": "center distance from query (tokens)",
    "spread": "spread (tokens)"}


def effect_table(effects: pd.DataFrame) -> pd.DataFrame:
    """Per (model, variant, layer, measure): the value at initialisation and trained, each as mean and standard
    deviation over seeds, and the change (trained minus initialisation of the same run) likewise."""
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
                             initial=init.mean(), trained=trained.mean(), trained_sd=_sd(trained),
                             change=change.mean(), change_sd=_sd(change)))
    return pd.DataFrame(rows)


def _sd(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _pm(values, digits: int = 2) -> str:
    return f"{np.mean(values):+.{digits}f} ± {_sd(values):.{digits}f}"


def _pick(effects: pd.DataFrame, model: str, layer: int | None = None, heads: int = 9) -> pd.DataFrame:
    """The rows of `model` with `heads` heads (any head count if none has that many), not hierarchical, at
    `layer` (every layer if None); empty when there are no effects at all."""
    if effects.empty:
        return effects
    d = effects[(effects["model"] == model) & ~effects["variant"].str.contains("hierarchical")]
    if (d["heads"] == heads).any():
        d = d[d["heads"] == heads]
    return d if layer is None else d[d["layer"] == layer]


def _too_few(name: str, d: pd.DataFrame, what: str, c: Criteria) -> dict | None:
    if d.empty:
        return verdict_row(name, "not measured",
                           f"no {what} run recorded its attention at initialisation and after training")
    seeds = d["seed"].nunique()
    if seeds < c.min_seeds:
        first = d[d["layer"] == d["layer"].min()]
        return verdict_row(name, "not shown", f"{what} trained with {seeds} seed(s) (layer 1: share on each head's "
                                         f"top offset {first['top_mass_init'].mean():.3f} at initialisation, "
                                         f"{first['top_mass_trained'].mean():.3f} trained); a learning claim needs "
                                         f"{c.min_seeds} seeds (the evidence profile trains them)")
    return None


# -- the claims -----------------------------------------------------------------------------------
def claim_quadratic_grid(effects: pd.DataFrame, c: Criteria = CRITERIA) -> dict:
    """Figure 4: the first layer's quadratic heads sharpen into local heads at distinct offsets, a grid."""
    name = "Quadratic attention learns a grid of local heads in the first layer (Figure 4)"
    d = _pick(effects, "sa_quadratic", layer=0)
    if (early := _too_few(name, d, "sa_quadratic", c)) is not None:
        return early
    heads = int(d["heads"].iloc[0])
    sharper = d["top_mass_change"] >= c.sharper
    grid = d["distinct_trained"] >= c.grid_fraction * heads
    local = d["distance_trained"] < d["uniform_distance"]
    verdict = "reproduced" if (sharper & grid & local).all() else "partly" if sharper.all() else "not shown"
    moved = f"centers moved {_pm(d['displacement'])} tokens, spread {_pm(d['spread_change'])} tokens; " \
        if "displacement" in d and d["displacement"].notna().all() else ""
    return verdict_row(name, verdict,
                       f"sa_quadratic, layer 1, {len(d)} seeds, trained against the same runs at initialisation: "
                       f"share on each head's top offset {d['top_mass_init'].mean():.3f} untrained, "
                       f"{d['top_mass_trained'].mean():.3f} trained (change {_pm(d['top_mass_change'], 3)}; uniform "
                       f"{d['uniform_mass'].iloc[0]:.3f}); {moved}distinct offsets {d['distinct_init'].mean():.1f} -> "
                       f"{d['distinct_trained'].mean():.1f} of {heads}; "
                       f"attention distance {d['distance_trained'].mean():.2f} tokens (uniform "
                       f"{d['uniform_distance'].iloc[0]:.2f}). Reproduced means, in every seed: the share rises by >= "
                       f"{c.sharper:g}, >= {c.grid_fraction:.0%} of the heads end at distinct offsets, and the heads "
                       f"attend closer than uniform attention; {int(sharper.sum())}, {int(grid.sum())} and "
                       f"{int(local.sum())} of {len(d)} seeds do.")


def claim_deeper_wider(effects: pd.DataFrame, c: Criteria = CRITERIA) -> dict:
    """Figure 4: the first layer's quadratic heads narrow down; deeper layers' heads stay wider."""
    name = "Deeper quadratic layers attend more widely than the first (Figure 4)"
    d = _pick(effects, "sa_quadratic")
    if (early := _too_few(name, d, "sa_quadratic", c)) is not None:
        return early
    if d["layer"].nunique() < 2 or "spread_change" not in d or d["spread_change"].isna().any():
        return verdict_row(name, "not measured", "needs sa_quadratic runs of at least 2 layers with recorded centers")
    spread = d.pivot_table(index="run_id", columns="layer", values="spread_change")
    distance = d.pivot_table(index="run_id", columns="layer", values="distance_change")
    first, deepest = spread.columns.min(), spread.columns.max()
    gap = spread[deepest] - spread[first]
    shown = gap >= c.wider
    verdict = "reproduced" if shown.all() else "not shown"
    return verdict_row(name, verdict,
                       f"sa_quadratic, {len(gap)} seeds, against the same runs at initialisation: change of the heads' "
                       f"spread, layer 1 {_pm(spread[first])} tokens, layer {deepest + 1} {_pm(spread[deepest])} "
                       f"tokens; the deepest layer's minus the first's {_pm(gap)} (untrained: 0). Change of the "
                       f"attention distance: layer 1 {_pm(distance[first])}, layer {deepest + 1} "
                       f"{_pm(distance[deepest])} tokens. Reproduced means a gap >= {c.wider:g} tokens in every seed; "
                       f"{int(shown.sum())} of {len(gap)} seeds.")


def claim_learned_locality(effects: pd.DataFrame, c: Criteria = CRITERIA) -> dict:
    """Figures 5-6: learned embeddings come to attend locally without content; with content, less so."""
    name = "Learned embeddings attend locally without content, less so with content (Figures 5-6)"
    plain = _pick(effects, "sa_learned", layer=0)
    if (early := _too_few(name, plain, "sa_learned", c)) is not None:
        return early
    content = _pick(effects, "sa_learned_content", layer=0)
    sharper = plain["top_mass_change"] >= c.sharper
    closer = plain["distance_change"] < 0
    text = (f"layer 1, {len(plain)} seeds, against the same runs at initialisation. Without content the share on each "
            f"head's top offset goes {plain['top_mass_init'].mean():.3f} -> {plain['top_mass_trained'].mean():.3f} "
            f"(change {_pm(plain['top_mass_change'], 3)}; {int(sharper.sum())} of {len(plain)} seeds rise by >= "
            f"{c.sharper:g}): each head concentrates on one offset, a kernel tap. Those offsets lie "
            f"{plain['top_distance_trained'].mean():.1f} tokens from the query on average, and the attention distance "
            f"changes by {_pm(plain['distance_change'])} tokens (uniform attention: "
            f"{plain['uniform_distance'].iloc[0]:.2f}; {int(closer.sum())} of {len(plain)} seeds come closer)")
    if content["seed"].nunique() < c.min_seeds:
        less = False
        text += f". With content: {content['seed'].nunique()} seed(s), too few to compare"
    else:
        gap = plain["top_mass_change"].mean() - content["top_mass_change"].mean()
        spread = _sd(plain["top_mass_change"]) + _sd(content["top_mass_change"])
        less = gap >= c.less_with_content and gap > spread
        text += (f". With content the share changes by {_pm(content['top_mass_change'], 3)}: the plain model's rise "
                 f"minus this one's is {gap:+.3f}, their spreads together {spread:.3f}")
    concentrated, local = bool(sharper.all()), bool((sharper & closer).all())
    verdict = "reproduced" if local and less else "partly" if concentrated else "not shown"
    return verdict_row(name, verdict, text + f". Reproduced means: without content, in every seed, the share rises "
                       f"by >= {c.sharper:g} and the heads attend closer to the query than at initialisation; with "
                       f"content the rise is smaller by >= {c.less_with_content:g} and by more than the two spreads "
                       "together. Partly: "
                       "the heads concentrate in every seed, but not closer or not less so with content.")


ORDER = [("resnet18", None), ("sa_quadratic", 9), ("sa_learned", 9), ("sa_learned_content", 9)]


def claim_accuracy_order(table: pd.DataFrame, c: Criteria = CRITERIA) -> dict:
    """Table 1's order: ResNet18 >= quadratic >= learned >= learned + content (9 heads, not hierarchical), each
    difference of mean best test accuracies told apart from the spread over seeds."""
    name = "Accuracy order ResNet18 >= quadratic >= learned >= learned + content (Table 1)"
    if table.empty:
        return verdict_row(name, "not measured", "no training results")
    accs = []
    for model, heads in ORDER:
        d = table[(table["model"] == model) & ~table["variant"].str.contains("hierarchical")]
        if heads is not None and (d["variant"] == f"{heads} heads").any():
            d = d[d["variant"] == f"{heads} heads"]
        if d.empty:
            return verdict_row(name, "not measured", f"no {model} run")
        accs.append((model, float(d["acc"].iloc[0]), float(d["acc_sd"].iloc[0]), int(d["seeds"].iloc[0])))
    seeds = min(a[3] for a in accs)
    parts = [f"{m} {acc:.3f} ± {sd:.3f}" for m, acc, sd, _ in accs]
    pairs, held, beyond = [], 0, 0
    for (ma, a, sa, _), (mb, b, sb, _) in zip(accs, accs[1:]):
        clear = abs(a - b) > sa + sb
        held += a >= b
        beyond += clear and a >= b
        spread = f" ({'beyond' if clear else 'within'} the spread {sa + sb:.3f})" if seeds >= c.min_seeds else ""
        pairs.append(f"{ma} {'>=' if a >= b else '<'} {mb} by {a - b:+.3f}{spread}")
    data = table["dataset"].iloc[0]
    head = (f"best test accuracy on {data}, mean ± sd over {seeds} seed(s): " + "; ".join(parts) + ". "
            + "; ".join(pairs))
    if seeds < c.min_seeds:
        return verdict_row(name, "not shown", head + f". With fewer than {c.min_seeds} seeds a difference cannot be "
                                                "told from the spread between seeds.")
    verdict = "reproduced" if beyond == len(pairs) else "partly" if held else "not reproduced"
    return verdict_row(name, verdict, head + ". Reproduced means every pair in the published order by more than the "
                                        f"two standard deviations together; {beyond} of {len(pairs)} are.")
