"""Figures: the contours of a head's attention enclose the mass they claim."""
import numpy as np
import pandas as pd

from attnlib import viz


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
