"""The results folder of a series, checked before anything is written: `--results-dir` resolved once (against the
folder the command runs in) and every folder the runner writes into made and written to, or one line naming the
path and what is wrong with it."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from pathlib import Path

# an OSError's errno -> what to tell the user to do about it
REMEDIES = {errno.EROFS: "the file system is read-only; give --results-dir a writable folder",
            errno.ENOSPC: "no space is left on its disk; free some, or give --results-dir another disk",
            errno.EDQUOT: "the disk quota is used up; free some, or give --results-dir another disk",
            errno.ENAMETOOLONG: "its name is longer than the system allows; give --results-dir a shorter path",
            errno.ELOOP: "it is a symbolic link that leads back to itself; remove the link or name another folder",
            errno.ENOENT: "it is a symbolic link to a folder that is not there; remove the link or name another folder",
            errno.EACCES: "this user may not write there; give --results-dir a folder of yours",
            errno.EPERM: "this user may not write there; give --results-dir a folder of yours",
            errno.ENOTDIR: "it, or a folder above it, is a file; remove it or name another folder",
            errno.EEXIST: "it is a file, not a folder; remove it or name another folder"}

SUBFOLDERS = ("notebooks", "logs", ".cache", "metrics", "figures", "checkpoints")


class ResultsFolderError(OSError):
    """One line naming the folder and the cause."""


def resolved(results_dir: str | Path) -> Path:
    """`results_dir` as an absolute path, a relative one taken against the current folder: the one place every
    file of the series goes under, whatever folder a notebook runs in."""
    return Path(os.path.abspath(os.path.expanduser(str(results_dir))))


def describe(path: Path, err: OSError) -> str:
    """The one line for `err` met at `path`."""
    remedy = REMEDIES.get(err.errno, err.strerror or type(err).__name__)
    return f"results folder {path}: {remedy}"


def check_writable(profile_dir: Path) -> None:
    """Make the results folder, `profile_dir` under it and the folders under that which the runner and the notebooks
    write into, then write and remove a small file in each; ResultsFolderError, one line, on the first that fails."""
    for path in (profile_dir.parent, profile_dir, *(profile_dir / name for name in SUBFOLDERS)):
        try:
            if path.is_symlink() and not path.exists():  # dangling, or a loop: mkdir would only say "exists"
                os.stat(path)
            if path.exists() and not path.is_dir():
                raise FileExistsError(errno.EEXIST, "not a folder", str(path))
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test.{os.getpid()}.tmp"
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as err:
            raise ResultsFolderError(describe(path, err)) from None


class AlreadyRunning(RuntimeError):
    """Another runner holds the series' lock; the message is one line naming it."""


@contextlib.contextmanager
def runner_lock(profile_dir: Path):
    """Held while a runner works on `profile_dir` (results/<profile>/.cache/runner.lock, an flock the system drops
    when the process ends, however it ends): a second runner on the same series stops with AlreadyRunning instead of
    training the same runs into the same files."""
    path = profile_dir / ".cache" / "runner.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise AlreadyRunning(f"{profile_dir} is in use by another runner ({holder}); wait for it to end, or "
                                 "stop it, then run this command again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
