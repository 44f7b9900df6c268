"""The agent's small persistent state (a JSON file on flash), written atomically."""
import json
import os


class Store:
    DEFAULTS = {"last_round": 0, "alert_seq": 0, "gateway_pk": "", "uploaded": [], "model_version": -1}

    def __init__(self, path):
        self.path = path
        self.state = dict(self.DEFAULTS)
        self.fresh = False
        try:
            with open(path) as f:
                doc = json.loads(f.read())
        except OSError:
            doc = {}            # first boot: no state file yet
            self.fresh = True
        except ValueError:
            # A torn write cannot happen (rename in save()); a corrupt file starts fresh.
            doc = {}
            self.fresh = True
        if isinstance(doc, dict):
            for k in self.DEFAULTS:
                if k in doc and type(doc[k]) is type(self.DEFAULTS[k]):
                    self.state[k] = doc[k]

    def save(self):
        # Only the last few uploads matter (redelivered announcements of recent rounds).
        self.state["uploaded"] = self.state["uploaded"][-8:]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(self.state))
        os.rename(tmp, self.path)
