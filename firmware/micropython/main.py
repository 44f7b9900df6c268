# Board entry point: join Wi-Fi, then run the ztfl agent from /config.json.
import json

from ztfw import wifi
from ztfw.agent import Agent

with open("/config.json") as f:
    CONFIG = json.loads(f.read())

wifi.connect(CONFIG.get("wifi", {}))
Agent(CONFIG, "/").run()
