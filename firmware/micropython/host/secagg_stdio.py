# Drives firmware ClientSessions over stdin/stdout, one JSON object per line, so host
# tests and conformance runs can put real-MicroPython clients next to CPython ones.
# Not part of the device bundle.
#
#   {"op": "session", "client_id": 3, "identity_seed": hex, "directory": {"0": hex, ...},
#    "epoch": 1, "c_sk": hex, "s_sk": hex, "round_id": 1, "random": hex | null}
#   {"op": "input", "values": [floats], "weight": 1}
#   {"op": "receive", "frame": hex}  -> {"reply": hex | null, "stage": ...} or {"error": Class, ...}
#   {"op": "stats"}                  -> peak heap and time spent in receive()
import gc
import io
import json
import sys
import time
from array import array
from binascii import hexlify, unhexlify

from ztfw.secagg_client import ClientSession
from ztfw.secagg_errors import ProtocolError
from ztfw.secagg_keys import EpochKeys


class FixedRandom:
    """Hands out a fixed byte string in order (deterministic vectors)."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def __call__(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("fixed random source exhausted")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def main():
    session = None
    busy_us = 0
    peak = 0
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        out = {}
        try:
            if op == "session":
                directory = {int(k): unhexlify(v) for k, v in cmd["directory"].items()}
                keys = EpochKeys(cmd["epoch"], unhexlify(cmd["c_sk"]), unhexlify(cmd["s_sk"]))
                kw = {}
                if cmd.get("random"):
                    kw["randbytes"] = FixedRandom(unhexlify(cmd["random"]))
                session = ClientSession(cmd["client_id"], unhexlify(cmd["identity_seed"]), directory,
                                        keys, cmd["round_id"], **kw)
                out = {"c_pk": hexlify(keys.c_pk).decode(), "s_pk": hexlify(keys.s_pk).decode()}
            elif op == "input":
                session.set_input(array("f", cmd["values"]), cmd.get("weight", 1))
            elif op == "receive":
                gc.collect()
                base = gc.mem_alloc()
                t0 = time.ticks_us()
                reply = session.receive(unhexlify(cmd["frame"]))
                if reply is not None and not isinstance(reply, bytes):
                    reply = reply.to_bytes()
                busy_us += time.ticks_diff(time.ticks_us(), t0)
                used = gc.mem_alloc() - base
                if used > peak:
                    peak = used
                out = {"reply": hexlify(reply).decode() if reply is not None else None}
            elif op == "stats":
                out = {"busy_us": busy_us, "peak_alloc": peak}
            else:
                out = {"error": "UnknownOp"}
        except ProtocolError as e:
            out = {"error": type(e).__name__, "message": str(e)}
        except Exception as e:
            # Anything else is a firmware bug: report it with its traceback to the host test.
            buf = io.StringIO()
            sys.print_exception(e, buf)
            out = {"error": "Crash", "message": buf.getvalue()}
        if session is not None:
            out["stage"] = session.stage
        sys.stdout.write(json.dumps(out) + "\n")


main()
