"""attnlib.dropout: torch's inverted dropout with a mask drawn from random bits on the CPU.

Each element dropped with probability p (counted over a million draws) and the others scaled by 1/(1 - p),
so the mean is kept; the drop probability round(p * 2^16) / 2^16 exactly, counted over all 2^16 values; the
random bits uniform in every position of a 64-bit word (a draw of 63 bits would leave one quarter of the int16s
never negative); `drop` zeroing the same elements without the scale, in the dtype given; the same seed or generator state giving the same mask; the
gradient passing through the kept elements only; identity in evaluation and at p = 0, zeros at p = 1; the
module a drop-in nn.Dropout with the same (empty) state and the models built with it; torch_masks() giving
torch's own dropout.
"""
import contextlib

import pytest
import torch

from attnlib.dropout import Dropout, drop, dropout, keep_mask, random_bits16, torch_masks
from attnlib.models import create_model

N = 1_000_000


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_each_element_is_dropped_with_probability_p_and_the_rest_scaled(p):
    torch.manual_seed(0)
    x = torch.full((N,), 3.0)
    y = dropout(x, p)
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - p) < 5 * (p * (1 - p) / N) ** 0.5  # five standard deviations of the count
    assert torch.allclose(y[y != 0], torch.tensor(3.0 / (1 - p)))
    assert abs(y.mean().item() - 3.0) < 0.02  # inverted dropout keeps the mean


def test_the_drop_probability_is_p_rounded_to_sixteen_bits(monkeypatch):
    every_value = torch.arange(-2 ** 15, 2 ** 15, dtype=torch.int16)  # each 16-bit draw once
    monkeypatch.setattr("attnlib.dropout.random_bits16", lambda n: every_value[:n])
    for p in (0.1, 0.25, 1 / 3, 0.9):
        dropped = (~keep_mask((2 ** 16,), p)).sum().item()
        assert dropped == round(p * 2 ** 16) and abs(dropped / 2 ** 16 - p) <= 2 ** -17


def test_random_bits_are_uniform_in_every_position_of_the_word():
    torch.manual_seed(1)
    bits = random_bits16(N)
    for quarter in (bits[i::4] for i in range(4)):  # the four 16-bit parts of each 64-bit draw
        assert abs((quarter < 0).double().mean().item() - 0.5) < 0.006
        for b in range(15):
            assert abs(((quarter >> b) & 1).double().mean().item() - 0.5) < 0.006


@pytest.mark.parametrize("masks", ["attnlib", "torch"])
def test_drop_zeroes_the_same_elements_as_dropout_and_leaves_the_scale_to_the_caller(masks):
    x = torch.rand(64, 33) + 0.5
    context = torch_masks() if masks == "torch" else contextlib.nullcontext()
    with context:
        torch.manual_seed(6)
        dropped, scale = drop(x.to(torch.bfloat16), 0.3)
        torch.manual_seed(6)
        reference = dropout(x, 0.3)
    assert dropped.dtype == torch.bfloat16 and scale == pytest.approx(1 / 0.7)
    assert torch.equal(dropped == 0, reference == 0) and 0 < (dropped == 0).sum() < x.numel()
    kept = dropped != 0
    assert torch.equal(dropped[kept], x.to(torch.bfloat16)[kept])  # not scaled
    assert torch.allclose(dropped.float() * scale, reference, rtol=1e-2)
    assert drop(x, 0.3, training=False) == (x, 1.0) and drop(x, 0.0) == (x, 1.0)
    assert torch.equal(drop(x, 1.0)[0], torch.zeros_like(x))


def test_the_same_seed_or_generator_state_draws_the_same_mask():
    torch.manual_seed(2)
    first = keep_mask((64, 33), 0.3)
    state = torch.get_rng_state()
    after = keep_mask((64, 33), 0.3)
    torch.manual_seed(2)
    assert torch.equal(keep_mask((64, 33), 0.3), first)
    torch.set_rng_state(state)
    assert torch.equal(keep_mask((64, 33), 0.3), after) and not torch.equal(first, after)
    torch.manual_seed(2)
    as_bf16 = keep_mask((64, 33), 0.3, torch.bfloat16)  # drawn in the dtype it multiplies: the same 0s and 1s
    assert as_bf16.dtype == torch.bfloat16 and torch.equal(as_bf16, first.to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_gradient_flows_through_the_kept_elements_only(dtype):
    torch.manual_seed(3)
    x = torch.randn(7, 5, 3, dtype=dtype, requires_grad=True)
    y = dropout(x, 0.25)
    y.backward(torch.ones_like(y))
    kept = y != 0
    assert y.dtype == dtype and y.shape == x.shape
    assert torch.equal(x.grad, torch.where(kept, torch.tensor(1 / 0.75, dtype=dtype), torch.tensor(0, dtype=dtype)))


def test_identity_in_evaluation_and_at_zero_zeros_at_one():
    x = torch.randn(4, 6)
    assert torch.equal(dropout(x, 0.3, training=False), x) and torch.equal(dropout(x, 0.0), x)
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_the_module_is_a_drop_in_nn_dropout():
    layer = Dropout(0.2)
    assert isinstance(layer, torch.nn.Dropout) and layer.state_dict() == {} and "p=0.2" in repr(layer)
    x = torch.randn(8, 8)
    assert torch.equal(layer.eval()(x), x)
    torch.manual_seed(4)
    y = layer.train()(x)
    torch.manual_seed(4)
    assert torch.equal(y, dropout(x, 0.2))


@pytest.mark.parametrize("name", ["sa_quadratic", "sa_learned_content", "vit"])
def test_the_models_drop_out_with_it(name):
    model = create_model(name, layers=1, hidden=16, ff=16, heads=2, image_size=8)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert layers and all(isinstance(m, Dropout) for m in layers)


def test_within_torch_masks_it_is_torchs_dropout():
    x = torch.randn(50, 40)
    with torch_masks():
        torch.manual_seed(5)
        ours = Dropout(0.3)(x)
    torch.manual_seed(5)
    assert torch.equal(ours, torch.nn.functional.dropout(x, 0.3))
    torch.manual_seed(5)
    assert not torch.equal(Dropout(0.3)(x), ours)  # outside it, attnlib's masks again
