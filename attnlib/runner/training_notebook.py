"""What the training notebooks (01-05) share, so that each reads: parameters, plan, train, curves, table.

`TrainingNotebook.start(name, globals())` is the head: the notebook's parameters (params/<profile>/<name>.yaml
with what its parameters cell sets on top), its data and its planned runs. `train()` trains them (or
resumes, or reads back finished ones), `curves()` draws test accuracy against epoch, and `summary()`
is the tail: one row per run beside the published numbers, written for the report (notebook 08).
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from attnlib import results, viz
from attnlib.data import Dataset
from attnlib.experiments import grid, params
from attnlib.experiments import runs as experiment
from attnlib.experiments.grid import PlannedRun
from attnlib.experiments.settings import TrainParams
from attnlib.report import tables as report
from attnlib.training.records import center_rows


@dataclass
class TrainingNotebook:
    name: str  # the notebook's name, e.g. 02_quadratic: it names its CSVs and figures
    params: TrainParams
    data: Dataset
    runs: list[PlannedRun]

    @classmethod
    def start(cls, name: str, namespace: dict) -> "TrainingNotebook":
        """The notebook's parameters (attnlib.experiments.params.for_notebook), data and planned runs."""
        p = params.for_notebook(name, namespace)
        data = experiment.load_data(p)
        return cls(name, p, data, grid.plan(p, data))

    def plan_table(self) -> pd.DataFrame:
        """One row per planned run: its id, what it trains and for how long."""
        return pd.DataFrame([dict(run_id=r.run_id, model=r.model, variant=r.variant, seed=r.seed,
                                  epochs=r.train.epochs, batch_size=r.train.batch_size, lr=r.train.lr)
                             for r in self.runs])

    def parameter_table(self) -> pd.DataFrame:
        """Parameters of each model as trained here, at its published size and as published."""
        return report.parameter_table(self.runs)

    def train(self) -> pd.DataFrame:
        """Train every planned run (resuming or reading back finished ones); their metric rows, one per epoch."""
        return experiment.run_grid(self.params, self.name, self.data)

    def curves(self, metrics: pd.DataFrame, title: str, published: dict[str, float] | None = None) -> Figure:
        """Test accuracy against epoch, with dashed lines at the `published` accuracies ({label: accuracy})."""
        path = self.figures / f"{self.name}_curves.png"
        return viz.plot_curves(metrics, title, path, published=published)

    def summary(self, metrics: pd.DataFrame) -> pd.DataFrame:
        """One row per run beside the published numbers, written to metrics/<name>_summary.csv for the report."""
        table = report.compare(experiment.summarize(metrics))
        path = results.summary_path(self.params.results_dir, self.params.profile, self.name)
        results.atomic_write_text(path, table.to_csv(index=False))
        print(f"wrote {path} and {results.metrics_path(self.params.results_dir, self.params.profile, self.name)}")
        return table

    def final_centers(self) -> pd.DataFrame:
        """Every quadratic head's center and inverse covariance after training, for the first seed of each run
        (the checkpoints' weights); empty for the models without centers."""
        rows = []
        for run in self.runs:
            if run.seed != self.params.seeds[0]:
                continue
            trained = results.checkpoint_path(self.params.results_dir, self.params.profile, run.run_id).exists()
            if self.params.dry_run and not trained:
                print(f"{run.run_id}: not trained (a dry run's run that did not fit in memory): no centers")
            else:
                model = experiment.load_trained(self.params, run)
                rows += center_rows(model, {"model": run.model, "variant": run.variant}, epoch=run.train.epochs)
        return pd.DataFrame(rows)

    def centers(self) -> pd.DataFrame:
        """Draw the final centers (figure <name>_centers.png); per model and layer, the heads' mean offsets."""
        centers = self.final_centers()
        if centers.empty:
            print("no quadratic heads among this notebook's runs: no centers to draw")
            return centers
        viz.plot_centers(centers, self.figures / f"{self.name}_centers.png",
                         subtitle=f"{self.data.name}, profile {self.params.profile}")
        return centers.groupby(["model", "variant", "layer"])[["row", "col"]].agg(lambda s: s.abs().mean()).rename(
            columns={"row": "mean |row offset|", "col": "mean |col offset|"})

    @property
    def figures(self):
        return results.figures_dir(self.params.results_dir, self.params.profile)
