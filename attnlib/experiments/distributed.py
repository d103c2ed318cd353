"""One training run across processes, GPUs and machines: DistributedDataParallel (DDP) through torchrun.

`python -m attnlib.distributed NOTEBOOK --profile PROFILE` trains a training notebook's planned runs (the
same run ids as the notebook's own serial runs), one after another, each one spread over every process
that torchrun starts. Afterwards `make reproduce PROFILE=...` (or the notebook itself) finds those runs
finished and reads them back instead of training them: their checkpoints and CSV rows are a 1-process
run's, only trained faster.

One machine with several GPUs (one process per GPU; `cuda:LOCAL_RANK` each, backend nccl):

    torchrun --standalone --nproc-per-node=8 -m attnlib.distributed 02_quadratic --profile paper
    make reproduce PROFILE=paper                 # reads the finished runs back, draws, writes the report

Several machines: the same command on each, with its own --node-rank (0 on the machine at HOST, whose
port 29500 the others reach; rank 0 runs there):

    torchrun --nnodes=2 --node-rank=0 --nproc-per-node=8 --rdzv-endpoint=HOST:29500 \\
             -m attnlib.distributed 02_quadratic --profile paper          # on HOST
    torchrun --nnodes=2 --node-rank=1 --nproc-per-node=8 --rdzv-endpoint=HOST:29500 \\
             -m attnlib.distributed 02_quadratic --profile paper          # on the second machine

(or --rdzv-backend=c10d --rdzv-id=NAME instead of --node-rank: torchrun then numbers the machines itself).
The profile's batch_size stays the global batch (and lr stays the profile's): 8 GPUs train 100 images a
step as 8 shards of 12 or 13.

Slurm (one task per node; torchrun starts the processes of its node; the first node is the rendezvous):

    #SBATCH --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 --cpus-per-task=32
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    srun torchrun --nnodes="$SLURM_NNODES" --nproc-per-node=8 --rdzv-id="$SLURM_JOB_ID" \\
         --rdzv-backend=c10d --rdzv-endpoint="$head:29500" -m attnlib.distributed 02_quadratic --profile paper

Options: `--results-dir DIR` (default: the parameter file's, results/ under the repository), `--params-dir
DIR` (default params/), `--dataset NAME` (as `make reproduce DATASET=...`: it changes the run ids, so give
the same one to both), `--only PREFIX` (the runs whose id starts with it), `--verbose` (the epoch lines).
Without torchrun it trains in this one process. Rank 0 alone writes the checkpoints and CSVs, into its
own results folder: on several machines use a shared folder, or run `make reproduce` on node 0. Every
machine needs the data set (data/ or Debian's Fashion-MNIST). An interrupted or killed launch resumes
from the last finished epoch when the same command is run again (with the same or another number of
processes, or with `make reproduce`).

What the processes do (attnlib.training.train.fit under a process group of world size > 1):
- the profile's batch_size is the GLOBAL batch: every process draws the same global batch as one process
  would (order and augmentation depend only on (seed, epoch)) and trains on its own contiguous rows of it
  (attnlib.loaders.BatchLoader's shards); each loss is weighed so that the averaged gradient is the
  1-process mean gradient exactly, also for a short last batch. The metric rows equal the 1-process
  run's within float rounding; with dropout the masks are drawn per process, so they differ.
- the same initialisation everywhere (the model is built after torch.manual_seed(seed) on every process,
  and DDP broadcasts rank 0's weights); BatchNorm layers become SyncBatchNorm on CUDA (statistics of the
  global batch, as in one process); on the CPU (gloo), BatchNorm keeps each process's own statistics.
- rank 0 reads the checkpoint and sends it to the others; its checkpoint holds the unwrapped model's state
  dict (the keys of a 1-process one) and every process's RNG state, so a resumed run continues exactly.

attnlib.training.process_group holds what fit uses of this (Ranks); this module is the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from attnlib import results
from attnlib.data import DataError
from attnlib.experiments import grid, params, settings
from attnlib.experiments import runs as experiment
from attnlib.experiments.settings import PROFILES
from attnlib.schema import ParamsError
from attnlib.training.process_group import TIMEOUT, ranks
from attnlib.training.train import TrainingError, resolve_device


class BadInput(ValueError):
    """What was asked for cannot be run; the message is one line."""


def under_torchrun() -> bool:
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init(params_device: str = "auto") -> torch.device:
    """Join torchrun's process group (nccl on CUDA, gloo on the CPU) and return this process's device:
    cuda:LOCAL_RANK where CUDA is present (unless the parameters ask for the CPU), else the CPU. Without
    torchrun: no group, and the parameters' device."""
    if not under_torchrun():
        return resolve_device(params_device)
    if torch.cuda.is_available() and params_device != "cpu":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=TIMEOUT)
    return device


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m attnlib.distributed",
                                 description="Train a notebook's planned runs with DDP (launch with torchrun).")
    ap.add_argument("notebook", help="a training notebook, e.g. 02_quadratic (or 02)")
    ap.add_argument("--profile", required=True, choices=PROFILES)
    ap.add_argument("--results-dir", default="", help="default: the parameter file's (results/ in the repository)")
    ap.add_argument("--params-dir", default="", help="folder holding <profile>/<notebook>.yaml (default: params/)")
    ap.add_argument("--dataset", default="", help="override the dataset, as make reproduce DATASET=... does")
    ap.add_argument("--only", default="", help="train only the runs whose id starts with this")
    ap.add_argument("--verbose", action="store_true", help="rank 0 prints a line per epoch")
    return ap.parse_args(argv)


def load_params(args: argparse.Namespace):
    """(notebook name, its TrainParams): params/<profile>/<notebook>.yaml with the command line's overrides,
    folders taken from the repository's root as the notebooks take them. Raises BadInput or ParamsError."""
    names = settings.training_notebooks()
    asked = Path(args.notebook).stem
    found = [n for n in names if n == asked] or [n for n in names if n.startswith(asked)]
    if len(found) != 1:
        raise BadInput(f"unknown notebook {args.notebook!r}: the training notebooks are {', '.join(names)}")
    params_dir = Path(args.params_dir) if args.params_dir else settings.REPO_ROOT / "params"
    path = params_dir / args.profile / f"{found[0]}.yaml"
    if not path.is_file():
        raise BadInput(f"no parameter file {path}: {found[0]} has no runs in profile {args.profile}")
    overrides = {"profile": args.profile}
    if args.results_dir:
        overrides["results_dir"] = str(Path(args.results_dir).resolve())
    if args.dataset:
        overrides["dataset"] = args.dataset
    p = params.load_with(path, overrides, where=f"{path} (with command-line overrides)")
    folders = {k: str((settings.REPO_ROOT / getattr(p, k)).resolve()) for k in ("data_root", "results_dir")}
    return found[0], dataclasses.replace(p, **folders)


def planned(p, only: str):
    """(data, the planned runs to train): all, or those whose id starts with `only`."""
    quiet = contextlib.redirect_stdout(io.StringIO()) if int(os.environ.get("RANK", "0")) else contextlib.nullcontext()
    with quiet:  # the data set's banner once, from rank 0
        data = experiment.load_data(p)
    runs = grid.plan(p, data)
    chosen = [r for r in runs if r.run_id.startswith(only)]
    if not chosen:
        raise BadInput(f"no planned run's id starts with {only!r}: they are {', '.join(r.run_id for r in runs)}")
    return data, chosen


def train_runs(notebook: str, p, data, runs, device: torch.device, verbose: bool = False) -> None:
    """Train each run in turn over every process, as experiment.run_grid trains it in one; rank 0 prints a line
    per run."""
    group = ranks(device)
    if group.lead:
        results.remove_stale_temp_files(results.profile_dir(p.results_dir, p.profile))  # left by a killed run
    group.barrier()
    for i, r in enumerate(runs, 1):
        t0 = time.perf_counter()
        rows = experiment.train_run(p, notebook, r, data, device, progress=verbose and group.lead,
                                    label=f"{i}/{len(runs)} ", lead=group.lead)
        if group.lead:
            last = rows[-1]
            print(f"run {i}/{len(runs)} {r.run_id}: {r.model}, {r.variant}, seed {r.seed}: epoch "
                  f"{last['epoch']}/{r.train.epochs}, test acc {last['test_acc']:.4f} "
                  f"({time.perf_counter() - t0:.1f} s, {group.world} x {device.type})", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    say = int(os.environ.get("RANK", "0")) == 0
    try:
        notebook, p = load_params(args)
        data, runs = planned(p, args.only)
    except (BadInput, ParamsError, DataError) as err:
        if say:
            print(f"error: {err}", file=sys.stderr)
        return 2
    device = init(p.device)
    try:
        train_runs(notebook, p, data, runs, device, args.verbose)
    except TrainingError as err:
        if say:
            print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if say:
            print("interrupted: run the same command again to resume from the last finished epoch", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if say:
        print(f"{len(runs)} run(s) of {notebook} finished in {p.results_dir}/{p.profile}/; "
              f"make reproduce PROFILE={p.profile} reads them back", flush=True)
    return 0

