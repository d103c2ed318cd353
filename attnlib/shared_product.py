"""The product of positional-only attention: probabilities that every image shares, applied to each image's tokens.

Its own autograd function, so that the backward reads the shared probabilities as they lie (attention.py's
_positional_context lays them out so that the product writes what W_out reads, with no permutes).
"""
from __future__ import annotations

import torch


class SharedProduct(torch.autograd.Function):
    """probs (n, T), the same for every image, times x (B, T, D) -> (B, n, D): probs @ x[b] for each image b.

    What torch.bmm(probs.expand(B, n, T), x) computes, without the copies its backward makes: the gradient to x
    reads probs transposed, and a transposed stride-0 batch is made contiguous first (B * n * T numbers, 4% of
    [Re]'s quadratic network's bf16 step). Here it is one (T, n) @ (n, D) product per image, written in place.
    """

    @staticmethod
    def forward(ctx, probs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(probs, x)
        return torch.bmm(probs.expand(x.shape[0], -1, -1), x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        probs, x = ctx.saved_tensors
        grad_probs = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_probs = torch.bmm(grad, x.transpose(1, 2)).sum(0)  # (n, T): summed over the images
        if ctx.needs_input_grad[1]:
            grad_x = torch.empty_like(x)
            for image in range(x.shape[0]):
                torch.mm(probs.t(), grad[image], out=grad_x[image])
        return grad_probs, grad_x
