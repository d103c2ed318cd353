"""Theorem 1 measured, as notebook 00 does: the constructed attention layer's error against its convolution per
case and dtype, its error over the sharpness alpha, how convolution-like its heads attend (the same measure the
trained networks get), and the records written to results/<profile>/metrics/. The construction itself is
attnlib.conv_as_attention."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
import torch
from torch import nn

from attnlib import results
from attnlib.conv_as_attention import ENCODINGS, attention_from_conv, construction_error
from attnlib.data import Dataset
from attnlib.evidence import attention_maps


# -- the converse: how convolution-like a trained model's attention is -------------------------
@torch.no_grad()
def conv_likeness(model: nn.Module, images: torch.Tensor, batch_size: int = 64, margin: int = 0) -> pd.DataFrame:
    """Per layer and head: the head's most-attended offset and the share of attention mass on it
    (attention_maps.conv_likeness of the model's attention on `images`, normalised as the model takes
    them). `model`: anything with `attention_probs(images)` and a token grid, or a SAN."""
    if len(images) == 0:
        raise ValueError("conv_likeness needs at least one image")
    return attention_maps.conv_likeness(attention_maps.attention_maps(model, images, batch_size), margin)


# -- notebook 00's records -----------------------------------------------------------------------
EXPERIMENT = "00_conv_as_attention"


TOLERANCE = {"float32": 1e-3, "float64": 1e-4}  # the largest rel_error the construction is held to, per dtype


ERROR_COLUMNS = ["case", "kernel", "dtype", "alpha", "max_abs_error", "rel_error", "dataset",
                 "profile"]  # first in the CSV


def pick_image(data: Dataset, index: int) -> torch.Tensor:
    """Test image `index` of `data` as (1, C, H, W) float64 in [0, 1]; one-line ValueError beyond the split."""
    if index >= len(data.x_test):
        raise ValueError(f"image_index {index} is beyond the {len(data.x_test)} test images of {data.name}")
    return data.x_test[index:index + 1].double() / 255


def error_table(convs: dict[str, nn.Conv2d], x: torch.Tensor, alpha: float, dtypes: Iterable[str], dataset: str,
                profile: str, image_index: int) -> pd.DataFrame:
    """construction_error of every case of `convs` with every encoding (ENCODINGS) at one alpha on `x`
    (B, C, H, W), with the case's name, what it ran on (dataset, profile, image_index), whether rel_error
    is within TOLERANCE of its dtype, torch's version and the git commit; ERROR_COLUMNS first."""
    size, dtypes = tuple(x.shape[-2:]), list(dtypes)
    errors = pd.concat([construction_error(conv, size, [alpha], dtypes, positional=enc, x=x).assign(case=name)
                        for name, conv in convs.items() for enc in ENCODINGS], ignore_index=True)
    errors = errors.assign(dataset=dataset, profile=profile, image_index=image_index,
                           within_tolerance=errors["rel_error"] <= errors["dtype"].map(TOLERANCE),
                           torch=torch.__version__, git=results.git_commit())
    return errors[ERROR_COLUMNS + [c for c in errors.columns if c not in ERROR_COLUMNS]]


def alpha_sweep(conv: nn.Conv2d, x: torch.Tensor, alphas: Iterable[float], dtypes: Iterable[str], case: str,
                dataset: str, profile: str, image_index: int) -> pd.DataFrame:
    """construction_error of one case (quadratic encoding) on `x` for every alpha, with what it ran on."""
    return construction_error(conv, tuple(x.shape[-2:]), alphas, dtypes, x=x).assign(
        case=case, dataset=dataset, profile=profile, image_index=image_index)


@torch.no_grad()
def case_outputs(convs: dict[str, nn.Conv2d], x: torch.Tensor, alpha: float | None = None
                 ) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name and kernel size, conv(x)[0], attention(x)[0]) per case, `x` cast to the conv's dtype: the rows of
    viz.plot_cases."""
    rows = []
    for name, conv in convs.items():
        xc = x.to(conv.weight.dtype)
        layer = attention_from_conv(conv, tuple(x.shape[-2:]), alpha)
        rows.append((f"{name} {conv.kernel_size[0]}x{conv.kernel_size[0]}", conv(xc)[0], layer(xc)[0]))
    return rows


def write_records(errors: pd.DataFrame, sweep: pd.DataFrame, results_dir: str | Path, profile: str,
                  experiment: str = EXPERIMENT) -> tuple[Path, Path]:
    """Write the error table to metrics/<experiment>.csv and the alpha sweep beside it (<experiment>_alpha.csv),
    each atomically; returns both paths."""
    path = results.metrics_path(results_dir, profile, experiment)
    sweep_path = path.with_name(f"{experiment}_alpha.csv")
    results.atomic_write_text(path, errors.to_csv(index=False))
    results.atomic_write_text(sweep_path, sweep.to_csv(index=False))
    return path, sweep_path
