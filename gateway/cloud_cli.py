"""`ztfl cloud --config cloud.yaml`: combine fog gateways' aggregates into the global model."""
from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="cloud YAML configuration")
    parser.add_argument("--log-level", default="INFO")


def run(args) -> int:
    # Our loggers at the chosen level; libraries (onnxruntime's quantiser...) only warnings.
    logging.getLogger("ztfl").setLevel(args.log_level.upper())
    logging.basicConfig(level=logging.WARNING,
                        format='{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    from ztfl.config import ConfigError
    from ztfl.gateway.cloud_config import CloudConfig
    try:
        config = CloudConfig.load(args.config)
    except ConfigError as exc:
        print(f"ztfl cloud: {exc}", file=sys.stderr)
        return 2
    from ztfl.gateway.cloud import Cloud
    return Cloud(config).run_forever()
