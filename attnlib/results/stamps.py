"""The runner's stamps (results/<profile>/.cache/stamps.json): which notebooks ran with which inputs; damaged
ones cost only a rerun."""
from __future__ import annotations

import json
from pathlib import Path

from attnlib.messages import error_line, not_a_file
from attnlib.results.files import atomic_write_text


def read_stamps(path: str | Path, verbose: bool = True) -> dict:
    """The runner's stamps (results/<profile>/.cache/stamps.json): per notebook a mapping with its digest,
    duration and finish time. Damaged ones cost only a rerun: an unreadable file counts as none, an entry
    of the wrong shape as missing, and one line says so."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return {}
    try:
        if (kind := not_a_file(path)):  # a named pipe would be read forever
            raise ValueError(f"it is {kind}, not a file")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # truncated, not UTF-8, a folder, nested past the stack, ...
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
