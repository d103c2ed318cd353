"""The dry run (attnlib.training.dry_run, `make reproduce DRY_RUN=N`): one run of every model family of the paper
profile at its published size trains its steps on CIFAR-10-shaped data, checkpoints, is read back on a
rerun without a duplicated row, and records peak memory, seconds per step and a projected full run; the
runner's --dry-run puts its results apart and its report shows the table; the memory sampler and the
projection do what they say. A run that does not fit in memory (here: a layer larger than any address
space) gets a row that says so, and the dry run goes on with the others."""
import math
import re
import time

import pandas as pd
import pytest
import torch
from conftest import ROOT, run_runner

from attnlib import results
from attnlib.data import make_synthetic
from attnlib.experiments import grid, params, settings
from attnlib.experiments import runs as experiment
from attnlib.report import tables as report
from attnlib.training import dry_run

# (notebook, model): one run of every family of the paper profile, at the published size
FAMILIES = [("02_quadratic", "sa_quadratic"), ("01_learned_2d", "sa_learned_content"), ("03_san", "san_pairwise"),
            ("04_vit", "vit"), ("05_resnet", "resnet18")]
BATCH = 2  # the published sizes, but small batches: this is a test on 2 cores


def paper_params(notebook: str, model: str, results_dir) -> settings.TrainParams:
    """params/paper/<notebook>.yaml, one model of it, as a dry run of 2 steps of BATCH images."""
    p = params.load(ROOT / "params" / "paper" / f"{notebook}.yaml")
    own = {model: {**p.per_model.get(model, {}), "batch_size": BATCH}}
    return params.load_with(ROOT / "params" / "paper" / f"{notebook}.yaml",
                            {"models": [model], "heads": p.heads[:1], "hierarchical": [False], "per_model": own,
                             "batch_size": BATCH, "dry_run": 2, "results_dir": str(results_dir), "control_seeds": []})


@pytest.mark.parametrize("notebook, model", FAMILIES, ids=[m for _, m in FAMILIES])
def test_every_model_family_dry_runs_at_its_published_size(tmp_path, monkeypatch, notebook, model):
    monkeypatch.setattr(dry_run, "TEST_IMAGES", 4)  # the evaluation at full size is what costs here
    p = paper_params(notebook, model, tmp_path)
    data = experiment.load_data(p)  # no CIFAR-10 here: generated images of its shape
    assert tuple(data.x_train.shape[1:]) == (3, 32, 32) and data.num_classes == 10
    (run,) = grid.plan(p, data)
    assert run.train.epochs == 1 and run.train_images == 2 * BATCH
    experiment.run_grid(p, notebook, data, progress=False)
    rows = pd.read_csv(dry_run.path(tmp_path, "paper", notebook))
    assert list(rows.columns) == dry_run.DRY_RUN_COLUMNS and len(rows) == 1
    row = rows.iloc[0]
    assert row["run_id"] == run.run_id and row["steps"] == 2 and row["full_epochs"] == p.epochs
    assert row["full_steps_per_epoch"] == math.ceil(50_000 / BATCH)
    assert row["seconds_per_step"] > 0 and row["peak_memory_mb"] > 100 and row["projected_hours"] > 0
    assert results.checkpoint_path(tmp_path, "paper", run.run_id).exists()
    metrics = results.read_metrics(results.metrics_path(tmp_path, "paper", notebook))
    assert metrics["run_id"].tolist() == [run.run_id]
    # the rerun finds the run finished and reads it back: no second row anywhere, the measurement kept
    experiment.run_grid(p, notebook, data, progress=False)
    assert pd.read_csv(dry_run.path(tmp_path, "paper", notebook)).equals(rows)
    assert len(results.read_metrics(results.metrics_path(tmp_path, "paper", notebook))) == 1


def test_the_projection_scales_the_measured_step_to_the_full_run():
    history = [{"seconds": 3.0}]  # 2 steps in 3 s
    m = dry_run.measures(history, steps=2, batch_size=100, full_epochs=300, full_dataset="cifar10",
                         eval_s_per_image=0.01)
    assert m["seconds_per_step"] == 1.5 and m["full_steps_per_epoch"] == 500
    assert m["projected_hours"] == round(300 * (500 * 1.5 + 10_000 * 0.01) / 3600, 2)


def test_peak_memory_keeps_the_highest_resident_set_it_sampled(monkeypatch):
    """A short-lived peak between the start and the end is what it reports, not the memory at either end."""
    seen = iter([100, 300, 900, 200] + [200] * 10_000)  # bytes, one value per sample
    monkeypatch.setattr(dry_run, "_rss_bytes", lambda: next(seen))
    with dry_run.PeakMemory(torch.device("cpu"), every=0.001) as peak:
        time.sleep(0.1)
    assert peak.kind == "process RSS" and peak.mb == 900 / 2**20
    assert dry_run._rss_bytes is not None


def test_resident_memory_is_read_from_the_system():
    before = dry_run._rss_bytes()
    x = torch.ones(256 * 2**20 // 4)  # 256 MB, written
    try:
        assert dry_run._rss_bytes() > 0 and before > 0
    finally:
        del x


def test_a_damaged_dry_run_csv_is_moved_aside_and_written_anew(tmp_path, capsys):
    csv = tmp_path / "02_quadratic_dry_run.csv"
    csv.write_text("not,a\ndry run csv\n\x00")
    row = dict.fromkeys(dry_run.DRY_RUN_COLUMNS, 1) | {"run_id": "r1"}
    dry_run.record(csv, row)
    assert "is damaged" in capsys.readouterr().out and (tmp_path / "02_quadratic_dry_run.csv.damaged").exists()
    dry_run.record(csv, row | {"steps": 3})
    rows = pd.read_csv(csv)
    assert len(rows) == 1 and rows["steps"].tolist() == [3]


def test_the_runner_dry_run_goes_apart_and_the_report_shows_it(tmp_path):
    out = run_runner("--dry-run", "2", "--only", "02,08", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-2000:]
    rows = pd.read_csv(dry_run.path(tmp_path, "smoke", "02_quadratic"))
    assert (rows["steps"] == 2).all() and len(rows) >= 1
    report = (tmp_path / "smoke" / "notebooks" / "08_report.ipynb").read_text()
    assert "**Dry run**: 2 steps per run" in report
    for steps in ("-1", "0"):  # 0 would start the real training (at ffb255a: make reproduce DRY_RUN=0 did)
        bad = run_runner("--dry-run", steps, "--results-dir", str(tmp_path))
        assert bad.returncode == 2 and f"--dry-run must be a number of steps, at least 1, got {steps}" in bad.stderr


def test_a_run_that_does_not_fit_in_memory_is_recorded_and_the_dry_run_goes_on(tmp_path, capsys):
    # sa_quadratic's feed-forward layer of 2**56 units asks for 2**61 bytes at once: no machine has them
    p = params.from_mapping(settings.TrainParams, dict(
        profile="smoke", dataset="synthetic", synthetic_image_size=8, models=["sa_quadratic", "resnet18"], layers=1,
        heads=[2], hidden=8, ff=8, epochs=3, batch_size=8, lr=0.05, dry_run=2, results_dir=str(tmp_path),
        per_model={"sa_quadratic": {"ff": 2**56}, "resnet18": {"width": 4}}))
    data = make_synthetic(64, 8, image_size=8)
    unfit, fits = grid.plan(p, data)
    metrics = experiment.run_grid(p, "t", data, progress=False)
    out = capsys.readouterr().out
    assert metrics["run_id"].unique().tolist() == [fits.run_id]
    rows = pd.read_csv(dry_run.path(tmp_path, "smoke", "t")).set_index("run_id")
    assert rows.loc[fits.run_id, "outcome"] == dry_run.MEASURED and rows.loc[fits.run_id, "projected_hours"] > 0
    row = rows.loc[unfit.run_id]
    assert row["outcome"].startswith("does not fit in memory at batch 8: RuntimeError: ")
    assert "can't allocate memory" in row["outcome"] and "\n" not in row["outcome"]
    assert math.isnan(row["projected_hours"]) and math.isnan(row["seconds_per_step"]) and row["full_epochs"] == 3
    assert row["params"] > 2**56  # counted without its memory
    assert re.search(rf"^\[cpu\] {unfit.run_id}: FAILED: RuntimeError: ", out, re.M)
    assert f"dry run {unfit.run_id}: does not fit in memory at batch 8: RuntimeError: " in out
    assert dry_run.outcomes(tmp_path, "smoke", "t")[unfit.run_id] == row["outcome"]
    assert list(dry_run.table(rows.reset_index())["outcome"]) == [dry_run.MEASURED, row["outcome"]]


def test_the_report_lists_the_runs_that_did_not_fit_beside_the_trained_ones(tmp_path):
    row = dict.fromkeys(dry_run.DRY_RUN_COLUMNS, 1)
    fits = {**row, "run_id": "a-1", "model": "a", "variant": "9 heads", "outcome": dry_run.MEASURED}
    unfit = {**row, "run_id": "a-2", "model": "a", "variant": "16 heads", "outcome": "does not fit in memory at batch 100"}
    stale = {**row, "run_id": "a-0", "model": "a", "variant": "9 heads", "outcome": "does not fit in memory at batch 400"}
    old = {**fits, "run_id": "a-9"}  # measured by an earlier plan
    path = dry_run.path(tmp_path, "paper", "02_quadratic")
    path.parent.mkdir(parents=True)
    pd.DataFrame([fits, unfit, stale, old], columns=dry_run.DRY_RUN_COLUMNS).to_csv(path, index=False)
    pd.DataFrame([dict(run_id="a-1", model="a", variant="9 heads")]).to_csv(
        results.summary_path(tmp_path, "paper", "02_quadratic"), index=False)
    shown = report.load_results(tmp_path, "paper")["dry_run"]
    assert sorted(shown["run_id"]) == ["a-1", "a-2"]  # the stale unfit row is superseded by the trained 9-head run


def test_a_dry_run_csv_from_before_outcomes_keeps_its_rows_as_measured(tmp_path):
    csv = tmp_path / "02_quadratic_dry_run.csv"
    old = dict.fromkeys(dry_run.DRY_RUN_COLUMNS[:-1], 1) | {"run_id": "old"}
    pd.DataFrame([old], columns=dry_run.DRY_RUN_COLUMNS[:-1]).to_csv(csv, index=False)
    dry_run.record(csv, dict.fromkeys(dry_run.DRY_RUN_COLUMNS, 2) | {"run_id": "new", "outcome": dry_run.MEASURED})
    rows = pd.read_csv(csv)
    assert list(rows["run_id"]) == ["old", "new"] and list(rows["outcome"]) == [dry_run.MEASURED] * 2
    assert not list(tmp_path.glob("*.damaged"))
