"""Reading a configuration file's YAML: every way it can fail is a ConfigError of one line that
names the file and, where YAML knows it, the line and column."""
from __future__ import annotations

from pathlib import Path

import yaml
from yaml.constructor import ConstructorError

from ztfl.config.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """safe_load, plus: a key given twice in one mapping is an error (not the last one silently
    winning), and a scalar YAML cannot build (a 30 February, `!!int x`) is a marked YAML error
    rather than the ValueError or AttributeError PyYAML lets out."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, AttributeError, OverflowError) as exc:
            raise ConstructorError(None, None, f"cannot read {node.tag.rsplit(':', 1)[-1]} value: {exc}",
                                   node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if key_node.value in seen:
                        raise ConstructorError(None, None, f"key {key_node.value!r} given twice", key_node.start_mark)
                    seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def read_yaml(path: str | Path):
    """The document in the file at `path` (None for an empty file)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", source=source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", source=source) from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:
        raise ConfigError("YAML nested too deeply", source=source) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _one_line(exc.problem or exc.context or "invalid YAML")
        raise ConfigError(f"YAML syntax error: {problem}", where, source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"YAML syntax error: {_one_line(exc)}", source=source) from None
