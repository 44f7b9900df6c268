"""The one error of a configuration file that cannot be used."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad configuration file: one line naming the file, the key path and what is wrong, e.g.
    `gateway.yaml: privacy.mode: 'stp' is not one of stop, warn; did you mean 'stop'?`.

    A section's own checks (`__post_init__`) raise it with the key relative to the section, and
    the loader places it (`within`) as the error rises through the enclosing sections and file."""

    def __init__(self, problem: str, key: str = "", source: str = ""):
        self.problem, self.key, self.source = problem, key, source
        super().__init__(": ".join(part for part in (source, key, problem) if part))

    def within(self, section: str = "", source: str = "") -> "ConfigError":
        """The same problem seen from the enclosing `section` (a key path) and file `source`."""
        key = ".".join(part for part in (section, self.key) if part)
        return ConfigError(self.problem, key, source or self.source)
