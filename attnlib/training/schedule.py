"""Independent jobs (a training notebook's planned runs) spread over several devices: one worker process per
device (torch.multiprocessing, spawn), each taking the next job from a shared queue, so a fast device takes more.

`run(jobs, devices, work, name)` calls `work(job, device)` in the workers and prints, on this process's stdout
(the notebook's), one line when a job starts and one when it ends, naming the worker's device:

    [cuda:1] sa_quadratic-h9-s42-1a2b3c4d: started
    [cuda:1] sa_quadratic-h9-s42-1a2b3c4d: finished in 812s      (or: FAILED: <one line>)

and what the workers print, each line prefixed with its device. A failing job does not stop the others; at the
end a summary says what finished and what failed, per device, and `Summary.error()` is one line naming the
failed jobs (attnlib.experiments.runs.run_grid raises it as a TrainingError). Two workers on one device are told
apart as cpu#1, cpu#2. CPU workers share the cores (torch.set_num_threads); a CUDA worker makes its device
the current one.

A worker that dies in a job (the system's out-of-memory killer sends SIGKILL) fails that job, with the
signal and the highest resident memory the worker was seen to reach, and a new worker takes its place on
the same device while jobs remain. With `one_job_each` (a dry run, attnlib.training.dry_run) every job gets a fresh
worker: its memory is its own, and a job that does not fit ends only its own process.

Arguments reach the workers pickled as torch.multiprocessing pickles them: tensors (the loaded data set) are
shared through shared memory, not copied. Progress bars (attnlib.training.progress.Bar) reach the runner's console:
the workers inherit ATTNLIB_PROGRESS; without it, this process draws the workers' bars itself
(attnlib.training.progress.ProgressView on its stderr), so that several processes never draw on one terminal.
"""
from __future__ import annotations

import functools
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.multiprocessing as mp

from attnlib.training.train import TrainingError
from attnlib.training.workers import death, nan_lowest, peak_resident_mb, progress_file, stop, worker

DEVICE_RE = re.compile(r"cpu|cuda|cuda:\d+|\d+")
POLL_S = 0.2  # how often the parent looks at its workers while no event comes
# how a job's failure reads when it ran out of memory: torch's CUDA and CPU allocators, or a worker killed by
# SIGKILL, which on Linux is most often the out-of-memory killer
OUT_OF_MEMORY = ("OutOfMemoryError", "out of memory", "can't allocate memory", "not enough memory", "MemoryError",
                 "Unable to allocate", "SIGKILL")


def canonical(name: str) -> str:
    """A device as torch names it: "cpu", "cuda", "cuda:N"; a bare index "N" is cuda:N. ValueError otherwise."""
    text = str(name).strip()
    if not DEVICE_RE.fullmatch(text):
        raise ValueError(f"must each be cpu, cuda, cuda:N or a GPU index N, got {name!r}")
    return f"cuda:{text}" if text.isdigit() else text


def devices(listed: Sequence[str], device: str = "auto") -> list[str]:
    """The devices a grid trains on: `listed` (canonical); none listed: `device`, or, when that is auto, every
    visible CUDA device (one: just `device`, as one device trains). A CUDA device torch does not see raises
    TrainingError, one line."""
    if not listed:
        count = torch.cuda.device_count() if device == "auto" else 0
        return [f"cuda:{i}" for i in range(count)] if count > 1 else [device]
    names = [canonical(d) for d in listed]
    count = torch.cuda.device_count() if any(n.startswith("cuda") for n in names) else 0
    missing = [n for n in names if n.startswith("cuda") and (count == 0 or int(n.partition(":")[2] or 0) >= count)]
    if missing:
        seen = f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}" if count else "no CUDA device"
        raise TrainingError(f"devices {', '.join(dict.fromkeys(missing))} asked for, but torch sees {seen}; "
                            f"name {'GPU indices it sees, or ' if count else ''}cpu")
    return names


def labels(names: Sequence[str]) -> list[str]:
    """One label per worker: its device, numbered (cpu#1, cpu#2) where several workers share one."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(f"{n}#{seen[n]}" if names.count(n) > 1 else n)
    return out


@dataclass
class Outcome:
    """How one job ended: on which worker, after how long, and why it failed ("" when it finished); for a job
    whose worker died in it, the highest resident memory (MB) the worker was seen to reach."""
    name: str
    worker: str = ""
    seconds: float = 0.0
    error: str = ""
    peak_mb: float = float("nan")

    @property
    def out_of_memory(self) -> bool:
        return any(text in self.error for text in OUT_OF_MEMORY)


@dataclass
class Summary:
    outcomes: list[Outcome]
    workers: list[str]
    seconds: float = 0.0
    worker_errors: dict[str, str] = field(default_factory=dict)  # workers that stopped early, and why

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]

    def lines(self) -> list[str]:
        n, bad = len(self.outcomes), len(self.failed)
        out = [f"{n} runs in {self.seconds:.0f}s on {', '.join(self.workers)}: {n - bad} finished, {bad} failed"]
        for w in self.workers:
            mine = [o for o in self.outcomes if o.worker == w]
            done = [o for o in mine if not o.error]
            text = f"  {w}: {len(done)} finished ({sum(o.seconds for o in done):.0f}s)"
            text += f", {len(mine) - len(done)} failed" if len(mine) > len(done) else ""
            text += f"; the worker stopped: {self.worker_errors[w]}" if w in self.worker_errors else ""
            out.append(text)
        out += [f"  FAILED {o.name}{f' on {o.worker}' if o.worker else ''}: {o.error}" for o in self.failed]
        return out

    def error(self, failed: list[Outcome] | None = None) -> str:
        """One line naming the failed jobs (or those of them given) and why."""
        failed = self.failed if failed is None else failed
        finished = len(self.outcomes) - len(self.failed)
        return (f"{len(failed)} of {len(self.outcomes)} runs failed: "
                + "; ".join(f"{o.name} ({o.error})" for o in failed) + f"; {finished} finished")


def run(jobs: Sequence, devices: Sequence[str], work: Callable, name: Callable = str, out=None,
        one_job_each: bool = False) -> Summary:
    """Run `work(job, torch.device)` for every job, in workers on `devices` (canonical names; at most one worker per
    job), each taking the next job as it becomes free (with `one_job_each`, a fresh worker for every job).
    `name(job)` names a job on the console. The CSVs the workers share are rewritten under a file lock
    (attnlib.results.locked). `work` and `jobs` must pickle (module-level functions, functools.partial of them)."""
    if not devices:
        raise ValueError("no device to run on")
    say = functools.partial(print, file=out or sys.stdout, flush=True)
    names = list(devices)[:max(1, min(len(devices), len(jobs)))]
    start = time.perf_counter()
    with progress_file() as progress:
        pool = _Pool(list(jobs), names, work, name, say, progress, one_job_each)
        try:
            pool.start()
            while len(pool.outcomes) < len(jobs):
                pool.sample_memory()
                if pool.events.empty():
                    pool.reap()
                    time.sleep(POLL_S)
                    continue
                pool.handle(pool.events.get())
        except BaseException:  # an interruption: end the workers (their runs resume from their checkpoints)
            pool.stop(wait=False)
            raise
        pool.stop(wait=True)
    summary = Summary([pool.outcomes[i] for i in range(len(jobs))], pool.workers, time.perf_counter() - start,
                      pool.worker_errors)
    for line in summary.lines():
        say(line)
    return summary


class _Pool:
    """The workers of one `run`, as the parent sees them: which job each runs, how much memory it has reached,
    and a fresh worker for one that died in a job (or, with one_job_each, for each finished one) while jobs
    remain."""

    def __init__(self, jobs: list, names: list[str], work: Callable, name: Callable, say: Callable,
                 progress: str | None, one_job_each: bool):
        ctx = mp.get_context("spawn")
        self.ctx, self.jobs, self.work, self.name, self.say = ctx, jobs, work, name, say
        self.progress, self.one_job_each = progress, one_job_each
        self.workers = labels(names)
        self.device_of = dict(zip(self.workers, names))
        cpu_workers = sum(n == "cpu" for n in names)
        self.threads = max(1, torch.get_num_threads() // cpu_workers) if cpu_workers else 0
        # events go straight into the pipe (SimpleQueue, no feeder thread): what a worker said before it was
        # killed has reached the parent
        self.todo, self.events = ctx.Queue(), ctx.SimpleQueue()
        # the job each worker took, written by the worker before it says so: a worker killed before its
        # "started" event left its process still names its job (-1: none yet)
        self.taken_by = ctx.Array("i", [-1] * len(self.workers), lock=False)
        for i in range(len(jobs)):
            self.todo.put(i)
        for _ in range(len(self.workers) + len(jobs)):  # an end for every worker that may ever start
            self.todo.put(None)
        self.procs: dict = {}
        self.outcomes: dict[int, Outcome] = {}
        self.running: dict[str, tuple[int, float]] = {}  # worker -> (job, start)
        self.peaks: dict[str, float] = {}  # worker -> the highest resident MB its process was seen at
        self.took: dict[str, bool] = {}  # worker -> whether its process took a job
        self.started = 0  # jobs whose worker said it started them
        self.dead: set[str] = set()  # workers seen ended before the queue last ran dry: their events are all read
        self.worker_errors: dict[str, str] = {}

    def start(self):
        for w in self.workers:
            self.launch(w)

    def launch(self, w: str):
        n, slot = self.device_of[w], self.workers.index(w)
        self.taken_by[slot] = -1
        p = self.ctx.Process(target=worker, name=f"attnlib-{w}", daemon=True,
                             args=(w, n, self.threads if n == "cpu" else 0, self.work, self.jobs, self.todo,
                                   self.events, self.progress, self.one_job_each, self.taken_by, slot))
        p.start()
        self.procs[w], self.took[w], self.peaks[w] = p, False, float("nan")

    def sample_memory(self):
        for w in self.running:
            self.peaks[w] = max(peak_resident_mb(self.procs[w].pid), self.peaks[w], key=nan_lowest)

    def handle(self, event):
        kind, w, *rest = event
        if kind == "line":
            self.say(f"[{w}] {rest[0]}")
        elif kind == "stopped":
            self.worker_errors[w] = rest[0]
            self.say(f"[{w}] the worker stopped: {rest[0]}")
        elif kind == "started":
            self.running[w] = (rest[0], time.perf_counter())
            self.took[w], self.started = True, self.started + 1
            self.say(f"[{w}] {self.name(self.jobs[rest[0]])}: started")
        else:  # "ended"
            i, seconds, why = rest
            self.running.pop(w, None)
            self.outcomes[i] = Outcome(self.name(self.jobs[i]), w, seconds, why)
            self.say(f"[{w}] {self.name(self.jobs[i])}: "
                     + (f"FAILED: {why}" if why else f"finished in {seconds:.0f}s"))

    def reap(self):
        """With the events all read: the job of a worker that died in it fails; a fresh worker takes its place
        while jobs remain; when no worker is left, what nobody took is not run."""
        relaunched = False
        for w in sorted(self.dead):
            took = self.taken_by[self.workers.index(w)]
            if w not in self.running and took >= 0 and took not in self.outcomes:  # its events never came
                self.running[w] = (took, time.perf_counter())
                self.took[w], self.started = True, self.started + 1
            died_in_job = w in self.running
            if died_in_job:
                i, t0 = self.running.pop(w)
                why = death(self.procs[w].exitcode, self.peaks[w])
                self.outcomes[i] = Outcome(self.name(self.jobs[i]), w, time.perf_counter() - t0, why, self.peaks[w])
                self.say(f"[{w}] {self.name(self.jobs[i])}: FAILED: {why}")
            if (died_in_job or self.one_job_each and self.took[w]) and self.started < len(self.jobs):
                self.launch(w)
                relaunched = True
        if self.dead and len(self.dead) == len(self.procs) and not relaunched:
            for i in range(len(self.jobs)):
                self.outcomes.setdefault(i, Outcome(self.name(self.jobs[i]), "", 0.0, "not run: every worker stopped"))
        self.dead = {w for w, p in self.procs.items() if not p.is_alive()}

    def stop(self, wait: bool):
        stop(self.procs.values(), self.todo, self.events, wait)


