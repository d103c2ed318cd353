"""Whether a notebook must run again: the digest of everything its results depend on (its parameters, the notebook,
the library's source, the notebooks before it, the device and data at hand), and the stamps of its last success
(results/<profile>/.cache/stamps.json)."""
from __future__ import annotations

import datetime
import hashlib
import json
import shutil
from pathlib import Path

import torch

from attnlib.data import cifar10_present
from attnlib.experiments.settings import REPO_ROOT
from attnlib.results import atomic_write_text, device_name, read_stamps

ROOT = REPO_ROOT
TIMING = "06_timing"  # its results belong to this machine: its digest holds the device itself


def library_digest() -> str:
    """Digest of the library's source: a change anywhere in attnlib/ reruns every notebook."""
    h = hashlib.sha1()
    for path in sorted((ROOT / "attnlib").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _portable(values: dict) -> dict:
    """Parameters with paths inside the repository made relative, so a moved checkout keeps its stamps."""
    out = {}
    for key, value in values.items():
        if isinstance(value, str) and value.startswith(str(ROOT) + "/"):
            value = str(Path(value).relative_to(ROOT))
        out[key] = value
    return out


def environment(values: dict, stem: str = "") -> dict:
    """What the parameters do not say but the results depend on: the kind of device (for the timing notebook,
    the device itself: its measurements belong to this CPU model, flags and threads, or this GPU), and for
    `dataset: auto` whether CIFAR-10 is there to be taken (otherwise Fashion-MNIST is)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    env = {"device": device_name(device) if stem == TIMING else device.type}
    if values.get("dataset") == "auto" and "data_root" in values:
        env["cifar10_present"] = cifar10_present(Path(values["data_root"]))
    return env


# where the runs train, not what they compute: another --devices reruns nothing; and --force's retrain, which
# reruns the notebook anyway and leaves results that the same command without --force reads back
NOT_DIGESTED = ("devices", "retrain")


def notebook_digest(nb: Path, values: dict, library: str, upstream: dict, env: dict | None = None) -> str:
    values = {k: v for k, v in values.items() if k not in NOT_DIGESTED}
    payload = json.dumps({"notebook": hashlib.sha1(nb.read_bytes()).hexdigest(), "params": _portable(values),
                          "library": library, "upstream": upstream, "environment": env or {}},
                         sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


class Stamps:
    """results/<profile>/.cache/stamps.json: per notebook, the digest, time and duration of its last success."""

    def __init__(self, path: Path):
        self.path = path
        self.data = read_stamps(path)  # damaged stamps only cost a rerun (one line says so)

    def upstream(self, stem: str) -> dict:
        return {k: [v.get("digest"), v.get("finished")] for k, v in sorted(self.data.items()) if k < stem}

    def unchanged(self, stem: str, digest: str, out: Path) -> dict | None:
        entry = self.data.get(stem)
        return entry if entry and entry.get("digest") == digest and out.exists() else None

    def _change(self, stem: str, entry: dict | None):
        """Set (or with None drop) one notebook's stamp in the file as it is now: a notebook may have dropped
        other stamps meanwhile (notebook 08 does, for results it found damaged), and so may a second runner."""
        if self.path.is_dir() and not self.path.is_symlink():  # a folder in its place: nothing to keep there
            shutil.rmtree(self.path)
        on_disk = read_stamps(self.path, verbose=False)
        if entry is None and stem not in on_disk:
            self.data.pop(stem, None)
            return
        on_disk.pop(stem, None)
        if entry is not None:
            on_disk[stem] = entry
        self.data = on_disk
        atomic_write_text(self.path, json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    def record(self, stem: str, digest: str, seconds: float):
        self._change(stem, {"digest": digest, "seconds": round(seconds, 1),
                            "finished": datetime.datetime.now().isoformat(timespec="seconds")})

    def forget(self, stem: str):
        """Before a notebook runs: on disk at once, so a failure or an interruption leaves no stamp."""
        self._change(stem, None)
