"""One schema for every settings dataclass: the notebooks' parameters and the models' configs alike.

`build(cls, values, where)` makes a dataclass from a mapping. It refuses, with one line that starts with
`where` (ParamsError): a key the dataclass does not have (naming the closest one), a value of the wrong
type by the field's type hint (int, float, bool, str, dict, list[...]; an int is taken where a float is
expected, a bool never is), and a NaN or an infinity anywhere. Ranges and relations between fields are
each dataclass's own business: its `__post_init__` raises ValueError, which the caller words.

`read_yaml(path)` reads a parameter file, refusing in one line naming the file whatever keeps it from
being one: no file, a folder, not UTF-8, not YAML, a key given twice.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import math
import re
import reprlib
import typing
from pathlib import Path

import yaml

from attnlib.messages import not_a_file, one_line

# What a parameter file may hold: far beyond any of the project's, far below what can hurt the process.
MAX_YAML_CHARS, MAX_ALIASES, MAX_DEPTH, MAX_VALUES = 1_000_000, 100, 50, 100_000


def quoted(value, limit: int = 80) -> str:
    """repr(value) cut to `limit` characters (with "..."): an error message quotes a prefix, never a whole value."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 8, 8, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ParamsError(ValueError):
    """Bad settings; the message is one line naming where (the file), the key and what to fix."""


def finite(value) -> bool:
    """False for a NaN or an infinity, also inside lists and mappings (YAML's .nan and .inf)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(finite(v) for v in value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    return True


def check_type(value, hint) -> bool:
    """Whether `value` has the type a field's hint names."""
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(check_type(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def list_from_text(value, hint):
    """A list field's value given as text (papermill's `-p devices '[0, 1]'` passes text): YAML's flow list
    or items separated by commas, each made the field's item type where it reads as one (str, int, float).
    Anything else is returned as it is, for the type check to refuse."""
    if typing.get_origin(hint) is not list or not isinstance(value, str):
        return value
    (item,) = typing.get_args(hint)
    try:
        items = yaml.safe_load(value) if value.lstrip().startswith("[") else value.split(",")
    except yaml.YAMLError:
        return value
    if not isinstance(items, list):
        return value
    out = []
    for v in items:
        if isinstance(v, str):
            v = v.strip()
            if not v:
                continue
            if item in (int, float):
                with contextlib.suppress(ValueError):
                    v = item(v)
        elif item is str and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)  # a GPU index
        out.append(v)
    return out


def type_name(hint) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    return hint.__name__


@functools.cache
def hints(cls: type) -> dict[str, type]:
    """The type hint of each field of a dataclass."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def unknown_key(where: str, key, names, noun: str = "key", owner: str = "") -> ParamsError:
    """The error for a key that is not one of `names`, naming the closest one, or else all of them."""
    close = difflib.get_close_matches(str(key), list(names), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; choose from {', '.join(names)}"
    return ParamsError(f"{where}: {f'{owner} has ' if owner else ''}unknown {noun} {key!r}{hint}")


def checked(cls: type, key: str, value, where: str, label: str | None = None):
    """`value` for field `key` of `cls`, as that field's type (an int made a float where a float is
    expected); a wrong type or a non-finite number raises ParamsError naming `label` (default: the key)."""
    hint, label = hints(cls)[key], label or key
    if not check_type(value, hint):
        boolean = isinstance(value, bool) and hint in (int, float)
        raise ParamsError(f"{where}: {label} must be {type_name(hint)}, got {quoted(value)}"
                          + (" (YAML reads yes, no, on, off, true and false as a boolean)" if boolean else ""))
    if not finite(value) and hint is not dict:  # a mapping's entries are checked where they are used
        raise ParamsError(f"{where}: {label} must be "
                          f"{'finite numbers' if isinstance(value, list) else 'a finite number'}, got {quoted(value)}")
    return float(value) if hint is float else value


def check_options(where: str, owner: str, options, allowed: dict[str, type]) -> None:
    """Check a nested mapping of options (a model's under per_model): each key one of `allowed`, which maps
    an option to the dataclass that has it, each value of that field's type."""
    if not isinstance(options, dict):
        raise ParamsError(f"{where}: {owner} must be a mapping of option: value, got {quoted(options)}")
    for option, value in options.items():
        if option not in allowed:
            raise unknown_key(where, option, sorted(allowed), noun="option", owner=owner)
        checked(allowed[option], option, value, where, label=f"{owner}.{option}")


def build(cls: type, values, where: str, noun: str = "key"):
    """`cls(**values)`, every key and value checked first (see the module's docstring)."""
    if not isinstance(values, dict):
        raise ParamsError(f"{where}: expected a mapping of key: value, got {type(values).__name__}")
    names = list(hints(cls))
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise unknown_key(where, key, names, noun)
        kwargs[key] = checked(cls, key, value, where)
    return cls(**kwargs)


class _DuplicateKey(Exception):
    def __init__(self, key, first: int, again: int):
        super().__init__(key)
        self.key, self.first, self.again = key, first, again


class _TooBig(Exception):
    """A YAML document beyond what a parameter file needs (MAX_ALIASES, MAX_DEPTH): refused before it is built."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error instead of the last one
    silently winning, and that a document with more than MAX_ALIASES aliases, nested deeper than MAX_DEPTH, or whose
    aliases expand into more than MAX_VALUES values is refused while it is read: nested aliases ("billion laughs")
    would expand into billions of values wherever the parameters are walked, and a list nested thousands deep would
    exhaust Python's stack."""

    def compose_node(self, parent, index):
        self.aliases_seen = getattr(self, "aliases_seen", 0) + self.check_event(yaml.AliasEvent)
        self.depth = getattr(self, "depth", 0) + 1
        if self.aliases_seen > MAX_ALIASES:
            raise _TooBig(f"more than {MAX_ALIASES} aliases (*name); write the values out")
        if self.depth > MAX_DEPTH:
            raise _TooBig(f"values nested more than {MAX_DEPTH} deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self):
        node = super().compose_document()
        if node is not None and _expanded_size(node, {}) > MAX_VALUES:
            raise _TooBig(f"its aliases expand into more than {MAX_VALUES:,} values; write the values out")
        return node


def _expanded_size(node, seen: dict) -> int:
    """How many values `node` stands for with every alias written out (each node counted once per use). An alias
    inside its own anchor (`&x [*x]`) would stand for endlessly many: refused."""
    if id(node) not in seen:
        seen[id(node)] = None  # being counted: meeting it again below is a value that holds itself
        children = node.value if isinstance(node.value, list) else []
        seen[id(node)] = 1 + sum(_expanded_size(c, seen) for pair in children
                                 for c in (pair if isinstance(pair, tuple) else (pair,)))
    if seen[id(node)] is None:
        raise _TooBig("an alias refers to the value that holds it; write the values out")
    return seen[id(node)]


def _construct_unique_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            continue  # the safe loader reports unhashable keys itself
        line = key_node.start_mark.line + 1
        if key in seen:
            raise _DuplicateKey(key, seen[key], line)
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
# 1e-3 is a number, as YAML 1.2 and Python read it (PyYAML's YAML 1.1 reads it as text without a dot: 1.0e-3)
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                       re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                       list("-+0123456789"))


def read_yaml(path: str | Path):
    """The YAML in a parameter file (see the module's docstring for what is refused)."""
    path = Path(path)
    if path.is_dir():
        raise ParamsError(f"{path}: is a folder, not a parameter file (name a .yaml file)")
    if not path.exists():
        raise ParamsError(f"{path}: no such parameter file")
    if (kind := not_a_file(path)):
        raise ParamsError(f"{path}: is {kind}, not a parameter file (name a .yaml file)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ParamsError(f"{path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                          "save it as UTF-8") from None
    except OSError as err:
        raise ParamsError(f"{path}: cannot be read ({err.strerror or err})") from None
    if len(text) > MAX_YAML_CHARS:
        raise ParamsError(f"{path}: {len(text):,} characters, more than a parameter file needs ({MAX_YAML_CHARS:,})")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _TooBig as err:
        raise ParamsError(f"{path}: refused: {err}") from None
    except _DuplicateKey as err:
        raise ParamsError(f"{path}: key {err.key!r} is given twice (lines {err.first} and {err.again}); "
                          "keep one") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = one_line(getattr(err, "problem", None) or err)
        raise ParamsError(f"{path}: not valid YAML{at}: {problem}") from None
