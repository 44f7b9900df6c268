# Board entry point: join Wi-Fi, then run the ztfl agent from /config.json.
import json
import sys
import time

from ztfw import wifi
from ztfw.agent import Agent

with open("/config.json") as f:
    CONFIG = json.loads(f.read())

try:
    wifi.connect(CONFIG.get("wifi", {}))
    Agent(CONFIG, "/").run()
except Exception as e:
    # Anything the agent does not handle (out of memory, a dead radio): report it on the
    # serial console, then start over from a clean heap rather than sit at the REPL.
    sys.print_exception(e)
    time.sleep(5)
    import machine
    machine.reset()
