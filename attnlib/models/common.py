"""Small pieces the model files share."""
from __future__ import annotations

from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module):
    """Run a block in eval mode (no dropout, BatchNorm running statistics), then restore the mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
