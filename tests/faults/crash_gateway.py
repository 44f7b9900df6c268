"""Run the real gateway (`ztfl gateway --config FILE`) and SIGKILL it at one point of the path by
which a round's new model becomes a committed version:

    model-file-temp     the new model file is written and fsynced under its temporary name, not renamed
    model-file-written  the file is in place under its final name; the registry transaction has not begun
    mid-transaction     the transaction has inserted the new model version, the round is not yet committed
    committed           the transaction has committed; nothing after it ran (the model is not published)

    python tests/faults/crash_gateway.py POINT --config gateway.yaml

Only round commits are hit: the initial model (version 0) is written normally. Everything else is
the gateway's own code; the kill is the process signalling itself, so it happens exactly there.
"""
from __future__ import annotations

import os
import re
import signal
import sys

from ztfl.gateway.registry import Registry

POINTS = ("model-file-temp", "model-file-written", "mid-transaction", "committed")
# The transaction's statement that follows the model-version inserts (gateway.registry.commit_round).
MARK_COMMITTED = re.compile(r"UPDATE rounds SET status='committed'")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    if point == "model-file-temp":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            name = os.path.basename(os.fspath(dst))
            if re.fullmatch(r"v\d{6}-[0-9a-f]{12}\.npy", name) and not name.startswith("v000000-"):
                die()
            return real_replace(src, dst, *args, **kwargs)
        os.replace = replace          # agent.files.atomic_write_bytes renames with os.replace
        return
    real_commit = Registry.commit_round

    def commit_round(self, *args, **kwargs):
        if point == "model-file-written":
            die()
        if point == "mid-transaction":
            self.db.set_trace_callback(lambda sql: die() if MARK_COMMITTED.search(sql) else None)
        real_commit(self, *args, **kwargs)
        if point == "committed":
            die()
    Registry.commit_round = commit_round


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in POINTS:
        print(f"usage: crash_gateway.py {{{','.join(POINTS)}}} --config FILE", file=sys.stderr)
        return 2
    arm(argv[0])
    from ztfl.cli import main as ztfl_main
    return ztfl_main(["gateway", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
