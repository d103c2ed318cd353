"""Notebook parameters loaded from params/<profile>/<notebook>.yaml and checked before work starts.

A parameter file may set any field of the notebook's dataclass and nothing else. An unknown key, a
wrong type or an impossible value (NaN or infinity anywhere, a key given twice, a schedule that cannot
work, a run too long to be meant, a model that cannot be built) raises ParamsError with one line naming
the file and the key; so does a file that is empty, not UTF-8 or not a file. Keys and types are checked
by attnlib.schema, which checks the models' options too; each dataclass's `validate`
(attnlib.experiments.settings) checks its values, and attnlib.experiments.grid a training notebook's grid.
`python -m attnlib.params FILE...` checks files from the shell (exit status 2 on the first error).
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from attnlib import schema
from attnlib.experiments import grid
from attnlib.experiments.settings import PROFILES, REPO_ROOT, TrainParams, params_class
from attnlib.schema import ParamsError, read_yaml

PATH_FIELDS = ("data_root", "params_dir", "results_dir")



def from_mapping(cls: type, values: dict, where: str = "parameters"):
    """Build and validate `cls` from a mapping; unknown keys, wrong types and impossible values raise
    ParamsError."""
    try:
        obj = schema.build(cls, values, where)
    except ParamsError:
        raise
    except ValueError as err:  # a training setting's own check (attnlib.training.train.TrainSettings)
        raise ParamsError(f"{where}: {err}") from None
    obj = obj.validate(where) if hasattr(obj, "validate") else obj
    if isinstance(obj, TrainParams):  # its values are sound: now whether every run of its grid can be built
        grid.check_grid(obj, where)
    return obj


def load(path: str | Path, cls: type | None = None):
    """Load and validate a parameter file; the class defaults to the notebook's (by file name). A file under
    a profile's folder (params/quick/...) must name that profile, or none. An empty file is refused: it would
    silently mean the dataclass's defaults, which are the paper's settings."""
    path = Path(path)
    values = read_yaml(path)
    folder = path.parent.name
    if values is None or values == {}:
        example = folder if folder in PROFILES else "smoke"
        raise ParamsError(f"{path}: is empty; name at least its profile (profile: {example}) and the settings to "
                          f"change (see params/{example}/ for examples); an empty file would mean the paper's settings")
    if isinstance(values, dict) and folder in PROFILES and values.get("profile", folder) != folder:
        raise ParamsError(f"{path}: profile is {values['profile']!r} but the file lies in the {folder!r} profile's "
                          f"folder; set profile: {folder} or move the file")
    return from_mapping(cls or params_class(path.stem), values, where=str(path))


def load_with(path: str | Path, overrides: dict, where: str | None = None):
    """A parameter file with some fields replaced (the runner's command line, notebook 07's profile and
    folders), checked as a whole again."""
    base = load(path)
    return from_mapping(type(base), {**dataclasses.asdict(base), **overrides},
                        where=where or f"{path} (with overrides)")


def for_notebook(notebook: str, namespace: dict):
    """A notebook's parameters: params/<profile>/<notebook>.yaml, the one source of its settings, for the
    profile the notebook's globals name, with every field its globals set on top (papermill's injected cell,
    or a user's own line in the parameters cell). Relative folders are taken from the repository's root, so
    a notebook runs the same from JupyterLab, from the runner and from `papermill -f FILE`."""
    cls = params_class(notebook)
    given = {f.name: schema.list_from_text(namespace[f.name], schema.hints(cls)[f.name])  # papermill's -p: text
             for f in dataclasses.fields(cls) if f.name in namespace}
    profile = given.get("profile", "smoke")
    params_dir = _from_root(namespace.get("params_dir", "params"))
    path = Path(params_dir) / str(profile) / f"{notebook}.yaml"
    base = dataclasses.asdict(load(path, cls)) if str(profile) in PROFILES else {}
    values = {**base, **given}
    for key in PATH_FIELDS:
        if key in values:
            values[key] = _from_root(values[key])
    return from_mapping(cls, values, where=f"{path} with the notebook's parameters")


def _from_root(folder: str) -> str:
    """A relative folder as seen from the repository's root (absolute ones are kept)."""
    return folder if Path(folder).is_absolute() else str(REPO_ROOT / folder)


def main(argv: list[str] | None = None) -> int:
    files = sys.argv[1:] if argv is None else argv
    for f in files:
        try:
            load(f)
        except ParamsError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(f"ok: {len(files)} parameter file(s)")
    return 0

