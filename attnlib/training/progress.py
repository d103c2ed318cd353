"""Progress bars that reach the person who started the work, wherever the work runs.

Training and timing run inside a notebook's kernel. When the runner (`make reproduce`) started that
kernel, it names a file in the environment variable ATTNLIB_PROGRESS; `Bar` then appends one JSON line per
update to that file and draws nothing, and the runner's `ProgressView` draws one live bar per run on
the console. So the executed notebook keeps plain text only (no widget frozen at 0%), and the console
shows the bars. Without the variable (JupyterLab, a script) `Bar` is a plain text tqdm bar.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

ENV = "ATTNLIB_PROGRESS"
SEND_EVERY_S = 0.5  # events written at most this often per bar (the last one always)
# run id, share done, steps, time so far < time left, then epoch, loss and accuracy
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]{postfix}"


class Bar:
    """One bar: `update(n, info)` sets the count done and a short text (epoch, loss, accuracy); `close()`."""

    def __init__(self, name: str, total: int, initial: int = 0, enabled: bool = True):
        self.name, self.total, self.n, self.info = name, total, initial, ""
        self.path = os.environ.get(ENV) if enabled else None
        self._sent, self._started = 0.0, time.monotonic()
        self._tqdm = None
        if enabled and not self.path:
            self._tqdm = tqdm(total=total, initial=initial, desc=name, leave=False, mininterval=2.0,
                              file=sys.stderr, dynamic_ncols=True)
        self._send(force=True)

    def update(self, n: int, info: str = ""):
        if self._tqdm is not None:
            self._tqdm.update(n - self._tqdm.n)
            if info != self.info:
                self._tqdm.set_postfix_str(info, refresh=False)
        self.n, self.info = n, info
        self._send()

    def close(self, info: str | None = None):
        self.info = self.info if info is None else info
        if self._tqdm is not None:
            self._tqdm.close()
        self._send(force=True, done=True)

    def _send(self, force: bool = False, done: bool = False):
        if not self.path or not (force or time.monotonic() - self._sent >= SEND_EVERY_S):
            return
        self._sent = time.monotonic()
        event = {"bar": self.name, "n": self.n, "total": self.total, "info": self.info, "done": done,
                 "elapsed": round(time.monotonic() - self._started, 2)}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(event) + "\n")
        except OSError:
            self.path = None  # the console loses its bar; the work goes on


class ProgressView:
    """The runner's side: follows the events file in a thread and draws one live tqdm bar per run on `stream`
    when it is a terminal; a finished bar stays as one line (its final count, time and text). On a pipe or a
    file only that final line is written."""

    def __init__(self, path: Path, stream, poll_s: float = 0.25):
        self.path, self.stream, self.poll_s = Path(path), stream, poll_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
        self.bars: dict[str, tqdm] = {}
        self.interactive = getattr(stream, "isatty", lambda: False)()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)

    def __enter__(self) -> "ProgressView":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for bar in self.bars.values():  # a bar whose run never finished (failure, Ctrl-C): left as it was
            bar.close()
        self.path.unlink(missing_ok=True)

    def _follow(self):
        offset = 0
        while True:
            stopping = self._stop.is_set()
            try:
                with open(self.path) as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                chunk = ""
            complete = chunk[:chunk.rfind("\n") + 1]  # a line still being written waits for the next poll
            offset += len(complete.encode())
            for line in complete.splitlines():
                try:
                    self.show(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue
            if stopping:
                return
            self._stop.wait(self.poll_s)

    def show(self, event: dict):
        name, n, total = str(event["bar"]), int(event["n"]), int(event["total"])
        info = str(event.get("info", ""))
        if not self.interactive:  # a log or a pipe: no redrawing, one line when the run ends
            if event.get("done"):
                self.stream.write(tqdm.format_meter(n, total, float(event.get("elapsed", 0)), prefix=name,
                                                    bar_format=BAR_FORMAT, postfix=info) + "\n")
                self.stream.flush()
            return
        bar = self.bars.get(name)
        if bar is None:
            bar = self.bars[name] = tqdm(total=total, initial=n, desc=name, file=self.stream, leave=True,
                                         dynamic_ncols=True, bar_format=BAR_FORMAT, mininterval=0.5)
        bar.update(n - bar.n)
        bar.set_postfix_str(info, refresh=False)
        if event.get("done"):
            bar.close()
            del self.bars[name]
