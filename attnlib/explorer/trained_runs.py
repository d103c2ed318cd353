"""Notebook 07's inputs: the trained runs of a profile, and the checks of its parameters against them.

`trained_runs` finds the runs of notebooks 01-04 from their parameter files (the same plan, hence the same
run ids, as the notebooks that trained them) and keeps those whose checkpoint exists under
results/<profile>/checkpoints/; `describe_found` says what it found. `first_view` picks the run the
explorers open on; `check_params` says in one line which parameter of notebook 07 lies beyond what was trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from attnlib import results
from attnlib.data import Dataset, normalize
from attnlib.experiments import grid, params, settings
from attnlib.experiments import runs as experiment
from attnlib.training.dry_run import MEASURED
from attnlib.training.dry_run import outcomes as dry_run_outcomes

# The runs the explorers open on, best first: the quadratic heads show the kernel-like grid most clearly;
# content-based maps depend on the image and say less on one picture.
FIRST_VIEW = ("sa_quadratic", "sa_quadratic_aniso", "sa_learned")


@dataclass
class TrainedRun:
    experiment: str           # the notebook that trained it, e.g. "02_quadratic"
    run: grid.PlannedRun
    params: settings.TrainParams
    data: Dataset
    checkpoint: Path
    epochs_done: int = 0
    final_test_acc: float = float("nan")

    @property
    def label(self) -> str:
        return f"{self.run.model} ({self.run.variant}, seed {self.run.seed})"

    @property
    def slug(self) -> str:
        """The run id without its digest (e.g. sa_quadratic-h4-s42): the name of its figures."""
        return self.run.run_id.rsplit("-", 1)[0]

    def describe(self) -> str:
        return (f"{self.label}: run {self.run.run_id} of {self.experiment}, {self.data.name}, profile "
                f"{self.params.profile}, {self.epochs_done} of {self.run.train.epochs} epochs, seed {self.run.seed}, "
                f"test accuracy {self.final_test_acc:.3f}")

    def load(self, device: str = "cpu") -> nn.Module:
        return experiment.load_trained(self.params, self.run, device)

    def snapshots(self) -> list[dict]:
        """The attention its checkpoint recorded after each epoch ([{"epoch", "layers": (heads, T, T) per layer}],
        from 0: initialisation) on test image 0; [] where none was recorded (maps too large, or no attention)."""
        return list(results.load_checkpoint(self.checkpoint, self.run.run_id).get("snapshots", []))

    def images(self, start: int = 0, count: int = 1) -> torch.Tensor:
        """Test images [start, start + count) normalised as the model takes them."""
        x = self.data.x_test[start:start + count]
        return normalize(x, self.data.mean, self.data.std)


def first_view(runs: list[TrainedRun]) -> TrainedRun:
    """The most telling run to open on: the first quadratic run (else anisotropic, learned, the first)."""
    if not runs:
        raise ValueError("no runs")
    for model in FIRST_VIEW:
        for r in runs:
            if r.run.model == model:
                return r
    return runs[0]


def trained_runs(experiments: list[str], profile: str, results_dir: str | Path, params_dir: str | Path,
                 data_root: str | Path = "data", dataset: str = "",
                 dry_run: int = 0) -> tuple[list[TrainedRun], list[str]]:
    """(runs with a checkpoint, one line per planned run without one) of the given notebooks, planned
    from params/<profile>/<notebook>.yaml with this results_dir (and dataset, when given; and as a dry run of
    `dry_run` steps, attnlib.training.dry_run, when above 0)."""
    found, missing, loaded = [], [], {}
    for name in experiments:
        path = Path(params_dir) / profile / f"{name}.yaml"
        if not path.exists():
            missing.append(f"{name}: no parameter file {path}")
            continue
        overrides = {"profile": profile, "results_dir": str(results_dir), "data_root": str(data_root)}
        if dataset:
            overrides["dataset"] = dataset
        if dry_run:
            overrides["dry_run"] = dry_run
        p = params.load_with(path, overrides)
        key = experiment.data_key(p)
        if key not in loaded:
            loaded[key] = experiment.load_data(p)
        data = loaded[key]
        metrics = results.read_metrics(results.metrics_path(results_dir, profile, name))
        dry_outcomes = dry_run_outcomes(results_dir, profile, name) if dry_run else {}
        for run in grid.plan(p, data):
            ckpt = results.checkpoint_path(results_dir, profile, run.run_id)
            if not ckpt.exists():
                why = dry_outcomes.get(run.run_id, MEASURED)
                missing.append(f"{name}: {run.model} ({run.variant}), seed {run.seed}: "
                               + (f"its dry run: {why}" if why != MEASURED else
                                  f"no checkpoint {ckpt.name} (run notebook {name} of profile {profile} first)"))
                continue
            rows = metrics[metrics["run_id"] == run.run_id].sort_values("epoch")
            found.append(TrainedRun(name, run, p, data, ckpt, int(rows["epoch"].max()) if len(rows) else 0,
                                    float(rows["test_acc"].iloc[-1]) if len(rows) else float("nan")))
    return found, missing



def describe_found(runs: list[TrainedRun], missing: list[str], profile: str, results_dir: str | Path) -> str:
    """What trained_runs found: a line per run, then a line per planned run it cannot show."""
    lines = [f"profile {profile}: {len(runs)} trained runs found under {results.profile_dir(results_dir, profile)}"]
    return "\n".join([*lines, *("  " + r.describe() for r in runs), *("  not shown: " + m for m in missing)])

def recorded_centers(p: settings.VizParams, runs: list[TrainedRun]) -> pd.DataFrame:
    """The centers that the runs of p.centers_experiment recorded (results.CENTER_COLUMNS rows, every epoch); all
    recorded ones when none of its runs was found."""
    centers = results.read_metrics(results.centers_path(p.results_dir, p.profile, p.centers_experiment),
                                   results.CENTER_COLUMNS)
    planned = {r.run.run_id for r in runs if r.experiment == p.centers_experiment}
    return centers[centers["run_id"].isin(planned)] if planned else centers


def check_params(p: settings.VizParams, runs: list[TrainedRun]) -> None:
    """Notebook 07's checks that need what was trained: the layer whose centers are followed must be one the
    runs of centers_experiment recorded, the query pixel must lie in every run's test images and image_index
    among them. Each failure is a ParamsError in one line naming params/<profile>/07_visualizations.yaml and the
    key, instead of an empty figure or a silently moved pixel."""
    where = str(Path(p.params_dir) / p.profile / "07_visualizations.yaml")

    def fail(key: str, why: str):
        raise params.ParamsError(f"{where}: {key} {why}")

    centers = recorded_centers(p, runs)
    if not centers.empty and p.trajectory_layer > int(centers["layer"].max()):
        layers = int(centers["layer"].max())
        fail("trajectory_layer", f"is {p.trajectory_layer}, but the runs of {p.centers_experiment} "
             f"recorded the centers of {layers} layer(s); pick one of 1-{layers}")
    if not runs:
        return
    smallest = min(runs, key=lambda r: r.data.image_size)
    size = smallest.data.image_size
    for key in ("query_row", "query_col"):
        if getattr(p, key) >= size:
            fail(key, f"is {getattr(p, key)}, outside the {size}x{size} test images of "
                 f"{smallest.label}; pick one of 0-{size - 1}, or -1 for the middle")
    fewest = min(runs, key=lambda r: len(r.data.x_test))
    if p.image_index >= len(fewest.data.x_test):
        fail("image_index", f"is {p.image_index}, but {fewest.label} has {len(fewest.data.x_test)} "
             f"test images; pick one of 0-{len(fewest.data.x_test) - 1}")
