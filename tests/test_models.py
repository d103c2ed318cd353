"""The registry: published parameter counts, and every model's forward, backward and shapes.

Covers attnlib.models: the original code's parameter counts at the default size and [Re]'s counts of the
`_re` networks (exact; sa_learned_content_re off by the score attention.py lacks); every registered model
training a step (forward, backward, shapes; one and three channels) and deterministic in eval mode (but
vit_re, which redraws its "cls" token in eval mode too); attention_probs, one per layer, rows summing to 1
and equal to what the forward pass uses; attention_centers pointing where each head attends most, and
only on quadratic models; weight sharing of the hierarchical variants (content: the first pass's keys
reused); [Re]'s blocks and forward passes; overrides and input shapes checked; ResNet18 as torchvision's
with the CIFAR stem, width scaling every stage; ViT's configuration, fused == plain attention, patch size
checks; the self-attention networks starting as the original code leaves them.
"""
import pytest
import torch
import torch.nn.functional as F

from attnlib.models import count_parameters, create_model, list_models, model_config

# Parameter counts of the original code (docs/paper.md section 4, derived); ours must be within 0.5%.
PUBLISHED_PARAMS = {"sa_quadratic": 12_086_844, "sa_learned": 12_278_682, "sa_learned_content": 29_601_882,
                    "resnet18": 11_173_962}
SMALL = dict(layers=2, heads=4, hidden=16, ff=24, image_size=8)
# Tiny versions of every registered model, for 8x8 images.
SMALL_BY_FAMILY = {"sa_": SMALL, "vit": dict(SMALL, stem_channels=8, patch_size=2), "resnet": dict(width=8, image_size=8),
                   "san_": dict(widths=[16, 32], blocks=[1, 1], stem=8, rel_ratio=4, mid_ratio=2, share_planes=2,
                                image_size=8)}
SA_MODELS = [n for n in list_models() if n.startswith("sa_")]
ATTENTION_MODELS = SA_MODELS + ["vit", "vit_plain"]  # those with attention_probs(images) over tokens
# [Re]'s networks, counted from its code at the published size (docs/paper.md 6.2): ours must be exact.
RE_PARAMS = {"vit_re": 37_394_506, "san_pairwise_re": 606_874, "san_patchwise_re": 621_002,
             "sa_quadratic_re": 11_124_444, "sa_learned_re": 11_316_390}
RE_LEARNED_CONTENT = 28_478_682  # [Re]'s learned + content network, which sa_learned_content_re only approaches
# Parameters [Re]'s network holds in use but never trains: its SAN Bottleneck computes bn1 and discards it.
UNTRAINED = {"san_pairwise_re": ".bn1.", "san_patchwise_re": ".bn1."}
RANDOM_IN_EVAL = {"vit_re"}  # [Re]'s ViT draws its "cls" token at random on every pass, eval included


def small(name: str, **kw):
    family = next(f for f in SMALL_BY_FAMILY if name.startswith(f))
    return create_model(name, **{**SMALL_BY_FAMILY[family], **kw})


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_default_models_have_the_published_parameter_counts(name):
    n = count_parameters(create_model(name))
    assert abs(n - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.005, n


@pytest.mark.parametrize("name", sorted(RE_PARAMS))
def test_re_variants_have_re_parameter_counts_exactly(name):
    assert count_parameters(create_model(name)) == RE_PARAMS[name]


def test_sa_learned_content_re_count_differs_by_the_score_attention_py_lacks():
    # per layer: 400- instead of 200-wide row and column embeddings (31 shifts each), the 9-head maps of
    # the query-independent term, and the query and key biases (sa_net.py's module docstring)
    per_layer = 2 * 31 * (400 - 200) + 2 * 400 * 9 + 2 * 9 * 400
    assert count_parameters(create_model("sa_learned_content_re")) == RE_LEARNED_CONTENT + 6 * per_layer == 28_639_482


def test_required_models_are_registered():
    assert {"sa_quadratic", "sa_quadratic_aniso", "sa_learned", "sa_learned_content", "resnet18", "san_pairwise",
            "san_patchwise", "vit", "vit_plain", *RE_PARAMS, "sa_learned_content_re"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("channels", [3, 1])
def test_every_registered_model_trains_a_step(name, channels):
    torch.manual_seed(0)
    model = small(name, in_channels=channels, num_classes=7)
    x = torch.randn(3, channels, 8, 8)
    logits = model(x)
    assert logits.shape == (3, 7)
    logits.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        if name in UNTRAINED and UNTRAINED[name] in pname:
            assert p.grad is None, pname
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", sorted(set(list_models()) - RANDOM_IN_EVAL))
def test_every_model_is_deterministic_in_eval_mode(name):
    # Nothing is drawn at random in a forward pass outside dropout, except in [Re]'s ViT (RANDOM_IN_EVAL).
    model = small(name).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), model(x))


def test_vit_re_redraws_its_cls_token_in_eval_mode_too():
    model = small("vit_re").eval()
    x = torch.randn(2, 3, 8, 8)
    assert not torch.equal(model(x), model(x))
    torch.manual_seed(7)
    first = model(x)
    torch.manual_seed(7)
    assert torch.equal(model(x), first)  # the only randomness is the token, drawn from torch's generator


@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_attention_probs_one_per_layer_rows_sum_to_one(name):
    model = small(name).train()
    probs = model.attention_probs(torch.randn(2, 3, 8, 8))
    assert model.training  # restored
    assert len(probs) == SMALL["layers"]
    for p in probs:
        assert p.shape == (2, SMALL["heads"], 16, 16)
        assert torch.allclose(p.sum(-1), torch.ones(2, SMALL["heads"], 16), atol=1e-5)


def test_vit_re_attention_probs_cover_the_patch_tokens():
    model = small("vit_re")
    probs = model.attention_probs(torch.randn(2, 3, 8, 8))
    assert len(probs) == SMALL["layers"]
    for p in probs:  # the random token is neither query nor key here; rows lose what went to it
        assert p.shape == (2, SMALL["heads"], 16, 16)
        assert (p.sum(-1) < 1).all() and (p.sum(-1) > 0).all()


@pytest.mark.parametrize("name", ["sa_quadratic", "sa_quadratic_aniso"])
def test_attention_centers_point_where_each_head_attends_most(name):
    torch.manual_seed(1)
    model = create_model(name, **{**SMALL, "image_size": 16})  # 8x8 grid
    centers = model.attention_centers()
    assert centers.shape == (SMALL["layers"], SMALL["heads"], 2)
    with torch.no_grad():  # put the centers on whole offsets and sharpen, then read the argmax back
        for block in model.blocks:
            block.attn.positional.centers.copy_(torch.tensor([[1.0, -2.0], [0.0, 0.0], [-1.0, 1.0], [2.0, 2.0]]))
            if hasattr(block.attn.positional, "spreads"):
                block.attn.positional.spreads.fill_(3.0)
            else:
                block.attn.positional.inv_sqrt_cov.copy_(3 * torch.eye(2).expand(4, 2, 2))
    probs = model.attention_probs(torch.randn(1, 3, 16, 16))
    query = 3 * 8 + 3  # row 3, col 3 of the 8x8 grid
    for layer, p in enumerate(probs):
        for head in range(SMALL["heads"]):
            k = p[0, head, query].argmax().item()
            offset = [k // 8 - 3, k % 8 - 3]
            assert offset == model.attention_centers()[layer, head].tolist()


@pytest.mark.parametrize("hierarchical", [False, True])
@pytest.mark.parametrize("name", SA_MODELS)
def test_attention_probs_are_those_the_forward_pass_uses(name, hierarchical):
    """Recompute each layer's probabilities from the very (x, keys) that forward gives the attention."""
    torch.manual_seed(3)
    model = create_model(name, **SMALL, hierarchical=hierarchical).eval()
    images = torch.randn(2, 3, 8, 8) * 2
    seen = []

    def hook(module, args, kwargs, output):
        x = args[0]
        keys = args[1] if len(args) > 1 else kwargs.get("keys")
        seen.append(module.attention_probs(x, keys))

    handles = [b.attn.register_forward_hook(hook, with_kwargs=True) for b in model.blocks]
    model(images)
    for h in handles:
        h.remove()
    probs = model.attention_probs(images)
    assert len(seen) == len(probs) == SMALL["layers"]
    for a, b in zip(seen, probs):
        assert torch.allclose(a, b, atol=1e-6)


def test_attention_centers_only_for_quadratic_models():
    with pytest.raises(AttributeError, match="quadratic"):
        create_model("sa_learned", **SMALL).attention_centers()


@pytest.mark.parametrize("name", ["sa_quadratic", "sa_learned_content"])
def test_hierarchical_shares_one_block_across_depth(name):
    flat = create_model(name, layers=6)
    hier = create_model(name, layers=6, hierarchical=True)
    assert count_parameters(hier) < count_parameters(flat) / 4
    blocks = hier.layer_blocks()
    assert len(blocks) == 6 and all(b is blocks[0] for b in blocks)
    small = create_model(name, **SMALL, hierarchical=True)
    assert len(small.attention_probs(torch.randn(1, 3, 8, 8))) == SMALL["layers"]


def test_hierarchical_content_reuses_the_first_pass_keys():
    torch.manual_seed(2)
    model = create_model("sa_learned_content", **SMALL, hierarchical=True).eval()
    calls = []
    key = model.blocks[0].attn.key
    key.register_forward_hook(lambda *a: calls.append(1))
    model(torch.randn(2, 3, 8, 8))
    assert len(calls) == 1  # computed once, used at both depths


@pytest.mark.parametrize("name", ["sa_quadratic_re", "sa_learned_re", "sa_learned_content_re"])
def test_sa_re_blocks_are_re_blocks(name):
    """[Re]'s EncoderBlock (main/models/): LN(x + attention), then LN(x + ReLU feed-forward); no dense layer
    after the attention, no hidden dropout, PyTorch's LayerNorm eps."""
    torch.manual_seed(10)
    model = small(name).eval()
    block = model.blocks[0]
    x = torch.randn(2, 16, SMALL["hidden"])
    h = block.norm1(x + block.attn(x))
    assert torch.allclose(block(x), block.norm2(h + block.ff_out(F.relu(block.ff_in(h)))), atol=1e-6)
    assert isinstance(block.attn_out, torch.nn.Identity) and block.dropout.p == 0 and block.norm1.eps == 1e-5
    assert block.attn.relative_query == (name == "sa_learned_content_re")


def test_sa_learned_re_head_map_biases_change_no_output():
    torch.manual_seed(11)
    model = small("sa_learned_re").eval()
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.positional.head_keys_row.bias.normal_(0, 5)
            block.attn.positional.head_keys_col.bias.normal_(0, 5)
    assert torch.allclose(model(x), before, atol=1e-5)  # one number added to every key's score
    with pytest.raises(ValueError, match="positional_bias needs positional='learned'"):
        create_model("sa_quadratic_re", positional_bias=True)


def test_overrides_are_checked():
    with pytest.raises(ValueError, match="unknown option 'head'"):
        create_model("sa_quadratic", head=4)
    with pytest.raises(ValueError, match="must be int"):
        create_model("sa_quadratic", heads="9")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("sa_gaussian")
    with pytest.raises(ValueError, match="divisible"):
        create_model("sa_quadratic", image_size=7)
    assert model_config("sa_quadratic", dropout=0).dropout == 0.0


def test_wrong_input_shape_is_one_clear_error():
    with pytest.raises(ValueError, match="expected images of shape"):
        create_model("sa_quadratic", **SMALL)(torch.randn(1, 1, 8, 8))


def test_non_square_images_are_not_silently_accepted():
    with pytest.raises(ValueError, match="expected images"):
        create_model("sa_learned", **SMALL)(torch.randn(1, 3, 8, 10))


# --- the peers: ResNet18 and ViT -------------------------------------------------------------------

def test_resnet18_is_torchvisions_with_the_cifar_stem():
    from torchvision.models.resnet import ResNet
    model = create_model("resnet18")
    assert isinstance(model, ResNet)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    feats = model.layer4(model.layer3(model.layer2(model.layer1(model.conv1(torch.randn(1, 3, 32, 32))))))
    assert feats.shape == (1, 512, 4, 4)  # 32 -> 32, 16, 8, 4: no stride in the stem


def test_resnet_width_scales_every_stage():
    model = create_model("resnet18", width=16, in_channels=1, image_size=28)
    assert [model.layer1[0].conv1.out_channels, model.layer4[0].conv1.out_channels] == [16, 128]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert count_parameters(model) < count_parameters(create_model("resnet18")) / 10


def test_vit_follows_the_re_configuration():
    vit, plain = create_model("vit"), create_model("vit_plain")
    assert vit.position.shape == (1, 256, 400)  # 2x2 patches of 32x32: 256 tokens of width 400
    assert len(vit.blocks) == 6 and vit.blocks[0].attn.heads == 9 and vit.blocks[0].ff[0].out_features == 512
    assert isinstance(vit.stem[-1], type(vit.stem[-2])) and vit.stem[0].out_channels == 64
    assert isinstance(plain.stem, torch.nn.Identity) and plain.patch.in_channels == 3
    assert "position" in dict(vit.named_parameters())  # learned; no class token, tokens are averaged


@pytest.mark.parametrize("name", ["vit", "vit_plain"])
def test_vit_fused_and_plain_attention_agree(name):
    torch.manual_seed(4)
    fused = small(name).eval()
    plain = small(name, fused=False).eval()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(3, 3, 8, 8)
    assert torch.allclose(fused(x), plain(x), atol=1e-5)


@pytest.mark.parametrize("hierarchical", [False, True])
def test_vit_attention_probs_are_those_the_forward_pass_uses(hierarchical):
    """Each layer's output is rebuilt from attention_probs and the layer's own values."""
    torch.manual_seed(5)
    model = small("vit", hierarchical=hierarchical).eval()  # fused: SDPA computes its own softmax
    x = torch.randn(2, 3, 8, 8)
    seen = []
    handles = [b.attn.register_forward_hook(lambda m, args, out: seen.append((m, args[0], out))) for b in model.blocks]
    model(x)
    for h in handles:
        h.remove()
    probs = model.attention_probs(x)
    assert len(seen) == len(probs) == SMALL["layers"]
    for (attn, inp, out), p in zip(seen, probs):
        v = attn._qkv(inp)[2]  # (B, heads, T, d)
        rebuilt = attn.out((p @ v).transpose(1, 2).flatten(2))
        assert torch.allclose(rebuilt, out, atol=1e-5)


@pytest.mark.parametrize("name", ["vit", "vit_plain"])
def test_vit_hierarchical_shares_one_block_across_depth(name):
    flat, hier = create_model(name), create_model(name, hierarchical=True)
    per_block = count_parameters(flat.blocks[0])
    assert count_parameters(flat) - count_parameters(hier) == 5 * per_block
    blocks = hier.layer_blocks()
    assert len(blocks) == 6 and all(b is blocks[0] for b in blocks)


def test_vit_re_has_re_configuration():
    model = create_model("vit_re")
    assert model.position.shape == (1, 257, 400)  # 256 patches and the random token
    attn = model.blocks[0].attn
    assert (attn.heads, attn.head_dim, attn.qkv.bias) == (9, 400, None)
    assert isinstance(model.norm, torch.nn.Identity)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 12 and all(m.eps == 1e-5 for m in norms)
    assert model.cfg.dropout == 0.0 and attn.attn_dropout == 0.1  # dropout on attention probabilities only


def re_vit_forward(model, images: torch.Tensor) -> torch.Tensor:
    """[Re]'s ViT forward (ViT/models/networks.py) written out with the model's weights, in eval mode."""
    cfg, p = model.cfg, model.cfg.patch_size
    features = model.stem(images)
    patches = F.unfold(features, p, stride=p)  # (B, C*p*p, N), as [Re]'s nn.Unfold
    cls = torch.rand(features.shape[0], features.shape[1], p, p).flatten(1)[..., None]  # uniform [0, 1)
    x = torch.cat([cls, patches], -1).transpose(1, 2) @ model.patch.weight.flatten(1).t() + model.patch.bias
    x = x + model.position
    b, t, _ = x.shape
    for block in model.blocks:
        h = block.norm1(x)  # [Re]: x = LN(x), then out(attention) + x
        weights = block.attn.qkv.weight.view(3, cfg.heads * cfg.head_dim, cfg.hidden)  # no bias
        q, k, v = ((h @ w.t()).view(b, t, cfg.heads, cfg.head_dim).transpose(1, 2) for w in weights)
        a = torch.softmax(q @ k.transpose(-2, -1) / cfg.head_dim ** 0.5, -1)
        x = block.attn.out((a @ v).transpose(1, 2).reshape(b, t, -1)) + h
        h = block.norm2(x)
        x = block.ff[3](F.gelu(block.ff[0](h))) + h
    return model.classifier(x.mean(1))  # all 257 tokens, no final LayerNorm


def test_vit_re_computes_re_forward():
    torch.manual_seed(8)
    model = small("vit_re", head_dim=6).eval()
    x = torch.randn(3, 3, 8, 8)
    torch.manual_seed(9)
    ours = model(x)
    torch.manual_seed(9)  # the same random token: both draw it after the stem, one uniform per feature
    with torch.no_grad():
        assert torch.allclose(ours, re_vit_forward(model, x), atol=1e-5)


def test_vit_patch_size_must_divide_the_image():
    with pytest.raises(ValueError, match="patch_size 3 does not divide image_size 32"):
        create_model("vit", patch_size=3)


def test_self_attention_networks_start_as_the_original_code_leaves_them():
    """The original applies no initialiser to its image model: embeddings N(0, 1), linear maps PyTorch's uniform
    +-1/sqrt(fan-in). With BERT's N(0, 0.02) on both factors the learned positional score starts near 0."""
    torch.manual_seed(0)
    original = create_model("sa_learned", layers=1, hidden=64, ff=32, image_size=16, downsample=2)
    pos = original.blocks[0].attn.positional
    assert 0.9 < pos.row_embeddings.weight.std().item() < 1.1
    assert pos.head_keys_row.weight.abs().max().item() <= 64 ** -0.5
    bert = create_model("sa_learned", layers=1, hidden=64, ff=32, image_size=16, downsample=2, init="bert")
    assert abs(bert.blocks[0].attn.positional.row_embeddings.weight.std().item() - 0.02) < 0.003
    scores = [m.blocks[0].attn.positional(8, 8).std().item() for m in (original, bert)]
    assert scores[0] > 100 * scores[1]  # the learned heads start uneven, not uniform
    with pytest.raises(ValueError, match="init must be one of"):
        create_model("sa_learned", init="xavier")
