"""`setting(...)`: a field of a configuration dataclass together with what its value must satisfy.

The rules live in the field's metadata, so a section declares its keys, types, defaults and
limits in one place, and the loader checks all of them when the file is read:

    rounds: int = setting(5, at_least=1)
    mode: str = setting("stop", choices=("stop", "warn"))
    delta: float = setting(above=0, below=1)          # no default: the key is required
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, field

RULES = "ztfl.config.rules"       # the metadata key of a field's rules
SHOWN_CHARS = 40                   # a value quoted in an error is cut here: messages stay one short line


def setting(default=MISSING, *, default_factory=MISSING, at_least=None, at_most=None, above=None, below=None,
            choices: Collection | None = None, min_items: int | None = None,
            check: Callable[[object], object] | None = None):
    """A dataclass field whose value, once loaded, is checked against: inclusive bounds
    (`at_least`, `at_most`), exclusive ones (`above`, `below`), `choices`, a list's `min_items`,
    and `check`, a callable that raises ValueError saying what is wrong."""
    rules = {"at_least": at_least, "at_most": at_most, "above": above, "below": below,
             "choices": tuple(choices) if choices is not None else None, "min_items": min_items, "check": check}
    return field(default=default, default_factory=default_factory,
                 metadata={RULES: {name: rule for name, rule in rules.items() if rule is not None}})


def shown(value) -> str:
    """A value as an error quotes it: scalars by repr (cut short), containers by their kind (a
    document's aliases can make a container's repr exponentially long)."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple, set, frozenset)):
        return "a list"
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return repr(value[:SHOWN_CHARS]) + "..."
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def did_you_mean(word, candidates) -> str:
    """'; did you mean 'x'?' for the closest candidate, or '' if none is close."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def broken_rule(rules: Mapping, value) -> str | None:
    """What is wrong with a loaded value under its field's rules, or None."""
    if "choices" in rules and value not in rules["choices"]:
        return (f"{shown(value)} is not one of {', '.join(map(str, rules['choices']))}"
                f"{did_you_mean(value, rules['choices'])}")
    bounds = (("at_least", lambda v, b: v >= b, "at least"), ("at_most", lambda v, b: v <= b, "at most"),
              ("above", lambda v, b: v > b, "above"), ("below", lambda v, b: v < b, "below"))
    for name, holds, words in bounds:
        if name in rules and not holds(value, rules[name]):
            return f"must be {words} {rules[name]}, got {shown(value)}"
    if "min_items" in rules and len(value) < rules["min_items"]:
        return f"must list at least {rules['min_items']}, got {len(value)}"
    if "check" in rules:
        try:
            rules["check"](value)
        except ValueError as exc:
            return " ".join(str(exc).split())
    return None
