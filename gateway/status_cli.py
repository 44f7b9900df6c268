"""`ztfl status --url http://127.0.0.1:PORT`: a gateway's live status, drawn with Rich."""
from __future__ import annotations

import argparse
import json
import time
import urllib.request

from rich.console import Group
from rich.live import Live
from rich.table import Table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:9108", help="gateway status endpoint base URL")
    parser.add_argument("--once", action="store_true", help="print once and exit")
    parser.add_argument("--json", action="store_true", help="print the raw status JSON once")
    parser.add_argument("--interval", type=float, default=1.0)


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=5) as resp:
        return json.loads(resp.read(1 << 22))


def render(status: dict) -> Group:
    head = Table(title=f"federation {status['federation']} / gateway {status['gateway']}")
    for col in ("round", "attempt", "target", "done"):
        head.add_column(col)
    head.add_row(str(status["round"]), str(status["attempt"]), str(status["rounds_target"]), str(status["done"]))
    models = Table(title="global models")
    for col in ("variant", "version", "accuracy", "macro-F1"):
        models.add_column(col)
    for v, m in status["models"].items():
        models.add_row(v, str(m["version"]), f"{m.get('accuracy', float('nan')):.4f}",
                       f"{m.get('macro_f1', float('nan')):.4f}")
    agents = Table(title="agents")
    for col in ("agent", "profile", "cohort", "state", "model", "records", "alerts"):
        agents.add_column(col)
    for a, i in status["agents"].items():
        agents.add_row(a, i["profile"], i["cohort"], i["state"], str(i["model_version"]), str(i["records"]),
                       str(i["alerts"]))
    cohorts = Table(title="cohorts in this round")
    for col in ("cohort", "mask bits", "participants", "state", "stage"):
        cohorts.add_column(col)
    for n, c in status["cohorts"].items():
        cohorts.add_row(n, str(c["mask_bits"]), str(c["participants"]), c["state"], c["stage"])
    parts = [head, cohorts, models, agents]
    if status.get("key_epochs"):
        epochs = Table(title="key epochs")
        for col in ("cohort", "epoch", "rounds in epoch", "age (s)", "key reuse", "new key setups"):
            epochs.add_column(col)
        for n, k in status["key_epochs"].items():
            epochs.add_row(n, str(k.get("epoch", "-")),
                           f"{k['rounds_in_epoch']} of {k['max_rounds']}" if "rounds_in_epoch" in k else "-",
                           f"{k['age_s']:.0f}" if "age_s" in k else "-",
                           "classic" if k["classic"] else str(k.get("key_reuse", "-")), str(k["key_setups"]))
        parts.append(epochs)
    if status.get("privacy"):
        privacy = Table(title="differential privacy")
        for col in ("cohort", "epsilon spent", "budget", "delta", "rounds", "mode", "state"):
            privacy.add_column(col)
        for n, d in status["privacy"].items():
            privacy.add_row(n, f"{d['epsilon_spent']:.4f}", f"{d['epsilon_budget']:g}", f"{d['delta']:g}",
                            str(d["rounds"]), d["mode"], d["stopped"] or ("exhausted" if d["exhausted"] else "ok"))
        parts.append(privacy)
    if status.get("refusals"):
        refusals = Table(title="refused messages")
        for col in ("reason", "count"):
            refusals.add_column(col)
        for reason, count in status["refusals"].items():
            refusals.add_row(reason, str(count))
        parts.append(refusals)
    if status.get("stopped"):
        parts.append(Table(title=f"stopped: {status['stopped']}"))
    return Group(*parts)


def run(args) -> int:
    if args.json:
        print(json.dumps(fetch(args.url)))
        return 0
    if args.once:
        from rich.console import Console
        Console().print(render(fetch(args.url)))
        return 0
    with Live(render(fetch(args.url)), refresh_per_second=4) as live:
        while True:
            time.sleep(args.interval)
            live.update(render(fetch(args.url)))
