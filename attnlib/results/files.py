"""Files written so that a crash never leaves half of one: atomic writes through temporary files named for
their writer, stale temporary files removed, damaged files moved aside, and a lock for read-modify-write."""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

import torch

from attnlib.messages import first_few


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


# .NAME.HOST-PID.RANDOM.tmp (or .tmp.ipynb): a file being written, by process PID on HOST
TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(\.ipynb)?$")


# another host's temporary file is stale after a day; one of ours when its writer is gone
FOREIGN_TEMP_AGE_S = 24 * 3600




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
    """Remove the temporary files (*.tmp, *.tmp.ipynb, of any name) under `folder` whose writer is gone (killed
    during a write): ours when the process that named itself in the file no longer runs, another host's after a
    day, and at once one that names no writer (no writer of this project's writes it so: an older version's, or a
    stray copy). A writer still at work keeps its file, so two runners at once do not disturb each other."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, now, host = [], time.time(), _host()
    for tmp in [*folder.rglob("*.tmp"), *folder.rglob("*.tmp.ipynb")]:
        try:
            if not tmp.is_file() or tmp.is_symlink():
                continue
            m = TEMP_RE.match(tmp.name)
            age = now - tmp.stat().st_mtime
            if m is None:
                stale = True
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
