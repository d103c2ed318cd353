"""Notebook 07's inputs and its interactive part: the trained runs of a profile, and an ipywidgets
explorer that shows every head's attention for a query pixel picked with sliders.

`trained_runs` finds the runs of notebooks 01-04 from their parameter files (the same plan, hence the
same run ids, as the notebooks that trained them) and keeps those whose checkpoint exists under
results/<profile>/checkpoints/. `AttentionExplorer` computes a model's attention once per image (or
once for the mean over N images, or for your own image) and layer, only when it is first shown, keeps
it, and on a slider move only indexes it and redraws the panels in place. It opens on `first_view`:
the quadratic model, layer 1, a query pixel on the object of the first test image. The static page
that needs no kernel is attnlib.explore.
"""
from __future__ import annotations

import dataclasses
import html
import io
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from attnlib import experiment, params, results
from attnlib.attention_maps import LayerMaps, attention_maps
from attnlib.data import Dataset, normalize
from attnlib.explore_image import NotAnImage, open_image, prepare_image, query_on_object
from attnlib.viz import HeadPanel, image_for_display

# The runs the explorers open on, best first: the quadratic heads show the kernel-like grid most clearly;
# content-based maps depend on the image and say less on one picture.
FIRST_VIEW = ("sa_quadratic", "sa_quadratic_aniso", "sa_learned")


@dataclass
class TrainedRun:
    experiment: str           # the notebook that trained it, e.g. "02_quadratic"
    run: experiment.PlannedRun
    params: params.TrainParams
    data: Dataset
    checkpoint: Path
    epochs_done: int = 0
    final_test_acc: float = float("nan")

    @property
    def label(self) -> str:
        return f"{self.run.model} ({self.run.variant}, seed {self.run.seed})"

    def describe(self) -> str:
        return (f"{self.label}: run {self.run.run_id} of {self.experiment}, {self.data.name}, profile "
                f"{self.params.profile}, {self.epochs_done} of {self.run.train.epochs} epochs, seed {self.run.seed}, "
                f"test accuracy {self.final_test_acc:.3f}")

    def load(self, device: str = "cpu") -> nn.Module:
        return experiment.load_trained(self.params, self.run, device)

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
                 data_root: str | Path = "data", dataset: str = "") -> tuple[list[TrainedRun], list[str]]:
    """(runs with a checkpoint, one line per planned run without one) of the given notebooks, planned
    from params/<profile>/<notebook>.yaml with this results_dir (and dataset, when given)."""
    found, missing, loaded = [], [], {}
    for name in experiments:
        path = Path(params_dir) / profile / f"{name}.yaml"
        if not path.exists():
            missing.append(f"{name}: no parameter file {path}")
            continue
        overrides = {"profile": profile, "results_dir": str(results_dir), "data_root": str(data_root)}
        if dataset:
            overrides["dataset"] = dataset
        p = params.load_with(path, overrides)
        key = (p.dataset, p.data_root, p.train_subset, p.test_subset, p.synthetic_image_size)
        if key not in loaded:
            loaded[key] = experiment.load_data(p)
        data = loaded[key]
        metrics = results.read_metrics(results.metrics_path(results_dir, profile, name))
        for run in experiment.plan(p, data):
            ckpt = results.checkpoint_path(results_dir, profile, run.run_id)
            if not ckpt.exists():
                missing.append(f"{name}: {run.model} ({run.variant}), seed {run.seed}: no checkpoint {ckpt.name} "
                               f"(run notebook {name} of profile {profile} first)")
                continue
            rows = metrics[metrics["run_id"] == run.run_id].sort_values("epoch")
            found.append(TrainedRun(name, run, p, data, ckpt, int(rows["epoch"].max()) if len(rows) else 0,
                                    float(rows["test_acc"].iloc[-1]) if len(rows) else float("nan")))
    return found, missing


def check_params(p: params.VizParams, runs: list[TrainedRun]) -> None:
    """Notebook 07's checks that need what was trained: the layer whose centers are followed must be one the
    runs of centers_experiment recorded, the query pixel must lie in every run's test images and image_index
    among them. Each failure is a ParamsError in one line naming params/<profile>/07_visualizations.yaml and the
    key, instead of an empty figure or a silently moved pixel."""
    where = str(Path(p.params_dir) / p.profile / "07_visualizations.yaml")
    centers = results.read_metrics(results.centers_path(p.results_dir, p.profile, p.centers_experiment),
                                   results.CENTER_COLUMNS)
    planned = {r.run.run_id for r in runs if r.experiment == p.centers_experiment}
    centers = centers[centers["run_id"].isin(planned)] if planned else centers
    if not centers.empty and p.trajectory_layer > int(centers["layer"].max()):
        layers = int(centers["layer"].max())
        params._fail(where, "trajectory_layer", f"is {p.trajectory_layer}, but the runs of {p.centers_experiment} "
                     f"recorded the centers of {layers} layer(s); pick one of 1-{layers}")
    if not runs:
        return
    smallest = min(runs, key=lambda r: r.data.image_size)
    size = smallest.data.image_size
    for key in ("query_row", "query_col"):
        if getattr(p, key) >= size:
            params._fail(where, key, f"is {getattr(p, key)}, outside the {size}x{size} test images of "
                         f"{smallest.label}; pick one of 0-{size - 1}, or -1 for the middle")
    fewest = min(runs, key=lambda r: len(r.data.x_test))
    if p.image_index >= len(fewest.data.x_test):
        params._fail(where, "image_index", f"is {p.image_index}, but {fewest.label} has {len(fewest.data.x_test)} "
                     f"test images; pick one of 0-{len(fewest.data.x_test) - 1}")


@torch.no_grad()
def mean_attention(model: nn.Module, images: torch.Tensor, batch_size: int = 50) -> list[LayerMaps]:
    """attention_maps averaged over `images`, one batch at a time (the paper averages over 100 test
    images for the content-based models): each LayerMaps holds a batch of one, the mean."""
    if len(images) == 0:
        raise ValueError("mean_attention needs at least one image")
    total: list[LayerMaps] | None = None
    for start in range(0, len(images), batch_size):
        chunk = attention_maps(model, images[start:start + batch_size], batch_size)
        sums = [layer.weights.double().sum(0, keepdim=True) for layer in chunk]
        if total is None:
            total = [dataclasses.replace(layer, weights=s) for layer, s in zip(chunk, sums)]
        else:
            for layer, s in zip(total, sums):
                layer.weights += s
    return [dataclasses.replace(layer, weights=(layer.weights / len(images)).float()) for layer in total]


class AttentionExplorer:
    """Sliders for the query pixel's row and column; choices of run, layer, image and averaging, and an
    upload for your own image.

    Attention is computed once per (run, image) or (run, mean over `average_images` images), for all
    layers in one forward pass, when first shown, and cached; moving a slider indexes the cache and
    updates the drawn panels in place. Opens on `first_view(runs)`, layer 1, with the query pixel on the
    object of test image 0 (or at `query`). `set_own_image` adds a picture of yours, explored like a
    test image. `widget()` returns the ipywidgets box; `render()` the current figure as PNG.
    """
    def __init__(self, runs: list[TrainedRun], average_images: int = 100, max_heads: int = 16, device: str = "cpu",
                 cache_size: int = 32, query: tuple[int, int] | None = None):
        if not runs:
            raise ValueError("no trained runs to explore: run the training notebooks (01-04) of this profile first")
        self.runs = {r.label: r for r in runs}
        self.average_images, self.max_heads, self.device, self.cache_size = average_images, max_heads, device, cache_size
        self._models: dict[str, nn.Module] = {}
        self._maps: OrderedDict[tuple, list[LayerMaps]] = OrderedDict()  # least recently used first
        self._figure = None
        self.own_name, self._own_image, self._own_pixels = "", None, {}
        first = first_view(runs)
        side = first.data.image_size
        row, col = query if query is not None else query_on_object(first.data.x_test[0])
        self.state = dict(run=first.label, layer=0, image=0, average=False, zoom=False, own=False,
                          row=min(row, side - 1), col=min(col, side - 1))

    # -- data -----------------------------------------------------------------------------------
    def model(self, label: str) -> nn.Module:
        if label not in self._models:
            self._models[label] = self.runs[label].load(self.device)
        return self._models[label]

    # -- your own image ---------------------------------------------------------------------------
    def set_own_image(self, source, name: str | None = None) -> str:
        """Explore a picture of yours (a path, or the bytes of a file) like a test image: it is resized and
        cropped to each run's input, converted to its channels and normalised like its training data.
        Raises NotAnImage (one line) for a file that is not an image. Returns its name."""
        img = open_image(source, name)
        self.own_name = name or (Path(source).name if isinstance(source, (str, Path)) else "uploaded image")
        self._own_image, self._own_pixels = img, {}
        for key in [k for k in self._maps if k[1:2] == ("own",)]:
            del self._maps[key]
        self._figure = None
        self.state["own"] = True
        return self.own_name

    def own_pixels(self, label: str | None = None) -> torch.Tensor:
        """Your image as run `label` takes it before normalisation: (C, H, W) uint8."""
        label = label or self.state["run"]
        if self._own_image is None:
            raise ValueError("no image of yours loaded: set_own_image(path) first")
        if label not in self._own_pixels:
            data = self.runs[label].data
            self._own_pixels[label] = prepare_image(self._own_image, data.image_size, data.channels)
        return self._own_pixels[label]

    def shows_own(self) -> bool:
        return bool(self.state["own"]) and self._own_image is not None and not self.state["average"]

    def picture(self) -> torch.Tensor:
        """The image the panels are drawn over: your image, or the test image (image 0 for the mean)."""
        run = self.runs[self.state["run"]]
        if self.shows_own():
            return self.own_pixels()
        return run.data.x_test[0 if self.state["average"] else self.state["image"]]

    def layers(self, label: str | None = None, image: int | None = None, average: bool | None = None,
               own: bool | None = None) -> list[LayerMaps]:
        """All layers' attention of a run for one test image, your image, or the mean over `average_images`."""
        label = label or self.state["run"]
        average = self.state["average"] if average is None else average
        image = self.state["image"] if image is None else image
        own = self.shows_own() if own is None else own and self._own_image is not None
        key = (label, "mean") if average else (label, "own", self.own_name) if own else (label, image)
        if key not in self._maps:
            run, model = self.runs[label], self.model(label)
            if average:
                self._maps[key] = mean_attention(model, run.images(0, self.averaged(label)).to(self.device))
            elif own:
                x = normalize(self.own_pixels(label)[None], run.data.mean, run.data.std)
                self._maps[key] = attention_maps(model, x.to(self.device))
            else:
                self._maps[key] = attention_maps(model, run.images(image, 1).to(self.device))
            while len(self._maps) > self.cache_size:
                self._maps.popitem(last=False)
        self._maps.move_to_end(key)
        return self._maps[key]

    def averaged(self, label: str | None = None) -> int:
        """How many test images the mean attention of a run averages over."""
        return min(self.average_images, len(self.runs[label or self.state["run"]].data.x_test))

    def current(self) -> tuple[LayerMaps, tuple[int, int], np.ndarray]:
        """(layer, query token, (heads, ...) maps) for the present state."""
        layers = self.layers()
        layer = layers[min(self.state["layer"], len(layers) - 1)]
        token = layer.pixel_to_token(self.state["row"], self.state["col"])
        return layer, token, layer.query_map(token, 0)

    def describe(self) -> str:
        layer, token, maps = self.current()
        run = self.runs[self.state["run"]]
        what = (f"mean over {self.averaged()} test images" if self.state["average"]
                else f"your image {self.own_name}" if self.shows_own()
                else f"test image {self.state['image']} ({run.data.classes[int(run.data.y_test[self.state['image']])]})")
        peak = layer.key_token(token, int(maps[0].reshape(-1).argmax()))
        return (f"{self.state['run']} · {layer.name} · query pixel ({self.state['row']}, {self.state['col']}) = token "
                f"({token[0]}, {token[1]}) · {what} · head 1 attends most to token ({peak[0]}, {peak[1]})")

    # -- drawing --------------------------------------------------------------------------------
    def _build_figure(self):


        layer, token, maps = self.current()
        shown = min(layer.heads, self.max_heads)
        cols = min(shown + 1, 9)
        rows = -(-(shown + 1) // cols)
        fig = Figure(figsize=(1.6 * cols, 1.7 * rows + 0.3), dpi=90)
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        img = image_for_display(self.picture())
        image_panel = HeadPanel(axes[0], img, gray=False)
        image_panel.overlay.set_visible(False)
        axes[0].set_title(f"image 0 (of {self.averaged()} averaged)" if self.state["average"]
                          else "your image" if self.shows_own() else "query", fontsize=7)
        panels = []
        for head in range(shown):
            panels.append(HeadPanel(axes[head + 1], img))
            axes[head + 1].set_title(f"head {head + 1}", fontsize=7)
        for ax in axes[shown + 1:]:
            ax.axis("off")
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.2)
        self._figure = (fig, image_panel, panels, self._figure_key())

    def _figure_key(self) -> tuple:
        return (self.state["run"], self.state["layer"], self.state["average"], self.state["image"],
                self.own_name if self.shows_own() else None)

    def render(self) -> bytes:
        key = self._figure_key()
        if self._figure is None or self._figure[3] != key:
            self._build_figure()
        fig, image_panel, panels, _ = self._figure
        layer, token, maps = self.current()
        image_panel.mark(layer, token)
        for head, panel in enumerate(panels):
            panel.update(layer, token, maps[head], self.state["zoom"])
        fig.suptitle(f"{self.state['run']}, {layer.name}" + (f" (first {len(panels)} of {layer.heads} heads)"
                                                             if len(panels) < layer.heads else ""), fontsize=8)
        buf = io.BytesIO()
        fig.canvas.print_png(buf)
        return buf.getvalue()

    # -- widgets --------------------------------------------------------------------------------
    def widget(self):
        import ipywidgets as W

        first = self.runs[self.state["run"]]
        side = first.data.image_size
        style = {"description_width": "initial"}
        run = W.Dropdown(options=list(self.runs), value=self.state["run"], description="model", style=style)
        layer = W.Dropdown(options=self._layer_options(), value=0, description="layer", style=style)
        # a new image costs a forward pass: only on release; the query sliders redraw while dragging
        image = W.IntSlider(value=0, min=0, max=len(first.data.x_test) - 1, description="image", style=style,
                            continuous_update=False)
        average = W.Checkbox(value=False, description=f"average over {self.average_images} images", style=style)
        own = W.Checkbox(value=self.shows_own(), style=style, disabled=self._own_image is None,
                         description=f"your image ({self.own_name})" if self.own_name else "your image")
        upload = W.FileUpload(accept="image/*", multiple=False, description="your image...")
        zoom = W.Checkbox(value=False, description="7x7 zoom", style=style)
        row = W.IntSlider(value=self.state["row"], min=0, max=side - 1, description="query row", style=style)
        col = W.IntSlider(value=self.state["col"], min=0, max=side - 1, description="query col", style=style)
        picture = W.Image(format="png")
        status = W.HTML()
        status.add_class("attention-status")
        picture.add_class("attention-maps")

        def refresh(*_):
            picture.value = self.render()
            status.value = f"<code>{self.describe()}</code>"

        quiet = []  # set while on_run adjusts the other controls: one redraw, not one per control

        def on_run(change):
            run_now = self.runs[change["new"]]
            quiet.append(True)
            try:
                self.state.update(run=change["new"], layer=0)
                layer.options = self._layer_options()
                layer.value = 0
                side = run_now.data.image_size
                for name, w, top in (("image", image, len(run_now.data.x_test) - 1), ("row", row, side - 1),
                                     ("col", col, side - 1)):
                    w.max = top  # ipywidgets clamps the value into the new range
                    self.state[name] = w.value
            finally:
                quiet.clear()
            refresh()

        def setter(name):
            def on_change(change):
                self.state[name] = change["new"]
                if not quiet:
                    refresh()
            return on_change

        run.observe(on_run, names="value")

        def on_upload(change):
            files = change["new"]
            if not files:
                return
            f = files[0]
            try:
                name = self.set_own_image(bytes(f["content"]), f["name"])
            except NotAnImage as err:
                status.value = f"<code>{html.escape(str(err))}</code>"
                return
            quiet.append(True)
            try:
                own.disabled, own.value, own.description = False, True, f"your image ({name})"
            finally:
                quiet.clear()
            refresh()

        for name, w in (("layer", layer), ("image", image), ("average", average), ("zoom", zoom), ("row", row), ("col", col),
                        ("own", own)):
            w.observe(setter(name), names="value")
        upload.observe(on_upload, names="value")
        refresh()
        self.controls = dict(run=run, layer=layer, image=image, average=average, zoom=zoom, row=row, col=col, own=own,
                             upload=upload)
        return W.VBox([W.HBox([run, layer, zoom]), W.HBox([image, average]), W.HBox([own, upload]), W.HBox([row, col]),
                       status, picture])

    def _layer_options(self) -> list[tuple[str, int]]:
        return [(layer.name, i) for i, layer in enumerate(self.layers(self.state["run"]))]
