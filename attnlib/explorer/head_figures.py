"""Notebook 07's work, one function per job: the explorer it opens, the figures of what the heads do (the
quadratic centers and their paths, how attention developed in training, every head's attention for a query
pixel, attention by offset, conv-likeness), the conv-likeness table and the static explorer page.

Everything is written under results/<profile>/ (`Outputs`): figures/07_visualizations_<name>.png,
metrics/07_visualizations_likeness.csv and explorer.html. The functions that draw one figure per run take
`show`, called after each run's figures (the notebook passes matplotlib's `plt.show`; without it they are
closed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
from matplotlib import pyplot as plt

from attnlib import results, viz
from attnlib.evidence import attention_maps as am
from attnlib.evidence.attention_maps import LayerMaps, attention_maps, mean_attention
from attnlib.experiments.settings import REPO_ROOT, VizParams
from attnlib.explorer import page as explore
from attnlib.explorer.image import NotAnImage, open_image
from attnlib.explorer.live import AttentionExplorer
from attnlib.explorer.trained_runs import TrainedRun, first_view, recorded_centers

NAME = "07_visualizations"
# the models whose attention depends on the image: their per-query figure is also drawn averaged over images
CONTENT = ("sa_learned_content", "sa_content", "san_pairwise", "san_patchwise", "vit", "vit_plain")


@dataclass
class Outputs:
    """Where notebook 07 writes."""
    figures: Path       # results/<profile>/figures/, holding 07_visualizations_<name>.png
    likeness: Path      # results/<profile>/metrics/07_visualizations_likeness.csv
    explorer: Path      # results/<profile>/explorer.html

    @classmethod
    def of(cls, p: VizParams) -> Outputs:
        profile = results.profile_dir(p.results_dir, p.profile)
        return cls(results.figures_dir(p.results_dir, p.profile), profile / "metrics" / f"{NAME}_likeness.csv",
                   profile / "explorer.html")

    def figure(self, name: str) -> Path:
        return self.figures / f"{NAME}_{name}.png"

    def clear(self) -> None:
        """Remove what an earlier run wrote, so that nothing of it may pass for this one's."""
        for old in [*self.figures.glob(f"{NAME}_*.png"), self.likeness, self.explorer]:
            old.unlink(missing_ok=True)

    def write_likeness(self, likeness: pd.DataFrame) -> str:
        """Write the conv-likeness table (the report notebook reads it); one line saying what was written."""
        results.atomic_write_text(self.likeness, likeness.to_csv(index=False))
        return f"wrote {self.likeness} and the figures {NAME}_*.png in {self.figures}"


def _done(figures: list, show: Callable[[], object] | None) -> None:
    if show is not None:
        show()
    else:
        for fig in figures:
            plt.close(fig)


# -- the explorer --------------------------------------------------------------------------------------
def own_image_path(own_image: str) -> Path | None:
    """The parameter own_image as a path (None when empty): as given when it exists or is absolute, else from
    the repository's root, as parameter files give it."""
    if not own_image:
        return None
    path = Path(own_image)
    return REPO_ROOT / path if not path.is_absolute() and not path.exists() else path


def open_explorer(runs: list[TrainedRun], p: VizParams, device: str) -> tuple[AttentionExplorer | None, Path | None]:
    """(the explorer, None without runs; own_image's path, None without one or when it is no image). The explorer
    opens with the query at (query_row, query_col), or on the object where one is -1, and on own_image when
    given; it prints which image of yours it explores, or in one line why it cannot."""
    own = own_image_path(p.own_image)
    if not runs:
        return None, own
    query = (p.query_row, p.query_col) if min(p.query_row, p.query_col) >= 0 else None  # None: on the object
    ex = AttentionExplorer(runs, average_images=p.average_images, max_heads=p.max_heads, device=device, query=query)
    if own is not None:
        try:
            print(f"exploring your image {ex.set_own_image(own)} ({own})")
        except NotAnImage as err:
            print(f"own_image: {err}")
            own = None
    return ex, own


# -- the centers of the quadratic heads ------------------------------------------------------------------
def first_seed_centers(p: VizParams, runs: list[TrainedRun]) -> pd.DataFrame:
    """The centers recorded by the runs of centers_experiment, every epoch, of the first seed of each model and
    variant (empty when none were recorded)."""
    centers = recorded_centers(p, runs)
    if centers.empty:
        return centers
    return centers[centers["seed"] == centers.groupby(["model", "variant"])["seed"].transform("min")]


def no_centers(p: VizParams) -> str:
    return (f"no recorded centers in {results.centers_path(p.results_dir, p.profile, p.centers_experiment)}: "
            f"run notebook {p.centers_experiment} of profile {p.profile} first")


def center_figures(centers: pd.DataFrame, p: VizParams, out: Outputs) -> pd.DataFrame:
    """The last epoch's centers of every layer (figure `centers`) and the paths of trajectory_layer's during
    training (`center_paths`); returns per layer the heads' mean distance from the query and how many lie within
    a token of it."""
    last = centers[centers["epoch"] == centers.groupby("run_id")["epoch"].transform("max")]
    dataset = last["dataset"].iloc[0]
    viz.plot_centers(last, out.figure("centers"),
                     subtitle=f"{dataset}, profile {p.profile}, after epoch {int(last['epoch'].max())}")
    viz.plot_center_trajectories(centers, p.trajectory_layer, out.figure("center_paths"),
                                 subtitle=f"{dataset}, profile {p.profile}")
    near = last.assign(offset=(last["row"].abs() + last["col"].abs()) / 2,
                       within=(last["row"].abs() <= 1.5) & (last["col"].abs() <= 1.5))
    return near.groupby(["model", "variant", "layer"]).agg(**{"mean |offset| (tokens)": ("offset", "mean"),
                                                              "heads within 1 token": ("within", "sum")})


# -- how the heads developed during training -------------------------------------------------------------
def development(p: VizParams, runs: list[TrainedRun]) -> pd.DataFrame:
    """The attention the runs recorded during training (results.ATTENTION_COLUMNS rows, every epoch)."""
    recorded = pd.concat([results.read_metrics(results.attention_path(p.results_dir, p.profile, e),
                                               results.ATTENTION_COLUMNS) for e in p.experiments], ignore_index=True)
    return recorded[recorded["run_id"].isin([r.run.run_id for r in runs])]


def no_development(p: VizParams) -> str:
    return "no attention recorded during training: run notebooks " + ", ".join(p.experiments) + " of this profile"


def development_figure(attention: pd.DataFrame, p: VizParams, out: Outputs):
    """The figure `development`: each model's heads from initialisation to the end of training."""
    seeds = attention.groupby(["model", "variant"])["seed"].nunique()
    seeds = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
    return viz.plot_attention_development(attention, out.figure("development"),
                                          subtitle=f"{attention['dataset'].iloc[0]}, profile {p.profile}, "
                                                   f"{seeds} seed(s) per model")


# -- every head's attention ------------------------------------------------------------------------------
def query_pixel(run: TrainedRun, p: VizParams) -> tuple[int, int]:
    """(query_row, query_col) within the run's images; the middle where one is -1."""
    side = run.data.image_size
    return (side // 2 if p.query_row < 0 else min(p.query_row, side - 1),
            side // 2 if p.query_col < 0 else min(p.query_col, side - 1))


def query_figures(runs: list[TrainedRun], p: VizParams, device: str, out: Outputs,
                  show: Callable[[], object] | None = None) -> dict[str, list[LayerMaps]]:
    """Per run, every head's attention for the query pixel on test image image_index (figure `query_<run>`) and,
    for the content-based models, averaged over the first average_images test images (`query_mean_<run>`).
    Returns each run's attention averaged over those images, {run label: layers}, which the figures after use."""
    means = {}
    for run in runs:
        model = run.load(device)
        index = min(p.image_index, len(run.data.x_test) - 1)
        one = attention_maps(model, run.images(index, 1).to(device))
        means[run.label] = mean_attention(model, run.images(0, p.average_images).to(device))
        title = f"{run.label}: {run.data.name}, profile {p.profile}, run {run.run.run_id}"
        drawn = [viz.plot_query_attention(one, run.data.x_test[index], query_pixel(run, p), 0, zoom=p.zoom,
                                          max_heads=p.max_heads, title=title, path=out.figure(f"query_{run.slug}"),
                                          what=f"test image {index}")]
        if run.run.model in CONTENT:
            n = min(p.average_images, len(run.data.x_test))
            drawn.append(viz.plot_query_attention(means[run.label], run.data.x_test[index], query_pixel(run, p), 0,
                                                  zoom=p.zoom, max_heads=p.max_heads, title=title,
                                                  path=out.figure(f"query_mean_{run.slug}"),
                                                  what=f"mean over test images 0-{n - 1} (test image {index} shown)"))
        _done(drawn, show)
    return means


def offset_figures(runs: list[TrainedRun], means: dict[str, list[LayerMaps]], p: VizParams, out: Outputs,
                   show: Callable[[], object] | None = None) -> None:
    """Per run, its mean attention by offset from the query, over all query pixels (figure `offsets_<run>`)."""
    for run in runs:
        fig = viz.plot_offset_average(means[run.label], max_heads=p.max_heads,
                                      title=f"{run.label}: {run.data.name}, profile {p.profile}",
                                      path=out.figure(f"offsets_{run.slug}"))
        _done([fig], show)


# -- how convolutional each layer is ---------------------------------------------------------------------
def conv_likeness(runs: list[TrainedRun], means: dict[str, list[LayerMaps]], p: VizParams,
                  device: str) -> pd.DataFrame:
    """attention_maps.conv_likeness of every run on the first average_images test images, one row per head, with
    the run's label, run_id, model, variant, dataset and profile (empty without runs)."""
    tables = []
    for run in runs:
        layers = means[run.label]
        if not all(layer.normalized for layer in layers):
            # SAN patchwise: its weights are no probabilities and are normalised per image, so each image's are
            # needed; probabilities average linearly, and their mean over the images gives the same shares
            layers = attention_maps(run.load(device), run.images(0, p.average_images).to(device))
        tables.append(am.conv_likeness(layers).assign(run=run.label, run_id=run.run.run_id, model=run.run.model,
                                                      variant=run.run.variant, dataset=run.data.name,
                                                      profile=p.profile))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def likeness_figure(likeness: pd.DataFrame, p: VizParams, out: Outputs):
    """The figure `conv_likeness`: each head's share on its top offset, and each layer's distinct offsets."""
    return viz.plot_conv_likeness(likeness, out.figure("conv_likeness"),
                                  subtitle=f"{likeness['dataset'].iloc[0]}, profile {p.profile}, "
                                           f"{p.average_images} test images")


def likeness_per_layer(likeness: pd.DataFrame) -> pd.DataFrame:
    """Per run and layer: the mean and least share on the heads' top offsets, the uniform share, the distinct
    offsets its heads cover and how many heads it has."""
    return likeness.groupby(["run", "layer", "layer_name"], sort=False).agg(
        mean_top_mass=("top_mass", "mean"), min_top_mass=("top_mass", "min"), uniform_mass=("uniform_mass", "first"),
        distinct_offsets=("distinct_offsets", "first"), heads=("heads", "first")).reset_index()


# -- the static explorer page ----------------------------------------------------------------------------
def write_explorer_page(runs: list[TrainedRun], own_path: Path | None, means: dict[str, list[LayerMaps]],
                        p: VizParams, device: str, out: Outputs) -> str:
    """Write explorer.html: every run on page_images test images (from image_index on, one of each class first)
    and your image (own_path), with the mean attention `means`; one line saying what was written."""
    if not runs:
        return "no explorer.html written: no trained runs"
    own = [(own_path.name, open_image(own_path))] if own_path is not None else []
    shown = explore.pick_test_images(first_view(runs), p.page_images, p.image_index)
    page, size, what = explore.write_page(out.explorer, runs, shown, own, p.average_images, means=means,
                                          device=device, source=f"Written by notebook 07 ({', '.join(p.experiments)}).")
    return f"wrote {page} ({explore.human_size(size)}): {what}"
