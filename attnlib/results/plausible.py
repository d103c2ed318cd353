"""What a record's rows can hold, checked when they are read back: a row no training could have written (an accuracy
of 28.9, epoch 7 of a 2-epoch run, a run's epoch twice) makes its file a damaged one, healed like a cut-off file
(attnlib.results.records, .checkpoints) instead of shown in a report."""
from __future__ import annotations

import numpy as np
import pandas as pd

from attnlib.results.layout import ATTENTION_COLUMNS, CENTER_COLUMNS

# column -> (lowest, highest) it can hold; every one finite
RANGES = {"train_acc": (0.0, 1.0), "test_acc": (0.0, 1.0), "train_loss": (0.0, np.inf), "test_loss": (0.0, np.inf),
          "lr": (0.0, np.inf), "seconds": (0.0, np.inf), "params": (0, np.inf), "top_mass": (0.0, 1.0),
          "uniform_mass": (0.0, 1.0), "mean_distance": (0.0, np.inf), "uniform_distance": (0.0, np.inf),
          "queries": (0, np.inf), "heads": (1, np.inf), "distinct_offsets": (1, np.inf)}


def _keys(columns: list[str]) -> list[str]:
    """The columns that name one row: a run's epoch, and for centers and attention its layer and head."""
    return ["run_id", "epoch", "layer", "head"] if list(columns) in (CENTER_COLUMNS, ATTENTION_COLUMNS) \
        else ["run_id", "epoch"]


def _first(df: pd.DataFrame, bad: pd.Series, why: str) -> str:
    row = df[bad].iloc[0]
    return f"{int(bad.sum())} row(s) no training writes, the first of run {row['run_id']} epoch {row['epoch']}: {why}"


def _beyond_plan(df: pd.DataFrame, planned: dict[str, int]) -> str | None:
    """Why rows of a run in `planned` (run id -> planned epochs) go beyond its plan; None if none does."""
    plan = df["run_id"].map(planned)
    known = plan.notna()
    bad = known & (df["epoch"].astype(float) > plan)
    if bad.any():
        return _first(df, bad, f"epoch {df.loc[bad, 'epoch'].iloc[0]} is beyond the {int(plan[bad].iloc[0])} epochs "
                               "its run plans")
    if "epochs" in df and (bad := known & (df["epochs"].astype(float) != plan)).any():
        return _first(df, bad, f"it names {df.loc[bad, 'epochs'].iloc[0]} epochs where its run plans "
                               f"{int(plan[bad].iloc[0])}")
    return None


def implausible(df: pd.DataFrame, columns: list[str], planned: dict[str, int] | None = None) -> str | None:
    """Why the rows `df` of a record with `columns` (results.RECORDS) cannot be what training wrote; None if they can.
    Accuracies and shares in [0, 1], losses and times finite and not negative, epochs whole numbers from 0 (1 for
    metric rows) up to the run's `epochs`, one `epochs` per run, and no (run, epoch[, layer, head]) twice.
    `planned` (run id -> the epochs its plan trains), where the reader knows the plan: a planned run's rows name
    those epochs and go no further, whatever their own `epochs` column says."""
    if df.empty:
        return None
    for column, (low, high) in RANGES.items():
        if column in df:
            values = df[column].astype(float)
            bad = ~np.isfinite(values) | (values < low) | (values > high)
            if bad.any():
                value = df.loc[bad, column].iloc[0]
                return _first(df, bad, f"{column} {value} is not in [{low:g}, {high:g}]")
    epoch = df["epoch"].astype(float)
    first = 1 if "epochs" in df else 0  # metric rows count from 1; centers and attention hold epoch 0 too
    bad = (epoch != np.round(epoch)) | (epoch < first)
    if "epochs" in df:
        bad |= epoch > df["epochs"].astype(float)
    if bad.any():
        of = f" of {df.loc[bad, 'epochs'].iloc[0]} planned" if "epochs" in df else ""
        return _first(df, bad, f"epoch {df.loc[bad, 'epoch'].iloc[0]} is not an epoch{of}")
    if "epochs" in df and (mixed := df.groupby("run_id")["epochs"].transform("nunique") > 1).any():
        return _first(df, mixed, "its run's rows name different numbers of epochs")
    if planned and (why := _beyond_plan(df, planned)):
        return why
    twice = df.duplicated(_keys(columns), keep="first")
    if twice.any():
        return _first(df, twice, "the same run and epoch twice")
    return None
