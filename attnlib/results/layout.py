"""Where each result lies under results/<profile>/ and the columns of each record (metrics, centers,
attention); `digest` fingerprints the settings a run id names."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

METRIC_COLUMNS = [
    "run_id", "experiment", "model", "variant", "dataset", "profile", "seed", "epoch", "epochs",
    "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "params",
    "device", "precision", "torch", "git",
]


TEXT_COLUMNS = ["run_id", "experiment", "model", "variant", "dataset", "profile", "device", "precision", "torch", "git"]


# results/<profile>/metrics/<experiment>_centers.csv: quadratic models' heads after every epoch (epoch 0:
# at initialisation). (row, col): the head's center, an offset in tokens; inv_cov_*: its Sigma^-1.
CENTER_COLUMNS = ["run_id", "experiment", "model", "variant", "dataset", "profile", "seed", "epoch", "layer", "head",
                  "row", "col", "inv_cov_rr", "inv_cov_rc", "inv_cov_cc"]


# Per epoch (0: at initialisation) and head of an attention model: how it attends on a fixed set of test images
# (attention_maps.conv_likeness's measures; layer counts from 0).
ATTENTION_COLUMNS = ["run_id", "experiment", "model", "variant", "dataset", "profile", "seed", "epoch", "layer", "head",
                     "heads", "top_row", "top_col", "top_mass", "uniform_mass", "distinct_offsets", "mean_distance",
                     "uniform_distance"]


# What a checkpoint keeps besides the weights, each written to its own CSV: key -> (file suffix, columns).
RECORDS = {"history": ("", METRIC_COLUMNS), "centers": ("_centers", CENTER_COLUMNS),
           "attention": ("_attention", ATTENTION_COLUMNS)}


# The variant of a shuffled-label control (attnlib.experiments.grid): the same network, steps, schedule, learning rate
# and seed as the runs it controls, trained on permuted training labels, so whatever it changes is not learning.
SHUFFLED_LABELS = "shuffled labels"


def is_control(variant) -> bool:
    """Whether a run of this variant (a str, or a pandas Series of them) is a shuffled-label control."""
    if isinstance(variant, str):
        return SHUFFLED_LABELS in variant
    return variant.astype(str).str.contains(SHUFFLED_LABELS, regex=False)


def digest(obj) -> str:
    """8 hex digits fingerprinting a JSON-able value (run settings, a model config)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def profile_dir(results_dir: str | Path, profile: str) -> Path:
    return Path(results_dir) / profile


def metrics_path(results_dir: str | Path, profile: str, experiment: str) -> Path:
    return profile_dir(results_dir, profile) / "metrics" / f"{experiment}.csv"


def summary_path(results_dir: str | Path, profile: str, notebook: str) -> Path:
    """The per-run (or per-model) summary table a notebook writes for the report."""
    return profile_dir(results_dir, profile) / "metrics" / f"{notebook}_summary.csv"


def figures_dir(results_dir: str | Path, profile: str) -> Path:
    d = profile_dir(results_dir, profile) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def checkpoint_path(results_dir: str | Path, profile: str, run_id: str) -> Path:
    return profile_dir(results_dir, profile) / "checkpoints" / f"{run_id}.pt"


def stamps_path(profile_dir: str | Path) -> Path:
    """The runner's stamps of a profile: which notebooks ran, with which inputs (see attnlib.runner.run)."""
    return Path(profile_dir) / ".cache" / "stamps.json"


def record_path(results_dir: str | Path, profile: str, experiment: str, record: str) -> Path:
    """The CSV of one of RECORDS (history, centers, attention) of a notebook's runs."""
    return profile_dir(results_dir, profile) / "metrics" / f"{experiment}{RECORDS[record][0]}.csv"


def centers_path(results_dir: str | Path, profile: str, experiment: str) -> Path:
    return record_path(results_dir, profile, experiment, "centers")


def attention_path(results_dir: str | Path, profile: str, experiment: str) -> Path:
    return record_path(results_dir, profile, experiment, "attention")
