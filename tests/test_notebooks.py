"""The training notebooks run headlessly through the runner (papermill) on the smoke profile.

Covers notebooks 00-08 end to end: 01 and 02, then 07 and 08 on their results; the peer notebooks 03-05;
the timing notebook 06; the quiet console (a start and an end line per notebook, a log per notebook, no
progress widget left in an executed notebook); `make reproduce` skipping what has not changed and rerunning
what has; a failing cell stopping the run with one line naming notebook and cell; and one notebook run by
papermill alone with `-f params/smoke/...`, which runs that profile.
"""
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import ROOT, assert_every_field_injected, run_runner

from attnlib.evidence.claims import VERDICTS
from attnlib.experiments.settings import TimingParams, TrainParams, VizParams
from attnlib.models import list_models
from attnlib.results import ATTENTION_COLUMNS, METRIC_COLUMNS


@pytest.mark.notebook
def test_smoke_profile_runs_both_notebooks_then_the_visualizations_and_the_report(tmp_path):
    out = run_runner("--only", "01,02,07,08", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "smoke"
    for stem, models in [("01_learned_2d", {"sa_learned", "sa_learned_content"}),
                         ("02_quadratic", {"sa_quadratic", "sa_quadratic_aniso"})]:
        assert_every_field_injected(root / "notebooks" / f"{stem}.ipynb", TrainParams)
        df = pd.read_csv(root / "metrics" / f"{stem}.csv")
        assert list(df.columns) == METRIC_COLUMNS
        assert set(df["model"]) == models and set(df["dataset"]) == {"synthetic"} and set(df["profile"]) == {"smoke"}
        summary = pd.read_csv(root / "metrics" / f"{stem}_summary.csv")
        assert set(summary["model"]) == models and "paper_acc" in summary.columns
        assert (root / "figures" / f"{stem}_curves.png").stat().st_size > 1000
    assert (root / "figures" / "02_quadratic_centers.png").exists()
    assert "[2/4] 02_quadratic.ipynb done" in out.stdout
    assert_quiet_console(out, root, ["01_learned_2d", "02_quadratic", "07_visualizations", "08_report"])
    # 07 shows the four runs of 01/02 and says which planned runs it cannot show (03, 04 did not run here)
    assert_every_field_injected(root / "notebooks" / "07_visualizations.ipynb", VizParams)
    likeness = pd.read_csv(root / "metrics" / "07_visualizations_likeness.csv")
    assert set(likeness["model"]) == {"sa_learned", "sa_learned_content", "sa_quadratic", "sa_quadratic_aniso"}
    assert likeness["top_mass"].between(0, 1).all()
    for name in ["centers", "center_paths", "development", "conv_likeness", "query_sa_quadratic-h4-s42",
                 "query_mean_sa_learned_content-h4-s42", "offsets_sa_learned-h4-s42"]:
        assert (root / "figures" / f"07_visualizations_{name}.png").stat().st_size > 1000, name
    printed = notebook_text(root / "notebooks" / "07_visualizations.ipynb")
    assert "4 trained runs found" in printed and "not shown: 03_san: san_pairwise (standard)" in printed
    # 08 reads all of it, gives a verdict per claim and exports the report
    verdicts = pd.read_csv(root / "metrics" / "08_report_verdicts.csv")
    assert len(verdicts) == 6 and set(verdicts["verdict"]) <= set(VERDICTS)
    assert set(verdicts["verdict"][1:4]) == {"not shown"}  # one seed shows no learning claim
    attention = pd.read_csv(root / "metrics" / "01_learned_2d_attention.csv")
    assert list(attention.columns) == ATTENTION_COLUMNS and set(attention["epoch"]) == {0, 1}
    assert verdicts.iloc[0]["verdict"] == "not measured"  # notebook 00 did not run here
    html = (root / "report.html").read_text()
    assert "Verdicts" in html and "data:image/png;base64," in html
    assert "report: " in out.stdout


def assert_quiet_console(out, root, notebooks):
    """The console gets a start and an end line per notebook, one line per finished run's progress bar, and a
    closing summary; everything else (papermill, the kernel, the cells' output) is in that notebook's log.
    Executed notebooks keep no progress widget (it would stay frozen at 0%)."""
    assert out.stderr == ""
    lines = [line.split("\r")[-1].strip() for line in out.stdout.split("\n") if line.strip()]
    bars = [line for line in lines if "100%|" in line]
    assert bars and all(" [" in bar and "epoch" in bar for bar in bars), bars
    per_notebook = [line for line in lines if line.startswith("[")]
    assert len(per_notebook) == 2 * len(notebooks), per_notebook
    others = [line for line in lines if line not in bars and line not in per_notebook]
    assert len(others) <= 3, others  # "N of N notebooks run", the report's HTML and PDF
    for stem in notebooks:
        assert (root / "logs" / f"{stem}.log").stat().st_size > 0
        if stem != "07_visualizations":  # whose explorer is a widget on purpose (live in JupyterLab)
            assert "application/vnd.jupyter.widget" not in (root / "notebooks" / f"{stem}.ipynb").read_text()


def notebook_text(path) -> str:
    executed = json.loads(path.read_text())
    return "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))


@pytest.mark.notebook
def test_reproduce_skips_what_has_not_changed_and_reruns_what_has(tmp_path):
    params_dir, results_dir = tmp_path / "params", tmp_path / "results"
    (params_dir / "smoke").mkdir(parents=True)
    pfile = params_dir / "smoke" / "00_conv_as_attention.yaml"
    pfile.write_text((ROOT / "params" / "smoke" / "00_conv_as_attention.yaml").read_text())
    args = ("--only", "00", "--params-dir", str(params_dir), "--results-dir", str(results_dir))
    first = run_runner(*args)
    assert first.returncode == 0 and "00_conv_as_attention.ipynb done in" in first.stdout, first.stderr[-2000:]
    second = run_runner(*args)
    assert "00_conv_as_attention.ipynb: unchanged since its run of" in second.stdout
    assert "0 of 1 notebooks run" in second.stdout
    pfile.write_text(pfile.read_text().replace("seed: 0", "seed: 1"))  # a changed parameter reruns it
    assert "1 of 1 notebooks run" in run_runner(*args).stdout
    assert "1 of 1 notebooks run" in run_runner(*args, "--force").stdout
    stamps = json.loads((results_dir / "smoke" / ".cache" / "stamps.json").read_text())
    assert set(stamps) == {"00_conv_as_attention"} and stamps["00_conv_as_attention"]["seconds"] > 0


@pytest.mark.notebook
def test_smoke_profile_runs_the_peer_notebooks_and_writes_results(tmp_path):
    out = run_runner("--only", "03,04,05", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "smoke"
    expected = {"03_san": {("san_pairwise", "standard"), ("san_pairwise", "hierarchical"),
                           ("san_patchwise", "standard"), ("san_patchwise", "hierarchical")},
                "04_vit": {("vit", "4 heads"), ("vit", "4 heads, hierarchical"),
                           ("vit_plain", "4 heads"), ("vit_plain", "4 heads, hierarchical")},
                "05_resnet": {("resnet18", "standard")}}
    for stem, runs in expected.items():
        assert_every_field_injected(root / "notebooks" / f"{stem}.ipynb", TrainParams)
        df = pd.read_csv(root / "metrics" / f"{stem}.csv")
        assert list(df.columns) == METRIC_COLUMNS
        assert set(zip(df["model"], df["variant"])) == runs and len(df) == len(runs)  # one epoch each
        summary = pd.read_csv(root / "metrics" / f"{stem}_summary.csv")
        assert set(zip(summary["model"], summary["variant"])) == runs
        assert (root / "figures" / f"{stem}_curves.png").stat().st_size > 1000
    resnet = pd.read_csv(root / "metrics" / "05_resnet_summary.csv").iloc[0]
    assert (resnet["paper_acc"], resnet["re_acc"]) == (0.938, 0.9463)
    # per_model: the patchwise SAN trained at its own learning rate (lr column: the rate of the last step)
    san = pd.read_csv(root / "metrics" / "03_san.csv").groupby("model")["lr"].max()
    assert san["san_patchwise"] < san["san_pairwise"]


@pytest.mark.notebook
def test_smoke_profile_runs_the_timing_notebook(tmp_path):
    out = run_runner("--only", "06", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "smoke"
    assert_every_field_injected(root / "notebooks" / "06_timing.ipynb", TimingParams)
    df = pd.read_csv(root / "metrics" / "06_timing.csv")
    assert set(df["model"]) == set(list_models())
    assert {"hierarchical"} <= set(df["variant"]) and set(df["precision"]) == {"fp32", "bf16"}
    assert set(df["mode"]) == {"train", "infer", "latency"} and (df["images_per_s"] > 0).all()
    summary = pd.read_csv(root / "metrics" / "06_timing_summary.csv")
    assert len(summary) == len(list_models()) + 3
    assert (root / "figures" / "06_timing.png").stat().st_size > 1000
    printed = notebook_text(root / "notebooks" / "06_timing.ipynb")
    assert ("No GPU was present" in printed) == (not torch.cuda.is_available())  # says what it did not measure


@pytest.mark.notebook
def test_a_failing_cell_stops_the_run_naming_notebook_and_cell(tmp_path):
    # Parameters that pass validation but fail inside the notebook: CIFAR-10 absent, download off.
    (tmp_path / "params" / "smoke").mkdir(parents=True)
    (tmp_path / "params" / "smoke" / "02_quadratic.yaml").write_text(
        f"dataset: cifar10\ndownload: false\ndata_root: {tmp_path / 'nodata'}\nmodels: [sa_quadratic]\n")
    out = run_runner("--only", "02", "--params-dir", str(tmp_path / "params"), "--results-dir", str(tmp_path / "results"))
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert "02_quadratic.ipynb failed in cell" in last and "DataError" in last and "cifar-10-python.tar.gz" in last


@pytest.mark.notebook
def test_papermill_alone_with_a_parameter_file_runs_that_profile(tmp_path):
    """`papermill NOTEBOOK OUT -f params/<profile>/NAME.yaml` from the repository's root: the file names its
    profile and the notebook takes the rest of its settings from it (results_dir moved to tmp_path here)."""
    executed = tmp_path / "02.ipynb"
    done = subprocess.run([sys.executable, "-m", "papermill", "notebooks/02_quadratic.ipynb", str(executed),
                           "-f", "params/smoke/02_quadratic.yaml", "-p", "results_dir", str(tmp_path), "--no-progress-bar"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "smoke" / "metrics" / "02_quadratic.csv")
    assert set(rows["profile"]) == {"smoke"} and set(rows["model"]) == {"sa_quadratic", "sa_quadratic_aniso"}
    assert "application/vnd.jupyter.widget" not in executed.read_text()
