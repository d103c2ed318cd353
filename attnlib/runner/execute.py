"""One notebook executed through papermill into its executed copy, its output sent to its log, a failing cell told
in one line; and the report exported (report.html, report.pdf) after notebook 08."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from pathlib import Path

import papermill as pm

from attnlib.experiments.settings import REPO_ROOT
from attnlib.messages import one_line
from attnlib.report.export import export_report
from attnlib.results import temp_file
from attnlib.training.progress import ENV as PROGRESS_ENV
from attnlib.training.progress import ProgressView


class SurvivingStream:
    """A console stream that outlives its reader: once `make reproduce | head` has read enough, or the terminal is
    gone, the run goes on and writes the rest to nothing (the notebooks' logs keep everything) instead of stopping."""

    def __init__(self, stream):
        self.stream = stream

    def _reader_gone(self) -> None:
        """From now on the stream's file descriptor leads to /dev/null, so what it still buffers, flushed here or when
        the process ends, goes nowhere instead of raising BrokenPipeError once more."""
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # closed: a stream of its own to nothing
            self.stream = open(os.devnull, "w")

    def _gone(self, err: Exception) -> bool:
        """Whether `err` says the reader is gone (a closed pipe, a hung-up terminal, a stream closed for it); any other
        error, an encoding one above all, is raised as it is."""
        if isinstance(err, OSError):
            return err.errno in (errno.EPIPE, errno.EIO)
        return isinstance(err, ValueError) and not isinstance(err, UnicodeError) and self.stream.closed

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError) as err:
            if not self._gone(err):
                raise
            self._reader_gone()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError) as err:
            if not self._gone(err):
                raise
            self._reader_gone()

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def output_to(log: Path, append: bool = False):
    """Send this process's stdout and stderr, and those of the processes it starts (the notebook's kernel),
    to `log` at the level of file descriptors; yields a stream that still writes to the console."""
    sys.stdout.flush()
    sys.stderr.flush()
    log_file = open(log, "a" if append else "w")  # first: if it cannot be opened, nothing is redirected yet
    saved = os.dup(1), os.dup(2)
    console = SurvivingStream(os.fdopen(os.dup(saved[0]), "w", buffering=1))
    with log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
    try:
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        with contextlib.suppress(OSError):  # its reader gone: what it still held goes nowhere
            console.close()


def _keep_failed(tmp: Path, out: Path) -> Path | None:
    """The executed copy of a failed run, kept as NAME.failed.ipynb beside the last good one (None if none)."""
    failed = out.with_name(f"{out.stem}.failed.ipynb")
    try:
        if tmp.exists() and tmp.stat().st_size > 0:
            os.replace(tmp, failed)
            return failed
        tmp.unlink(missing_ok=True)
    except OSError:
        pass
    return None


def without_machine_paths(executed: Path, final: Path) -> None:
    """The executed notebook at `executed` as it is kept at `final`: papermill's record of its own file names the
    final one, and every path inside the repository is written relative to it (results/quick/metrics/..., not
    /home/you/attention-conv/results/...), in its parameters, its outputs and its metadata alike, so that a committed
    notebook names no machine's folders. Paths outside the repository stay as they are."""
    text = executed.read_text(encoding="utf-8")
    text = text.replace(str(executed), str(final)).replace(f"{REPO_ROOT}/", "").replace(f'"{REPO_ROOT}"', '"."')
    executed.write_text(text, encoding="utf-8")


def quiet_papermill():
    """Everything a notebook prints (papermill's log of its cells, the kernel's warnings) goes to its log
    file; the console gets a line when it starts, one when it ends and the progress bars of its runs."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.captureWarnings(True)
    # the runner injects every field; the notebook takes them through attnlib.experiments.params, not its
    # parameters cell
    logging.getLogger("papermill").addFilter(lambda r: not str(r.msg).startswith("Passed unknown parameter"))


def execute(nb: Path, values: dict, out: Path, log: Path, profile_dir: Path) -> int:
    """Run one notebook through papermill into `out` (0), or say in one line why it failed (1) or stopped (130).
    It is executed into a temporary file: the last good executed notebook stays until this one succeeds."""
    tmp = temp_file(out, suffix=".tmp.ipynb")
    try:
        with output_to(log) as console, ProgressView(profile_dir / ".cache" / "progress.jsonl", console) as view:
            os.environ[PROGRESS_ENV] = str(view.path)
            pm.execute_notebook(str(nb), str(tmp), parameters=values, cwd=str(REPO_ROOT / "notebooks"),
                                progress_bar=False, log_output=True, kernel_name="python3")
        without_machine_paths(tmp, out)
        os.replace(tmp, out)
    except pm.PapermillExecutionError as err:
        failed = _keep_failed(tmp, out)
        print(f"error: {nb.name} failed in cell {err.exec_count}: {err.ename}: {one_line(err.evalue)} "
              f"(log: {log}; executed notebook: {failed or out})", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM / SIGHUP (attnlib.runner.run.Stopped)
        tmp.unlink(missing_ok=True)
        by = f" by {err}" if str(err) else ""
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(f"interrupted{by} in {nb.name}: run the same command again to go on from there (training resumes "
                  "from its last checkpoint)", file=sys.stderr)
        return getattr(err, "code", 130)
    except Exception as err:  # kernel missing, notebook unreadable, ...: still one line
        failed = _keep_failed(tmp, out)
        where = f"; executed notebook: {failed}" if failed else ""
        print(f"error: {nb.name} could not be run: {type(err).__name__}: {one_line(err)} "
              f"(log: {log}{where})", file=sys.stderr)
        return 1
    finally:
        os.environ.pop(PROGRESS_ENV, None)
    out.with_name(f"{out.stem}.failed.ipynb").unlink(missing_ok=True)  # superseded by this success
    return 0


def export(report_nb: Path, profile_dir: Path, log: Path) -> int:
    """The report as HTML (and PDF where Chromium is), or one line saying why not (1)."""
    try:
        with output_to(log, append=True):  # nbconvert's and Chromium's chatter
            lines = export_report(report_nb, profile_dir)
    except Exception as err:  # nbconvert missing or failing: one line, the executed notebook stays
        print(f"error: could not export {report_nb} to HTML: {type(err).__name__}: {err} (log: {log})",
              file=sys.stderr)
        return 1
    for line in lines:
        print(line, flush=True)
    return 0
