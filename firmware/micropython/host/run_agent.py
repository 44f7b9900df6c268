# Runs the firmware agent in the unix port from a device directory (config.json,
# records.bin), the way main.py runs it on a board: `micropython run_agent.py DIR`.
# Not part of the bundle.
import json
import sys

from ztfw.agent import Agent

base = sys.argv[1] if len(sys.argv) > 1 else "."
with open(base + "/config.json") as f:
    cfg = json.loads(f.read())
Agent(cfg, base).run()
