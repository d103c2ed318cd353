"""A run's CSV rows (metrics, centers, attention): read and checked, rebuilt from the checkpoints when damaged,
and written whole per run, so a resumed run never duplicates or loses a row."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Callable

import pandas as pd

from attnlib.messages import error_line, not_a_file
from attnlib.results.checkpoints import DamagedCheckpoint, load_checkpoint
from attnlib.results.files import atomic_write_text, locked, move_aside
from attnlib.results.layout import METRIC_COLUMNS, RECORDS, TEXT_COLUMNS
from attnlib.results.plausible import implausible


class DamagedCSV(ValueError):
    pass


def _read_checked(path: Path, columns: list[str], planned: dict[str, int] | None = None) -> pd.DataFrame:
    """The CSV at `path` if it is whole: ends with a newline, parses, has exactly `columns` as header, no
    missing fields, numbers where numbers belong, and rows that training can write (plausible.implausible).
    Raises DamagedCSV saying what is wrong."""
    if (kind := not_a_file(path)):  # a named pipe would be read forever
        raise DamagedCSV(f"it is {kind}, not a file")
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
    if (why := implausible(df, columns, planned)):
        raise DamagedCSV(why)
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


def read_metrics(path: str | Path, columns: list[str] = METRIC_COLUMNS,
                 planned: dict[str, int] | None = None) -> pd.DataFrame:
    """The rows of a metrics CSV (with RECORDS' other columns: a centers or attention CSV); empty when there is none.
    A damaged one is rebuilt from the checkpoints (`rebuild_from_checkpoints`) instead of stopping every later run.
    `planned` (run id -> planned epochs), where the reader knows the plan: rows beyond it make the file damaged."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        return pd.DataFrame(columns=columns)
    try:
        return _read_checked(path, columns, planned)
    except DamagedCSV as err:
        return rebuild_from_checkpoints(path, columns, str(err))


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


def keep_runs(path: str | Path, run_ids, columns: list[str] = METRIC_COLUMNS) -> int:
    """Drop every row of the CSV at `path` whose run is not among `run_ids` (a notebook's CSVs hold the runs of its
    current plan only, so no row of a run it no longer plans, such as one trained by older code, stays standing);
    returns how many rows went. Under the CSV's lock, atomically; a missing CSV is left alone."""
    path = Path(path)
    if not path.exists():
        return 0
    keep = set(run_ids)
    with locked(path):
        old = read_metrics(path, columns)
        kept = old[old["run_id"].isin(keep)]
        if len(kept) < len(old):
            atomic_write_text(path, kept.to_csv(index=False))
    return len(old) - len(kept)
