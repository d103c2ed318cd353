"""The shuffled-label controls of the learning claims (attnlib.experiments.grid's `control_seeds`): the same
network, steps, schedule and seed trained on permuted labels. What a control changes in the attention, training
makes without learning the task; a claim's change counts only beyond every control's."""
from __future__ import annotations

import pandas as pd

from attnlib import results
from attnlib.evidence.verdicts import pm, verdict_row


def beyond(change: pd.Series, control: pd.Series, lower: bool) -> pd.Series:
    """Per trained seed: whether its change goes further in the claim's direction (down where `lower`) than every
    control's; False everywhere without a finite control change."""
    control = control.dropna()
    if control.empty:
        return change.notna() & False
    return change < control.min() if lower else change > control.max()


def control_text(control: pd.Series, lower: bool, unit: str = "", digits: int = 2) -> str:
    """The controls' change, for the evidence; or that there is none."""
    control = control.dropna()
    if control.empty:
        return "no shuffled-label control (control_seeds), so no change can be told from training without learning"
    if len(control) == 1:  # one value: no spread, and its count said once
        return f"shuffled-label control (1 seed) {control.iloc[0]:+.{digits}f}{unit}"
    return (f"shuffled-label control ({len(control)} seeds) {pm(control, digits)}{unit}, furthest "
            f"{(control.min() if lower else control.max()):+.{digits}f}")


def no_control(name: str, model: str, control: pd.DataFrame) -> dict | None:
    """"not shown" when `model` has no shuffled-label control with these measures; else None."""
    if control.empty:
        return verdict_row(name, "not shown", f"{model} has no shuffled-label control in this series (control_seeds): "
                                              "a change of attention that training without learning the task also "
                                              "makes shows nothing, and none was measured to tell them apart")
    return None


def controls_beside(table: pd.DataFrame) -> pd.DataFrame:
    """The shuffled-label controls' rows as columns beside the runs they control (`control_seeds`,
    `control_trained`, `control_change`; NaN where a run has no control)."""
    if table.empty:
        return table
    control = results.is_control(table["variant"])
    keys = ["model", "variant", "layer", "measure"]
    beside = table[control].assign(variant=lambda t: t["variant"].str.replace(f", {results.SHUFFLED_LABELS}", "",
                                                                             regex=False))
    beside = beside[keys + ["seeds", "trained", "change"]].rename(
        columns={"seeds": "control_seeds", "trained": "control_trained", "change": "control_change"})
    return table[~control].merge(beside, on=keys, how="left")
