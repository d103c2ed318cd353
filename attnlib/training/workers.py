"""The worker processes of attnlib.training.schedule: each takes jobs until none is left, sends its output line by
line and its outcome per job to the parent, ends with its parent, and is the first the system's out-of-memory
killer takes; the parent reads how a worker died and the highest memory it reached."""
from __future__ import annotations

import contextlib
import ctypes
import io
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.multiprocessing as mp

from attnlib.messages import error_line, one_line
from attnlib.training.progress import ENV as PROGRESS_ENV
from attnlib.training.progress import ProgressView

PR_SET_PDEATHSIG = 1  # Linux's prctl option: a signal when the parent ends
JOIN_S = 10.0  # how long a worker may take to exit at the end before it is ended


def nan_lowest(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def peak_resident_mb(pid: int | None) -> float:
    """The highest resident set of process `pid` so far, in MB (Linux: VmHWM in /proc/PID/status); NaN elsewhere."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return float("nan")


def death(exitcode: int | None, peak_mb: float) -> str:
    """Why a worker ended in a job, in one line: its exit code or signal, and for SIGKILL (on Linux most often
    the out-of-memory killer) how much memory it had reached, of the machine's."""
    if exitcode is None or exitcode >= 0:
        return f"its worker process ended (exit code {exitcode})"
    try:
        sig = signal.Signals(-exitcode).name
    except ValueError:
        sig = f"signal {-exitcode}"
    if sig != "SIGKILL":
        return f"its worker process was ended by {sig}"
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    seen = (f"; it had reached at least {peak_mb:,.0f} MB resident, of {total:,.0f} MB" if not math.isnan(peak_mb)
            else "")
    return f"its worker process was killed (SIGKILL, most likely by the system for lack of memory{seen})"


def stop(procs, todo, events, wait: bool):
    """Wait for the workers to exit (they do once every job is taken), or with wait=False (an interruption) not;
    end those still there."""
    deadline = time.monotonic() + JOIN_S
    for p in procs:
        if wait and p.is_alive():
            p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.terminate()
            p.join(JOIN_S)
        if p.is_alive():
            p.kill()
            p.join()
    todo.cancel_join_thread()
    todo.close()
    events.close()


@contextlib.contextmanager
def progress_file():
    """The file the workers' bars go to: the runner's (ATTNLIB_PROGRESS, inherited), or one that this process
    follows and draws on its stderr; None when the runner's is used."""
    if os.environ.get(PROGRESS_ENV):
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="attnlib-progress-"))
    try:
        with ProgressView(folder / "progress.jsonl", sys.stderr) as view:
            yield str(view.path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class Lines(io.TextIOBase):
    """A worker's stdout: each complete line goes to `send`."""

    def __init__(self, send):
        super().__init__()
        self.send, self.partial = send, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self.send(line)
        return len(text)

    def close_line(self):
        if self.partial:
            self.send(self.partial)
            self.partial = ""


def end_with_parent():
    """Linux: this process gets SIGTERM when the one that started it ends (a killed kernel), instead of training on
    unseen, beside the next runner; its run resumes from its last checkpoint. Elsewhere it stops between runs."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError, TypeError):
        pass


def first_to_go_when_memory_runs_out():
    """Linux: this worker is the process the out-of-memory killer picks first (oom_score_adj 1000), not the
    notebook's kernel that started it. Elsewhere nothing."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def worker(label: str, device: str, threads: int, work, jobs: list, todo, events, progress: str | None,
            one_job: bool = False, taken_by=None, slot: int = 0):
    """One worker: take job indices from `todo` until None (or, with `one_job`, one), run each, report on
    `events`."""
    end_with_parent()
    first_to_go_when_memory_runs_out()
    stdout = Lines(lambda line: events.put(("line", label, line)))
    sys.stdout = stdout
    code = 0
    try:
        if progress:
            os.environ[PROGRESS_ENV] = progress
        if threads:
            torch.set_num_threads(threads)
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        parent = mp.parent_process()
        while (i := todo.get()) is not None and (parent is None or parent.is_alive()):
            if taken_by is not None:
                taken_by[slot] = i
            events.put(("started", label, i))
            t0 = time.perf_counter()
            try:
                work(jobs[i], dev)
                why = ""
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # the job failed; the worker goes on with the next
                traceback.print_exc(file=sys.stderr)  # the whole story, for the log
                why = one_line(error_line(err))
            stdout.close_line()
            events.put(("ended", label, i, time.perf_counter() - t0, why))
            if one_job:
                break
    except KeyboardInterrupt:
        code = 130
    except BaseException as err:  # the worker itself cannot go on (its device, say): the others take the jobs
        traceback.print_exc(file=sys.stderr)
        stdout.close_line()
        events.put(("stopped", label, one_line(error_line(err))))
        code = 1
    stdout.close_line()
    sys.stdout = sys.__stdout__
    sys.stderr.flush()
    events.close()  # every event is in the pipe already
    os._exit(code)  # without the interpreter's teardown of torch and pandas (seconds), as a forked worker ends
