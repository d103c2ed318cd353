"""Where results go and in what shape: typed CSV rows, written atomically, with run metadata.

results/<profile>/metrics/<experiment>.csv holds one row per (run, epoch) with the columns of
METRIC_COLUMNS. A run's rows are always rewritten whole from its own history (kept inside its
checkpoint), so a resumed run never duplicates or loses a row.

Faults heal where they are found, each with one line saying so: a metrics, centers or attention CSV that is damaged
(cut off, header lost, not a CSV) is moved aside as NAME.csv.damaged and rebuilt from the histories the
checkpoints hold (`read_metrics`); `load_checkpoint` tells a damaged checkpoint from a good one (training
moves it aside as NAME.pt.damaged and starts that run again); temporary files a killed writer left behind
are removed by `remove_stale_temp_files`; damaged runner stamps are dropped (`read_stamps`).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Callable

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
# Per epoch (0: at initialisation) and head of an attention model: how it attends on a fixed set of test images
# (attention_maps.conv_likeness's measures; layer counts from 0).
ATTENTION_COLUMNS = ["run_id", "experiment", "model", "variant", "dataset", "profile", "seed", "epoch", "layer", "head",
                     "heads", "top_row", "top_col", "top_mass", "uniform_mass", "distinct_offsets", "mean_distance",
                     "uniform_distance"]
# What a checkpoint keeps besides the weights, each written to its own CSV: key -> (file suffix, columns).
RECORDS = {"history": ("", METRIC_COLUMNS), "centers": ("_centers", CENTER_COLUMNS),
           "attention": ("_attention", ATTENTION_COLUMNS)}


def digest(obj) -> str:
    """8 hex digits fingerprinting a JSON-able value (run settings, a model config)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def profile_dir(results_dir: str | Path, profile: str) -> Path:
    return Path(results_dir) / profile


def metrics_path(results_dir: str | Path, profile: str, experiment: str) -> Path:
    return profile_dir(results_dir, profile) / "metrics" / f"{experiment}.csv"


def summary_path(results_dir: str | Path, profile: str, notebook: str) -> Path:
    """The per-run (or per-model) summary table a notebook writes for the report."""
    return profile_dir(results_dir, profile) / "metrics" / f"{notebook}_summary.csv"


def figures_dir(results_dir: str | Path, profile: str) -> Path:
    d = profile_dir(results_dir, profile) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def checkpoint_path(results_dir: str | Path, profile: str, run_id: str) -> Path:
    return profile_dir(results_dir, profile) / "checkpoints" / f"{run_id}.pt"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


# .NAME.HOST-PID.RANDOM.tmp (or .tmp.ipynb): a file being written, by process PID on HOST
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(\.ipynb)?$")
FOREIGN_TEMP_AGE_S = 24 * 3600  # another host's temporary file is stale after a day; one of ours when its writer is gone
UNNAMED_TEMP_AGE_S = 3600  # one without a writer in its name (older versions) after an hour


def temp_file(path: str | Path, suffix: str = ".tmp") -> Path:
    """Create an empty temporary file next to `path`, named after it, this host and this process, with the
    mode a plain open() gives (the umask applies), so the file that replaces `path` is readable by the same
    people. `remove_stale_temp_files` removes it if the process dies before renaming it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{_host()}-{os.getpid()}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write_text(path: str | Path, text: str):
    """Write a file so that readers see either the old or the new content, never half of one."""
    path = Path(path)
    tmp = temp_file(path)
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_torch_save(obj, path: str | Path):
    path = Path(path)
    tmp = temp_file(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def remove_stale_temp_files(folder: str | Path, verbose: bool = True) -> list[Path]:
    """Remove the temporary files under `folder` whose writer is gone (killed during a write): ours when
    the process that named itself in the file no longer runs, another host's after a day. A writer still
    at work keeps its file, so two runners at once do not disturb each other."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, now, host = [], time.time(), _host()
    for tmp in [*folder.rglob(".*.tmp"), *folder.rglob(".*.tmp.ipynb")]:
        try:
            if not tmp.is_file() or tmp.is_symlink():
                continue
            m = TEMP_RE.match(tmp.name)
            age = now - tmp.stat().st_mtime
            if m is None:
                stale = age > UNNAMED_TEMP_AGE_S
            elif m["host"] == host:
                stale = not _alive(int(m["pid"]))
            else:
                stale = age > FOREIGN_TEMP_AGE_S
            if stale:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    if removed and verbose:
        print(f"removed {len(removed)} temporary file(s) left by interrupted writes under {folder}/ "
              f"({first_few(sorted({p.parent.name + '/' + p.name for p in removed}))})", flush=True)
    return removed


def move_aside(path: str | Path) -> Path:
    """Rename a damaged file (or folder) to NAME.damaged next to it, replacing an older one; return the new path."""
    path = Path(path)
    dest = path.with_name(path.name + ".damaged")
    try:
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.replace(path, dest)
    except FileNotFoundError:  # another process (a second runner) moved it aside first
        pass
    return dest


def one_line(text) -> str:
    """A message on one line: its white space, line breaks included, folded to single spaces."""
    return " ".join(str(text).split())


def first_few(names, n: int = 3) -> str:
    """"a, b, c, ...": the first `n` names, and an ellipsis when there are more."""
    names = list(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def stamps_path(profile_dir: str | Path) -> Path:
    """The runner's stamps of a profile: which notebooks ran, with which inputs (see attnlib.runner.run)."""
    return Path(profile_dir) / ".cache" / "stamps.json"


def error_line(err: BaseException, limit: int = 160) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    text = text[0] if text else ""
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class DamagedCheckpoint(ValueError):
    """A checkpoint that cannot be read or does not hold what training wrote; `reason` says which."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} is damaged ({reason})")
        self.path, self.reason = Path(path), reason


CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "rng", "history")
# errors in reading a checkpoint that say nothing about the file itself
NOT_THE_FILES_FAULT = {errno.EIO, errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


def load_checkpoint(path: str | Path, run_id: str | None = None, mmap: bool = False) -> dict:
    """A checkpoint written by train.fit, checked: readable with weights_only=True, holding the model, optimizer,
    RNG state and one history row per finished epoch (of `run_id`, when given). Raises DamagedCheckpoint."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch's remarks on a foreign pickle: the reason below says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as err:
        if err.errno in NOT_THE_FILES_FAULT:
            raise  # the disk, the permissions or the system: nothing to heal by moving the file
        raise DamagedCheckpoint(path, f"unreadable: {error_line(err)}") from None
    except Exception as err:  # truncated, random bytes, empty, a foreign pickle: all one kind of fault
        raise DamagedCheckpoint(path, f"unreadable: {error_line(err)}") from None
    if not isinstance(state, dict):
        raise DamagedCheckpoint(path, f"holds a {type(state).__name__}, not a training checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise DamagedCheckpoint(path, f"lacks {', '.join(missing)}")
    epoch, history = state["epoch"], state["history"]
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise DamagedCheckpoint(path, "its model weights are not a state dict of tensors")
    if not isinstance(state["optimizer"], dict) or not isinstance(state["rng"], torch.Tensor) \
            or state["rng"].dtype != torch.uint8 or state["rng"].shape != torch.get_rng_state().shape:
        raise DamagedCheckpoint(path, "its optimizer or RNG state is malformed")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise DamagedCheckpoint(path, f"epoch is {epoch!r}")
    if not isinstance(history, list) or len(history) != epoch or not all(
            isinstance(r, dict) and r.get("epoch") == i and not (set(METRIC_COLUMNS) - set(r))
            for i, r in enumerate(history, 1)):
        raise DamagedCheckpoint(path, f"its history does not hold one metric row for each of its {epoch} epochs")
    for key in ("centers", "attention"):
        rows = state.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) and not (set(RECORDS[key][1]) - set(r))
                                                 for r in rows):
            raise DamagedCheckpoint(path, f"its {key} are not a list of rows")
    owner = state.get("run_id", history[0].get("run_id"))
    if run_id is not None and (owner != run_id or any(r.get("run_id") != run_id for r in history)):
        raise DamagedCheckpoint(path, f"it belongs to run {owner!r}, not {run_id!r}")
    return state


def record_path(results_dir: str | Path, profile: str, experiment: str, record: str) -> Path:
    """The CSV of one of RECORDS (history, centers, attention) of a notebook's runs."""
    return profile_dir(results_dir, profile) / "metrics" / f"{experiment}{RECORDS[record][0]}.csv"


def centers_path(results_dir: str | Path, profile: str, experiment: str) -> Path:
    return record_path(results_dir, profile, experiment, "centers")


def attention_path(results_dir: str | Path, profile: str, experiment: str) -> Path:
    return record_path(results_dir, profile, experiment, "attention")


class DamagedCSV(ValueError):
    pass


def _read_checked(path: Path, columns: list[str]) -> pd.DataFrame:
    """The CSV at `path` if it is whole: ends with a newline, parses, has exactly `columns` as header, no
    missing fields and numbers where numbers belong. Raises DamagedCSV saying what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DamagedCSV(error_line(err)) from None
    if not raw.strip():
        raise DamagedCSV("empty")
    if not raw.endswith(b"\n"):
        raise DamagedCSV("cut off in its last line")
    try:
        df = pd.read_csv(io.StringIO(raw.decode("utf-8")), dtype={c: str for c in TEXT_COLUMNS if c in columns})
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DamagedCSV(error_line(err)) from None
    if list(df.columns) != list(columns):
        raise DamagedCSV("its header is not the expected columns")
    if df.isna().any().any():
        raise DamagedCSV("a row lacks fields")
    numeric = [c for c in columns if c not in TEXT_COLUMNS]
    if not all(pd.api.types.is_numeric_dtype(df[c]) for c in numeric):
        raise DamagedCSV("text where numbers belong")
    return df


def _checkpoint_rows(checkpoints: Path, experiment: str, key: str) -> tuple[list[dict], int]:
    """The rows under `key` (one of RECORDS) of `experiment` in every readable checkpoint, oldest first."""
    rows, runs = [], 0
    files = []
    for ckpt in checkpoints.glob("*.pt") if checkpoints.is_dir() else []:
        try:
            files.append((ckpt.stat().st_mtime, ckpt.name, ckpt))
        except OSError:
            continue
    for _, _, ckpt in sorted(files):
        try:
            state = load_checkpoint(ckpt, mmap=True)
        except DamagedCheckpoint:
            continue  # training moves it aside and reruns its run
        got = [r for r in state.get(key) or [] if isinstance(r, dict) and r.get("experiment") == experiment]
        if got:
            rows += got
            runs += 1
    return rows, runs


def rebuild_from_checkpoints(path: str | Path, columns: list[str], reason: str) -> pd.DataFrame:
    """Move a damaged metrics (centers, attention) CSV aside as NAME.csv.damaged and write it again from the rows
    the checkpoints in ../checkpoints/ hold (RECORDS); one line says so. Returns the rebuilt rows."""
    path = Path(path)
    key, suffix = next((k, suffix) for k, (suffix, cols) in RECORDS.items() if list(cols) == list(columns))
    experiment = path.stem[:-len(suffix)] if suffix and path.stem.endswith(suffix) else path.stem
    checkpoints = path.parent.parent / "checkpoints"
    rows, runs = _checkpoint_rows(checkpoints, experiment, key)
    aside = move_aside(path)
    if rows:
        atomic_write_text(path, pd.DataFrame(rows, columns=columns).to_csv(index=False))
        print(f"{path} was damaged ({reason}): moved aside to {aside.name} and rebuilt from the {runs} run(s) "
              f"whose checkpoints are in {checkpoints}/", flush=True)
        return pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS if c in columns})
    print(f"{path} was damaged ({reason}): moved aside to {aside.name}; no checkpoint in {checkpoints}/ holds "
          f"its runs, so they are trained again (a committed copy comes back with `git checkout -- {path.name}` "
          "in that folder)", flush=True)
    return pd.DataFrame(columns=columns)


def read_metrics(path: str | Path, columns: list[str] = METRIC_COLUMNS) -> pd.DataFrame:
    """The rows of a metrics CSV (with RECORDS' other columns: a centers or attention CSV); empty when there is none.
    A damaged one is rebuilt from the checkpoints (`rebuild_from_checkpoints`) instead of stopping every later run."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return pd.DataFrame(columns=columns)
    try:
        return _read_checked(path, columns)
    except DamagedCSV as err:
        return rebuild_from_checkpoints(path, columns, str(err))


@contextlib.contextmanager
def locked(path: str | Path):
    """Hold an exclusive lock on `path` (a lock file beside it, NAME.lock) while a read-modify-write of it runs, so
    that runs training at once (on several devices, or in several processes) never lose each other's rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_run_rows(path: str | Path, run_id: str, rows: list[dict], columns: list[str] = METRIC_COLUMNS,
                   read: Callable[[Path, list[str]], pd.DataFrame] = read_metrics):
    """Replace every row of `run_id` in the CSV at `path` by `rows`, atomically, under the CSV's lock. `read`
    reads the CSV as it is (and heals it when damaged: by default `read_metrics`, from the checkpoints)."""
    for r in rows:
        missing = set(columns) - set(r)
        if missing:
            raise ValueError(f"row lacks {sorted(missing)}")
    with locked(path):
        old = read(Path(path), columns)
        old = old[old["run_id"] != run_id]
        new = pd.DataFrame(rows, columns=columns)
        df = new if old.empty else pd.concat([old, new], ignore_index=True)
        atomic_write_text(path, df.to_csv(index=False))


def read_stamps(path: str | Path, verbose: bool = True) -> dict:
    """The runner's stamps (results/<profile>/.cache/stamps.json): per notebook a mapping with its digest,
    duration and finish time. Damaged ones cost only a rerun: an unreadable file counts as none, an entry
    of the wrong shape as missing, and one line says so."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # truncated, not UTF-8, a folder, ...
        problem, data = error_line(err), {}
    else:
        if isinstance(data, dict):
            good = {k: v for k, v in data.items() if isinstance(v, dict) and isinstance(v.get("digest"), str)
                    and isinstance(v.get("finished"), str) and isinstance(v.get("seconds"), (int, float))
                    and not isinstance(v.get("seconds"), bool)}
            problem = (f"entries of the wrong shape: {', '.join(sorted(map(str, set(data) - set(good))))}"
                       if len(good) < len(data) else None)
            data = good
        else:
            problem, data = f"holds a {type(data).__name__}, not a mapping", {}
    if problem and verbose:
        print(f"note: {path} is damaged ({problem}); the notebooks it does not vouch for run again", flush=True)
    return data


def forget_stamps(path: str | Path, stems=None) -> list[str]:
    """Drop the runner's stamps of `stems` (all when None), so the next `make reproduce` runs those notebooks
    again; returns the ones dropped."""
    path = Path(path)
    data = read_stamps(path, verbose=False)
    gone = [k for k in data if stems is None or k in stems]
    if gone:
        atomic_write_text(path, json.dumps({k: v for k, v in data.items() if k not in gone}, indent=1,
                                           sort_keys=True) + "\n")
    return gone


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
