"""The ipywidgets of notebook 07's explorer: controls that set the fields of an AttentionExplorer's View and show
what it renders (attnlib.explorer.live computes, caches and draws)."""
from __future__ import annotations

import functools
import html
from contextlib import contextmanager

import ipywidgets as W

from attnlib.explorer.image import NotAnImage
from attnlib.explorer.live import AttentionExplorer

STYLE = {"description_width": "initial"}
# the controls that set the View's field of that name
FIELDS = ("layer", "image", "average", "zoom", "row", "col", "own")
LAYOUT = (("run", "layer", "zoom"), ("image", "average"), ("own", "upload"), ("row", "col"))  # rows of controls


def _own_label(name: str) -> str:
    return f"your image ({name})" if name else "your image"


def _controls(ex) -> dict[str, W.Widget]:
    top = ex.limits()
    return dict(
        run=W.Dropdown(options=list(ex.runs), value=ex.state.run, description="model", style=STYLE),
        layer=W.Dropdown(options=ex.layer_options(), value=0, description="layer", style=STYLE),
        # a new image costs a forward pass: only on release; the query sliders redraw while dragging
        image=W.IntSlider(value=0, min=0, max=top["image"], description="image", style=STYLE, continuous_update=False),
        average=W.Checkbox(value=False, description=f"average over {ex.average_images} images", style=STYLE),
        zoom=W.Checkbox(value=False, description="7x7 zoom", style=STYLE),
        row=W.IntSlider(value=ex.state.row, min=0, max=top["row"], description="query row", style=STYLE),
        col=W.IntSlider(value=ex.state.col, min=0, max=top["col"], description="query col", style=STYLE),
        own=W.Checkbox(value=ex.shows_own(), disabled=not ex.has_own_image, description=_own_label(ex.own_name),
                       style=STYLE),
        upload=W.FileUpload(accept="image/*", multiple=False, description="your image..."))


class ExplorerWidget:
    """`box`: the controls (`controls`, by name) over the status line and the picture. Each control sets its field
    of the explorer's View and redraws; a new run or an uploaded image sets several controls, with one redraw."""

    def __init__(self, ex: AttentionExplorer):
        self.ex, self.controls = ex, _controls(ex)
        self.picture, self.status = W.Image(format="png"), W.HTML()
        self.picture.add_class("attention-maps")
        self.status.add_class("attention-status")
        self._quiet = False  # while one change sets other controls too
        for name in FIELDS:
            self.controls[name].observe(functools.partial(self._on_change, name), names="value")
        self.controls["run"].observe(self._on_run, names="value")
        self.controls["upload"].observe(self._on_upload, names="value")
        rows = [W.HBox([self.controls[name] for name in row]) for row in LAYOUT]
        self.box = W.VBox([*rows, self.status, self.picture])
        self.redraw()

    def redraw(self) -> None:
        if not self._quiet:
            self.picture.value, self.status.value = self.ex.render(), f"<code>{html.escape(self.ex.describe())}</code>"

    @contextmanager
    def _one_redraw(self):
        """Controls set inside update the View; the picture is redrawn once, at the end."""
        self._quiet = True
        try:
            yield
        finally:
            self._quiet = False
        self.redraw()

    def _on_change(self, name: str, change) -> None:
        setattr(self.ex.state, name, change["new"])
        self.redraw()

    def _on_run(self, change) -> None:
        with self._one_redraw():
            self.ex.select_run(change["new"])
            self.controls["layer"].options, self.controls["layer"].value = self.ex.layer_options(), 0
            for name, top in self.ex.limits().items():
                self.controls[name].max, self.controls[name].value = top, getattr(self.ex.state, name)

    def _on_upload(self, change) -> None:
        if not change["new"]:
            return
        upload = change["new"][0]
        try:
            name = self.ex.set_own_image(bytes(upload["content"]), upload["name"])
        except NotAnImage as err:
            self.status.value = f"<code>{html.escape(str(err))}</code>"
            return
        own = self.controls["own"]
        with self._one_redraw():
            own.disabled, own.value, own.description = False, True, _own_label(name)
