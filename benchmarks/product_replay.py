"""A training step's matrix products, recorded once and replayed alone: what the step's share of the GEMM peak can
reach with nothing else in the step, measured rather than read off a profile.

`record(step)` runs the step once and notes every matrix product it calls (mm, bmm, addmm, baddbmm, addbmm and their
in-place forms, forward and backward, after autocast has chosen their dtype): each operand's shape, strides and
dtype, and the scalars. `Products.replay` then calls the same products, in the same order, on operands laid out the
same way (a transposed view stays a transposed view, a broadcast batch keeps its stride 0), with nothing between
them; or with every operand contiguous, which says whether another layout of the same products would run faster.
`Products.flops` counts their work as torch.utils.flop_counter does, so a replay that missed some of the step's
products shows as fewer FLOPs than the step's count.

What the replay does not keep: which operands shared memory in the step (a weight read forward and backward, a
product's output read by the next, the slices of one .out buffer). Each operand gets its own memory, filled with
random normal numbers (a product's speed does not depend on the values, except for subnormal floats, which randn
does not draw), so the replay may find fewer of them in cache than the step did. Its rate bounds the step's only
where it runs faster than the step's products do; where the replay alone takes longer than the whole step, it
bounds nothing, and make bench says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten
PRODUCTS = {aten.mm: (0, 1), aten.bmm: (0, 1), aten.addmm: (1, 2), aten.addmm_: (1, 2), aten.baddbmm: (1, 2),
            aten.baddbmm_: (1, 2), aten.addbmm: (1, 2), aten.addbmm_: (1, 2)}  # op: where its two factors are


@dataclass(frozen=True)
class Operand:
    """A tensor argument as the step passed it: enough to make another like it."""
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, t: torch.Tensor) -> "Operand":
        return cls(tuple(t.shape), tuple(t.stride()), t.dtype, t.device)

    def contiguous(self) -> "Operand":
        """The same operand laid out row-major (a stride-0 batch made whole)."""
        return Operand(self.shape, torch.empty(self.shape, device="meta").stride(), self.dtype, self.device)

    def make(self, generator: torch.Generator) -> torch.Tensor:
        """A tensor of this shape, strides and dtype over its own random storage."""
        extent = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride) if n > 0)
        base = torch.randn(extent, generator=generator).to(self.device, self.dtype)
        return base.as_strided(self.shape, self.stride)


@dataclass
class Call:
    op: object  # the overload called, e.g. aten.mm.default or aten.mm.out
    args: tuple
    kwargs: dict

    @property
    def flops(self) -> int:
        """2 m k n per product (times the batch for the batched ones); the added term of addmm & co. not counted."""
        i, j = PRODUCTS[self.op.overloadpacket]
        a, b = self.args[i].shape, self.args[j].shape
        batch = a[0] if len(a) == 3 else 1
        return 2 * batch * a[-2] * a[-1] * b[-1]


@dataclass
class Products:
    """The matrix products of one step, ready to replay."""
    calls: list[Call] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return sum(c.flops for c in self.calls)

    def replay(self, contiguous: bool = False, seed: int = 0) -> Callable[[], None]:
        """A function that calls every product once, in order, on operands made here once (outputs of .out
        overloads included, so that they are written in place as in the step). `contiguous`: every operand laid
        out row-major instead, which says whether another layout of the same products would run faster."""
        g = torch.Generator().manual_seed(seed)
        made = [(c.op, _materialise(c.args, g, contiguous), _materialise(c.kwargs, g, contiguous))
                for c in self.calls]

        def run():
            for op, args, kwargs in made:
                op(*args, **kwargs)
        return run


def _materialise(value, generator, contiguous):
    """`value` (a call's args or kwargs) with each Operand made into a tensor (made contiguous first if asked)."""
    return tree_map(lambda v: (v.contiguous() if contiguous else v).make(generator) if isinstance(v, Operand) else v,
                    value)


def _describe(value):
    """`value` (a call's args or kwargs) with each tensor replaced by its Operand."""
    return tree_map(lambda v: Operand.of(v) if isinstance(v, torch.Tensor) else v, value)


class _Recorder(TorchDispatchMode):
    def __init__(self, products: Products):
        super().__init__()
        self.products = products

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in PRODUCTS:
            self.products.calls.append(Call(func, _describe(args), _describe(kwargs)))
        return func(*args, **kwargs)


def record(step: Callable[[], object]) -> Products:
    """Run `step` once and return the matrix products it called (it runs: a training step updates its model)."""
    products = Products()
    with _Recorder(products):
        step()
    return products
