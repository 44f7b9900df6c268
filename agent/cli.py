"""`ztfl agent --config agent.yaml`: run the agent daemon."""
from __future__ import annotations

import argparse
import logging
import os
import signal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="agent YAML configuration")
    parser.add_argument("--profile", help="hardware profile name or file (default: detected)")
    parser.add_argument("--log-level", default="INFO")


def run(args) -> int:
    # Our loggers at the chosen level; libraries (onnxruntime's quantiser...) only warnings.
    logging.getLogger("ztfl").setLevel(args.log_level.upper())
    logging.basicConfig(level=logging.WARNING,
                        format='{"t":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}')
    from ztfl.agent.daemon import Agent, AgentConfig
    config = AgentConfig.load(args.config)
    if args.profile:
        config.profile = args.profile
    agent = Agent(config)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    code = agent.run_forever()
    # Exit at once: the MQTT session is closed and the state saved; nothing else needs a
    # graceful interpreter shutdown (which can stall on torch's worker threads).
    logging.shutdown()
    os._exit(code)
