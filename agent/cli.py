"""`ztfl agent --config agent.yaml`: run the agent daemon."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from dataclasses import replace
from ztfl.config.daemon import add_daemon_arguments, load_config, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_arguments(parser, "agent")
    parser.add_argument("--profile", help="hardware profile name or file (default: detected)")


def run(args) -> int:
    setup_logging(args.log_level)
    from ztfl.agent.config import AgentConfig
    config = load_config(AgentConfig, args.config, "ztfl agent")
    if config is None:
        return 2
    if args.profile:
        config = replace(config, profile=args.profile)
    from ztfl.agent.daemon import Agent
    from ztfl.fednet.trust import TrustFileError
    try:
        agent = Agent(config)
    except TrustFileError as exc:            # its certified identity does not fit: one line, no traceback
        print(f"ztfl agent: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    code = agent.run_forever()
    # Exit at once: the MQTT session is closed and the state saved; nothing else needs a
    # graceful interpreter shutdown (which can stall on torch's worker threads).
    logging.shutdown()
    os._exit(code)
