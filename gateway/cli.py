"""`ztfl gateway --config gateway.yaml`: run the fog gateway."""
from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
from pathlib import Path
from ztfl.config.daemon import add_daemon_arguments, load_config, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_arguments(parser, "gateway")
    parser.add_argument("--serve", action="store_true",
                        help="keep serving status and models after the last round")


def _is_state_error(exc: BaseException, state_dir: Path) -> bool:
    """Whether a failure while the gateway starts is its state directory refusing to be written:
    the registry database (any SQLite error) or an OS error on a path inside the directory. Other
    failures (a missing dataset, a port in use) are not, and keep their own error."""
    if isinstance(exc, sqlite3.Error):
        return True
    if not isinstance(exc, OSError) or exc.filename is None:
        return False
    path, root = Path(str(exc.filename)).absolute(), state_dir.absolute()
    return path == root or root in path.parents


def run(args) -> int:
    setup_logging(args.log_level)
    from ztfl.gateway.config import GatewayConfig
    config = load_config(GatewayConfig, args.config, "ztfl gateway")
    if config is None:
        return 2
    from ztfl.fednet.trust import TrustFileError
    from ztfl.gateway.server import STATE_WRITE_FAILED, Gateway
    try:
        gateway = Gateway(config)
    except TrustFileError as exc:            # its certified identity does not fit: one line, no traceback
        print(f"ztfl gateway: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        # The same stop as a state write failing mid-round (Gateway.run_forever), one line and
        # exit code 3, rather than a traceback: nothing was committed, so nothing is lost.
        if not _is_state_error(exc, Path(config.state_dir)):
            raise
        logging.getLogger("ztfl.gateway").error(
            "cannot write the gateway state in %s (%s: %s): disk full or read-only? "
            "The gateway did not start; nothing was changed", config.state_dir, type(exc).__name__, exc)
        return STATE_WRITE_FAILED

    def _stop(*_):
        gateway.done = True
        gateway.stop_requested = True
    signal.signal(signal.SIGTERM, _stop)
    return gateway.run_forever(stop_when_done=not args.serve)
