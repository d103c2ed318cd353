"""Figures, one module per job; every one of them is written by `save` (saving.py), nowhere else.

    training.py      accuracy curves, centers of attention and their paths, attention during training
    maps.py          attention maps of trained models per query pixel and by offset, conv-likeness
    construction.py  Theorem 1's attention layer against its convolution (notebook 00)
    taps.py          layer 1's heads against the grid of a convolution's taps, per seed and epoch
    timing.py        throughput and latency (notebook 06)

The public names of all of them are here: `from attnlib import viz; viz.plot_curves(...)`; `viz.plt` is
matplotlib.pyplot. The viz wing draws what it is given: it may import the ground and the evidence wing (the grid
of taps a grid figure draws), nothing above them.
"""
import matplotlib.pyplot as plt

from attnlib.viz.construction import plot_cases, plot_error_vs_alpha, plot_head_maps, show_channels
from attnlib.viz.taps import plot_taps
from attnlib.viz.maps import (HeadPanel, image_for_display, plot_conv_likeness, plot_offset_average,
                              plot_query_attention, zoom_limits)
from attnlib.viz.saving import DPI, PAGE_WIDTH, SMALLEST_TEXT, save
from attnlib.viz.timing import plot_timing
from attnlib.viz.training import (gaussian_contour, plot_attention_development, plot_center_trajectories, plot_centers,
                                  plot_curves)

__all__ = ["DPI", "PAGE_WIDTH", "SMALLEST_TEXT", "HeadPanel", "gaussian_contour", "image_for_display",
           "plot_attention_development", "plot_cases", "plot_center_trajectories", "plot_centers",
           "plot_conv_likeness", "plot_curves", "plot_error_vs_alpha",
           "plot_taps", "plot_head_maps", "plot_offset_average", "plot_query_attention", "plot_timing", "save",
           "show_channels", "zoom_limits"]
