"""The sections of the report (notebook 08), each shown by one call: its header, the verdicts, the tables beside
the published numbers (also written as CSV for reading without Jupyter), the accuracy curves and, per claim of
the paper, its verdicts and the figures notebooks 00-07 drew for it.

attnlib.report.tables holds the published numbers and builds the tables and verdicts; this module puts them on the page.
The show_* functions display (or print, where there is nothing to show) and return nothing, so a notebook cell
that ends with one adds no output of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import pandas as pd
from IPython.display import Image, Markdown, display
from PIL import Image as PILImage

from attnlib import results, viz
from attnlib.evidence import claims as learning
from attnlib.report import tables as report
from attnlib.training import dry_run

NOTEBOOK = "08_report"
EXPLORER = "explorer.html"  # notebook 07 writes it beside the report

# How the accuracy table and the effects table print their numbers (the CSVs keep them unrounded).
ACCURACY_FORMATS = {"train_images": "{:,.0f}", "test_images": "{:,.0f}", "acc": "{:.3f}", "acc_sd": "{:.3f}",
                    "final_acc": "{:.3f}", "paper_acc": "{:.3f}",
                    "re_acc": "{:.4f}", "acc_minus_paper": "{:+.3f}", "params": "{:,}", "paper_params": "{:,}",
                    "paper_gflops": "{:.1f}", "gflops_full_size": "{:.2f}", "train_img_s_full_size": "{:.1f}",
                    "train_minutes": "{:.1f}"}
EFFECT_FORMATS = {k: "{:.3f}" for k in ("initial", "trained", "trained_sd", "change", "change_sd", "control_trained",
                                        "control_change")}

# The dashed lines on the accuracy curves: the paper's CIFAR-10 accuracies after 300 epochs (Table 1).
PUBLISHED_CURVES = {"paper: ResNet18 = quadratic (CIFAR-10)": 0.938, "paper: learned (CIFAR-10)": 0.918,
                    "paper: learned + content (CIFAR-10)": 0.871}


class Figure(NamedTuple):
    """A figure of results/<profile>/figures/ shown in the report. A plain name is shown, or said to be missing;
    a glob (with *) shows its matches in name order, the first `first` of them (None: all), and nothing when
    there are none. With `draw`, the report draws it itself first: draw(data, path) from what it read."""
    name: str
    caption: str
    first: int | None = None
    draw: Callable | None = None


# Per section of the report: the verdicts it opens with (rows of report.claims) and the figures below them.
SECTIONS = {
    "convolution": ([0], [
        Figure("00_conv_as_attention_cases.png", "The constructed attention layer beside the convolution"),
        Figure("00_conv_as_attention_heads.png", "Each head of the construction for one query pixel"),
        Figure("00_conv_as_attention_error_vs_alpha.png", "Error against the heads' sharpness alpha")]),
    "quadratic": ([1, 2], [
        Figure(f"{NOTEBOOK}_grid.png", "Layer 1's heads against the grid of a convolution's taps: centers at "
               "initialisation and trained, each matched to a tap, per seed; their distance from the grid per epoch",
               draw=lambda data, path: draw_grid(data, path)),
        Figure("07_visualizations_centers.png", "Centers of the quadratic heads, last epoch"),
        Figure("07_visualizations_center_paths.png", "Centers during training"),
        Figure("07_visualizations_development.png",
               "Every attention model from initialisation (epoch 0) to the end of training"),
        Figure("07_visualizations_query_sa_quadratic*.png", "Attention of every head for the middle pixel", 2)]),
    "learned": ([3], [
        Figure("07_visualizations_query_sa_learned-*.png", "Attention for the middle pixel"),
        Figure("07_visualizations_query_mean_sa_learned_content*.png", "Attention for the middle pixel"),
        Figure("07_visualizations_conv_likeness.png", "How convolutional each layer is, every attention model")]),
    "accuracy": ([4, 5], []),
    "peers": ([], [
        Figure("06_timing.png", "Throughput and latency of every model at its published size"),
        Figure("07_visualizations_query_*vit*.png", "Peer attention for the middle pixel", 2),
        Figure("07_visualizations_query_san*.png", "Peer attention for the middle pixel", 1)]),
}


@dataclass
class ReportData:
    """Everything the report shows, read once from results/<profile>/ (load)."""
    results_dir: Path
    profile: str
    res: dict  # report.load_results
    table: pd.DataFrame  # report.accuracy_table
    verdicts: pd.DataFrame  # report.claims
    effects: pd.DataFrame  # claims.effect_table of report.learning_effects
    times: pd.DataFrame  # report.series_time
    figures: Path  # results/<profile>/figures/

    @property
    def metrics_dir(self) -> Path:
        return results.profile_dir(self.results_dir, self.profile) / "metrics"


def load(results_dir, profile: str, params_dir=None) -> ReportData:
    """What notebooks 00-07 wrote under results/<profile>/, with the tables and verdicts made from it; the training
    notebooks' parameters under `params_dir` say how many images their runs used (the accuracy table's sizes)."""
    res = report.load_results(results_dir, profile)
    table = report.accuracy_table(res["metrics"], res["timing"], params_dir)
    return ReportData(results_dir=Path(results_dir), profile=profile, res=res, table=table,
                      verdicts=report.claims(res, table),
                      effects=learning.effect_table(report.learning_effects(res)),
                      times=report.series_time(res["stamps"], res["metrics"]),
                      figures=results.figures_dir(results_dir, profile))


def _joined(values: pd.Series) -> str:
    return ", ".join(sorted(values.unique()))


def header_text(data: ReportData) -> str:
    """The report's opening line (markdown): profile, data sets, devices, torch versions, commits and time."""
    m, timing, times = data.res["metrics"], data.res["timing"], data.times
    datasets = _joined(m["dataset"]) if not m.empty else "none"
    devices = _joined(m["device"]) if not m.empty else "unknown"
    timed_on = _joined(timing["device"]) if not timing.empty else "not timed"
    versions = _joined(m["torch"]) if not m.empty else "unknown"
    commits = _joined(m["git"].astype(str)) if not m.empty else "unknown"
    if times.empty:
        timing_text = "not recorded (the notebooks were not run by `make reproduce`)."
    else:
        total, training = times["last_run_seconds"].sum() / 60, times["training_seconds"].sum() / 60
        timing_text = (f"the notebooks' last executions took {total:.1f} minutes in all; the training they report took "
                       f"{training:.1f} minutes when it ran (a notebook that finds its runs finished reads them back "
                       "instead of training). Per notebook at the end of this report." + _yardstick(timing))
    return (f"**Profile** `{data.profile}` · **data** {datasets} · **trained on** {devices} · "
            f"**timed on** {timed_on} · **torch** {versions} · "
            f"**commits** {commits}\n\n**Time**: {timing_text}")


def _yardstick(timing: pd.DataFrame) -> str:
    """A sentence on how fast this machine multiplied fp32 matrices when notebook 06 ran, or '' when unknown: the
    same series takes longer on a slower or busier machine (a shared 2-core VM measured 97-193 GFLOP/s over two
    days)."""
    if timing.empty or "peak_gflops" not in timing:
        return ""
    peak = timing.loc[timing["precision"] == "fp32", "peak_gflops"].dropna()
    if peak.empty:
        return ""
    return (f" For comparing these times with another machine's: notebook 06 measured this one's fp32 matrix "
            f"products at {peak.median():.0f} GFLOP/s.")


def explorer_text(data: ReportData) -> str:
    """A link to the explorer page notebook 07 wrote beside the report (markdown), or why there is none."""
    page = results.profile_dir(data.results_dir, data.profile) / EXPLORER
    if not page.exists():
        return f"*Explorer: not available ({EXPLORER} missing; notebook 07 writes it).*"
    return (f"**Explorer**: [{EXPLORER}]({EXPLORER}) (beside this report, {page.stat().st_size / 1e6:.1f} MB) shows "
            "where every head of every trained attention model attends, for every query pixel of a few test images, "
            "with no Python and no network: pick the run, the layer and the image, and move over the image.")


def verdict_text(data: ReportData, i: int) -> str:
    """Row i of the verdicts as one markdown line."""
    v = data.verdicts.iloc[i]
    return f"**Verdict: {v['verdict']}.** {v['evidence']}"


def shown_width(path: Path, widest: int = round(viz.PAGE_WIDTH * viz.DPI)) -> int:
    """The width (pixels) the report shows a figure at: its own, so that nothing is blown up, and at most the
    page's (`widest`), which the figures are drawn to fit (viz.PAGE_WIDTH); a click shows it at full size."""
    with PILImage.open(path) as im:
        return min(im.width, widest)


def figures_shown(figures: Path, entries) -> list[tuple[str, str, bool]]:
    """(file name, caption, whether it exists) per figure to show, in the order shown (Figure)."""
    shown = []
    for f in entries:
        if "*" in f.name:
            shown += [(p.name, f.caption, True) for p in sorted(figures.glob(f.name))[:f.first]]
        else:
            shown.append((f.name, f.caption, (figures / f.name).exists()))
    return shown


def write_csv(data: ReportData, which: str, table: pd.DataFrame) -> Path:
    """metrics/08_report_<which>.csv (verdicts, accuracy, effects): the report's tables without Jupyter."""
    path = data.metrics_dir / f"{NOTEBOOK}_{which}.csv"
    results.atomic_write_text(path, table.to_csv(index=False))
    return path


# -- the sections, displayed --------------------------------------------------------------------------
def glance_text(data: ReportData) -> str:
    """Every claim's verdict in one short list (markdown), for the report's first screen."""
    if data.verdicts.empty:
        return ""
    lines = [f"- **{v['verdict']}**: {v['claim']}" for _, v in data.verdicts.iterrows()]
    return "**At a glance** (each verdict's evidence and criterion below):\n\n" + "\n".join(lines)


def show_header(data: ReportData):
    display(Markdown(glance_text(data)))
    display(Markdown(header_text(data)))


def show_explorer(data: ReportData):
    display(Markdown(explorer_text(data)))


def show_verdicts(data: ReportData):
    display(data.verdicts.style.hide(axis="index").set_properties(**{"text-align": "left"}))


def show_accuracy(data: ReportData):
    """The accuracy table beside the published numbers; writes it and the verdicts as CSV."""
    write_csv(data, "verdicts", data.verdicts)
    if data.table.empty:
        print("no training results yet: run notebooks 01-05 of this profile")
        return
    formats = {k: v for k, v in ACCURACY_FORMATS.items() if k in data.table.columns}
    shown = data.table.drop(columns=["profile"])  # every row is this report's profile, named in its header
    display(styled(shown, formats))
    write_csv(data, "accuracy", data.table)


def styled(table: pd.DataFrame, formats: dict):
    """`table` for display: no index, `formats`, empty cells for NaN, and column names that may wrap after each
    underscore (a zero-width space), so that a wide table fits a printed page without cutting a column."""
    wrap = {c: c.replace("_", "_\u200b") for c in table.columns}
    return (table.rename(columns=wrap).style.hide(axis="index")
            .format({wrap[k]: v for k, v in formats.items() if k in wrap}, na_rep=""))


def show_curves(data: ReportData):
    """Test accuracy after every epoch, all models of one data set per figure (08_report_curves_<data set>.png)."""
    m = data.res["metrics"]
    for name, d in m.groupby("dataset") if not m.empty else []:
        viz.plot_curves(d, "All models", data.figures / f"{NOTEBOOK}_curves_{name}.png",
                        published=PUBLISHED_CURVES)
        viz.plt.show()


def show_section(data: ReportData, section: str):
    """One section of SECTIONS: its verdicts, then its figures with their captions."""
    rows, entries = SECTIONS[section]
    for i in rows:
        display(Markdown(verdict_text(data, i)))
    for entry in entries:
        if entry.draw is not None:
            entry.draw(data, data.figures / entry.name)
    for name, caption, exists in figures_shown(data.figures, entries):
        if exists:
            display(Markdown(f"**{caption}** (`{name}`)"))
            display(Image(filename=str(data.figures / name), width=shown_width(data.figures / name),
                          alt=f"{caption} ({name})"))
        else:
            display(Markdown(f"*{caption}: not available ({name} missing; run the notebook that makes it).*"))


def draw_grid(data: ReportData, path: Path) -> None:
    """The grid figure of sa_quadratic (9 heads) from its recorded centers (viz.plot_taps); nothing without them."""
    centers = data.res["centers"]
    variants = ["9 heads", f"9 heads, {results.SHUFFLED_LABELS}"]  # with its controls
    runs = centers[(centers["model"] == "sa_quadratic") & centers["variant"].isin(variants)] if not centers.empty \
        else centers
    if runs.empty:
        return
    subtitle = f"sa_quadratic, 9 heads, {_joined(runs['dataset'])}, profile {data.profile}"
    viz.plot_taps(runs, path, within=learning.CRITERIA.grid_within, subtitle=subtitle)
    viz.plt.close("all")


def show_effects(data: ReportData):
    """What training changed, per model, layer and measure; writes it as CSV."""
    if data.effects.empty:
        print("no attention recorded at initialisation and after training: run notebooks 01 and 02 of this profile")
        return
    display(styled(data.effects, EFFECT_FORMATS))
    write_csv(data, "effects", data.effects)


def show_dry_run(data: ReportData):
    """A dry run's per-run table (attnlib.training.dry_run): memory, seconds per step and the projected full run."""
    rows = data.res["dry_run"]
    if rows.empty:
        print("not a dry run: every run trained as its parameters say")
        return
    table = dry_run.table(rows)
    hours = rows["projected_hours"].sum()
    unfit = int((table["outcome"] != dry_run.MEASURED).sum())
    display(Markdown(f"**Dry run**: {int(rows['steps'].max())} steps per run, {len(rows)} runs on "
                     f"{_joined(rows['device'])}. "
                     f"The full runs would take about {hours:,.0f} hours ({hours / 24:,.1f} days) one after another "
                     "on this device" + (f", leaving out the {unfit} that do not fit in its memory at their batch size "
                                         "(their outcome says how far they got)" if unfit else "")
                     + "; the accuracies above mean nothing."))
    display(table.style.hide(axis="index").format({"peak_memory_mb": "{:,.0f}", "seconds_per_step": "{:.2f}",
                                                   "projected_hours": "{:,.1f}", "params": "{:,}"}, na_rep="-"))


def show_times(data: ReportData):
    if data.times.empty:
        print("no runner stamps (notebooks run by hand)")
    else:
        display(data.times.style.hide(axis="index"))
