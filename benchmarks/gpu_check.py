"""`make gpu-check`: what a GPU machine must show before the paper profile is trained on it, in at most 8 minutes.

On CUDA, in this order, each part within its own time budget (a hard stop at HARD_LIMIT_S prints and writes what
was measured so far, and exits 2):

1. timing: every registered model's training step (forward, loss, backward, SGD; attnlib.report.timing: CUDA events,
   median of REPS calls after WARMUP) at the published size and the paper profile's batch, in fp32 (TF32 off),
   TF32 and bf16 autocast, with the peak memory (torch.cuda.max_memory_allocated); channels-last for ResNet18
   and SAN in fp32 and bf16;
2. dry run: 2 training steps of one model per family (sa_quadratic, resnet18, san_pairwise, vit) as the paper
   profile plans it (attnlib.experiments.grid.plan, its speed options: attnlib.training.speed.options) through attnlib.training.train.fit
   on generated CIFAR-shaped images, with its time per step and peak memory;
3. parity: `python -m attnlib.training.parity parity --device cuda` (fp32 against channels_last, TF32, bf16 and compile);
4. ddp: with 2 or more GPUs, the smoke profile's 02_quadratic trained over every GPU with NCCL
   (torchrun -m attnlib.distributed; its file with dropout 0) against one process, metric rows compared;
5. compile timing: sa_quadratic and resnet18 compiled, fp32, if time is left.

It prints one table and writes it as CSV (--out, default /tmp/gpu_check.csv). Exit status: 0 all well, 1 a
check failed, 2 the time limit cut it short. Without CUDA it prints one line saying so and exits 0.
`--device cpu --small` runs the same parts on the CPU with tiny models (to test this script without a GPU).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import torch
import yaml

from attnlib.data import make_synthetic
from attnlib.experiments import grid, params, settings
from attnlib.models import create_model, list_models
from attnlib.report import timing
from attnlib.training import parity, speed
from attnlib.training.dry_run import PeakMemory
from attnlib.training.records import RunInfo
from attnlib.training.train import fit

ROOT = Path(__file__).resolve().parent.parent
HARD_LIMIT_S = 470  # 8 minutes less a margin for printing and writing
BUDGET_S = {"timing": 150, "dry_run": 70, "parity": 170, "ddp": 60}  # the compile timing gets what is left
WARMUP, REPS = 2, 5
DRY_RUN_MODELS = {"sa_quadratic": "02_quadratic", "resnet18": "05_resnet", "san_pairwise": "03_san", "vit": "04_vit"}
CHANNELS_LAST_MODELS = ("resnet18", "san_pairwise", "san_patchwise")
COMPILE_TIMED = ("sa_quadratic", "resnet18")
DDP_TOL = 1e-4  # metric rows of G processes against 1 (tests/test_distributed.py holds gloo on the CPU to 1e-5)
SMALL = {  # --small: tiny sizes, for running this script on a CPU
    "sa": dict(layers=1, heads=2, hidden=8, ff=8, image_size=8), "resnet18": dict(width=4, image_size=8),
    "san": dict(widths=[8, 16], blocks=[1, 1], stem=8, rel_ratio=4, mid_ratio=2, share_planes=2, image_size=8),
    "vit": dict(hidden=16, heads=2, layers=1, ff=16, stem_channels=8, image_size=8),
}
COLUMNS = ["part", "model", "setting", "batch", "ms_per_step", "images_per_s", "peak_mb", "result", "detail"]
NO_GPU = ("gpu-check: no GPU present (torch sees no CUDA device), nothing measured; on a GPU it times every model's "
          "training step at the published size in fp32, TF32 and bf16 with peak memory, runs the speed options' parity "
          "check on CUDA, a 2-step dry run of one model per family, and DDP over NCCL when there are 2 or more GPUs")


class Check:
    """The rows so far, the clock, and the table printed and written once (at the end or at the time limit)."""

    def __init__(self, out: Path, small: bool):
        self.rows: list[dict] = []
        self.out, self.small = out, small
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._done = False

    def add(self, **row):
        with self._lock:
            self.rows.append({c: row.get(c, "") for c in COLUMNS})
        shown = ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("part", "model", "setting") and v != "")
        print(f"  {row['part']} {row['model']} {row.get('setting', '')}: {shown}", flush=True)

    def left(self) -> float:
        return HARD_LIMIT_S - (time.monotonic() - self.start)

    def deadline(self, part: str) -> float:
        """time.monotonic() at which `part` must stop starting new work."""
        return time.monotonic() + min(BUDGET_S.get(part, self.left()), self.left())

    def finish(self, note: str = "") -> int:
        with self._lock:
            if self._done:
                return 0
            self._done = True
            df = pd.DataFrame(self.rows, columns=COLUMNS)
        print(f"\ngpu-check on {device_line()}, torch {torch.__version__}, "
              f"{time.monotonic() - self.start:.0f} s{'; ' + note if note else ''}")
        with pd.option_context("display.max_colwidth", 90, "display.width", 250):
            print(df.to_string(index=False, na_rep=""))
        self.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(self.out, index=False)
        print(f"written to {self.out}")
        failed = df["result"].astype(str).str.startswith(("FAIL", "error", "OOM"))
        return 2 if note else int(failed.any())


def device_line() -> str:
    if not torch.cuda.is_available():
        return "cpu"
    n = torch.cuda.device_count()
    return f"{n} x {torch.cuda.get_device_name(0)}"


def paper_batches() -> dict[str, int]:
    """Each model's training batch in the paper profile (params/paper/0[1-5]_*.yaml)."""
    out = {}
    for nb in settings.training_notebooks():
        path = ROOT / "params" / "paper" / f"{nb}.yaml"
        if path.exists():
            p = params.load(path)
            for name in p.models:
                out.setdefault(name, grid.train_settings(p, name)["batch_size"])
    return out


def small_options(name: str) -> dict:
    key = "sa" if name.startswith("sa_") else "san" if name.startswith("san_") else "vit" if name.startswith("vit") \
        else "resnet18"
    return dict(SMALL[key])


def _peak_reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan


def time_step(check: Check, device, name: str, model, batch: int, setting: str, part: str = "timing"):
    """One row: the training step of `model` at `batch` under `setting` (fp32, tf32, bf16, fp32+channels_last,
    bf16+channels_last, fp32+compile)."""
    precision = "bf16" if setting.startswith("bf16") else "fp32"
    channels_last = "channels_last" in setting
    try:
        _peak_reset(device)
        with speed.tf32_flags(setting == "tf32"):
            if "compile" in setting:
                model = torch.compile(model, dynamic=False, options=speed.COMPILE_OPTIONS)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            x, y = timing._inputs(model if not hasattr(model, "_orig_mod") else model._orig_mod, batch, device, None)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            times = timing.measure(timing.train_step_fn(model, x, y, precision), device, WARMUP, REPS)
        median = sorted(times)[len(times) // 2]
        size = "tiny (--small)" if check.small else "published"
        check.add(part=part, model=name, setting=setting, batch=batch, ms_per_step=round(1000 * median, 2),
                  images_per_s=round(batch / median, 1), peak_mb=round(_peak_mb(device), 0), result="ok",
                  detail=f"median of {len(times)} after {WARMUP} warm-up; {size} size")
    except torch.cuda.OutOfMemoryError:
        check.add(part=part, model=name, setting=setting, batch=batch, result="OOM", detail="out of GPU memory")
    except Exception as err:  # noqa: BLE001 - one model's failure is a row, the others still run
        check.add(part=part, model=name, setting=setting, batch=batch, result="error",
                  detail=f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}")
    finally:
        if channels_last and hasattr(model, "to"):
            getattr(model, "_orig_mod", model).to(memory_format=torch.contiguous_format)


def part_timing(check: Check, device):
    stop = check.deadline("timing")
    batches = paper_batches()
    for name in list_models():
        settings = ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
        if name in CHANNELS_LAST_MODELS:
            settings += ["fp32+channels_last", "bf16+channels_last"]
        batch = 2 if check.small else batches.get(name, 32)
        if time.monotonic() > stop:
            check.add(part="timing", model=name, setting=", ".join(settings), batch=batch, result="skipped",
                      detail="timing budget spent")
            continue
        torch.manual_seed(0)
        try:
            model = create_model(name, **(small_options(name) if check.small else {})).to(device)
        except Exception as err:  # noqa: BLE001
            check.add(part="timing", model=name, setting="build", result="error", detail=str(err)[:160])
            continue
        for setting in settings:
            if time.monotonic() > stop:
                check.add(part="timing", model=name, setting=setting, batch=batch, result="skipped",
                          detail="timing budget spent")
                continue
            time_step(check, device, name, model, batch, setting)
        del model


def part_dry_run(check: Check, device, results_dir: Path):
    """2 steps of one model per family, planned from the paper profile's parameter file (with its speed
    options), on generated CIFAR-shaped images."""
    stop = check.deadline("dry_run")
    for name, nb in DRY_RUN_MODELS.items():
        if time.monotonic() > stop:
            check.add(part="dry_run", model=name, setting=nb, result="skipped", detail="dry-run budget spent")
            continue
        try:
            base = params.load(ROOT / "params" / "paper" / f"{nb}.yaml")
            over = dict(models=[name], per_model={k: v for k, v in base.per_model.items() if k == name}, dry_run=2,
                        results_dir=str(results_dir), heads=base.heads[:1], hierarchical=[False], seeds=base.seeds[:1],
                        dataset="cifar10")
            p = params.load_with(ROOT / "params" / "paper" / f"{nb}.yaml", over)
            run = grid.plan(p, CIFAR10_SHAPE)[0]
            batch = 2 if check.small else run.train.batch_size
            data = make_synthetic(n_train=2 * batch, n_test=32, image_size=8 if check.small else 32, channels=3)
            overrides = {**run.overrides, **(small_options(name) if check.small else {})}
            torch.manual_seed(run.seed)
            model = create_model(run.model, **overrides)
            opts = speed.options(p)
            cfg = dataclasses.replace(run.train, batch_size=batch)
            info = RunInfo(run.run_id, nb, run.model, run.variant, data.name, "paper")
            t0 = time.perf_counter()
            with PeakMemory(device) as peak:
                history = fit(model, data, cfg, info, results_dir, device, progress=False, speed=opts)
            per_step = history[-1]["seconds"] / 2
            check.add(part="dry_run", model=name, setting=f"{nb}; speed: {opts.describe()}; {cfg.precision}",
                      batch=batch, ms_per_step=round(1000 * per_step, 1), images_per_s=round(batch / per_step, 1),
                      peak_mb=round(peak.mb, 0), result="ok",
                      detail=f"2 steps incl. first-call overheads; {time.perf_counter() - t0:.1f} s with evaluation")
        except torch.cuda.OutOfMemoryError:
            check.add(part="dry_run", model=name, setting=nb, result="OOM", detail="out of GPU memory")
        except Exception as err:  # noqa: BLE001
            check.add(part="dry_run", model=name, setting=nb, result="error",
                      detail=f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:160]}")


# what plan() reads of a data set: CIFAR-10's name, sizes and image shape
CIFAR10_SHAPE = SimpleNamespace(name="cifar10", x_train=range(50_000), x_test=range(10_000),
                                model_overrides=lambda: {"image_size": 32, "in_channels": 3, "num_classes": 10})


def part_parity(check: Check, device, work: Path):
    df = parity.parity(device, steps=3 if check.small else 8, workdir=work, deadline=check.deadline("parity"))
    for r in df.to_dict("records"):
        diffs = ", ".join(f"{k.replace('_diff', '')} {r[k]:.1e}" for k in ("early_diff", "final_loss_diff",
                                                                            "max_curve_diff", "acc_diff")
                          if isinstance(r[k], float) and not math.isnan(r[k]))
        check.add(part="parity", model=r["model"], setting=r["option"], result=r["result"],
                  detail="; ".join(x for x in (diffs, r["tolerance"], r["note"]) if x))


def part_ddp(check: Check, device, work: Path):
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus < 2:
        check.add(part="ddp", model="02_quadratic (smoke)", setting="nccl", result="n/a",
                  detail=f"{gpus} GPU(s): DDP over NCCL needs 2 or more")
        return
    stop = check.deadline("ddp")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # the smoke profile's file without dropout: dropout masks are drawn per process, so only then do the processes
    # together compute what one process computes (up to rounding)
    smoke = yaml.safe_load((ROOT / "params" / "smoke" / "02_quadratic.yaml").read_text())
    (work / "params" / "smoke").mkdir(parents=True, exist_ok=True)
    (work / "params" / "smoke" / "02_quadratic.yaml").write_text(yaml.safe_dump({**smoke, "dropout": 0.0}))
    args = ["02_quadratic", "--profile", "smoke", "--params-dir", str(work / "params"), "--results-dir"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}",
           "-m", "attnlib.distributed", *args, str(work / "ddp")]
    try:
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env,
                             timeout=max(10, stop - time.monotonic()))
        seconds = time.perf_counter() - t0
        if out.returncode:
            tail = (out.stderr.strip().splitlines() or [""])[-1][:160]
            check.add(part="ddp", model="02_quadratic (smoke)", setting=f"nccl, {gpus} GPUs", result="FAIL",
                      detail=f"torchrun exit {out.returncode}: {tail}")
            return
        one = subprocess.run([sys.executable, "-m", "attnlib.distributed", *args, str(work / "one")],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=max(10, stop - time.monotonic()))
        if one.returncode:
            check.add(part="ddp", model="02_quadratic (smoke)", setting="1 process", result="error",
                      detail=(one.stderr.strip().splitlines() or [""])[-1][:160])
            return
        a, b = (pd.read_csv(work / d / "smoke" / "metrics" / "02_quadratic.csv") for d in ("ddp", "one"))
        a, b = (d.sort_values(["run_id", "epoch"]).reset_index(drop=True) for d in (a, b))
        cols = ["train_loss", "test_loss", "test_acc"]
        same_runs = list(a["run_id"]) == list(b["run_id"])
        diff = float((a[cols] - b[cols]).abs().max().max()) if same_runs else math.inf
        ok = same_runs and diff <= DDP_TOL and a["device"].str.startswith(f"{gpus} x ").all()
        check.add(part="ddp", model="02_quadratic (smoke)", setting=f"nccl, {gpus} GPUs", result="pass" if ok else "FAIL",
                  detail=f"{len(a)} metric rows vs 1 process, dropout 0: max |diff| {diff:.1e} (tolerance {DDP_TOL:g}); "
                         f"{seconds:.0f} s")
    except subprocess.TimeoutExpired:
        check.add(part="ddp", model="02_quadratic (smoke)", setting=f"nccl, {gpus} GPUs", result="skipped",
                  detail="ddp budget spent")
    test = ROOT / "tests" / "test_distributed.py"
    check.add(part="ddp", model="tests/test_distributed.py", setting="gloo (CPU)", result="not run",
              detail=("present; it trains on the CPU with gloo: run it with pytest, it does not exercise NCCL"
                      if test.exists() else "absent"))


def part_compile_timing(check: Check, device):
    batches = paper_batches()
    for name in COMPILE_TIMED:
        if check.left() < 100:
            check.add(part="timing", model=name, setting="fp32+compile", result="skipped",
                      detail="less than 100 s left for compiling")
            continue
        torch.manual_seed(0)
        model = create_model(name, **(small_options(name) if check.small else {})).to(device)
        time_step(check, device, name, model, 2 if check.small else batches.get(name, 32), "fp32+compile")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/gpu_check.csv", help="the table as CSV (default /tmp/gpu_check.csv)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cuda:N; cpu only with --small")
    ap.add_argument("--small", action="store_true", help="tiny models (to test this script, e.g. on a CPU)")
    ap.add_argument("--parts", nargs="+", default=["timing", "dry_run", "parity", "ddp", "compile"],
                    choices=["timing", "dry_run", "parity", "ddp", "compile"])
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    if args.device == "cpu" and not args.small:
        print("gpu-check: --device cpu needs --small (the published sizes take hours on a CPU)", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    check = Check(Path(args.out), args.small)
    watchdog = threading.Timer(HARD_LIMIT_S, lambda: os._exit(check.finish(f"stopped at the {HARD_LIMIT_S} s limit")))
    watchdog.daemon = True
    watchdog.start()
    print(f"gpu-check on {device_line()} ({device}); at most {HARD_LIMIT_S} s", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        parts = {"timing": lambda: part_timing(check, device),
                 "dry_run": lambda: part_dry_run(check, device, work / "dry_run"),
                 "parity": lambda: part_parity(check, device, work / "parity"),
                 "ddp": lambda: part_ddp(check, device, work),
                 "compile": lambda: part_compile_timing(check, device)}
        try:
            for name in args.parts:
                print(f"- {name} ({check.left():.0f} s left)", flush=True)
                parts[name]()
        except KeyboardInterrupt:
            watchdog.cancel()
            return check.finish("interrupted")
    watchdog.cancel()
    return check.finish()


if __name__ == "__main__":
    sys.exit(main())
