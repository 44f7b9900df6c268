"""A YAML document into nested frozen dataclasses, checked while it is built.

A section is a dataclass; each of its fields is a key, typed by its annotation:

    str, int, float, bool      the scalar itself (an int is a number too, kept as written)
    X | None                   null, or an X
    a dataclass                a nested mapping (null or absent: the field's default)
    tuple[X, ...]              a list of X
    Mapping[str, X]            a mapping of free names to X (e.g. cohorts by name), read-only

and `setting(...)` (ztfl.config.fields) adds bounds, choices and checks. A key the section does
not have is refused with the closest valid key; a required key (a field without default) must
be given. A section's `__post_init__` may check what spans several keys: its ValueError (or a
ConfigError naming a key of the section) is reported at the section's key path.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from ztfl.config.errors import ConfigError
from ztfl.config.fields import RULES, broken_rule, did_you_mean, shown
from ztfl.config.yaml_text import read_yaml

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_EXPONENT_WITHOUT_DOT = re.compile(r"[-+]?\d+[eE][-+]?\d+")


class ConfigFile:
    """Base of the dataclass of a whole file. `FILE` names a document given as a dict in errors."""
    FILE = "config"

    @classmethod
    def load(cls, path: str | Path):
        return load(cls, path)

    @classmethod
    def from_dict(cls, doc):
        return build(cls, doc, cls.FILE)


def load(cls: type, path: str | Path):
    """The file at `path` as a `cls`; an empty file is all defaults. Raises ConfigError."""
    doc = read_yaml(path)
    return build(cls, {} if doc is None else doc, str(path))


def build(cls: type, doc, source: str):
    """`doc` (what YAML read) as a `cls`; errors name `source` as the file."""
    try:
        return _section(cls, doc, "")
    except ConfigError as exc:
        raise exc.within(source=source) from None


@cache
def _keys(cls: type) -> dict[str, tuple[object, dataclasses.Field]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls) if f.init}


def _join(path: str, key) -> str:
    name = key if isinstance(key, str) and _PLAIN_NAME.fullmatch(key) else shown(key)
    return f"{path}.{name}" if path else name


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _is_section(tp) -> bool:
    return dataclasses.is_dataclass(tp) or typing.get_origin(tp) in (dict, Mapping)


def _section(cls: type, doc, path: str):
    if not isinstance(doc, Mapping):
        raise ConfigError(f"expected a mapping of keys, got {shown(doc)}", path)
    keys = _keys(cls)
    for key in doc:
        if key not in keys:
            hint = did_you_mean(key, keys) or f"; valid keys: {', '.join(keys)}"
            raise ConfigError(f"unknown key{hint}", _join(path, key))
    given = {}
    for name, (tp, f) in keys.items():
        key = _join(path, name)
        if name not in doc:
            if not _has_default(f):
                raise ConfigError("required key missing", key)
            continue
        value = doc[name]
        if value is None and _is_section(tp) and _has_default(f):
            continue                # `broker:` with nothing under it: the section's defaults
        given[name] = _field_value(tp, f.metadata.get(RULES, {}), value, key)
    try:
        return cls(**given)
    except ConfigError as exc:
        raise exc.within(section=path) from None
    except ValueError as exc:
        raise ConfigError(" ".join(str(exc).split()), path) from None


def _field_value(tp, rules: Mapping, value, key: str):
    value = _typed(tp, value, key)
    if value is not None and rules:
        problem = broken_rule(rules, value)
        if problem:
            raise ConfigError(problem, key)
    return value


def _typed(tp, value, key: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        (arm,) = [a for a in args if a is not type(None)]       # only `X | None` is a config type
        return None if value is None else _typed(arm, value, key)
    if dataclasses.is_dataclass(tp):
        return _section(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"expected a list, got {shown(value)}", key)
        return tuple(_typed(args[0], item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"expected a mapping, got {shown(value)}", key)
        for name in value:
            if not isinstance(name, str):
                raise ConfigError(f"expected a name, got {shown(name)}", _join(key, name))
        return types.MappingProxyType({name: _typed(args[1], item, _join(key, name)) for name, item in value.items()})
    return _scalar(tp, value, key)


def _scalar(tp, value, key: str):
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {shown(value)}", key)
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {shown(value)}", key)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str) and _EXPONENT_WITHOUT_DOT.fullmatch(value.strip()):
                hint = " (YAML reads an exponent without a decimal point as text: write 1.0e-5, not 1e-5)"
            raise ConfigError(f"expected a number, got {shown(value)}{hint}", key)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {shown(value)}", key)
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {shown(value)}", key)
    else:
        raise TypeError(f"{key}: {tp!r} is not a configuration type")
    return value
