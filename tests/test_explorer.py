"""Notebook 07's library side: finding trained runs, the interactive explorer, and its figures.

Covers: the trained runs found from the parameter files (the same plan as the notebooks that trained them,
missing checkpoints named); the explorer computing attention once per image and updating its panels in
place on a slider move; notebook 07's figures, and its jobs (attnlib.explorer.head_figures) writing the figures and
the table it names; the zoom being the query's 7x7 token neighbourhood;
notebook 07's parameters checked against what was trained.
"""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import train_smoke_runs
from matplotlib import pyplot as plt

from attnlib import viz
from attnlib.evidence import attention_maps as am
from attnlib.experiments import params, settings
from attnlib.explorer import head_figures
from attnlib.explorer import live as explorer
from attnlib.explorer.image import query_on_object
from attnlib.explorer.trained_runs import trained_runs
from attnlib.explorer.widget import ExplorerWidget

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One quadratic and one SAN run of the smoke profile, trained for an epoch into a fresh results dir."""
    results_dir = tmp_path_factory.mktemp("results")
    params_dir = tmp_path_factory.mktemp("params")
    train_smoke_runs(results_dir, params_dir, {"02_quadratic": {"models": ["sa_quadratic"]},
                                               "03_san": {"models": ["san_pairwise"], "hierarchical": [False]}})
    return results_dir, params_dir


def test_trained_runs_are_found_from_the_parameter_files(trained):
    results_dir, params_dir = trained
    runs, missing = trained_runs(["02_quadratic", "03_san", "01_learned_2d"], "smoke", results_dir, params_dir)
    assert [(r.experiment, r.run.model) for r in runs] == [("02_quadratic", "sa_quadratic"), ("03_san", "san_pairwise")]
    assert missing == [f"01_learned_2d: no parameter file {params_dir / 'smoke' / '01_learned_2d.yaml'}"]
    assert runs[0].epochs_done == 1 and 0 <= runs[0].final_test_acc <= 1
    assert "sa_quadratic (4 heads, seed 42): run sa_quadratic-h4-s42-" in runs[0].describe()
    # a planned run without its checkpoint is listed, not shown
    runs[1].checkpoint.rename(runs[1].checkpoint.with_suffix(".bak"))
    try:
        runs2, missing2 = trained_runs(["03_san"], "smoke", results_dir, params_dir)
        assert runs2 == [] and "no checkpoint" in missing2[0] and "run notebook 03_san" in missing2[0]
    finally:
        runs[1].checkpoint.with_suffix(".bak").rename(runs[1].checkpoint)


def test_explorer_updates_in_place_and_computes_attention_once_per_image(trained, monkeypatch):
    results_dir, params_dir = trained
    runs, _ = trained_runs(["02_quadratic", "03_san"], "smoke", results_dir, params_dir)
    calls = []
    real = explorer.attention_maps
    monkeypatch.setattr(explorer, "attention_maps", lambda *a, **k: calls.append(1) or real(*a, **k))
    ex = explorer.AttentionExplorer(list(reversed(runs)), average_images=8)
    shown = ExplorerWidget(ex)
    box, c = shown.box, shown.controls
    first_png, first_text = box.children[-1].value, box.children[-2].value
    # it opens on the quadratic run (listed last here), layer 1, the query pixel on the object of test image 0
    row, col = query_on_object(runs[0].data.x_test[0])
    assert first_text.startswith(f"<code>{runs[0].label} · layer 1 · query pixel ({row}, {col}) ")
    assert first_png[:4] == b"\x89PNG" and c["run"].value == runs[0].label
    c["row"].value = 4
    c["col"].value = 1
    assert "query pixel (4, 1) = token (2, 0)" in box.children[-2].value
    assert box.children[-1].value != first_png
    c["row"].value = 7
    c["zoom"].value = True
    assert len(calls) == 1  # one forward pass for image 0, however the query moves
    c["image"].value = 3
    c["image"].value = 0
    assert len(calls) == 2  # image 3 once; image 0 from the cache
    c["average"].value = True
    assert "mean over 8 test images" in box.children[-2].value
    c["run"].value = runs[1].label  # SAN: layers are its bottlenecks, the maps its 3x3 windows
    assert [name for name, _ in c["layer"].options] == ["stage 1, block 1", "stage 1, block 2", "stage 2, block 1"]
    c["layer"].value = 2
    assert "stage 2, block 1" in box.children[-2].value and "token (3, 0)" in box.children[-2].value


def test_figures_of_notebook_07(trained, tmp_path):
    results_dir, params_dir = trained
    runs, _ = trained_runs(["02_quadratic", "03_san"], "smoke", results_dir, params_dir)
    likeness = []
    for run in runs:
        layers = am.attention_maps(run.load(), run.images(0, 4))
        viz.plot_query_attention(layers, run.data.x_test[0], (3, 5), 0, zoom=True, path=tmp_path / f"q{run.label}.png")
        viz.plot_query_attention(layers, run.data.x_test[0], (3, 5), None, max_heads=2, path=tmp_path / f"m{run.label}.png")
        viz.plot_offset_average(layers, path=tmp_path / f"o{run.label}.png")
        likeness.append(am.conv_likeness(layers).assign(run=run.label))
    viz.plot_conv_likeness(pd.concat(likeness), tmp_path / "likeness.png")
    centers = pd.read_csv(results_dir / "smoke" / "metrics" / "02_quadratic_centers.csv")
    assert sorted(centers["epoch"].unique()) == [0, 1]
    viz.plot_center_trajectories(centers, 1, tmp_path / "paths.png")
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 8 and all(p.stat().st_size > 2000 for p in pngs)
    viz.plt.close("all")


def test_notebook_07_jobs_write_its_figures_and_table(trained):
    """attnlib.explorer.head_figures, what notebook 07's cells call: the figures it names, the table, and nothing left open."""
    results_dir, params_dir = trained
    p = settings.VizParams(profile="smoke", results_dir=str(results_dir), params_dir=str(params_dir),
                         experiments=["02_quadratic", "03_san"], average_images=4, device="cpu")
    runs, _ = trained_runs(p.experiments, p.profile, results_dir, params_dir)
    out, open_before = head_figures.Outputs.of(p), plt.get_fignums()
    means = head_figures.query_figures(runs, p, "cpu", out)
    head_figures.offset_figures(runs, means, p, out)
    likeness = head_figures.conv_likeness(runs, means, p, "cpu")
    plt.close(head_figures.likeness_figure(likeness, p, out))
    assert plt.get_fignums() == open_before  # without `show`, each run's figures are closed once saved
    assert out.write_likeness(likeness).startswith(f"wrote {out.likeness} ")
    assert set(pd.read_csv(out.likeness)["model"]) == {"sa_quadratic", "san_pairwise"}
    assert head_figures.likeness_per_layer(likeness)["heads"].min() >= 1
    centers = head_figures.first_seed_centers(p, runs)
    assert set(centers["epoch"]) == {0, 1} and len(head_figures.center_figures(centers, p, out)) >= 1
    plt.close("all")
    expected = {"centers", "center_paths", "conv_likeness", *(f"query_{r.slug}" for r in runs),
                *(f"offsets_{r.slug}" for r in runs), "query_mean_" + runs[1].slug}  # the SAN's content-based
    assert {f.name for f in out.figures.glob("07_visualizations_*.png")} == {f"07_visualizations_{n}.png" for n in expected}
    out.clear()
    assert not out.likeness.exists() and not list(out.figures.glob("07_visualizations_*.png"))


def test_zoom_limits_are_the_seven_by_seven_token_neighbourhood():
    layer = am.LayerMaps("layer 1", np.zeros((1, 1, 256, 256)), (16, 16), 2)
    assert viz.zoom_limits(layer, (5, 9)) == ((12.0, 26.0), (18.0, 4.0))  # 2 pixels per token, 7 tokens


def test_viz_params_are_checked():
    p = params.load(ROOT / "params" / "quick" / "07_visualizations.yaml")
    assert isinstance(p, settings.VizParams) and p.average_images == 100
    for values, message in [({"experiments": []}, "experiments is empty"),
                            ({"experiments": ["06_timing"]}, "not a training notebook"),
                            ({"dataset": "mnist"}, "dataset must be empty"),
                            ({"query_row": -2}, "query_row must be a pixel index"),
                            ({"page_images": 0}, "page_images must be at least 1")]:
        with pytest.raises(params.ParamsError, match=message):
            params.from_mapping(settings.VizParams, values, where="params/x.yaml")
