"""Notebook 07's interactive explorer, the part that computes and draws: every head's attention for a query
pixel, of any trained run, layer and test image, the mean over test images, or your own image.

What is shown is a `View` (run, layer, image, query pixel, mean or one image, zoom, your image). The attention
of a run on one image (or on the mean over N images, or on your image) is computed for all layers in one forward
pass when first shown and kept (`AttentionCache`); changing the query or the layer only indexes it, and `render`
redraws the panels in place. It opens on `first_view`: the quadratic model, layer 1, a query pixel on the object
of the first test image. The ipywidgets controls are attnlib.explorer.widget; the static page that needs no
kernel is attnlib.explorer.page. The runs it shows are found by attnlib.explorer.trained_runs.
"""
from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

from attnlib.data import normalize
from attnlib.evidence.attention_maps import LayerMaps, attention_maps, mean_attention
from attnlib.explorer.image import open_image, prepare_image, query_on_object
from attnlib.explorer.trained_runs import TrainedRun, first_view
from attnlib.viz import HeadPanel, image_for_display


@dataclass
class View:
    """What the explorer shows."""
    run: str                # the run's label
    row: int                # the query pixel
    col: int
    layer: int = 0          # 0: the first layer
    image: int = 0          # the test image
    average: bool = False   # the mean over the first test images instead (drawn over test image 0)
    zoom: bool = False      # the 7x7 token neighbourhood of the query only
    own: bool = False       # your image instead of the test image, once one is loaded (not with `average`)


@dataclass(frozen=True)
class Source:
    """What one forward pass is computed on: a run's test image, its mean over test images, or your image."""
    run: str                # the run's label
    kind: str               # "test", "mean" or "own"
    image: int = 0          # the test image, for kind "test"
    own_name: str = ""      # your image's name, for kind "own"


class AttentionCache:
    """Each run's model, loaded when first needed, and its attention (all layers) on a Source, computed when first
    asked for; the `size` most recently used are kept. Your image is held once and prepared for each run."""

    def __init__(self, runs: dict[str, TrainedRun], average_images: int, device: str, size: int):
        self.runs, self.average_images, self.device, self.size = runs, average_images, device, size
        self.own_image, self.own_name = None, ""
        self._models: dict[str, nn.Module] = {}
        self._own_pixels: dict[str, torch.Tensor] = {}
        self._maps: OrderedDict[Source, list[LayerMaps]] = OrderedDict()  # least recently used first

    def model(self, label: str) -> nn.Module:
        if label not in self._models:
            self._models[label] = self.runs[label].load(self.device)
        return self._models[label]

    def set_own_image(self, img, name: str) -> None:
        """Take `img` (a PIL image) as your image, dropping the maps of the one before."""
        self.own_image, self.own_name, self._own_pixels = img, name, {}
        for source in [s for s in self._maps if s.kind == "own"]:
            del self._maps[source]

    def own_pixels(self, label: str) -> torch.Tensor:
        """Your image as run `label` takes it before normalisation: (C, H, W) uint8."""
        if self.own_image is None:
            raise ValueError("no image of yours loaded: set_own_image(path) first")
        if label not in self._own_pixels:
            data = self.runs[label].data
            self._own_pixels[label] = prepare_image(self.own_image, data.image_size, data.channels)
        return self._own_pixels[label]

    def averaged(self, label: str) -> int:
        """How many test images the mean attention of a run averages over."""
        return min(self.average_images, len(self.runs[label].data.x_test))

    def layers(self, source: Source) -> list[LayerMaps]:
        if source not in self._maps:
            run, model = self.runs[source.run], self.model(source.run)
            if source.kind == "mean":
                x = run.images(0, self.averaged(source.run))
                self._maps[source] = mean_attention(model, x.to(self.device))
            else:
                x = (normalize(self.own_pixels(source.run)[None], run.data.mean, run.data.std) if source.kind == "own"
                     else run.images(source.image, 1))
                self._maps[source] = attention_maps(model, x.to(self.device))
            while len(self._maps) > self.size:
                self._maps.popitem(last=False)
        self._maps.move_to_end(source)
        return self._maps[source]


@dataclass
class _Drawn:
    """The figure drawn for one source and layer, whose panels `render` updates in place."""
    figure: Figure
    image_panel: HeadPanel
    panels: list[HeadPanel]
    source: Source
    layer: int


class AttentionExplorer:
    """Every head's attention for the query pixel of `state` (a View), drawn by `render` as PNG.

    Opens on `first_view(runs)`, layer 1, with the query pixel on the object of test image 0 (or at `query`).
    `set_own_image` adds a picture of yours, explored like a test image; `select_run` moves to another run.
    In a notebook, attnlib.explorer.widget.ExplorerWidget(explorer).box holds its controls and its picture.
    """

    def __init__(self, runs: list[TrainedRun], average_images: int = 100, max_heads: int = 16, device: str = "cpu",
                 cache_size: int = 32, query: tuple[int, int] | None = None):
        if not runs:
            raise ValueError("no trained runs to explore: run the training notebooks (01-04) of this profile first")
        self.runs = {r.label: r for r in runs}
        self.max_heads = max_heads
        self.cache = AttentionCache(self.runs, average_images, device, cache_size)
        self._drawn: _Drawn | None = None
        first = first_view(runs)
        side = first.data.image_size
        row, col = query if query is not None else query_on_object(first.data.x_test[0])
        self.state = View(first.label, min(row, side - 1), min(col, side - 1))

    # -- what is shown ----------------------------------------------------------------------------
    def model(self, label: str) -> nn.Module:
        return self.cache.model(label)

    @property
    def average_images(self) -> int:
        """How many test images the mean is over, at most."""
        return self.cache.average_images

    @property
    def own_name(self) -> str:
        return self.cache.own_name

    @property
    def has_own_image(self) -> bool:
        return self.cache.own_image is not None

    def set_own_image(self, source, name: str | None = None) -> str:
        """Explore a picture of yours (a path, or the bytes of a file) like a test image: it is resized and
        cropped to each run's input, converted to its channels and normalised like its training data.
        Raises NotAnImage (one line) for a file that is not an image. Returns its name."""
        img = open_image(source, name)
        self.cache.set_own_image(img, name or (Path(source).name if isinstance(source, (str, Path))
                                               else "uploaded image"))
        self._drawn = None  # a new image under the same name: drawn afresh
        self.state.own = True
        return self.own_name

    def own_pixels(self, label: str | None = None) -> torch.Tensor:
        """Your image as run `label` takes it before normalisation: (C, H, W) uint8."""
        return self.cache.own_pixels(label or self.state.run)

    def shows_own(self) -> bool:
        return self.state.own and self.has_own_image and not self.state.average

    def limits(self) -> dict[str, int]:
        """The largest test image index and query row and column of the present run."""
        data = self.runs[self.state.run].data
        return {"image": len(data.x_test) - 1, "row": data.image_size - 1, "col": data.image_size - 1}

    def select_run(self, label: str) -> None:
        """Show run `label` from its first layer, the image and the query pixel moved within its limits."""
        self.state.run, self.state.layer = label, 0
        for name, top in self.limits().items():
            setattr(self.state, name, min(getattr(self.state, name), top))

    def source(self, label: str | None = None, image: int | None = None, average: bool | None = None,
               own: bool | None = None) -> Source:
        """What the maps of run `label` are computed on (by default, as the state says)."""
        label = label or self.state.run
        if self.state.average if average is None else average:
            return Source(label, "mean")
        if self.shows_own() if own is None else own and self.has_own_image:
            return Source(label, "own", own_name=self.own_name)
        return Source(label, "test", self.state.image if image is None else image)

    def layers(self, label: str | None = None, image: int | None = None, average: bool | None = None,
               own: bool | None = None) -> list[LayerMaps]:
        """All layers' attention of a run for one test image, your image, or the mean over `average_images`."""
        return self.cache.layers(self.source(label, image, average, own))

    def layer_options(self, label: str | None = None) -> list[tuple[str, int]]:
        """(name, index) of each layer of run `label`."""
        return [(layer.name, i) for i, layer in enumerate(self.layers(label or self.state.run))]

    def averaged(self, label: str | None = None) -> int:
        """How many test images the mean attention of a run averages over."""
        return self.cache.averaged(label or self.state.run)

    def picture(self) -> torch.Tensor:
        """The image the panels are drawn over: your image, or the test image (image 0 for the mean)."""
        if self.shows_own():
            return self.own_pixels()
        return self.runs[self.state.run].data.x_test[0 if self.state.average else self.state.image]

    def current(self) -> tuple[LayerMaps, tuple[int, int], np.ndarray]:
        """(layer, query token, (heads, ...) maps) for the present state."""
        layers = self.layers()
        layer = layers[min(self.state.layer, len(layers) - 1)]
        token = layer.pixel_to_token(self.state.row, self.state.col)
        return layer, token, layer.query_map(token, 0)

    def describe(self) -> str:
        layer, token, maps = self.current()
        s, data = self.state, self.runs[self.state.run].data
        what = (f"mean over {self.averaged()} test images" if s.average
                else f"your image {self.own_name}" if self.shows_own()
                else f"test image {s.image} ({data.classes[int(data.y_test[s.image])]})")
        peak = layer.key_token(token, int(maps[0].reshape(-1).argmax()))
        return (f"{s.run} · {layer.name} · query pixel ({s.row}, {s.col}) = token ({token[0]}, {token[1]}) · {what} "
                f"· head 1 attends most to token ({peak[0]}, {peak[1]})")

    # -- drawing --------------------------------------------------------------------------------
    def _draw(self, layer: LayerMaps) -> _Drawn:
        """A new figure: the picture, then one panel per head (at most max_heads), up to 9 a row."""
        shown = min(layer.heads, self.max_heads)
        cols = min(shown + 1, 9)
        rows = -(-(shown + 1) // cols)
        fig = Figure(figsize=(1.6 * cols, 1.7 * rows + 0.3), dpi=90)
        FigureCanvasAgg(fig)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        img = image_for_display(self.picture())
        image_panel = HeadPanel(axes[0], img, gray=False)
        image_panel.overlay.set_visible(False)
        axes[0].set_title(f"image 0 (of {self.averaged()} averaged)" if self.state.average
                          else "your image" if self.shows_own() else "query", fontsize=7)
        panels = [HeadPanel(ax, img) for ax in axes[1:shown + 1]]
        for head, ax in enumerate(axes[1:shown + 1]):
            ax.set_title(f"head {head + 1}", fontsize=7)
        for ax in axes[shown + 1:]:
            ax.axis("off")
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.05, hspace=0.2)
        return _Drawn(fig, image_panel, panels, self.source(), self.state.layer)

    def render(self) -> bytes:
        """The present state as PNG: the figure is drawn anew for a new source or layer, else updated in place."""
        layer, token, maps = self.current()
        drawn = self._drawn
        if drawn is None or (drawn.source, drawn.layer) != (self.source(), self.state.layer):
            drawn = self._drawn = self._draw(layer)
        drawn.image_panel.mark(layer, token)
        for head, panel in enumerate(drawn.panels):
            panel.update(layer, token, maps[head], self.state.zoom)
        more = f" (first {len(drawn.panels)} of {layer.heads} heads)" if len(drawn.panels) < layer.heads else ""
        drawn.figure.suptitle(f"{self.state.run}, {layer.name}{more}", fontsize=8)
        buf = io.BytesIO()
        drawn.figure.canvas.print_png(buf)
        return buf.getvalue()
