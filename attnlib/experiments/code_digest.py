"""The code that decides what a training run computes and records, digested into the run's id, so that a change to
it starts new runs instead of reading back rows that older code recorded (a stale row), while a change that cannot
alter a number leaves every run standing.

What counts is each top-level definition and statement of TRAINING_CODE, as Python parses it: comments, docstrings,
blank lines, formatting and import lines do not count, and neither does which file or in what order a definition
lies, so moving a function between these modules, reordering them or rewording a docstring retrains nothing. A
change to a function's body, a default or a constant does. Renaming a definition counts as a change.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # attnlib/

# Relative to attnlib/: the models, attention and dropout, the data and its loading, the training loop, and what a
# run records at every epoch (the centers and the attention measures). Not the speed options (TF32, compile,
# channels-last), which change numbers by float rounding only and are not part of a run's id either.
TRAINING_CODE = ("attention.py", "content_algebra.py", "shared_product.py", "dropout.py", "models", "data.py",
                 "loaders.py", "training/train.py", "training/records.py", "evidence/attention_maps.py")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def definitions(source: str) -> list[str]:
    """Each top-level statement of `source` but its imports, as a canonical dump without docstrings."""
    tree = _without_docstrings(ast.parse(source))
    return [ast.dump(node) for node in tree.body if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Pass))]


def _files(root: Path, paths) -> list[Path]:
    out = []
    for rel in paths:
        path = root / rel
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def code_digest(root: Path = PACKAGE, paths=TRAINING_CODE) -> str:
    """8 hex digits over the sorted definitions of `paths` under `root`."""
    dumps = sorted(d for f in _files(root, paths) for d in definitions(f.read_text(encoding="utf-8")))
    return hashlib.sha1("\n".join(dumps).encode()).hexdigest()[:8]


@functools.cache
def training_code() -> str:
    """The digest of the training code as this process imported it (computed once)."""
    return code_digest()
