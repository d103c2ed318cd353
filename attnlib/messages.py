"""One-line messages, which every error and note of the project is built from: text folded to one line, the
first few of a list, an exception in one short line, what a path is when it is not a plain file."""
from __future__ import annotations

import os
import stat


def one_line(text) -> str:
    """A message on one line: its white space, line breaks included, folded to single spaces."""
    return " ".join(str(text).split())


def first_few(names, n: int = 3) -> str:
    """"a, b, c, ...": the first `n` names, and an ellipsis when there are more."""
    names = list(names)
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def error_line(err: BaseException, limit: int = 160) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    text = text[0] if text else ""
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def not_a_file(path) -> str | None:
    """What `path` is ("a folder", "a named pipe", ...) where it exists and is no plain file, following symbolic
    links; None for a plain file or nothing at all. Reading a named pipe or a device as a file would wait forever or
    never end: callers refuse it first."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((kind for test, kind in KINDS if test(mode)), None if stat.S_ISREG(mode) else "no plain file")
