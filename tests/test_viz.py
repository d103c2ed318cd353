"""Figures: the contours of a head's attention enclose the mass they claim; every figure is written by viz.save.

Covers attnlib.viz: the ellipses enclose 50% and 90% of a Gaussian's mass (sampled), and the centers figure
draws two contours per head when the inverse covariances are given; viz.save creates the folder and writes
at 120 dpi, and no other code writes a figure; the package keeps every public name at its top; Theorem 1's
figures are drawn and written through save. (Notebook 07's figures are exercised in test_explorer.py.)
"""
from pathlib import Path

import matplotlib.pyplot
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
    assert all(callable(getattr(viz, name)) for name in viz.__all__ if name != "DPI")


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
