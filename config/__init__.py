"""Typed configuration files (agent.yaml, gateway.yaml, cloud.yaml): one loader, one rigour.

Each file is a frozen dataclass (`ConfigFile`) whose sections are frozen dataclasses; types,
bounds and choices are declared with `setting(...)` and checked as the file is read. Every
problem is a `ConfigError` of one line naming the file, the key path and what is wrong.
"""
from ztfl.config.errors import ConfigError
from ztfl.config.fields import setting
from ztfl.config.loader import ConfigFile, build, load

__all__ = ["ConfigError", "ConfigFile", "build", "load", "setting"]
