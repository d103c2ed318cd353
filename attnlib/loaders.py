"""Batches for training and evaluation: shuffled, augmented (random crop with padding, horizontal flip) and
normalised on the device, one shard per process under DDP; the same seed gives the same batches on any device."""
from __future__ import annotations

import torch

from attnlib.data import Dataset, normalize


def augment(x: torch.Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of a whole batch (B, C, H, W), any dtype.

    Zero padding happens before normalisation, as torchvision's RandomCrop on the raw image does.
    """
    b, c, h, w = x.shape
    if padding:
        xp = torch.nn.functional.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(b, c, h, w + 2 * padding)
        xp = xp.gather(2, rows)  # (B, C, H, W + 2p)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(b, c, h, w)
        x = xp.gather(3, cols)  # (B, C, H, W)
    if flip:
        mask = (torch.rand(b, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """The rows [lo, hi) of a batch of n that process `rank` of `world` takes: contiguous, not overlapping,
    together all n; the first n % world processes take one row more. Empty (lo == hi) where n < world."""
    per, extra = divmod(n, world)
    lo = rank * per + min(rank, extra)
    return lo, lo + per + (rank < extra)


class BatchLoader:
    """Iterates over (images, labels) batches of a split, on `device`, normalised (and augmented).

    The order and augmentation of epoch e depend only on (seed, e), so a resumed run sees exactly
    the batches an uninterrupted one would.

    Sharded (world > 1, for DDP): every process draws the same global batch, with the same order and
    augmentation as one process would, and yields only its own contiguous rows (shard_bounds), so that
    the processes together see each global batch once. A training batch that leaves a process no row
    (fewer rows than processes) yields it a stand-in, the global batch's last row, which the caller
    weighs 0 (shard_rows(i) is 0 there: every process must still run forward and backward); an
    evaluation batch is skipped instead.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std, batch_size: int, train: bool,
                 device: str | torch.device = "cpu", seed: int = 0, augment: bool = True, drop_last: bool = False,
                 rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world), got rank {rank} of world {world}")
        self.x, self.y = x, y
        self.mean, self.std = mean, std
        self.batch_size, self.train, self.device, self.seed = batch_size, train, torch.device(device), seed
        self.augment = augment and train
        self.drop_last = drop_last
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch_rows(self, i: int) -> int:
        """The number of rows of global batch i (the last one may be short)."""
        return min(self.batch_size, len(self.x) - i * self.batch_size)

    def shard_rows(self, i: int) -> int:
        """The number of this process's own rows of global batch i (0 where it gets a stand-in)."""
        lo, hi = shard_bounds(self.batch_rows(i), self.rank, self.world)
        return hi - lo

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.x), generator=g) if self.train else torch.arange(len(self.x))
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.world == 1:
                xb = self.x[idx].to(self.device, non_blocking=True)
                if self.augment:
                    xb = augment(xb, g)
                yield normalize(xb, self.mean, self.std), self.y[idx].to(self.device, non_blocking=True)
                continue
            lo, hi = shard_bounds(len(idx), self.rank, self.world)
            if lo == hi and not self.train:
                continue
            rows = slice(lo, hi) if lo < hi else slice(len(idx) - 1, len(idx))  # a stand-in, weighed 0
            if self.augment:  # the global batch's draws from g, as one process makes them; then this shard's rows
                xb = augment(self.x[idx].to(self.device, non_blocking=True), g)[rows]
            else:
                xb = self.x[idx[rows]].to(self.device, non_blocking=True)
            yield normalize(xb, self.mean, self.std), self.y[idx[rows]].to(self.device, non_blocking=True)


def loaders(ds: Dataset, batch_size: int, device="cpu", seed: int = 0, eval_batch_size: int | None = None,
            augment: bool = True, rank: int = 0, world: int = 1):
    """(train_loader, test_loader) for a data set; training batches are shuffled, and augmented where the data
    set takes the paper's augmentation and `augment` asks for it. world > 1: process `rank`'s shards of each
    global batch of `batch_size` (BatchLoader).

    Test batches are of `eval_batch_size` images, by default the training batch size. Larger ones fall out of
    the CPU's caches: on a 2-core AMD EPYC an evaluation pass of the quick profile's networks over 2,000 images
    took up to 2.4x as long at 500 images a batch as at 32-100 (sa_learned_content 3.8 s against 1.6-2.5 s,
    san_pairwise 4.2 against 1.8-2.1 s). The numbers do not depend on it beyond float rounding."""
    eval_batch_size = eval_batch_size or batch_size
    shard = dict(rank=rank, world=world)
    train = BatchLoader(ds.x_train, ds.y_train, ds.mean, ds.std, batch_size, True, device, seed, ds.augment and augment,
                        **shard)
    test = BatchLoader(ds.x_test, ds.y_test, ds.mean, ds.std, eval_batch_size, False, device, seed, **shard)
    return train, test
