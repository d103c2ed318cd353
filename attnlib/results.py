"""Where results go and in what shape: typed CSV rows, written atomically, with run metadata.

results/<profile>/metrics/<experiment>.csv holds one row per (run, epoch) with the columns of
METRIC_COLUMNS. A run's rows are always rewritten whole from its own history (kept inside its
checkpoint), so a resumed run never duplicates or loses a row.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import torch

METRIC_COLUMNS = [
    "run_id", "experiment", "model", "variant", "dataset", "profile", "seed", "epoch", "epochs",
    "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "params",
    "device", "precision", "torch", "git",
]

TEXT_COLUMNS = ["run_id", "experiment", "model", "variant", "dataset", "profile", "device", "precision", "torch", "git"]

# results/<profile>/metrics/<experiment>_centers.csv: quadratic models' heads after every epoch (epoch 0:
# at initialisation). (row, col): the head's center, an offset in tokens; inv_cov_*: its Sigma^-1.
CENTER_COLUMNS = ["run_id", "experiment", "model", "variant", "dataset", "profile", "seed", "epoch", "layer", "head",
                  "row", "col", "inv_cov_rr", "inv_cov_rc", "inv_cov_cc"]


def digest(obj) -> str:
    """8 hex digits fingerprinting a JSON-able value (run settings, a model config)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def profile_dir(results_dir: str | Path, profile: str) -> Path:
    return Path(results_dir) / profile


def metrics_path(results_dir: str | Path, profile: str, experiment: str) -> Path:
    return profile_dir(results_dir, profile) / "metrics" / f"{experiment}.csv"


def figures_dir(results_dir: str | Path, profile: str) -> Path:
    d = profile_dir(results_dir, profile) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def checkpoint_path(results_dir: str | Path, profile: str, run_id: str) -> Path:
    return profile_dir(results_dir, profile) / "checkpoints" / f"{run_id}.pt"


def atomic_write_text(path: str | Path, text: str):
    """Write a file so that readers see either the old or the new content, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path: str | Path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def centers_path(results_dir: str | Path, profile: str, experiment: str) -> Path:
    return profile_dir(results_dir, profile) / "metrics" / f"{experiment}_centers.csv"


def read_metrics(path: str | Path, columns: list[str] = METRIC_COLUMNS) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=columns)
    return pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS if c in columns})


def write_run_rows(path: str | Path, run_id: str, rows: list[dict], columns: list[str] = METRIC_COLUMNS):
    """Replace every row of `run_id` in the CSV at `path` by `rows`, atomically."""
    for r in rows:
        missing = set(columns) - set(r)
        if missing:
            raise ValueError(f"row lacks {sorted(missing)}")
    old = read_metrics(path, columns)
    old = old[old["run_id"] != run_id]
    new = pd.DataFrame(rows, columns=columns)
    df = new if old.empty else pd.concat([old, new], ignore_index=True)
    atomic_write_text(path, df.to_csv(index=False))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# The CPU features that decide how fast the training step is: wide vectors, and native bf16 (AVX512-BF16, AMX).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_model_and_flags(cpuinfo: str | None = None) -> tuple[str, list[str]]:
    """The CPU's model name and which of SPEED_FLAGS it has, from /proc/cpuinfo (elsewhere: the platform's
    word for the processor, flags unknown)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return model, [f for f in SPEED_FLAGS if f in flags]


def device_name(device: torch.device) -> str:
    """What decides a measured speed: the GPU's name, or the CPU's model, its speed flags and the threads
    used. Timing rows are keyed by it, so another machine measures itself instead of reusing these."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model, flags = cpu_model_and_flags()
    return f"cpu: {model} ({' '.join(flags) or 'no avx2'}; {torch.get_num_threads()} threads)"
