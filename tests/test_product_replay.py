"""benchmarks/product_replay.py: a step's matrix products, recorded and replayed alone, are the step's products: the
same FLOPs as the counter finds in the step, the same ops, shapes, strides and dtypes (a transposed view stays
transposed, a broadcast batch keeps its stride 0, an .out product writes in place), or all contiguous when asked.
"""
import sys
from pathlib import Path

import pytest
import torch

from attnlib.models import create_model
from attnlib.report import timing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import product_replay  # noqa: E402


def _step(precision):
    torch.manual_seed(0)
    model = create_model("sa_learned_content_re", layers=1, hidden=32, heads=2, image_size=8)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
    return model, timing.train_step_fn(model, x, y, precision)


def _layouts(products):
    return [(c.op, [(a.shape, a.stride, a.dtype) for a in c.args if isinstance(a, product_replay.Operand)],
             {k: (v.shape, v.stride, v.dtype) for k, v in c.kwargs.items() if isinstance(v, product_replay.Operand)})
            for c in products.calls]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_recorded_products_are_the_work_the_flop_counter_finds_in_the_step(precision):
    model, step = _step(precision)
    products = product_replay.record(step)
    assert len(products.calls) > 10
    assert products.flops == timing.flops_per_image(model, "train", batch=4) * 4  # the counter counts in fp32
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32  # as autocast chose: the products that make the
    # maps and the positional terms stay in float32 under bf16 (attnlib.content_algebra), the rest are bf16
    assert sum(c.flops for c in products.calls if c.args[0].dtype == dtype) > 0.9 * products.flops


def test_the_replay_calls_the_same_products_laid_out_the_same_way():
    _, step = _step("bf16")
    products = product_replay.record(step)
    layouts = _layouts(products)
    strides = [s for _, args, _ in layouts for _, s, _ in args]
    assert any(s[-2] == 1 and s[-1] > 1 for s in strides)  # a transposed view
    assert _layouts(product_replay.record(products.replay())) == layouts
    contiguous = _layouts(product_replay.record(products.replay(contiguous=True)))
    assert [(op, [s for s, _, _ in args]) for op, args, _ in contiguous] == \
        [(op, [s for s, _, _ in args]) for op, args, _ in layouts]  # same ops and shapes
    assert all(stride == torch.empty(shape, device="meta").stride()
               for _, args, kwargs in contiguous for shape, stride, _ in args + list(kwargs.values()))


def test_a_broadcast_batch_and_an_out_product_replay_as_they_were_called():
    a, x = torch.randn(6, 5), torch.randn(3, 5, 4)
    out = torch.empty(3, 6, 4)

    def step():
        torch.bmm(a.expand(3, -1, -1), x)
        for i in range(3):
            torch.mm(a, x[i], out=out[i])
        torch.addmm(torch.zeros(4), a.t(), torch.randn(6, 4))
    products = product_replay.record(step)
    assert [str(c.op) for c in products.calls] == ["aten.bmm.default"] + ["aten.mm.out"] * 3 + ["aten.addmm.default"]
    assert products.calls[0].args[0].stride == (0, 5, 1) and products.calls[4].args[1].stride == (1, 5)
    assert products.calls[1].kwargs["out"].shape == (6, 4)
    assert products.flops == 2 * 3 * 6 * 5 * 4 + 3 * 2 * 6 * 5 * 4 + 2 * 5 * 6 * 4
    assert _layouts(product_replay.record(products.replay())) == _layouts(products)
    made = products.calls[0].args[0].make(torch.Generator().manual_seed(0))
    assert made.stride() == (0, 5, 1) and torch.equal(made[0], made[2]) and made.isfinite().all()
