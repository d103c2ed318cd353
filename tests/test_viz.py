"""Figures: the contours of a head's attention enclose the mass they claim; every figure is written by viz.save.

Covers attnlib.viz: the ellipses enclose 50% and 90% of a Gaussian's mass (sampled), and the centers figure
draws two contours per head when the inverse covariances are given; viz.save creates the folder and writes
at 120 dpi, and no other code writes a figure; the package keeps every public name at its top; Theorem 1's
figures are drawn and written through save. (Notebook 07's figures are exercised in test_explorer.py.)
"""
from pathlib import Path

import matplotlib.pyplot
import matplotlib.text
import numpy as np
import pandas as pd
import torch
from matplotlib.image import imread
from torch import nn

from attnlib import conv_as_attention as ca
from attnlib import viz
from attnlib.evidence import theorem1
from attnlib.viz import HeadPanel, image_for_display

ROOT = Path(__file__).resolve().parent.parent


def test_gaussian_contours_enclose_half_and_ninety_percent_of_the_mass():
    rng = np.random.default_rng(0)
    a = np.array([[1.3, 0.4], [-0.2, 0.7]])
    inv_cov = a.T @ a  # an anisotropic Sigma^-1
    center = np.array([1.5, -2.0])
    samples = rng.multivariate_normal(center, np.linalg.inv(inv_cov), size=200_000)
    d = samples - center
    maha = np.einsum("ni,ij,nj->n", d, inv_cov, d)
    for mass in (0.5, 0.9):
        rows, cols = viz.gaussian_contour(center, inv_cov, mass)
        pts = np.stack([rows, cols], 1) - center
        level = np.einsum("ni,ij,nj->n", pts, inv_cov, pts)
        assert np.allclose(level, level[0])  # one ellipse of constant Mahalanobis radius
        assert abs((maha < level[0]).mean() - mass) < 0.005  # ... that holds `mass` of the Gaussian


def test_plot_centers_draws_two_contours_per_head_when_covariances_are_given(tmp_path):
    rows = [dict(model="m", variant="v", layer=1, head=h, row=r, col=c, inv_cov_rr=2.0, inv_cov_rc=0.0, inv_cov_cc=2.0)
            for h, (r, c) in enumerate([(0, 1), (-1, 0), (1, 1)], start=1)]
    fig = viz.plot_centers(pd.DataFrame(rows), tmp_path / "c.png")
    assert len(fig.axes[0].lines) == 1 + 3 * 2  # the query marker, then 50% and 90% per head
    assert (tmp_path / "c.png").stat().st_size > 1000


def test_save_creates_the_folder_and_writes_at_120_dpi(tmp_path):
    fig = viz.plt.figure(figsize=(2, 1))
    path = tmp_path / "new" / "deeper" / "f.png"
    assert viz.save(fig, path) is fig and viz.save(fig, None) is fig  # None: nothing written
    assert imread(path).shape[:2] == (120, 240)  # 1 x 2 inches at 120 dpi
    assert list(tmp_path.rglob("*.png")) == [path]
    viz.plt.close(fig)


def test_figures_are_written_only_by_viz_save():
    writers = {str(f.relative_to(ROOT)) for f in (ROOT / "attnlib").rglob("*.py") if ".savefig(" in f.read_text()}
    assert writers == {"attnlib/viz/saving.py"}


def test_the_package_keeps_every_public_name_at_the_top():
    assert viz.plt is matplotlib.pyplot and (HeadPanel, image_for_display) == (viz.HeadPanel, viz.image_for_display)
    assert all(callable(getattr(viz, name)) for name in viz.__all__ if name not in ("DPI", "PAGE_WIDTH", "SMALLEST_TEXT"))


def test_theorem_1_figures_are_drawn_and_written_through_save(tmp_path):
    image = torch.rand(1, 3, 6, 7, dtype=torch.float64)
    convs = ca.example_convolutions(3, blur_kernel_size=3, random_kernel_size=3, random_out_channels=2)
    out = tmp_path / "figures"  # not there yet: save creates it
    fig = viz.plot_cases(image[0], theorem1.case_outputs(convs, image), out / "cases.png", title="t")
    assert len(fig.axes) == 3 * 4 + 3  # four panels per case, and a colour bar beside each difference
    layer = ca.attention_from_conv(convs["random"], (6, 7))
    assert len(viz.plot_head_maps(layer, (0, 0), image.float(), out / "heads.png").axes) == 9
    sweep = ca.construction_error(nn.Conv2d(1, 1, 3, padding=1), (5, 5), [1.0, 10.0], ["float64"])
    viz.plot_error_vs_alpha(sweep, out / "alpha.png")
    assert all((out / name).stat().st_size > 1000 for name in ("cases.png", "heads.png", "alpha.png"))
    viz.plt.close("all")


# -- legibility: every figure fits the page it is shown on, at a size its text can be read ---------------------------
RUNS = [("sa_quadratic", "9 heads"), ("sa_quadratic", "16 heads"), ("sa_learned", "9 heads"),
        ("sa_learned_content", "9 heads"), ("sa_quadratic", "9 heads, shuffled labels"),
        ("sa_learned", "9 heads, shuffled labels"), ("vit", "4 heads"), ("vit_plain", "4 heads"),
        ("san_pairwise", "standard"), ("san_patchwise", "standard"), ("resnet18", "standard"),
        ("sa_quadratic_aniso", "9 heads"), ("sa_quadratic_aniso", "16 heads")]


def _figures(tmp_path) -> dict:
    """Every figure of the package, drawn from data the size of the quick profile's (13 runs, up to 16 heads)."""
    rng = np.random.default_rng(0)
    metrics = pd.DataFrame([dict(model=m, variant=v, seed=s, epoch=e, test_acc=0.1 + 0.15 * e + 0.02 * rng.random(),
                                 dataset="fashion_mnist", profile="quick")
                            for m, v in RUNS for s in (0, 1, 2) for e in range(1, 5)])
    attention_runs = [(m, v) for m, v in RUNS if m.startswith(("sa_", "vit"))]
    heads_of = {v: int(v.split()[0]) if v[0].isdigit() else 4 for _, v in attention_runs}
    centers = pd.DataFrame([dict(model=m, variant=v, seed=s, run_id=f"{m}-{v}-{s}", epoch=e, layer=layer, head=h,
                                 row=rng.normal(), col=rng.normal(), inv_cov_rr=1.0, inv_cov_rc=0.0, inv_cov_cc=1.0)
                            for m, v in [("sa_quadratic", "9 heads"), ("sa_quadratic", "9 heads, shuffled labels")]
                            for s in ((0, 1, 2) if "shuffled" not in v else (0,)) for e in range(4)
                            for layer in (1, 2, 3) for h in range(1, 10)])
    attention = pd.DataFrame([dict(model=m, variant=v, run_id=f"{m}-{v}", layer=layer, epoch=e, head=h,
                                   top_mass=rng.random(), mean_distance=3 * rng.random(), uniform_mass=0.02,
                                   uniform_distance=3.6)
                              for m, v in attention_runs for layer in range(3) for e in range(5)
                              for h in range(heads_of[v])])
    likeness = pd.DataFrame([dict(run=f"{m} ({v})", layer=layer, layer_name=f"stage {layer + 1}, block 1", head=h,
                                  top_mass=rng.random(), distinct_offsets=5, heads=16)
                             for m, v in RUNS for layer in range(4) for h in range(16)])
    timing = pd.DataFrame([dict(model=m, variant=v, mode=mode, batch=b, precision=p, images_per_s=rng.random() * 50,
                                latency_ms=rng.random() * 100)
                           for m, v in RUNS for mode, b in (("train", 8), ("infer", 8), ("latency", 1))
                           for p in ("fp32", "bf16")])
    from attnlib.evidence.attention_maps import LayerMaps
    layers = [LayerMaps(f"stage {i + 1}, block 1", torch.rand(1, 16, 64, 64).softmax(-1), (8, 8), 4) for i in range(4)]
    image = torch.rand(3, 32, 32)
    out = tmp_path
    return {
        "curves": viz.plot_curves(metrics, "All models", out / "curves.png",
                                  published={"ResNet18 (CIFAR-10)": 0.938, "quadratic (CIFAR-10)": 0.938,
                                             "learned (CIFAR-10)": 0.918, "learned + content (CIFAR-10)": 0.871}),
        "centers": viz.plot_centers(centers[centers["epoch"] == 3], out / "centers.png"),
        "center paths": viz.plot_center_trajectories(centers, 1, out / "paths.png", subtitle="fashion_mnist, quick"),
        "development": viz.plot_attention_development(attention, out / "development.png", subtitle="quick"),
        "conv-likeness": viz.plot_conv_likeness(likeness, out / "likeness.png", subtitle="quick"),
        "query": viz.plot_query_attention(layers, image, (16, 16), title="san_pairwise", path=out / "query.png"),
        "offsets": viz.plot_offset_average(layers, title="san_pairwise", path=out / "offsets.png"),
        "timing": viz.plot_timing(timing, out / "timing.png", subtitle="quick"),
        "taps": viz.plot_taps(centers, out / "taps.png", within=1.0, subtitle="quick"),
    }


def test_every_figure_fits_the_page_with_text_that_can_be_read(tmp_path):
    """No figure is wider than viz.PAGE_WIDTH (the report shows it at its own size, not shrunk), no text is smaller
    than viz.SMALLEST_TEXT points, and none is cut off at the figure's edge (a clipped title)."""
    for name, fig in _figures(tmp_path).items():
        width, height = fig.get_size_inches()
        assert width <= viz.PAGE_WIDTH + 1e-6, f"{name}: {width:.1f} in wide"
        fig.canvas.draw()
        for text in fig.findobj(matplotlib.text.Text):
            if not text.get_visible() or not text.get_text().strip():
                continue
            if text.axes is not None and not text.axes.get_visible():
                continue
            assert text.get_fontsize() >= viz.SMALLEST_TEXT, f"{name}: {text.get_text()!r} at {text.get_fontsize()} pt"
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())  # everything drawn, in inches
        assert drawn.x0 >= -0.02 and drawn.y0 >= -0.02 and drawn.x1 <= width + 0.02 and drawn.y1 <= height + 0.02, \
            f"{name}: something is cut off at the figure's edge ({drawn} in a {width:.2f} x {height:.2f} in figure)"
    viz.plt.close("all")


def test_the_accuracy_curves_keep_their_legend_and_published_labels_off_each_other(tmp_path):
    fig = _figures(tmp_path)["curves"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # beside the curves
    labels = [t for t in ax.texts if "CIFAR-10" in t.get_text()]
    assert len(labels) == 3  # one per published accuracy: the two at 0.938 share one
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    lines = {tuple(line.get_color()) if not isinstance(line.get_color(), str) else line.get_color()
             for line in ax.get_legend().get_lines()}
    assert len(lines) == len(RUNS)  # a colour of its own for every run
    assert ax.get_title().count("fashion_mnist") == 1
    viz.plt.close("all")
