"""One-line messages, which every error and note of the project is built from: text folded to one line, the
first few of a list, an exception in one short line."""
from __future__ import annotations


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
