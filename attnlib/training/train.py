"""fit(): SGD with the paper's schedule, bf16 autocast option, checkpoints every epoch, exact resume.

A run is identified by its run id; its checkpoint holds the model, the optimizer, the RNG state
and the metric rows so far. Rerunning an interrupted run continues after its last finished epoch
and ends with the same numbers as an uninterrupted run: each epoch's batch order and augmentation
depend only on (seed, epoch), and the dropout RNG is restored from the checkpoint. A damaged checkpoint
(cut off, overwritten, another run's) is moved aside as NAME.pt.damaged and the run starts again from
epoch 1, with one line saying so; its rows in the CSVs are replaced as it trains.

Under a process group of several processes (torchrun), fit trains with DDP, each process on its shard of every
global batch, rank 0 alone writing files; the helpers are attnlib.training.process_group's, the command line
attnlib.experiments.distributed's.
"""
from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from attnlib import messages, results
from attnlib.data import Dataset
from attnlib.loaders import loaders
from attnlib.training import process_group
from attnlib.training.progress import Bar
from attnlib.training.records import RunInfo, RunRecords
from attnlib.training.speed import SpeedOptions


class TrainingError(RuntimeError):
    """Training cannot go on (a NaN loss, say); the message says what happened and what to try."""


PRECISIONS = ("fp32", "bf16")  # bf16: autocast
FASTEST = "fastest"  # notebook 06's word for whichever of PRECISIONS this machine multiplies fastest
SCHEDULES = ("cosine", "step", "constant")
MAX_EPOCHS = 10_000  # the paper trains 300; more is a typo, not a run


@dataclass
class TrainSettings:
    """How a run trains: SGD, the learning-rate schedule, augmentation, precision. Defaults: the paper's
    (docs/paper.md section 3). The one source of these fields: a notebook's TrainParams and each run's
    TrainConfig both extend it. An impossible value raises ValueError naming the field first."""

    epochs: int = 300
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine: linear warm-up then cosine to 0; step: x gamma at milestones; constant
    warmup: float = 0.05  # fraction of all steps spent in linear warm-up
    milestones: list[int] = field(default_factory=list)  # epochs, for schedule=step
    gamma: float = 0.1
    label_smoothing: float = 0.0
    augment: bool = True  # the paper's random crop (padding 4) and horizontal flip, where the data set takes them
    precision: str = "fp32"  # one of PRECISIONS

    def __post_init__(self):
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.epochs > MAX_EPOCHS:
            raise ValueError(f"epochs must be at most {MAX_EPOCHS:,} (the paper trains 300), got {self.epochs:,}")
        for key in ("lr", "momentum", "weight_decay", "warmup", "gamma", "label_smoothing"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key} must be a finite number, got {getattr(self, key)}")
        for key in ("weight_decay", "momentum", "label_smoothing"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must not be negative, got {getattr(self, key)}")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be below 1 (SGD diverges otherwise), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a fraction of the steps in [0, 1), got {self.warmup}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be below 1, got {self.label_smoothing}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], the factor of the lr at each milestone, got {self.gamma}")
        if any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be epochs, at least 1, got {self.milestones}")
        if any(a >= b for a, b in zip(self.milestones, self.milestones[1:])):
            raise ValueError(f"milestones must be increasing epochs, each once, got {self.milestones}")
        if self.schedule == "step" and not self.milestones:
            raise ValueError("milestones must list epochs when schedule is step")


TRAIN_FIELDS = tuple(f.name for f in fields(TrainSettings))


@dataclass
class TrainConfig(TrainSettings):
    """One run's training: its settings and its seed."""

    seed: int = 42



def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device={name} asked for, but torch sees no CUDA GPU; use device=cpu or auto")
    return torch.device(name)


def lr_factor(step: int, total_steps: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """Multiplier of the base learning rate at a step (0-based)."""
    if cfg.schedule == "step":
        epoch = step // steps_per_epoch
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    warm = int(cfg.warmup * total_steps)
    if step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total_steps - warm)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD; parameters the model names in no_weight_decay() (Gaussian centers, spreads) get none."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay = [p for n, p in model.named_parameters() if n not in skip]
    no_decay = [p for n, p in model.named_parameters() if n in skip]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, precision: str = "fp32",
             group: process_group.Ranks | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a loader, in eval mode; with `group` (DDP), over every process's
    shard of it."""
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        with autocast(device, precision):
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    if group is not None:
        loss_sum, correct, n = group.all_sum(loss_sum, correct, n)
    return loss_sum / max(n, 1), correct / max(n, 1)



def _resume(model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, ckpt_path: Path, run_id: str,
            device: torch.device, fresh: bool = False) -> tuple[torch.optim.Optimizer, dict | None]:
    """Load the run's checkpoint, if it has one, into the model, the optimizer and the RNG: (optimizer, its
    state). Without one, or `fresh`: (optimizer, None). A damaged one is moved aside with one line saying so, and
    the run starts afresh: (a new optimizer, None)."""
    if fresh or not (ckpt_path.exists() or ckpt_path.is_symlink()):
        return opt, None
    initial = copy.deepcopy(model.state_dict())  # to start afresh if the checkpoint turns out damaged
    try:
        # On the CPU: RNG states must stay CPU tensors; load_state_dict copies weights to the device.
        state = results.load_checkpoint(ckpt_path, run_id)
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:  # weights of another shape or model
            raise results.DamagedCheckpoint(ckpt_path, messages.error_line(err)) from None
    except results.DamagedCheckpoint as err:
        model.load_state_dict(initial)
        aside = results.move_aside(ckpt_path)
        print(f"{ckpt_path} is damaged ({err.reason}): moved aside to {aside.name}; run {run_id} "
              "starts again from epoch 1", flush=True)
        return make_optimizer(model, cfg), None
    torch.set_rng_state(state["rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return opt, state


def fit(model: nn.Module, data: Dataset, cfg: TrainConfig, run: RunInfo, results_dir: str | Path = "results",
        device: str | torch.device = "auto", progress: bool = True, stop_after_epoch: int | None = None,
        speed: SpeedOptions | None = None, fresh: bool = False) -> list[dict]:
    """Train (or resume, or just return a finished run's rows) and record a metric row per epoch.
    stop_after_epoch: return after that epoch as if interrupted (for tests of resume). fresh: train from the first
    epoch even where a checkpoint exists (the first epoch's checkpoint replaces it).
    speed: attnlib.training.speed.SpeedOptions (TF32, torch.compile, channels-last), which change the numbers by float
    rounding only and are not part of the run's id; None changes nothing. The checkpoint holds the plain model's
    state dict. Under an initialised process group of several processes (torchrun), it trains with DDP: each process
    on its shard of every global batch of cfg.batch_size; rank 0 alone writes files (attnlib.training.process_group).
    """
    device = resolve_device(device) if isinstance(device, str) else device
    model.to(device)
    batch_format = speed.prepare(model, device) if speed is not None else None  # channels-last inputs, or None
    group = process_group.ranks(device)  # one process, or this one among several (DDP)
    progress = progress and group.lead
    ckpt_path = results.checkpoint_path(results_dir, run.profile, run.run_id)
    train_loader, test_loader = loaders(data, cfg.batch_size, device, seed=cfg.seed, augment=cfg.augment,
                                        **group.shard)
    steps_per_epoch = len(train_loader)
    records = RunRecords(model, run, cfg.seed, data, device, group.lead)  # at initialisation; a checkpoint replaces
    opt = make_optimizer(model, cfg)
    load = functools.partial(_resume, model, opt, cfg, ckpt_path, run.run_id, device, fresh)
    opt, state = group.resume(model, opt, load, cfg.seed)  # one process: load()
    start_epoch = 1 if state is None else records.restore(state) + 1
    if state is not None and start_epoch <= cfg.epochs and group.lead:
        print(f"{run.run_id}: resuming after epoch {state['epoch']} from {ckpt_path}", flush=True)
    if start_epoch > cfg.epochs:
        if group.lead:
            records.write(results_dir, run)
        group.barrier()
        return records.history

    meta = dict(asdict(run), seed=cfg.seed, epochs=cfg.epochs, params=sum(p.numel() for p in model.parameters()),
                precision=cfg.precision, device=group.describe(results.device_name(device)),
                torch=str(torch.__version__), git=results.git_commit())
    net = group.wrap(model)  # the model itself, or the model in DDP
    if speed is not None:
        net = speed.compiled(net)  # torch.compile'd when asked; `model` stays the plain module
    bar = Bar(run.run_id, cfg.epochs * steps_per_epoch, initial=(start_epoch - 1) * steps_per_epoch, enabled=progress)
    last_test = f", test acc {records.history[-1]['test_acc']:.3f}" if records.history else ""
    for epoch in range(start_epoch, cfg.epochs + 1):
        show = (lambda step, text, suffix=last_test: bar.update(step, text + suffix)) if progress else None
        train_loss, train_acc, lr, train_seconds = _train_epoch(net, opt, train_loader, cfg, device, group, epoch,
                                                                run.run_id, batch_format, show)
        test_loss, test_acc = evaluate(model, test_loader, device, cfg.precision, group)
        row = dict(meta, epoch=epoch, train_loss=train_loss, train_acc=train_acc,
                   test_loss=test_loss, test_acc=test_acc, lr=lr, seconds=round(train_seconds, 3))
        records.add(model, row)
        _checkpoint(ckpt_path, model, opt, epoch, device, run, group, records, results_dir)
        last_test = f", test acc {test_acc:.3f}"
        bar.update(epoch * steps_per_epoch, f"epoch {epoch}/{cfg.epochs}, loss {train_loss:.3f}, "
                                            f"acc {train_acc:.3f}{last_test}")
        if progress:
            print(f"{run.run_id} epoch {epoch}/{cfg.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
                  f"test loss {test_loss:.4f} acc {test_acc:.4f} | {train_seconds:.1f}s", flush=True)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    bar.close()
    return records.history


def _checkpoint(path: Path, model: nn.Module, opt, epoch: int, device: torch.device, run: RunInfo, group,
                records: RunRecords, results_dir):
    """After an epoch: the checkpoint and the run's CSVs, written by the lead process while the others wait."""
    rng_ranks = group.rng_states()  # DDP: every process's RNG, gathered (every process calls it)
    if group.lead:
        _save(path, model, opt, epoch, device, run, rng_ranks, **records.as_dict())
        records.write(results_dir, run)
    group.barrier()  # rank 0's files are written


def _train_epoch(net: nn.Module, opt, loader, cfg: TrainConfig, device: torch.device, group, epoch: int, run_id: str,
                 batch_format, show=None) -> tuple[float, float, float, float]:
    """One epoch of SGD over `loader` with the schedule's learning rate at every step: (mean training loss,
    training accuracy, the last step's lr, seconds). `show(step, text)`, when given, is told the running loss
    and accuracy every 10 steps. A loss that is not finite raises TrainingError."""
    net.train()
    loader.set_epoch(epoch)
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, lr = 0, cfg.lr
    for i, (x, y) in enumerate(loader):
        if batch_format is not None:
            x = x.contiguous(memory_format=batch_format)
        step = (epoch - 1) * steps_per_epoch + i
        lr = cfg.lr * lr_factor(step, total_steps, cfg, steps_per_epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(device, cfg.precision):
            logits = net(x)
        # DDP: this process's part of the global batch's loss; the global batch's mean, hits and size
        loss, batch_loss, batch_correct, batch_n = group.batch_loss(logits, y, cfg.label_smoothing, loader, i)
        if not torch.isfinite(batch_loss):
            raise TrainingError(f"{run_id}: loss became {batch_loss.item()} at epoch {epoch}, step {i} "
                                f"(lr {lr:.3g}); lower lr or use precision=fp32")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += batch_loss * batch_n
        correct += batch_correct
        seen += batch_n
        if show is not None and i % 10 == 0:
            show(step + 1, f"epoch {epoch}/{cfg.epochs}, loss {batch_loss.item():.3f}, acc {correct.item() / seen:.3f}")
    return loss_sum.item() / seen, correct.item() / seen, lr, time.perf_counter() - t0


def _save(path: Path, model: nn.Module, opt, epoch: int, device: torch.device, run: RunInfo, rng_ranks: dict,
          **records: list[dict]):
    """The checkpoint after `epoch`: weights, optimizer, RNG states (every rank's under DDP) and the run's records."""
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    results.atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                               "rng": torch.get_rng_state(), "cuda_rng": cuda_rng, **records, "run_id": run.run_id,
                               **rng_ranks}, path)


