"""`ztfl cloud --config cloud.yaml`: combine fog gateways' aggregates into the global model."""
from __future__ import annotations

import argparse
import logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="cloud YAML configuration")
    parser.add_argument("--log-level", default="INFO")


def run(args) -> int:
    # Our loggers at the chosen level; libraries (onnxruntime's quantiser...) only warnings.
    logging.getLogger("ztfl").setLevel(args.log_level.upper())
    logging.basicConfig(level=logging.WARNING,
                        format='{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    from ztfl.gateway.cloud import Cloud, CloudConfig
    return Cloud(CloudConfig.load(args.config)).run_forever()
