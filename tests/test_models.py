"""The registry: published parameter counts, and every model's forward, backward and shapes."""
import pytest
import torch

from attnlib.models import count_parameters, create_model, list_models, model_config

# Parameter counts of the original code (REFERENCE.md section 4, derived); ours must be within 0.5%.
PUBLISHED_PARAMS = {"sa_quadratic": 12_086_844, "sa_learned": 12_278_682, "sa_learned_content": 29_601_882}
SMALL = dict(layers=2, heads=4, hidden=16, ff=24, image_size=8)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_default_models_have_the_published_parameter_counts(name):
    n = count_parameters(create_model(name))
    assert abs(n - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.005, n


def test_required_models_are_registered():
    assert {"sa_quadratic", "sa_quadratic_aniso", "sa_learned", "sa_learned_content"} <= set(list_models())


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_trains_a_step(name):
    torch.manual_seed(0)
    model = create_model(name, **SMALL, in_channels=3, num_classes=7)
    x = torch.randn(3, 3, 8, 8)
    logits = model(x)
    assert logits.shape == (3, 7)
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_attention_probs_one_per_layer_rows_sum_to_one(name):
    model = create_model(name, **SMALL).train()
    probs = model.attention_probs(torch.randn(2, 3, 8, 8))
    assert model.training  # restored
    assert len(probs) == SMALL["layers"]
    for p in probs:
        assert p.shape == (2, SMALL["heads"], 16, 16)
        assert torch.allclose(p.sum(-1), torch.ones(2, SMALL["heads"], 16), atol=1e-5)


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
@pytest.mark.parametrize("name", list_models())
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


def test_overrides_are_checked():
    with pytest.raises(ValueError, match="no option 'head'"):
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
