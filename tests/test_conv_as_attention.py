"""Theorem 1 made executable: the attention layer built from a convolution equals it on every pixel.

Covers attnlib.conv_as_attention: the construction against random convolutions on every pixel, borders
included, with the quadratic and the learned encoding and on the plain attention path; heads sitting on the
kernel taps with their spread from alpha, each attending to exactly its shift at the default alpha; the
error falling with alpha like the softmax leak, and the default alpha within both dtypes' tolerances;
unsupported convolutions (stride, dilation, groups, even kernels) and other bad arguments refused in one
line; conv_likeness of hard one-tap, uniform and soft heads, of the constructed layer and of a learned
model; notebook 00's parameters, and the notebook on the smoke profile writing its errors.
"""
import io
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_every_field_injected, hard_shift_model, run_runner
from torch import nn

from attnlib import results
from attnlib.conv_as_attention import (DEFAULT_ALPHA, ENCODINGS, ConvAsAttention, attention_from_conv, check_supported,
                                       construction_error, example_convolutions, kernel_shifts)
from attnlib.data import make_synthetic
from attnlib.evidence.theorem1 import (ERROR_COLUMNS, alpha_sweep, case_outputs, conv_likeness, error_table,
                                       pick_image, write_records)
from attnlib.experiments import params, settings
from attnlib.experiments.settings import ConvParams
from attnlib.models import create_model

ROOT = Path(__file__).resolve().parent.parent
TOL = {torch.float32: 1e-3, torch.float64: 1e-4}  # the relative max error the project holds the construction to


def random_conv(c_in, c_out, k, bias, dtype, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=bias).to(dtype)
    with torch.no_grad():  # weights of order 1, and a bias that matters
        conv.weight.normal_()
        if bias:
            conv.bias.normal_()
    return conv


def assert_equal_on_every_pixel(conv, layer, x):
    ref, out = conv(x), layer(x)
    assert out.shape == ref.shape
    err = (out - ref).abs()  # (B, C_out, H, W): every pixel, borders included
    rel = err.max().item() / ref.abs().max().item()
    assert rel <= TOL[x.dtype], f"relative max error {rel:.2e} at {divmod(int(err.amax((0, 1)).argmax()), x.shape[-1])}"
    return rel


CASES = [  # (kernel, c_in, c_out, (H, W), bias)
    (1, 3, 5, (6, 6), True),
    (3, 1, 1, (7, 7), False),
    (3, 3, 8, (5, 9), True),
    (3, 16, 4, (8, 3), False),
    (5, 2, 6, (9, 7), True),
    (5, 4, 1, (5, 5), False),
    (7, 3, 2, (7, 10), True),
    (7, 1, 3, (4, 6), False),  # image smaller than the kernel: every pixel is a border pixel
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("positional", ["quadratic", "learned"])
@pytest.mark.parametrize("k, c_in, c_out, size, bias", CASES, ids=lambda v: str(v))
def test_attention_equals_the_convolution_on_every_pixel(k, c_in, c_out, size, bias, positional, dtype):
    conv = random_conv(c_in, c_out, k, bias, dtype, seed=k * 100 + c_in)
    layer = attention_from_conv(conv, size, positional=positional)
    assert isinstance(layer, ConvAsAttention) and layer.attention.heads == k * k
    assert layer.attention.positional_kind == positional
    assert next(layer.parameters()).dtype == dtype
    x = torch.randn(3, c_in, *size, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        assert_equal_on_every_pixel(conv, layer, x)


def test_square_image_size_may_be_an_int_and_padding_same_is_accepted():
    conv = nn.Conv2d(2, 3, 3, padding="same").double()
    layer = attention_from_conv(conv, 6)
    assert layer.image_size == (6, 6) and layer.grid == (8, 8)
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        assert_equal_on_every_pixel(conv, layer, x)


def test_the_plain_attention_path_gives_the_same_layer():
    conv = random_conv(3, 4, 3, True, torch.float64, seed=5)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        assert_equal_on_every_pixel(conv, attention_from_conv(conv, (6, 5), fused=False), x)


def test_heads_sit_on_the_kernel_taps_with_spread_from_alpha():
    conv = random_conv(2, 3, 5, True, torch.float64, seed=0)
    layer = attention_from_conv(conv, 7, alpha=20.0)
    pos = layer.attention.positional
    assert torch.equal(pos.centers, kernel_shifts(5).double())
    assert torch.allclose(pos.spreads ** 2 / 2, torch.full((25,), 20.0, dtype=torch.float64))
    assert kernel_shifts(3).tolist() == [[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 0], [0, 1], [1, -1], [1, 0], [1, 1]]
    # Lemma 1: head (i, j) carries the conv's weight at tap (i, j) in its block of W_out
    w = layer.attention.value.weight  # (C_out, heads * C_in)
    for h, (i, j) in enumerate(itertools.product(range(5), repeat=2)):
        assert torch.equal(w[:, 2 * h:2 * h + 2], conv.weight[:, :, i, j])
    assert torch.equal(layer.attention.value.bias, conv.bias)


@pytest.mark.parametrize("positional", ["quadratic", "learned"])
def test_each_head_attends_to_exactly_its_shift_at_the_default_alpha(positional):
    """Hard attention in float32: the target key's probability rounds to 1, pad tokens included."""
    conv = random_conv(1, 1, 3, False, torch.float32, seed=0)
    layer = attention_from_conv(conv, (4, 5), positional=positional)
    hp, wp = layer.grid
    probs = layer.attention_probs(torch.zeros(1, 1, 4, 5))[0][0]  # (9, T, T)
    for h, (dr, dc) in enumerate(kernel_shifts(3).tolist()):
        for r, c in itertools.product(range(1, 5), range(1, 6)):  # image pixels in padded coordinates
            assert probs[h, r * wp + c, (r + dr) * wp + c + dc] == 1.0


def test_learned_encoding_score_is_the_quadratic_one_and_separable():
    conv = random_conv(2, 2, 3, True, torch.float64, seed=3)
    quad = attention_from_conv(conv, (5, 6), alpha=7.0).attention.position_scores()
    learned = attention_from_conv(conv, (5, 6), alpha=7.0, positional="learned").attention
    assert learned.positional.row_embeddings.weight.shape == (2 * 7 - 1, 3)  # padded grid 7 x 8, D_p = 3
    assert learned.positional.col_embeddings.weight.shape == (2 * 8 - 1, 3)
    assert torch.allclose(learned.position_scores(), quad, atol=1e-9)
    # the score's maximum, 0, is at the head's shift and nowhere else
    s = learned.position_scores()  # (9, T, T)
    assert (s <= 0).all() and ((s == 0).sum(-1) <= 1).all()


def test_error_falls_with_alpha_like_the_softmax_leak():
    conv = random_conv(3, 4, 3, True, torch.float64, seed=1)
    df = construction_error(conv, (6, 7), alphas=[1.0, 4.0, 8.0, 12.0, DEFAULT_ALPHA], dtypes=["float64"])
    assert list(df["alpha"]) == [1.0, 4.0, 8.0, 12.0, DEFAULT_ALPHA]
    err = df["rel_error"].tolist()
    assert err[0] > 0.1 and all(a > b for a, b in zip(err[:4], err[1:4]))  # monotone while the leak dominates
    for alpha, e in zip([4.0, 8.0, 12.0], err[1:4]):  # about 4 exp(-alpha) times a factor of order 1
        assert 1e-2 * math.exp(-alpha) < e < 40 * math.exp(-alpha)
    assert err[-1] < 1e-14  # float64 rounding only
    assert {"kernel", "dtype", "alpha", "max_abs_error", "rel_error", "positional"} <= set(df.columns)


def test_default_alpha_meets_both_tolerances_with_room_to_spare():
    conv = random_conv(3, 6, 5, True, torch.float32, seed=2)
    df = construction_error(conv, (9, 8)).set_index("dtype")
    assert df.loc["float64", "rel_error"] < 1e-12 and df.loc["float32", "rel_error"] < 1e-5
    assert (df["alpha"] == DEFAULT_ALPHA).all()


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv2d(3, 4, 3, padding=1, stride=2), "stride (2, 2) is not 1"),
    (lambda: nn.Conv2d(3, 4, 3, padding=2, dilation=2), "dilation (2, 2) is not 1"),
    (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=2), "groups=2"),
    (lambda: nn.Conv2d(3, 4, 4, padding=2), "kernel size 4 is even"),
    (lambda: nn.Conv2d(3, 4, (3, 5), padding=(1, 2)), "kernel 3x5 is not square"),
    (lambda: nn.Conv2d(3, 4, 3, padding=0), "padding (0, 0) is not K//2 = 1"),
    (lambda: nn.Conv2d(3, 4, 3, padding="valid"), "padding valid is not K//2 = 1"),
    (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), "padding_mode 'reflect' is not 'zeros'"),
])
def test_unsupported_convolutions_are_rejected_with_one_line(make, message):
    with pytest.raises(ValueError) as err:
        attention_from_conv(make(), 8)
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith("Theorem 1's construction does not cover")


def test_other_bad_arguments_are_rejected():
    conv = nn.Conv2d(1, 1, 3, padding=1)
    with pytest.raises(TypeError, match="expected a torch.nn.Conv2d"):
        attention_from_conv(nn.Linear(3, 3), 8)
    with pytest.raises(ValueError, match="alpha must be positive"):
        attention_from_conv(conv, 8, alpha=0)
    with pytest.raises(ValueError, match="positional must be one of"):
        attention_from_conv(conv, 8, positional="quadratic_aniso")
    with pytest.raises(ValueError, match=r"expected input \(B, 1, 8, 8\)"):
        attention_from_conv(conv, 8)(torch.zeros(1, 1, 8, 9))
    assert check_supported(nn.Conv2d(2, 2, 1, padding="valid")) == 1  # 'valid' is K//2 = 0 for K = 1


# -- conv_likeness ------------------------------------------------------------------------------------
def test_conv_likeness_of_hard_one_tap_heads_is_one_with_nine_offsets():
    model = hard_shift_model()
    df = conv_likeness(model, torch.randn(5, 1, 12, 12), batch_size=2)
    assert list(df.columns) == ["layer", "head", "top_row", "top_col", "top_mass", "queries", "distinct_offsets", "heads",
                          "layer_name", "uniform_mass", "mean_distance", "uniform_distance"]
    assert len(df) == 18 and (df["distinct_offsets"] == 9).all() and (df["heads"] == 9).all()
    assert df["top_mass"].min() > 1 - 1e-6
    shifts = kernel_shifts(3).tolist()
    assert [[r, c] for r, c in zip(df["top_row"], df["top_col"])] == shifts + shifts
    # grid 6x6: a share counts where the target lies on the grid with its 3x3 neighbourhood, rows and columns 1-4
    # (the softmax's renormalisation at the edge leaves the rest out): 4x4 queries for every shift
    assert df.set_index(["layer", "head"]).loc[(0, 0), "queries"] == 16
    assert df.set_index(["layer", "head"]).loc[(0, 4), "queries"] == 16
    inner = conv_likeness(model, torch.randn(2, 1, 12, 12), margin=1)
    assert inner["queries"].max() == 16
    # away from the edges each head attends exactly at its shift: its attention distance is the shift's length
    np.testing.assert_allclose(inner["mean_distance"], np.hypot(inner["top_row"], inner["top_col"]), atol=1e-6)


def test_conv_likeness_of_uniform_and_soft_heads():
    model = hard_shift_model()
    with torch.no_grad():
        model.blocks[0].attn.positional.spreads.zero_()  # layer 0: uniform attention over the 36 tokens
        model.blocks[1].attn.positional.centers.zero_()  # layer 1: every head on the query itself, soft
        model.blocks[1].attn.positional.spreads.fill_(1.0)
    df = conv_likeness(model, torch.randn(3, 1, 12, 12))
    layer0, layer1 = df[df["layer"] == 0], df[df["layer"] == 1]
    assert torch.allclose(torch.tensor(layer0["top_mass"].values), torch.full((9,), 1 / 36, dtype=torch.float64))
    assert (layer1["top_row"] == 0).all() and (layer1["top_col"] == 0).all() and (layer1["distinct_offsets"] == 1).all()
    # p(q -> q) = 1 / sum_k exp(-1/2 ||k - q||^2), averaged over the 16 queries of the 6x6 grid whose 3x3
    # neighbourhood lies on it
    pos = torch.stack(torch.meshgrid(torch.arange(6.0), torch.arange(6.0), indexing="ij"), -1).reshape(-1, 2)
    inside = ((pos >= 1) & (pos <= 4)).all(-1)
    expected = (1 / torch.exp(-0.5 * torch.cdist(pos, pos) ** 2).sum(-1))[inside].mean().item()
    assert 0.1 < expected < 0.5 and layer1["top_mass"].sub(expected).abs().max() < 1e-6


def test_conv_likeness_of_the_constructed_layer_names_its_kernel():
    conv = random_conv(2, 3, 5, True, torch.float32, seed=0)
    layer = attention_from_conv(conv, (6, 7))
    df = conv_likeness(layer, torch.randn(2, 2, 6, 7))
    assert (df["distinct_offsets"] == 25).all() and df["top_mass"].min() > 1 - 1e-6
    assert df[["top_row", "top_col"]].values.tolist() == kernel_shifts(5).tolist()


def test_conv_likeness_works_on_a_learned_model():
    model = create_model("sa_learned", heads=4, layers=2, hidden=8, ff=8, image_size=8, in_channels=3)
    df = conv_likeness(model, torch.randn(3, 3, 8, 8))
    assert len(df) == 8 and df["top_mass"].between(0, 1).all() and df["distinct_offsets"].between(1, 4).all()


# -- notebook 00's records -------------------------------------------------------------------------------
WHERE = dict(dataset="synthetic", profile="smoke", image_index=1)


def test_error_table_covers_every_case_and_encoding_with_its_tolerance_and_origin():
    x = pick_image(make_synthetic(4, 2, image_size=6), 1)
    assert x.shape == (1, 3, 6, 6) and x.dtype == torch.float64 and 0 <= x.min() and x.max() <= 1
    with pytest.raises(ValueError, match="image_index 2 is beyond the 2 test images of synthetic"):
        pick_image(make_synthetic(4, 2, image_size=6), 2)
    convs = example_convolutions(3, blur_kernel_size=3, random_kernel_size=3, random_out_channels=2)
    errors = error_table(convs, x, DEFAULT_ALPHA, ["float32", "float64"], **WHERE)
    assert list(errors.columns) == ERROR_COLUMNS + ["positional", "in_channels", "out_channels", "height", "width",
                                                    "image_index", "within_tolerance", "torch", "git"]
    assert list(zip(errors["case"], errors["positional"], errors["dtype"])) == list(
        itertools.product(convs, ENCODINGS, ["float32", "float64"]))
    assert errors["within_tolerance"].all() and (errors["image_index"] == 1).all()
    assert set(errors["git"]) == {results.git_commit()} and set(errors["torch"]) == {torch.__version__}
    blunt = error_table({"edge": convs["edge"]}, x, 0.5, ["float32", "float64"], **WHERE)  # soft heads: far off
    assert (blunt["rel_error"] > 1e-3).all() and not blunt["within_tolerance"].any()


def test_alpha_sweep_and_case_outputs_and_the_two_csvs(tmp_path):
    x = torch.rand(1, 2, 5, 6, dtype=torch.float64)
    convs = example_convolutions(2, blur_kernel_size=3, random_kernel_size=3, random_out_channels=3)
    sweep = alpha_sweep(convs["random"], x, [1.0, DEFAULT_ALPHA], ["float64"], "random", **WHERE)
    assert list(sweep.columns[-4:]) == ["case", "dataset", "profile", "image_index"]
    assert set(sweep["positional"]) == {"quadratic"} and sweep["alpha"].tolist() == [1.0, DEFAULT_ALPHA]
    assert sweep["rel_error"].iloc[0] > 1e-3 > sweep["rel_error"].iloc[1]
    rows = case_outputs(convs, x)
    assert [r[0] for r in rows] == ["edge 3x3", "blur 3x3", "random 3x3"]
    for (_, ref, out), conv in zip(rows, convs.values()):
        assert ref.dtype == torch.float32 and ref.shape == (conv.out_channels, 5, 6) and torch.allclose(ref, out, atol=1e-5)
    errors = error_table(convs, x, DEFAULT_ALPHA, ["float64"], **WHERE)
    (tmp_path / "smoke" / "metrics").mkdir(parents=True)
    path, sweep_path = write_records(errors, sweep, tmp_path, "smoke")
    assert (path.name, sweep_path.name) == ("00_conv_as_attention.csv", "00_conv_as_attention_alpha.csv")
    assert pd.read_csv(path).equals(pd.read_csv(io.StringIO(errors.to_csv(index=False))))
    assert pd.read_csv(sweep_path).equals(pd.read_csv(io.StringIO(sweep.to_csv(index=False))))


# -- parameters and notebook -------------------------------------------------------------------------
def test_notebook_parameters_are_registered_and_checked():
    cls = settings.params_class("00_conv_as_attention")
    assert cls is settings.ConvParams and cls().alpha == DEFAULT_ALPHA
    for profile in ("smoke", "quick", "paper"):
        p = params.load(ROOT / "params" / profile / "00_conv_as_attention.yaml")
        assert isinstance(p, cls)  # the runner injects profile itself
    for values, message in [({"random_kernel_size": 4}, "random_kernel_size must be odd"),
                            ({"alpha": 0}, "alpha must be positive"),
                            ({"dtypes": ["float16"]}, "dtypes must name float32 or float64"),
                            ({"alphas": []}, "alphas is empty"),
                            ({"kernal_size": 3}, "unknown key 'kernal_size'")]:
        with pytest.raises(params.ParamsError) as err:
            params.from_mapping(cls, values, where="params/x.yaml")
        assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.notebook
def test_notebook_00_runs_on_the_smoke_profile_and_writes_its_errors(tmp_path):
    out = run_runner("--only", "00", "--results-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    root = tmp_path / "smoke"
    assert_every_field_injected(root / "notebooks" / "00_conv_as_attention.ipynb", ConvParams)
    df = pd.read_csv(root / "metrics" / "00_conv_as_attention.csv")
    assert list(df.columns[:8]) == ["case", "kernel", "dtype", "alpha", "max_abs_error", "rel_error", "dataset", "profile"]
    assert {"edge", "blur", "random"} <= set(df["case"]) and set(df["dtype"]) == {"float32", "float64"}
    assert set(df["dataset"]) == {"synthetic"} and set(df["profile"]) == {"smoke"}
    for dtype, tol in (("float32", 1e-3), ("float64", 1e-4)):
        assert (df.loc[df["dtype"] == dtype, "rel_error"] <= tol).all()
    sweep = pd.read_csv(root / "metrics" / "00_conv_as_attention_alpha.csv")
    assert sweep["alpha"].nunique() >= 3
    for name in ("cases", "heads", "error_vs_alpha"):
        assert (root / "figures" / f"00_conv_as_attention_{name}.png").stat().st_size > 1000
