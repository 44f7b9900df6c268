"""What every daemon command (`ztfl agent`, `ztfl gateway`, `ztfl cloud`) does first: set up its
log and load its configuration file, refusing a bad one in one line."""
from __future__ import annotations

import logging
import sys

from ztfl.config.errors import ConfigError

# One JSON object per line, so a log collector can parse every line.
JSON_LOG_FORMAT = '{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'


def setup_logging(level: str) -> None:
    """Our loggers at the chosen level; libraries (onnxruntime's quantiser...) only warnings."""
    logging.getLogger("ztfl").setLevel(level.upper())
    logging.basicConfig(level=logging.WARNING, format=JSON_LOG_FORMAT)


def load_config(config_class, path: str, prog: str):
    """The loaded configuration, or None after printing `prog: <what is wrong>` (exit code 2)."""
    try:
        return config_class.load(path)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None


def add_daemon_arguments(parser, role: str) -> None:
    """The options every daemon command takes: its configuration file and its log level."""
    parser.add_argument("--config", required=True, help=f"{role} YAML configuration")
    parser.add_argument("--log-level", default="INFO")
