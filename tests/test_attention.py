"""Every attention variant against the paper's formulas (docs/paper.md sections 1-2), and fused == plain.

Covers attnlib.attention: relative offsets (key minus query, row-major); the isotropic and anisotropic
quadratic scores and the learned relative 2-D score against their formulas (the isotropic one also as the
separated row + column tables, whose softmax is a row factor times a column factor); Lemma 2's hard attention at large alpha; the whole layer against the MHSA
formula written as a loop over heads; the fused and plain paths agreeing in float32, forward and backward
(the fused path made to take SDPA on the CPU; by default, on the CPU, content attention takes
x M x'^T where that pays, attnlib.content_algebra, checked in float64 against the plain path);
positional-only attention being the same for every image (one fixed linear map of it) while content
attention changes with it; any head count and a head_dim independent of the width; bad options refused;
positional scores staying float32 under bf16 autocast.
"""
import itertools
import math

import pytest
import torch

from attnlib import attention, content_algebra, dropout
from attnlib.attention import LearnedRelativeScore, MultiHeadSelfAttention, QuadraticScore, relative_offsets
from attnlib.shared_product import SharedProduct


@pytest.fixture(autouse=True)
def float64_default():
    """Formula checks run in float64 (float32 where a test says so)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_relative_offsets_are_key_minus_query_row_major():
    h, w = 3, 4
    delta = relative_offsets(h, w)
    for q, k in itertools.product(range(h * w), repeat=2):
        assert delta[q, k].tolist() == [k // w - q // w, k % w - q % w]


def test_quadratic_isotropic_matches_gaussian_formula():
    torch.manual_seed(0)
    score = QuadraticScore(heads=3)
    h, w = 5, 6
    s = score(h, w)
    for head in range(3):
        mu = score.centers[head]
        s2 = score.spreads[head] ** 2
        for q, k in [(0, 0), (7, 20), (29, 3), (14, 14)]:
            d = torch.tensor([k // w - q // w, k % w - q % w], dtype=torch.float64)
            expected = -0.5 * s2 * ((d - mu) ** 2).sum()
            assert torch.allclose(s[head, q, k], expected)


def test_isotropic_probabilities_are_a_row_factor_times_a_column_factor():
    """softmax over the H x W keys of (row term + column term) = softmax over key rows x softmax over key columns:
    what a separable product would use (benchmarks/separable_product.py); an anisotropic score refuses."""
    torch.manual_seed(2)
    score = QuadraticScore(heads=3).double()
    h, w = 4, 5
    rows, cols = score.separated_terms(h, w)
    outer = torch.softmax(rows, -1)[:, :, None, :, None] * torch.softmax(cols, -1)[:, None, :, None, :]
    assert torch.allclose(torch.softmax(score(h, w), -1), outer.reshape(3, h * w, h * w), atol=1e-12)
    with pytest.raises(ValueError, match="anisotropic"):
        QuadraticScore(heads=2, anisotropic=True).separated_terms(h, w)


def test_quadratic_log_probs_are_exactly_quadratic_in_the_offset():
    """log p(k | q) + 1/2 s^2 ||delta - mu||^2 is the same for every key: the rest is the normaliser."""
    torch.manual_seed(1)
    score = QuadraticScore(heads=4)
    h = w = 7
    logp = torch.log_softmax(score(h, w), dim=-1)  # (h, T, T)
    delta = relative_offsets(h, w).double()
    for head in range(4):
        quad = 0.5 * score.spreads[head] ** 2 * ((delta - score.centers[head]) ** 2).sum(-1)  # (T, T)
        residual = logp[head] + quad
        assert torch.allclose(residual, residual[:, :1].expand_as(residual), atol=1e-10)


def test_quadratic_anisotropic_matches_formula_and_starts_near_identity():
    torch.manual_seed(2)
    score = QuadraticScore(heads=2, anisotropic=True)
    assert torch.allclose(score.inv_sqrt_cov, torch.eye(2).expand(2, 2, 2), atol=0.1)
    with torch.no_grad():
        score.inv_sqrt_cov[0] = torch.tensor([[1.5, 0.3], [-0.2, 0.7]])
    s = score(4, 5)
    a = score.inv_sqrt_cov[0]
    sigma_inv = a.T @ a
    for q, k in [(0, 19), (6, 6), (13, 2)]:
        d = torch.tensor([k // 5 - q // 5, k % 5 - q % 5], dtype=torch.float64) - score.centers[0]
        assert torch.allclose(s[0, q, k], -0.5 * d @ sigma_inv @ d)


def test_lemma2_large_alpha_gives_hard_attention_on_the_target_shift():
    """Lemma 2: Sigma^-1 = 2 alpha I, mu = Delta -> -alpha ||delta - Delta||^2; alpha ~ 46 is one-hot in float32."""
    shifts = [(-1, -1), (-1, 0), (0, 1), (1, 1)]
    score = QuadraticScore(heads=len(shifts)).float()
    alpha = 46.0
    with torch.no_grad():
        score.centers.copy_(torch.tensor(shifts, dtype=torch.float32))
        score.spreads.fill_(math.sqrt(2 * alpha))
    h = w = 6
    probs = torch.softmax(score(h, w), dim=-1)
    assert probs.dtype == torch.float32
    for head, (dr, dc) in enumerate(shifts):
        for q in range(h * w):
            r, c = divmod(q, w)
            if 0 <= r + dr < h and 0 <= c + dc < w:  # interior: the target pixel exists
                k = (r + dr) * w + (c + dc)
                assert probs[head, q, k] > 1 - 1e-6


def test_learned_scores_match_formula_depend_only_on_offset_and_are_separable():
    torch.manual_seed(3)
    h, w, dim, heads = 4, 5, 8, 3
    score = LearnedRelativeScore(heads, h, w, dim)
    s = score(h, w)  # (heads, T, T)
    delta = relative_offsets(h, w)
    er, ec = score.row_embeddings.weight, score.col_embeddings.weight
    wr, wc = score.head_keys_row.weight, score.head_keys_col.weight  # (heads, dim)
    for q, k in itertools.product(range(h * w), repeat=2):
        dr, dc = delta[q, k].tolist()
        expected = wr @ er[dr + h - 1] + wc @ ec[dc + w - 1]
        assert torch.allclose(s[:, q, k], expected)
    # Same offset, same score, wherever the query is.
    by_offset = {}
    for q, k in itertools.product(range(h * w), repeat=2):
        key = tuple(delta[q, k].tolist())
        if key in by_offset:
            assert torch.allclose(s[:, q, k], by_offset[key])
        by_offset[key] = s[:, q, k]
    # Row + column separable: s(a, b) + s(c, d) = s(a, d) + s(c, b).
    def at(dr, dc):
        return by_offset[(dr, dc)]
    assert torch.allclose(at(1, 2) + at(-2, -1), at(1, -1) + at(-2, 2))
    # A grid smaller than the one the embeddings were built for reads the same embedding per offset.
    small = score(3, 2)
    for q, k in itertools.product(range(6), repeat=2):
        dr, dc = k // 2 - q // 2, k % 2 - q % 2
        assert torch.allclose(small[:, q, k], at(dr, dc))
    with pytest.raises(ValueError, match="larger than the 4x5"):
        score(5, 5)


def _explicit_attention(layer, x, keep=None, p=0.0):
    """softmax(q.k/sqrt(d) + positional + [q.r]) X, concat heads, W_out: written out with loops over heads.
    With `keep` (head -> (B, T, T) bools), attention dropout: probabilities kept there, scaled by 1 / (1 - p)."""
    b, t, d = x.shape
    hs = layer.head_dim
    outs = []
    pos = layer.position_scores()
    for head in range(layer.heads):
        logits = torch.zeros(b, t, t)
        if layer.content:
            q = layer.query(x)[..., head * hs:(head + 1) * hs]
            k = layer.key(x)[..., head * hs:(head + 1) * hs]
            logits = logits + q @ k.transpose(1, 2) / math.sqrt(hs)
            if layer.relative_query:
                delta = relative_offsets(*layer.grid)
                gh, gw = layer.grid
                r = (layer.positional.row_embeddings.weight[delta[..., 0] + gh - 1]
                     + layer.positional.col_embeddings.weight[delta[..., 1] + gw - 1])  # (T, T, hs)
                logits = logits + torch.einsum("bqd,qkd->bqk", q, r) / math.sqrt(hs)
        if pos is not None:
            logits = logits + pos[head]
        probs = torch.softmax(logits, -1)
        if keep is not None:
            probs = probs * keep(head) / (1 - p)
        outs.append(probs @ x)
    return layer.value(torch.cat(outs, dim=-1))


VARIANTS = [
    dict(positional="quadratic", content=False),
    dict(positional="quadratic_aniso", content=False),
    dict(positional="learned", content=False),
    dict(positional="learned", content=True),
    dict(positional="learned", content=True, relative_query=True),
    dict(positional="quadratic", content=True),
    dict(positional="quadratic_aniso", content=True),
    dict(positional="none", content=True),
]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("path", ["sdpa", "algebra", "plain"])
def test_layer_computes_the_mhsa_formula(kw, path, monkeypatch):
    monkeypatch.setattr(attention, "sdpa_pays", lambda x: path == "sdpa")  # SDPA, as on a GPU
    monkeypatch.setattr(content_algebra, "pays", lambda layer, batch: path == "algebra")  # x M x'^T, as on CPUs
    torch.manual_seed(4)
    grid = (3, 4)
    layer = MultiHeadSelfAttention(6, heads=5, grid=grid, head_dim=7, fused=path != "plain", **kw).eval()
    if kw["positional"] == "learned":  # make positional scores large enough to matter
        torch.nn.init.normal_(layer.positional.row_embeddings.weight)
        torch.nn.init.normal_(layer.positional.col_embeddings.weight)
    x = torch.randn(2, 12, 6)
    assert torch.allclose(layer(x), _explicit_attention(layer, x), atol=1e-10)


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("fused_path", ["sdpa", "algebra"])
def test_fused_and_plain_paths_agree_in_float32_forward_and_backward(kw, fused_path, monkeypatch):
    monkeypatch.setattr(attention, "sdpa_pays", lambda x: fused_path == "sdpa")  # the path GPUs take
    monkeypatch.setattr(content_algebra, "pays", lambda layer, batch: True)
    torch.manual_seed(5)
    fused = MultiHeadSelfAttention(16, heads=3, grid=(4, 4), fused=True, **kw).float().eval()
    plain = MultiHeadSelfAttention(16, heads=3, grid=(4, 4), fused=False, **kw).float().eval()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(3, 16, 16, dtype=torch.float32, requires_grad=True)
    y1, y2 = fused(x), plain(x)
    assert torch.allclose(y1, y2, atol=1e-5, rtol=1e-4)
    g1 = torch.autograd.grad(y1.square().sum(), [x, *fused.parameters()])
    g2 = torch.autograd.grad(y2.square().sum(), [x, *plain.parameters()])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("kw", [VARIANTS[0], VARIANTS[4], VARIANTS[6]], ids=["positional", "relative-query", "aniso"])
@pytest.mark.parametrize("path", ["algebra", "plain"])
def test_attention_dropout_keeps_the_drawn_probabilities_scaled_by_one_over_one_minus_p(kw, path, monkeypatch):
    """In training, each path draws one mask (its own layout: (h, T, T) shared by the batch without content,
    (B, T, h, T) on the algebra, (B, h, T, T) plain) and computes the formula with the probabilities kept there
    scaled by 1 / (1 - p): the fused paths put the scale on the values instead, the same in exact arithmetic."""
    monkeypatch.setattr(content_algebra, "pays", lambda layer, batch: path == "algebra")
    drawn = []
    real_keep_mask = dropout.keep_mask

    def recording_keep_mask(shape, p, dtype=torch.bool):
        drawn.append(real_keep_mask(shape, p, dtype))
        return drawn[-1]

    monkeypatch.setattr(dropout, "keep_mask", recording_keep_mask)
    torch.manual_seed(12)
    layer = MultiHeadSelfAttention(6, heads=3, grid=(3, 4), attn_dropout=0.25, fused=path != "plain", **kw)
    x = torch.randn(2, 12, 6, requires_grad=True)
    y = layer.train()(x)
    (mask,) = drawn
    mask = mask.bool()
    if not kw["content"]:
        keep = lambda head: (mask[:, head] if path == "algebra" else mask[head]).expand(2, 12, 12)  # noqa: E731
    elif path == "algebra":
        keep = lambda head: mask[:, :, head]  # noqa: E731
    else:
        keep = lambda head: mask[:, head]  # noqa: E731
    expected = _explicit_attention(layer, x, keep, p=0.25)
    assert 0 < (~mask).sum() < mask.numel() and torch.allclose(y, expected, atol=1e-12)
    g, g_expected = (torch.autograd.grad(out.sin().sum(), x)[0] for out in (y, expected))
    assert torch.allclose(g, g_expected, atol=1e-12)


def test_the_shared_product_is_bmm_of_the_expanded_probabilities_forward_and_backward():
    torch.manual_seed(13)
    probs, x = torch.randn(6, 5, requires_grad=True), torch.randn(3, 5, 4, requires_grad=True)
    assert torch.autograd.gradcheck(SharedProduct.apply, (probs, x))
    assert torch.equal(SharedProduct.apply(probs, x), torch.bmm(probs.expand(3, 6, 5), x))
    x_only = SharedProduct.apply(probs.detach(), x)
    assert torch.autograd.grad(x_only.sum(), x)[0].shape == x.shape  # one input needing no gradient


def test_on_the_cpu_the_fused_layer_takes_the_algebra_where_it_pays_elsewhere_sdpa(monkeypatch):
    torch.manual_seed(7)
    kw = dict(positional="learned", content=True, relative_query=True)
    fused = MultiHeadSelfAttention(16, heads=3, grid=(4, 4), fused=True, **kw).float().eval()
    plain = MultiHeadSelfAttention(16, heads=3, grid=(4, 4), fused=False, **kw).float().eval()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(32, 16, 16, dtype=torch.float32)
    calls, algebra = [], []
    real_sdpa, real_context = torch.nn.functional.scaled_dot_product_attention, content_algebra.context
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or real_sdpa(*a, **k))
    monkeypatch.setattr(content_algebra, "context", lambda *a: algebra.append(1) or real_context(*a))
    assert content_algebra.pays(fused, 32) and not content_algebra.pays(fused, 1)  # by FLOPs: not for one image
    assert torch.allclose(fused(x), plain(x), atol=1e-6) and algebra == [1] and not calls
    assert torch.equal(fused(x[:1]), plain(x[:1])) and algebra == [1]  # one image: the plain path's operations
    keys = fused.keys(x)  # keys given (hierarchical models): the plain path
    assert torch.equal(fused(x, keys), plain(x, keys)) and algebra == [1]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 layers: autocast leaves float64 alone
        y_fused, y_plain = fused(x), plain(x)
    assert y_fused.dtype == y_plain.dtype == torch.bfloat16 and algebra == [1, 1] and not calls
    assert (y_fused.float() - y_plain.float()).abs().max() <= 0.02 * y_plain.float().abs().max()
    assert not attention.sdpa_pays(x) and attention.sdpa_pays(torch.empty(1, device="meta"))
    monkeypatch.setattr(attention, "sdpa_pays", lambda x: True)
    fused(x)
    assert calls == [1]  # where it pays, SDPA


@pytest.mark.parametrize("kw", [v for v in VARIANTS if v["content"]], ids=lambda kw: "-".join(map(str, kw.values())))
@pytest.mark.parametrize("head_dim", [6, 11])
def test_content_algebra_is_the_plain_attention_in_float64_outputs_and_gradients(kw, head_dim):
    """x M x'^T with the per-key, per-query and positional terms: the plain layer's outputs and the gradients to
    the input and every parameter, in float64, for heads narrower and wider than the model, on a grid that is not
    square and with every parameter drawn large enough to matter (b_k's gradient is 0 up to rounding on both)."""
    torch.manual_seed(11)
    layer = MultiHeadSelfAttention(8, heads=3, grid=(3, 5), head_dim=head_dim, fused=False, **kw)
    for p in layer.parameters():
        torch.nn.init.normal_(p, std=0.4)
    x = torch.randn(2, 15, 8, requires_grad=True)
    grads = []
    for use_algebra in (False, True):
        y = content_algebra.context(layer, x).reshape(2, 15, -1) if use_algebra else layer(x, None)
        if use_algebra:
            y = layer.value(y)
        grads.append([y, *torch.autograd.grad(y.sin().sum(), [x, *layer.parameters()])])
    scale = max(g.abs().max() for g in grads[0])
    for plain, algebra in zip(*grads):
        assert (plain - algebra).abs().max() <= 1e-13 * scale


def test_content_algebra_pays_at_the_papers_size_and_not_for_narrow_heads():
    kw = dict(positional="learned", content=True, relative_query=True)
    paper = MultiHeadSelfAttention(400, heads=9, grid=(16, 16), **kw)
    assert content_algebra.pays(paper, 8) and not content_algebra.pays(paper, 1)
    narrow = MultiHeadSelfAttention(400, heads=8, grid=(16, 16), head_dim=50, **kw)  # ViT-like heads of width 50
    assert not content_algebra.pays(narrow, 100)


@pytest.mark.parametrize("positional", ["quadratic", "quadratic_aniso", "learned"])
def test_positional_only_attention_is_the_same_for_every_image(positional):
    torch.manual_seed(6)
    layer = MultiHeadSelfAttention(8, heads=4, grid=(3, 3), positional=positional).eval()
    p = layer.attention_probs(torch.randn(5, 9, 8))
    assert torch.allclose(p, p[:1].expand_as(p))
    assert torch.allclose(p.sum(-1), torch.ones(5, 4, 9))


def test_content_attention_changes_with_the_image():
    torch.manual_seed(7)
    layer = MultiHeadSelfAttention(8, heads=2, grid=(3, 3), positional="learned", content=True).eval()
    p = layer.attention_probs(torch.randn(2, 9, 8) * 3)
    assert not torch.allclose(p[0], p[1], atol=1e-3)
    assert torch.allclose(p.sum(-1), torch.ones(2, 2, 9))


def test_head_dim_is_independent_of_width_and_any_head_count_works():
    for heads in (1, 2, 9, 16):
        layer = MultiHeadSelfAttention(12, heads=heads, grid=(2, 3), positional="learned", content=True, head_dim=5)
        assert layer.query.out_features == heads * 5
        assert layer.value.in_features == heads * 12
        assert layer(torch.randn(2, 6, 12)).shape == (2, 6, 12)


def test_bad_layer_options_are_rejected():
    with pytest.raises(ValueError, match="positional"):
        MultiHeadSelfAttention(4, 2, (2, 2), positional="gaussian")
    with pytest.raises(ValueError, match="neither"):
        MultiHeadSelfAttention(4, 2, (2, 2), positional="none", content=False)
    with pytest.raises(ValueError, match="relative_query"):
        MultiHeadSelfAttention(4, 2, (2, 2), positional="quadratic", relative_query=True)
    with pytest.raises(ValueError, match="tokens"):
        MultiHeadSelfAttention(4, 2, (2, 2))(torch.randn(1, 5, 4))


@pytest.mark.parametrize("positional", ["quadratic", "quadratic_aniso", "learned"])
@pytest.mark.parametrize("fused", [True, False])
def test_positional_only_forward_is_one_fixed_linear_map_of_the_image(positional, fused):
    """Without content the attention cannot depend on x: forward(x) - b is linear in x, image by image."""
    torch.manual_seed(8)
    layer = MultiHeadSelfAttention(6, heads=3, grid=(3, 3), positional=positional, fused=fused).eval()
    x1, x2 = torch.randn(2, 9, 6), torch.randn(2, 9, 6)
    b = layer.value.bias
    lhs = layer(2 * x1 + 3 * x2) - b
    assert torch.allclose(lhs, 2 * (layer(x1) - b) + 3 * (layer(x2) - b), atol=1e-10)
    # and an image's output does not depend on which other images share its batch
    assert torch.allclose(layer(torch.cat([x1[:1], x2[:1]]))[0], layer(x1)[0], atol=1e-12)


def test_positional_scores_stay_float32_under_bf16_autocast():
    layer = MultiHeadSelfAttention(8, heads=2, grid=(4, 4), positional="quadratic").float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.position_scores().dtype == torch.float32
