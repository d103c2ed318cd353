"""Checkpoints read back and checked: a damaged one is told from a good one (DamagedCheckpoint), and a
fault of the system (I/O, permissions, memory) from a fault of the file."""
from __future__ import annotations

import errno
import warnings
from pathlib import Path

import pandas as pd
import torch

from attnlib.messages import error_line, not_a_file
from attnlib.results.layout import METRIC_COLUMNS, RECORDS
from attnlib.results.plausible import implausible


class DamagedCheckpoint(ValueError):
    """A checkpoint that cannot be read or does not hold what training wrote; `reason` says which."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path} is damaged ({reason})")
        self.path, self.reason = Path(path), reason


CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "rng", "history")


# errors in reading a checkpoint that say nothing about the file itself
NOT_THE_FILES_FAULT = {errno.EIO, errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.ENOMEM}


def load_checkpoint(path: str | Path, run_id: str | None = None, mmap: bool = False) -> dict:
    """A checkpoint written by train.fit, checked: readable with weights_only=True, holding the model, optimizer,
    RNG state and one history row per finished epoch (of `run_id`, when given). Raises DamagedCheckpoint."""
    path = Path(path)
    if (kind := not_a_file(path)):  # a named pipe would be read forever
        raise DamagedCheckpoint(path, f"it is {kind}, not a file")
    try:
        with warnings.catch_warnings():  # torch's remarks on a foreign pickle: the reason below says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as err:
        if err.errno in NOT_THE_FILES_FAULT:
            raise  # the disk, the permissions or the system: nothing to heal by moving the file
        raise DamagedCheckpoint(path, f"unreadable: {error_line(err)}") from None
    except Exception as err:  # truncated, random bytes, empty, a foreign pickle: all one kind of fault
        raise DamagedCheckpoint(path, f"unreadable: {error_line(err)}") from None
    if not isinstance(state, dict):
        raise DamagedCheckpoint(path, f"holds a {type(state).__name__}, not a training checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise DamagedCheckpoint(path, f"lacks {', '.join(missing)}")
    epoch, history = state["epoch"], state["history"]
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise DamagedCheckpoint(path, "its model weights are not a state dict of tensors")
    if not isinstance(state["optimizer"], dict) or not isinstance(state["rng"], torch.Tensor) \
            or state["rng"].dtype != torch.uint8 or state["rng"].shape != torch.get_rng_state().shape:
        raise DamagedCheckpoint(path, "its optimizer or RNG state is malformed")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise DamagedCheckpoint(path, f"epoch is {epoch!r}")
    if not isinstance(history, list) or len(history) != epoch or not all(
            isinstance(r, dict) and r.get("epoch") == i and not (set(METRIC_COLUMNS) - set(r))
            for i, r in enumerate(history, 1)):
        raise DamagedCheckpoint(path, f"its history does not hold one metric row for each of its {epoch} epochs")
    try:
        why = implausible(pd.DataFrame(history, columns=METRIC_COLUMNS), METRIC_COLUMNS)
    except (TypeError, ValueError) as err:  # a value that is not a number where one belongs
        why = f"its history holds {error_line(err)}"
    if why:
        raise DamagedCheckpoint(path, why)
    for key in ("centers", "attention"):
        rows = state.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) and not (set(RECORDS[key][1]) - set(r))
                                                 for r in rows):
            raise DamagedCheckpoint(path, f"its {key} are not a list of rows")
    owner = state.get("run_id", history[0].get("run_id"))
    if run_id is not None and (owner != run_id or any(r.get("run_id") != run_id for r in history)):
        raise DamagedCheckpoint(path, f"it belongs to run {owner!r}, not {run_id!r}")
    return state
