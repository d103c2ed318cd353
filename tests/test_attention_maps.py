"""Attention maps of trained models (notebook 07): checked against the models' own probabilities, the
paper's quadratic formula, SAN's weights recomputed by hand, and hand-built attention patterns.

Covers attnlib.evidence.attention_maps: the maps equal the probabilities the forward pass uses; the quadratic maps
follow the paper's formula computed by hand; SAN's maps are each bottleneck's window weights recomputed
from its input (one map per depth when blocks are shared; strides kept when pooling rounds down; [Re]'s
SAN pooling before its first stage); offset averages and conv_likeness of hand-built one-tap heads and of
SAN windows; the mean over images, taken in batches; a model without attention refused.
"""

import numpy as np
import pytest
import torch
from conftest import hard_shift_model

from attnlib.conv_as_attention import kernel_shifts
from attnlib.evidence import attention_maps as am
from attnlib.evidence.attention_maps import mean_attention
from attnlib.models import create_model


def quadratic_model():
    torch.manual_seed(0)
    return create_model("sa_quadratic", heads=4, layers=2, hidden=8, ff=8, image_size=12, in_channels=1).eval()


def small_san(sa_type="pairwise", hierarchical=False):
    torch.manual_seed(0)
    return create_model(f"san_{sa_type}", widths=[8, 16], blocks=[2, 1], stem=4, rel_ratio=4, mid_ratio=2,
                        share_planes=2, image_size=8, hierarchical=hierarchical).eval()


def test_maps_are_the_probabilities_the_forward_pass_uses():
    model = create_model("sa_learned_content", heads=3, layers=2, hidden=8, ff=8, image_size=8, in_channels=3).eval()
    x = torch.randn(5, 3, 8, 8)
    layers = am.attention_maps(model, x, batch_size=2)
    # the forward pass on the same batches of 2 (a matrix product may round differently for another batch size)
    probs = [torch.cat(p) for p in zip(*(model.attention_probs(part) for part in x.split(2)))]
    assert [layer.name for layer in layers] == ["layer 1", "layer 2"]
    for layer, p in zip(layers, probs):
        assert layer.grid == (4, 4) and layer.window == 0 and layer.scale == 2.0
        torch.testing.assert_close(layer.weights, p, rtol=0, atol=0)
    # one query: the row of the probabilities, laid out on the key grid; image=None: the batch mean
    token = layers[1].pixel_to_token(5, 2)
    assert token == (2, 1)
    q = 2 * 4 + 1
    np.testing.assert_array_equal(layers[1].query_map(token, 3), probs[1][3, :, q].reshape(3, 4, 4).numpy())
    np.testing.assert_allclose(layers[1].query_map(token, None), probs[1][:, :, q].mean(0).reshape(3, 4, 4).numpy(),
                               rtol=1e-6)
    vit = create_model("vit", heads=2, layers=2, hidden=8, ff=8, stem_channels=4, patch_size=2, image_size=8).eval()
    layers = am.attention_maps(vit, x)
    assert layers[0].grid == (4, 4)
    torch.testing.assert_close(layers[0].weights, vit.attention_probs(x)[0], rtol=0, atol=0)


def test_quadratic_maps_follow_the_papers_formula():
    """Positional-only quadratic attention: p(q -> k) = softmax_k(-s^2/2 ||k - q - mu||^2), whatever the image."""
    model = quadratic_model()
    layers = am.attention_maps(model, torch.randn(2, 1, 12, 12))
    block = model.layer_blocks()[1].attn.positional
    mu, s = block.centers.detach().double(), block.spreads.detach().double()
    h, w = 6, 6
    query = (2, 3)
    for head in range(4):
        scores = torch.tensor([[-0.5 * s[head] ** 2 * ((r - query[0] - mu[head, 0]) ** 2 + (c - query[1] - mu[head, 1]) ** 2)
                                for c in range(w)] for r in range(h)], dtype=torch.float64)
        expected = scores.flatten().softmax(0).reshape(h, w).numpy()
        np.testing.assert_allclose(layers[1].query_map(query, 0)[head], expected, atol=1e-6)
        np.testing.assert_allclose(layers[1].query_map(query, 1)[head], expected, atol=1e-6)  # no content


def test_san_maps_are_each_bottlenecks_window_weights():
    model = small_san("pairwise")
    x = torch.randn(3, 3, 8, 8)
    layers = am.attention_maps(model, x)
    assert [l.name for l in layers] == ["stage 1, block 1", "stage 1, block 2", "stage 2, block 1"]
    assert [l.grid for l in layers] == [(8, 8), (8, 8), (4, 4)] and all(l.window == 3 for l in layers)
    # by hand: the first bottleneck's SAM sees relu(bn1(transition(conv_in(x))))
    with torch.no_grad():
        h = model.stages[0].transition(model.conv_in(x))
        block = model.stages[0].blocks[0]
        expected = block.sam.weights(block.relu(block.bn1(h)))  # (B, groups, K*K, HW)
    torch.testing.assert_close(layers[0].weights, expected.permute(0, 1, 3, 2))
    torch.testing.assert_close(layers[0].weights.sum(-1), torch.ones(3, 2, 64))  # pairwise: a softmax per window
    token = (5, 6)
    np.testing.assert_array_equal(layers[0].query_map(token, 1),
                                  expected[1, :, :, 5 * 8 + 6].reshape(2, 3, 3).numpy())
    assert layers[2].pixel_to_token(7, 2) == (3, 1)
    assert layers[0].key_extent(token) == (5.0, 8.0, 7.0, 4.0)  # the 3x3 window around pixel (5, 6)
    assert layers[2].key_extent((1, 1)) == (0.0, 6.0, 6.0, 0.0)  # stage 2: 2 pixels per token


def test_shared_san_blocks_give_one_map_per_depth():
    model = small_san("patchwise", hierarchical=True)
    layers = am.attention_maps(model, torch.randn(2, 3, 8, 8))
    assert len(layers) == 3 and not layers[0].normalized
    assert not torch.allclose(layers[0].weights, layers[1].weights)  # same module, different inputs


def test_offset_average_of_one_tap_heads_is_the_share_of_queries_with_that_key():
    layers = am.attention_maps(hard_shift_model(), torch.randn(2, 1, 12, 12))
    avg = layers[0].offset_average()  # (9, 11, 11), offset (0, 0) at [5, 5]
    assert avg.shape == (9, 11, 11)
    for head, (dr, dc) in enumerate(kernel_shifts(3).tolist()):
        on_grid = (6 - abs(dr)) * (6 - abs(dc)) / 36  # queries whose shifted key lies on the 6x6 grid
        assert avg[head, 5 + dr, 5 + dc] == pytest.approx(on_grid, abs=1e-6)
    # a query whose shifted key is off the grid spreads its mass over its nearest keys: each map sums to 1
    np.testing.assert_allclose(avg.sum((1, 2)), 1.0, atol=1e-6)


def test_conv_likeness_of_san_windows():
    w = torch.zeros(2, 3, 16, 9)  # 2 images, 3 groups, 4x4 queries, 3x3 taps
    w[:, 0, :, 5] = 1.0  # group 0: all weight on tap (0, +1)
    w[:, 1, :, 0] = 0.5  # group 1: half on (-1, -1), the rest uniform
    w[:, 1] += 0.5 / 9
    w[:, 2] = 1 / 9  # group 2: uniform
    df = am.conv_likeness([am.LayerMaps("stage 1, block 1", w, (4, 4), 2, window=3)])
    assert df[["top_row", "top_col"]].values.tolist()[:2] == [[0, 1], [-1, -1]]
    assert df["top_mass"].tolist() == pytest.approx([1.0, 0.5 + 0.5 / 9, 1 / 9])
    # group 2's uniform weights tie; the first tap, (-1, -1), wins as for group 1: 2 distinct offsets
    assert (df["distinct_offsets"] == 2).all() and df["uniform_mass"].tolist() == pytest.approx([1 / 9] * 3)
    # patchwise weights are not probabilities: |w_top| / sum |w|
    signed = am.LayerMaps("p", -2 * w, (4, 4), 2, window=3, normalized=False)
    assert am.conv_likeness([signed])["top_mass"].tolist() == pytest.approx([1.0, 0.5 + 0.5 / 9, 1 / 9])


def test_mean_attention_is_the_mean_over_images_in_batches():
    model = create_model("sa_learned_content", heads=2, layers=2, hidden=8, ff=8, image_size=8, in_channels=3).eval()
    x = torch.randn(7, 3, 8, 8)
    mean = mean_attention(model, x, batch_size=3)
    full = am.attention_maps(model, x)
    for m, f in zip(mean, full):
        assert m.weights.shape[0] == 1
        torch.testing.assert_close(m.weights[0], f.weights.mean(0), rtol=1e-5, atol=1e-7)


def test_attention_maps_refuse_a_model_without_attention():
    with pytest.raises(TypeError, match="no attention to show"):
        am.attention_maps(create_model("resnet18", width=4, image_size=8), torch.randn(1, 3, 8, 8))


def test_conv_likeness_of_the_mean_over_images_equals_that_of_each_image():
    """Probabilities average linearly: notebook 07 computes the shares from the mean attention."""
    model = create_model("sa_learned_content", heads=3, layers=2, hidden=8, ff=8, image_size=8, in_channels=3).eval()
    x = torch.randn(6, 3, 8, 8)
    full, mean = am.conv_likeness(am.attention_maps(model, x)), am.conv_likeness(mean_attention(model, x, batch_size=4))
    assert full[["top_row", "top_col", "distinct_offsets"]].equals(mean[["top_row", "top_col", "distinct_offsets"]])
    np.testing.assert_allclose(full["top_mass"], mean["top_mass"], rtol=1e-5)


def test_san_stages_keep_their_stride_when_pooling_rounds_down():
    """28x28 images pool to 14, 7, 3 tokens: the last stage's token covers 8 pixels, the leftover ones included."""
    torch.manual_seed(0)
    model = create_model("san_pairwise", widths=[8, 8, 8, 16], blocks=[1, 1, 1, 1], stem=4, rel_ratio=4, mid_ratio=2,
                         share_planes=2, image_size=28, in_channels=1).eval()
    layers = am.attention_maps(model, torch.randn(1, 1, 28, 28))
    assert [(l.grid, l.stride) for l in layers] == [((28, 28), 1), ((14, 14), 2), ((7, 7), 4), ((3, 3), 8)]
    assert [layers[3].pixel_to_token(p, p) for p in (7, 8, 17, 23, 24, 27)] == [(0, 0), (1, 1), (2, 2), (2, 2), (2, 2), (2, 2)]
    assert layers[3].key_token((2, 2), 8) == (3, 3) and layers[3].key_token((2, 2), 0) == (1, 1)


def test_re_san_pools_before_its_first_stage_so_its_tokens_start_at_two_pixels():
    torch.manual_seed(0)
    model = create_model("san_pairwise_re", widths=[8, 8], blocks=[1, 1], stem=8, rel_ratio=4, mid_ratio=2,
                         share_planes=2, image_size=16, in_channels=1).eval()
    layers = am.attention_maps(model, torch.randn(1, 1, 16, 16))
    assert [(l.grid, l.stride) for l in layers] == [((8, 8), 2), ((4, 4), 4)]
