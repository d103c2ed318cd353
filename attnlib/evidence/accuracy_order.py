"""The paper's accuracy order (ResNet18, then the quadratic, learned and learned + content self-attention networks),
judged by a stated test: Welch's one-sided t-test per adjacent pair of the published order, with Welch-Satterthwaite
degrees of freedom and a Bonferroni correction over the pairs, after each model is shown above chance by a stated
margin (attnlib.evidence.claims.Criteria). At 3 seeds only large differences are resolved, as they should be."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from attnlib import results
from attnlib.evidence.claims import CRITERIA, Criteria
from attnlib.evidence.verdicts import verdict_row, with_spread

ORDER = [("resnet18", None), ("sa_quadratic", 9), ("sa_learned", 9), ("sa_learned_content", 9)]


def t_sf(t, df, steps: int = 300):
    """P(T > t) for Student's t with `df` (real, > 0) degrees of freedom, without scipy: half the regularized
    incomplete beta I_x(df/2, 1/2) at x = df / (df + t^2), by Numerical Recipes' continued fraction (Lentz)."""
    t, df = np.broadcast_arrays(np.asarray(t, dtype=float), np.where(np.asarray(df) > 0, df, np.nan))  # df 0: no p
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = df / (df + t * t), t * t / (df + t * t)  # x and 1 - x
        swap = x > (df / 2 + 1) / (df / 2 + 2.5)  # the fraction converges fast below this
        a, b, x = np.where(swap, 0.5, df / 2), np.where(swap, df / 2, 0.5), np.where(swap, y, x)
        nz = lambda v: np.where(np.abs(v) < 1e-300, 1e-300, v)
        c, d = np.ones_like(x), 1 / nz(1 - (a + b) * x / (a + 1))
        h = d.copy()
        for m in range(1, steps + 1):
            for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                       -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
                d, c = 1 / nz(1 + aa * d), nz(1 + aa / c)
                h = h * d * c
            if np.all(np.abs(d * c - 1) < 1e-15):
                break
        lgamma = np.vectorize(math.lgamma, otypes=[float])
        front = np.exp(a * np.log(x) + b * np.log1p(-x) - lgamma(a) - lgamma(b) + lgamma(a + b)) / a
        tail = 0.5 * np.where(swap, 1 - front * h, front * h)
    return np.where(t > 0, tail, 1 - tail)


def _t(diff, se):  # diff / se; with a spread of 0 (identical seeds) the sign of the difference alone decides
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, diff / np.where(se > 0, se, 1), np.where(diff == 0, 0.0, np.sign(diff) * np.inf))


def welch(va, vb, na, nb):
    """Welch's test of two means from their squared standard errors va, vb (variance / n) and sample sizes na, nb,
    elementwise on arrays: (the standard error of the difference, its Welch-Satterthwaite degrees of freedom; where
    both spreads are zero, those of equal spreads, na + nb - 2)."""
    va, vb, na, nb = (np.asarray(x, dtype=float) for x in (va, vb, na, nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(va + vb > 0, (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1)), na + nb - 2)
    return np.sqrt(va + vb), df


def order_tests(means, sds, seeds, c: Criteria = CRITERIA) -> dict:
    """The accuracy order's tests on arrays (..., models) in the published order (mean, sd, seeds per model): per
    adjacent pair Welch's t (`t`, `df`), its one-sided p for (`p_order`) and against the published order (`p_reversed`),
    each decided at alpha / pairs (Bonferroni); per model the one-sided one-sample p that its mean exceeds chance +
    c.above_chance (`p_above`); the `verdict`."""
    m, s, n = (np.asarray(v, dtype=float) for v in (means, sds, seeds))
    with np.errstate(divide="ignore", invalid="ignore"):
        v = s ** 2 / n
        se, df = welch(v[..., :-1], v[..., 1:], n[..., :-1], n[..., 1:])
        t = _t(m[..., :-1] - m[..., 1:], se)
        p_above = t_sf(_t(m - (1 / c.classes + c.above_chance), np.sqrt(v)), n - 1)
    p_order, p_reversed = t_sf(t, df), t_sf(-t, df)
    level = c.alpha / t.shape[-1]
    in_order, reversed_ = p_order < level, p_reversed < level
    verdict = np.select([(n < c.min_seeds).any(-1) | ~(p_above < c.alpha).all(-1), reversed_.any(-1),
                         in_order.all(-1), in_order.any(-1)],
                        ["not shown", "not reproduced", "reproduced", "partly"], "not shown")
    return dict(t=t, df=df, p_order=p_order, p_reversed=p_reversed, level=level, in_order=in_order,
                reversed=reversed_, p_above=p_above, verdict=verdict)


def claim_accuracy_order(table: pd.DataFrame, c: Criteria = CRITERIA) -> dict:
    """Table 1's order: ResNet18 >= quadratic >= learned >= learned + content (9 heads, not hierarchical), each
    adjacent pair by a one-sided Welch t-test on the mean best test accuracies over seeds (order_tests)."""
    name = "Accuracy order ResNet18 >= quadratic >= learned >= learned + content (Table 1)"
    if table.empty:
        return verdict_row(name, "not measured", "no training results")
    rows = []
    for model, heads in ORDER:
        d = table[(table["model"] == model) & ~table["variant"].str.contains("hierarchical")
                  & ~results.is_control(table["variant"])]
        if heads is not None and (d["variant"] == f"{heads} heads").any():
            d = d[d["variant"] == f"{heads} heads"]
        if d.empty:
            return verdict_row(name, "not measured", f"no {model} run")
        rows.append((model, float(d["acc"].iloc[0]), float(d["acc_sd"].iloc[0]), int(d["seeds"].iloc[0])))
    models, means, sds, seeds = (list(x) for x in zip(*rows))
    got = order_tests(means, sds, seeds, c)
    few, many = min(seeds), max(seeds)
    over = "" if many == 1 else f", mean ± sd over {few if few == many else f'{few} to {many}'} seeds"
    text = (f"best test accuracy on {table['dataset'].iloc[0]}{over}: "
            + "; ".join(f"{m} {with_spread(a, sd, k)}" for m, a, sd, k in rows) + ". ")
    return verdict_row(name, str(got["verdict"]), text + _order_text(models, means, got, c, few >= c.min_seeds))


def _order_text(models: list, means: list, got: dict, c: Criteria, tested: bool) -> str:
    pairs = []
    for i, (a, b) in enumerate(zip(models, models[1:])):
        diff, beyond = means[i] - means[i + 1], got["in_order"][i] or got["reversed"][i]
        pairs.append(f"{a} {'>=' if diff >= 0 else '<'} {b} by {diff:+.3f}" + (
            f" (t = {got['t'][i]:.2f}, df = {got['df'][i]:.1f}, one-sided p = "
            f"{min(got['p_order'][i], got['p_reversed'][i]):.2g}: {'beyond' if beyond else 'within'} the spread"
            f"{', reversed' if got['reversed'][i] else ''})" if tested else ""))
    if not tested:
        return "; ".join(pairs) + f". With fewer than {c.min_seeds} seeds a difference cannot be told from the spread."
    floor, k = 1 / c.classes + c.above_chance, len(pairs)
    low = [f"{m} (p = {p:.2g})" for m, p in zip(models, got["p_above"]) if not p < c.alpha]
    chance = (f"Not shown above chance 1/{c.classes} + {c.above_chance:g} = {floor:.2f}: " + ", ".join(low) + ". "
              if low else f"Every model above chance 1/{c.classes} + {c.above_chance:g} = {floor:.2f}. ")
    return ("; ".join(pairs) + ". " + chance
            + f"Test: Welch's t-test (unequal variances; t distribution with Welch-Satterthwaite degrees of freedom), "
            f"one-sided per adjacent pair of the published order, family-wise alpha {c.alpha:g} over the {k} pairs "
            f"(Bonferroni: each at {got['level']:.2g}); each model's mean must exceed chance + {c.above_chance:g} "
            f"by a one-sided one-sample t-test at {c.alpha:g}, else not shown. Reproduced: every pair in order "
            f"beyond the spread; partly: at least one, none reversed beyond it; not reproduced: a pair reversed "
            f"beyond it. {int(got['in_order'].sum())} of {k} in order and {int(got['reversed'].sum())} reversed "
            "beyond the spread.")
