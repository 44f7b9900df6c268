"""`ztfl gateway --config gateway.yaml`: run the fog gateway."""
from __future__ import annotations

import argparse
import logging
import signal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="gateway YAML configuration")
    parser.add_argument("--serve", action="store_true",
                        help="keep serving status and models after the last round")
    parser.add_argument("--log-level", default="INFO")


def run(args) -> int:
    # Our loggers at the chosen level; libraries (onnxruntime's quantiser...) only warnings.
    logging.getLogger("ztfl").setLevel(args.log_level.upper())
    logging.basicConfig(level=logging.WARNING,
                        format='{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    from gateway.config import GatewayConfig
    from gateway.server import Gateway
    gateway = Gateway(GatewayConfig.load(args.config))

    def _stop(*_):
        gateway.done = True
        gateway.stop_requested = True
    signal.signal(signal.SIGTERM, _stop)
    return gateway.run_forever(stop_when_done=not args.serve)
