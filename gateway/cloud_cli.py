"""`ztfl cloud --config cloud.yaml`: combine fog gateways' aggregates into the global model."""
from __future__ import annotations

import argparse
from ztfl.config.daemon import add_daemon_arguments, load_config, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_arguments(parser, "cloud")


def run(args) -> int:
    setup_logging(args.log_level)
    from ztfl.gateway.cloud_config import CloudConfig
    config = load_config(CloudConfig, args.config, "ztfl cloud")
    if config is None:
        return 2
    from ztfl.gateway.cloud import Cloud
    return Cloud(config).run_forever()
