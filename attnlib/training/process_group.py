"""The processes that train one run together (DDP under torchrun), as attnlib.training.train.fit sees them.

`ranks(device)` is this process's place among them: rank 0 of 1 without a process group (and then every
method does exactly what fit does without DDP), or rank r of world w under torchrun. How the global batch
is shared, how losses are weighed, who writes and how a run resumes: attnlib.experiments.distributed's docstring.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

TIMEOUT = datetime.timedelta(minutes=30)  # rank 0 alone writes checkpoints and records while the others wait


@dataclass
class Ranks:
    """This process's place among the processes that train one run: rank `rank` of `world`, training on
    `device`. world == 1 is one process, and every method does exactly what fit does without DDP."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def lead(self) -> bool:
        """This process writes the checkpoints and CSVs, and prints."""
        return self.rank == 0

    @property
    def shard(self) -> dict:
        """The loaders' shard options (attnlib.loaders.loaders)."""
        return dict(rank=self.rank, world=self.world)

    @property
    def _comm(self) -> torch.device:
        """Where collectives take their tensors: the GPU for nccl, the CPU for gloo."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def describe(self, device_name: str) -> str:
        """The metric rows' device: '4 x NVIDIA H100 ...' under DDP."""
        return device_name if self.world == 1 else f"{self.world} x {device_name}"

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module that trains: the model itself, or the model in DDP (BatchNorm made SyncBatchNorm on CUDA;
        the layers are replaced inside `model`, whose state dict keeps its keys)."""
        if self.world == 1:
            return model
        if self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[self.device.index], output_device=self.device.index)
        return DistributedDataParallel(model)

    def batch_loss(self, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float, loader, i: int):
        """(loss to back-propagate, the global batch's mean loss, its correct predictions, its size) for batch i
        of `loader`. DDP averages the processes' gradients, so each process's loss is its rows' summed loss
        times world / (global batch size): the average is the 1-process mean gradient. A stand-in row
        (loader.shard_rows(i) == 0) weighs 0."""
        if self.world == 1:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
            return loss, loss.detach(), (logits.argmax(1) == y).sum(), len(y)
        total, own = loader.batch_rows(i), loader.shard_rows(i)
        summed = F.cross_entropy(logits.float(), y, reduction="sum", label_smoothing=label_smoothing)
        loss = summed * (self.world / total if own else 0.0)
        sums = torch.stack([summed.detach(), (logits.argmax(1) == y).sum().float()]) * float(own > 0)
        sums = sums.to(self._comm)
        dist.all_reduce(sums)
        sums = sums.to(self.device)
        return loss, sums[0] / total, sums[1].round().long(), total

    def all_sum(self, *values: float) -> tuple:
        """Each value summed over the processes (the evaluation's sums)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._comm)
        dist.all_reduce(t)
        return tuple(t.tolist())

    def barrier(self):
        """Every process waits here (for rank 0's files)."""
        if self.world > 1:
            dist.barrier(device_ids=[self.device.index] if self._comm.type == "cuda" else None)

    def rng_states(self) -> dict:
        """Every process's RNG states, for the checkpoint (a collective: every process calls it): {} for one
        process, whose checkpoint holds its own under rng and cuda_rng."""
        if self.world == 1:
            return {}
        out = {"rng_ranks": self._gather(torch.get_rng_state())}
        if self.device.type == "cuda":
            out["cuda_rng_ranks"] = self._gather(torch.cuda.get_rng_state(self.device))
        return out

    def _gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        t = t.to(self._comm)
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [o.cpu() for o in out]

    def resume(self, model: nn.Module, opt: torch.optim.Optimizer, load, seed: int):
        """load() (attnlib.training.train's _resume: (optimizer, checkpoint state or None)) on rank 0, which alone reads
        the checkpoint (moving a damaged one aside); the others get its state from rank 0 and load it. Then each
        process's RNG: its own from a DDP checkpoint of this world size; otherwise rank 0 keeps the 1-process
        stream and the others draw from their own seed (dropout masks differ between processes)."""
        if self.world == 1:
            return load()
        opt, state = load() if self.lead else (opt, None)
        box = [state]
        dist.broadcast_object_list(box, src=0, device=self._comm)
        state = box[0]
        if state is not None and not self.lead:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        own = (state or {}).get("rng_ranks")
        if own is not None and len(own) == self.world:
            torch.set_rng_state(own[self.rank])
            cuda = state.get("cuda_rng_ranks")
            if self.device.type == "cuda" and cuda is not None and len(cuda) == self.world:
                torch.cuda.set_rng_state(cuda[self.rank], self.device)
        elif not self.lead:
            torch.manual_seed(seed * 1_000_003 + 1_009 * self.rank + (state["epoch"] if state else 0))
        return opt, state


def ranks(device: torch.device) -> Ranks:
    """This process's Ranks: from the initialised process group, or one process (no group, or a group of one)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return Ranks(dist.get_rank(), dist.get_world_size(), device)
    return Ranks(0, 1, device)
