"""How a verdict is written: the verdicts there are, one line of the verdict table, and a measure over seeds with
its spread (one seed has none)."""
from __future__ import annotations

import numpy as np

VERDICTS = ("reproduced", "partly", "not shown", "not reproduced", "not measured")


def verdict_row(claim: str, verdict: str, evidence: str) -> dict:
    """One line of the report's verdict table."""
    assert verdict in VERDICTS, verdict
    return dict(claim=claim, verdict=verdict, evidence=evidence)


def sd(values) -> float:
    """Over seeds; 0.0 for one seed, a number for effect_table (which gives `seeds`); texts print none (with_spread)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def with_spread(mean: float, sd: float, seeds: int, digits: int = 3, sign: str = "") -> str:
    """`mean ± sd`, or with one seed the value alone and "1 seed" (one seed has no spread, not a spread of 0)."""
    return f"{mean:{sign}.{digits}f} ± {sd:.{digits}f}" if seeds > 1 else f"{mean:{sign}.{digits}f} (1 seed)"


def pm(values, digits: int = 2) -> str:
    return with_spread(float(np.mean(values)), sd(values), len(values), digits, sign="+")


def level(values, digits: int = 2) -> str:
    """A measure's mean over seeds with its spread (no sign: a level, not a change)."""
    return with_spread(float(np.mean(values)), sd(values), len(values), digits)
