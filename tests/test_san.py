"""SAN (Zhao et al. 2020): the local-window operators against explicit loops, SAM against a by-hand
computation for single pixels, and the network's shapes, gradients, sharing and config checks.

Covers attnlib.models.san: position encoding; subtraction and aggregation against loops over pixels
(reflection padding, channel sharing c mod C_w), their gradients, mixed precision; pairwise weights a
softmax over the taps, patchwise weights' shape; forward and backward of the network, also under bf16
autocast; one shared bottleneck per stage when hierarchical; [Re]'s SAN (its forward, its unused bn1);
config checks.
"""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlib.models import create_model
from attnlib.models.san import SAM, SAN, SANConfig, aggregation, neighbours, position, subtraction, subtraction2

TINY = dict(widths=[16, 32], blocks=[1, 1], stem=8, rel_ratio=4, mid_ratio=2, share_planes=2, image_size=8)


def reflect(i: int, n: int) -> int:
    """Reflection padding without repeating the edge: -1 -> 1, n -> n - 2."""
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def taps(h: int, w: int, H: int, W: int, K: int):
    """The K*K neighbours of (h, w), row-major over (kh, kw), as reflected (row, col)."""
    p = K // 2
    return [(reflect(h + kh - p, H), reflect(w + kw - p, W)) for kh in range(K) for kw in range(K)]


def subtraction2_loop(x1: torch.Tensor, x2: torch.Tensor, K: int) -> np.ndarray:
    a, b = x1.numpy(), x2.numpy()
    B, C, H, W = a.shape
    out = np.zeros((B, C, K * K, H * W))
    for n in range(B):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    for k, (i, j) in enumerate(taps(h, w, H, W, K)):
                        out[n, c, k, h * W + w] = a[n, c, h, w] - b[n, c, i, j]
    return out


def aggregation_loop(x: torch.Tensor, wt: torch.Tensor, K: int) -> np.ndarray:
    a, v = x.numpy(), wt.numpy()
    B, C, H, W = a.shape
    Cw = v.shape[1]
    out = np.zeros((B, C, H, W))
    for n in range(B):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    out[n, c, h, w] = sum(v[n, c % Cw, k, h * W + w] * a[n, c, i, j]
                                          for k, (i, j) in enumerate(taps(h, w, H, W, K)))
    return out


def unfolded(x: torch.Tensor, K: int, mode: str = "reflect") -> torch.Tensor:
    """(B, C, K*K, H*W) windows by F.pad + F.unfold; mode 'constant' is zero padding."""
    B, C, H, W = x.shape
    p = K // 2
    return F.unfold(F.pad(x, (p, p, p, p), mode=mode), K).view(B, C, K * K, H * W)


def border(H: int, W: int, K: int) -> torch.Tensor:
    """Mask over flattened pixels within K // 2 of an edge, where padding is read."""
    h, w = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    p = K // 2
    return ((h < p) | (h >= H - p) | (w < p) | (w >= W - p)).flatten()


def test_position():
    p = position(3, 5, dtype=torch.float64)
    assert p.shape == (1, 2, 3, 5)
    assert torch.equal(p[0, 0], torch.linspace(-1, 1, 5, dtype=torch.float64).expand(3, 5))
    assert torch.equal(p[0, 1], torch.linspace(-1, 1, 3, dtype=torch.float64)[:, None].expand(3, 5))


@pytest.mark.parametrize("K", [1, 3, 5])
def test_subtraction_matches_loop(K):
    g = torch.Generator().manual_seed(K)
    x1, x2 = torch.randn(2, 2, 4, 5, 6, dtype=torch.float64, generator=g)
    ref = torch.from_numpy(subtraction2_loop(x1, x2, K))
    torch.testing.assert_close(subtraction2(x1, x2, K), ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(subtraction(x1, K), torch.from_numpy(subtraction2_loop(x1, x1, K)), atol=1e-12, rtol=0)
    torch.testing.assert_close(neighbours(x2, K), unfolded(x2, K), atol=0, rtol=0)
    if K > 1:  # the border reads reflected pixels: zero padding would give other values there
        zero = x1.reshape(2, 4, 1, 30) - unfolded(x2, K, mode="constant")
        assert not torch.allclose(zero[..., border(5, 6, K)], ref[..., border(5, 6, K)])
        torch.testing.assert_close(zero[..., ~border(5, 6, K)], ref[..., ~border(5, 6, K)], atol=1e-12, rtol=0)


@pytest.mark.parametrize("K", [1, 3, 5])
def test_aggregation_matches_loop(K):
    g = torch.Generator().manual_seed(10 + K)
    B, C, Cw, H, W = 2, 4, 2, 5, 6
    x = torch.randn(B, C, H, W, dtype=torch.float64, generator=g)
    w = torch.randn(B, Cw, K * K, H * W, dtype=torch.float64, generator=g)
    ref = torch.from_numpy(aggregation_loop(x, w, K))
    torch.testing.assert_close(aggregation(x, w, K), ref, atol=1e-12, rtol=0)
    # the two alternatives the loop rules out: channel c weighted by w[:, c // (C / Cw)]; zero padding
    blocked = (unfolded(x, K) * w.repeat_interleave(C // Cw, 1)).sum(2).view(B, C, H, W)
    assert not torch.allclose(blocked, ref)
    interleaved = (unfolded(x, K) * w.repeat(1, C // Cw, 1, 1)).sum(2).view(B, C, H, W)
    torch.testing.assert_close(interleaved, ref, atol=1e-12, rtol=0)
    if K > 1:
        zero = (unfolded(x, K, mode="constant") * w.repeat(1, C // Cw, 1, 1)).sum(2).view(B, C, H * W)
        assert not torch.allclose(zero[..., border(H, W, K)], ref.view(B, C, -1)[..., border(H, W, K)])


def test_aggregation_promotes_mixed_precision():
    x, w = torch.randn(1, 4, 3, 3, dtype=torch.bfloat16), torch.rand(1, 2, 9, 9)
    assert aggregation(x, w, 3).dtype == torch.float32


def test_operator_gradients():
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, dtype=torch.float64, generator=g, requires_grad=True)  # noqa: E731
    x, x2 = rand(2, 4, 3, 4), rand(2, 4, 3, 4)
    assert torch.autograd.gradcheck(lambda a, b: aggregation(a, b, 3), (x, rand(2, 2, 9, 12)))
    assert torch.autograd.gradcheck(lambda a, b: subtraction2(a, b, 3), (x, x2))
    assert torch.autograd.gradcheck(lambda a, b: aggregation(a, b, 5), (rand(1, 2, 3, 4), rand(1, 1, 25, 12)))


def randomised_sam(sa_type: str, seed: int = 0) -> SAM:
    """A SAM in eval mode whose BatchNorms have non-trivial statistics and affine parameters."""
    torch.manual_seed(seed)
    sam = SAM(sa_type, in_planes=6, rel_planes=3, out_planes=8, share_planes=4, kernel_size=3).double().eval()
    for m in sam.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return sam


def test_pairwise_weights_are_a_softmax_over_taps():
    sam = randomised_sam("pairwise").train()
    w = sam.weights(torch.randn(2, 6, 5, 4, dtype=torch.float64))
    assert w.shape == (2, 2, 9, 20)
    torch.testing.assert_close(w.sum(2), torch.ones(2, 2, 20, dtype=torch.float64))


def test_patchwise_weights_shape():
    sam = randomised_sam("patchwise").train()
    assert sam.weights(torch.randn(2, 6, 5, 4, dtype=torch.float64)).shape == (2, 2, 9, 20)


def conv(m: torch.nn.Conv2d, v: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution applied to one feature vector."""
    out = m.weight[:, :, 0, 0] @ v
    return out if m.bias is None else out + m.bias


def bn(m: torch.nn.BatchNorm2d, v: torch.Tensor) -> torch.Tensor:
    return (v - m.running_mean) / torch.sqrt(m.running_var + m.eps) * m.weight + m.bias


def sam_pixel(sam: SAM, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """SAM output (out_planes,) at pixel (h, w) of image x (C, H, W), from the module's own weights."""
    _, H, W = x.shape
    K = sam.kernel_size
    nb = taps(h, w, H, W, K)
    at = lambda m, i, j: conv(m, x[:, i, j])  # noqa: E731
    bn1, _, c1, bn2, _, c2 = sam.conv_w
    if sam.sa_type == "pairwise":
        pos = position(H, W, dtype=x.dtype)[0]
        p = lambda i, j: conv(sam.conv_p, pos[:, i, j])  # noqa: E731
        logits = torch.stack([
            conv(c2, torch.relu(bn(bn2, conv(c1, torch.relu(bn(bn1, torch.cat([
                at(sam.conv1, h, w) - at(sam.conv2, i, j), p(h, w) - p(i, j)]))))))) for i, j in nb], 1)
        weights = logits.softmax(1)  # (groups, K*K)
    else:
        x2 = torch.stack([at(sam.conv2, i, j) for i, j in nb], 1)  # (rel, K*K): flattened c * K*K + k
        feature = torch.cat([at(sam.conv1, h, w), x2.flatten()])
        weights = conv(c2, torch.relu(bn(bn2, conv(c1, torch.relu(bn(bn1, feature)))))).view(-1, K * K)
    groups = weights.shape[0]
    v = torch.stack([at(sam.conv3, i, j) for i, j in nb], 1)  # (out, K*K)
    return torch.stack([(weights[c % groups] * v[c]).sum() for c in range(v.shape[0])])


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_sam_forward_matches_by_hand(sa_type):
    sam = randomised_sam(sa_type)
    x = torch.randn(2, 6, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        out = sam(x)
        assert out.shape == (2, 8, 5, 4)
        for n in range(2):  # every pixel: the border ones read reflected neighbours
            for h in range(5):
                for w in range(4):
                    torch.testing.assert_close(out[n, :, h, w], sam_pixel(sam, x[n], h, w), atol=1e-12, rtol=0)


@pytest.mark.parametrize("hierarchical", [False, True])
@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_san_forward_backward(sa_type, hierarchical):
    torch.manual_seed(0)
    model = SAN(SANConfig(sa_type=sa_type, hierarchical=hierarchical, **{**TINY, "blocks": [2, 1]}))
    logits = model(torch.randn(3, 3, 8, 8))
    assert logits.shape == (3, 10)
    F.cross_entropy(logits, torch.tensor([0, 3, 9])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_san_under_bf16_autocast():
    model = SAN(SANConfig(**TINY))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(torch.randn(2, 3, 8, 8))
    logits.float().sum().backward()
    assert torch.isfinite(logits.float()).all()


def test_hierarchical_shares_one_block_per_stage():
    cfg = dict(TINY, blocks=[2, 3])
    flat, hier = SAN(SANConfig(**cfg)), SAN(SANConfig(**cfg, hierarchical=True))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    for i, depth in enumerate(cfg["blocks"]):
        blocks = hier.stage_blocks(i)
        assert len(blocks) == depth and all(b is blocks[0] for b in blocks)
        assert len({id(b) for b in flat.stage_blocks(i)}) == depth
    duplicated = sum(count(flat.stage_blocks(i)[0]) * (d - 1) for i, d in enumerate(cfg["blocks"]))
    assert duplicated > 0
    assert count(hier) == count(flat) - duplicated


def re_san_forward(model: SAN, x: torch.Tensor) -> torch.Tensor:
    """[Re]'s Encoder.forward, non-hierarchical path (its SAN/models/networks.py), with the model's modules."""
    x = model.conv_in(x)  # 1x1 conv, BN, ReLU
    for stage in model.stages:
        x = stage.transition(F.max_pool2d(x, 2))  # a pool before every stage, the first too
        for block in stage.blocks:  # [Re]'s Bottleneck: relu(bn1(x)) is computed, then SAM is given x
            x = block.conv(F.relu(block.bn2(block.sam(x)))) + x
        x = F.relu(stage.bn(x))
    return model.fc(x.mean((2, 3)))


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_san_re_computes_re_forward(sa_type):
    torch.manual_seed(6)
    model = create_model(f"san_{sa_type}_re", **TINY).eval()
    assert all(conv.bias is None for b in model.modules() if isinstance(b, SAM) for conv in (b.conv1, b.conv2, b.conv3))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), re_san_forward(model, x))
        features = torch.nn.Sequential(model.conv_in, *model.stages)(x)
    assert features.shape[-2:] == (2, 2)  # 8 -> 4 -> 2: both stages pool


def test_san_re_bn1_counts_but_is_not_computed():
    model = create_model("san_pairwise_re", **TINY)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == (".bn1." in name), name
    assert all(m.bn1.num_batches_tracked == 0 for stage in model.stages for m in stage.blocks)


def test_config():
    cfg = SANConfig(**TINY)
    assert SAN(cfg).config() == dataclasses.asdict(cfg)
    assert SAN().config()["widths"] == [256, 512, 1024, 2048]


@pytest.mark.parametrize("bad", [
    dict(sa_type="axial"),
    dict(image_size=4, widths=[16, 32, 64], blocks=[1, 1, 1]),  # 4 -> 2 -> 1 pixel: no room to reflect
    dict(image_size=4, pool_first=True),  # [Re]'s pooling: 4 -> 2 -> 1 pixel
    dict(widths=[16, 32], blocks=[1]),
    dict(kernel_size=4),
    dict(share_planes=3),
])
def test_config_rejects(bad):
    with pytest.raises(ValueError):
        SANConfig(**{**TINY, **bad})
