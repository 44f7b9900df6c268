# Drives firmware ClientSessions over stdin/stdout, one JSON object per line, so host
# tests and conformance runs can put real-MicroPython clients next to CPython ones.
# Not part of the device bundle.
#
#   {"op": "session", "client_id": 3, "identity_seed": hex, "directory": {"0": hex, ...},
#    "epoch": 1, "c_sk": hex, "s_sk": hex, "round_id": 1, "random": hex | null}
#                                    -> with "keyring": true (and "key_reuse", "now") the keys
#                                       come from the keyring instead: kept across rounds
#   {"op": "keyring", "max_rounds": 100, "max_seconds": 86400.0}   -> a new keyring
#   {"op": "finish"}                 -> keyring.finish(session): {"ended": bool}
#   {"op": "input", "values": [floats], "weight": 1}
#   {"op": "receive", "frame": hex}  -> {"reply": hex | null, "stage": ...} or {"error": Class, ...}
#   {"op": "model", "blob": path, "records": path}   -> load the global micro model and records
#   {"op": "train", "round": 1, "epochs": 1, "lr": 0.05, "max_samples": 64, "weight": 3}
#                                    -> local training, whose update (trained minus global)
#                                       becomes the session's input
#   {"op": "heap"}                   -> live heap after a collection
#   {"op": "stats"}                  -> time spent in receive() and the largest live heap seen
#   {"op": "track_heap", "on": false} -> stop (or restart) the heap collection after every
#                                       command that finds the largest live heap (timing runs)
# Every reply carries "us": the time the operation took in the firmware code.
# A masked-input reply is written out chunk by chunk, as the board streams it to the broker.
import gc
import io
import json
import os
import sys
import time
from array import array
from binascii import hexlify, unhexlify

from ztfw import ed25519
from ztfw.local_update import delta_source, training_steps
from ztfw.agent_wire import ModelBlob
from ztfw.keyring import ClientKeyring, EpochPolicy
from ztfw.micro_model import MAX_PARAMS, FloatMLP
from ztfw.records import Records
from ztfw.secagg_client import ClientSession, StreamedFrame
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


def write_streamed(frame, stage, t0):
    """{"reply": "<hex>", "stage": ..., "us": ...} with the frame's hex written chunk by chunk
    (the masking pass runs while it is written); returns the time taken, hex encoding included."""
    sys.stdout.write('{"reply": "')
    frame.write_to(lambda chunk: sys.stdout.write(hexlify(chunk).decode()))
    us = time.ticks_diff(time.ticks_us(), t0)
    sys.stdout.write('", ' + json.dumps({"stage": stage, "us": us})[1:] + "\n")
    return us


def live_heap():
    gc.collect()
    return gc.mem_alloc()


def main():
    session = None
    keyring = None
    publics = {}
    state = {"mlp": None, "blob": None}
    busy_us = 0
    peak = 0
    track = True
    while True:
        line = sys.stdin.readline()
        if not line:
            break
        cmd = json.loads(line)
        del line
        op = cmd["op"]
        out = {}
        streamed = None
        t0 = time.ticks_us()
        try:
            if op == "keyring":
                keyring = ClientKeyring(EpochPolicy(cmd.get("max_rounds", 100), cmd.get("max_seconds", 86400.0)))
            elif op == "session":
                directory = {int(k): unhexlify(v) for k, v in cmd["directory"].items()}
                reused = False
                if cmd.get("keyring"):
                    before = keyring.keys
                    keys = keyring.keys_for(cmd["epoch"], cmd["round_id"], cmd.get("now", 0.0),
                                            cmd.get("key_reuse", False))
                    reused = keys is before
                elif cmd.get("c_sk"):
                    keys = EpochKeys(cmd["epoch"], unhexlify(cmd["c_sk"]), unhexlify(cmd["s_sk"]))
                else:
                    # Fresh epoch keys, as the agent makes them when a round is announced.
                    keys = EpochKeys.generate(cmd["epoch"], os.urandom)
                kw = {}
                if cmd.get("random"):
                    kw["randbytes"] = FixedRandom(unhexlify(cmd["random"]))
                seed = unhexlify(cmd["identity_seed"])
                if seed not in publics:
                    # As the agent does: the identity's public key is derived once, not per round.
                    publics[seed] = ed25519.public_key(seed)
                session = ClientSession(cmd["client_id"], seed, directory, keys, cmd["round_id"],
                                        identity_public=publics[seed], **kw)
                out = {"c_pk": hexlify(keys.c_pk).decode(), "s_pk": hexlify(keys.s_pk).decode(),
                       "reused_keys": reused}
            elif op == "finish":
                out = {"ended": keyring.finish(session), "agreements": session.keys.agreements,
                       "work": session.work, "rekeys": [[r, why] for r, why in keyring.rekeys]}
            elif op == "input":
                session.set_input(array("f", cmd["values"]), cmd.get("weight", 1))
            elif op == "model":
                # As on the board: the global model arrives (and its buffers are allocated)
                # before any round starts.
                with open(cmd["blob"], "rb") as f:
                    blob = ModelBlob(f.read(), 1 << 16, MAX_PARAMS)
                state["blob"] = blob
                state["mlp"] = FloatMLP(blob.layer_sizes())
                state["records"] = Records(cmd["records"])
                out = {"dim": len(state["mlp"].params)}
            elif op == "train":
                mlp, blob = state["mlp"], state["blob"]
                for _ in training_steps(mlp, blob, state["records"], cmd["round"], cmd["epochs"], cmd["lr"],
                                        cmd["max_samples"]):
                    pass
                session.set_input(delta_source(mlp.params, blob), cmd["weight"], len(mlp.params))
                out = {"dim": len(mlp.params)}
            elif op == "receive":
                reply = session.receive(unhexlify(cmd["frame"]))
                if isinstance(reply, StreamedFrame):
                    streamed = reply
                else:
                    out = {"reply": hexlify(reply).decode() if reply is not None else None}
            elif op == "heap":
                out = {"live": live_heap()}
            elif op == "track_heap":
                track = bool(cmd.get("on", True))
            elif op == "stats":
                out = {"busy_us": busy_us, "peak_live": peak,
                       "agreements": session.keys.agreements if session is not None else 0,
                       "work": session.work if session is not None else {}}
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
        if streamed is not None:
            busy_us += write_streamed(streamed, session.stage, t0)
            streamed = None
        else:
            us = time.ticks_diff(time.ticks_us(), t0)
            if op in ("receive", "train", "session"):
                busy_us += us
            out["us"] = us
            sys.stdout.write(json.dumps(out) + "\n")
        if track:
            live = live_heap()
            if live > peak:
                peak = live


main()
