# Integer-only inference of a dumped micro model (QuantMicro JSON), written for MicroPython:
# no numpy, no floats after input quantisation. The ESP32 firmware runs this same arithmetic;
# the tests run this file under the MicroPython unix port and compare with models.micro.
import json


def load(text):
    return json.loads(text)


def quantise_input(x):
    out = []
    for v in x:
        q = int(v * 127 + 0.5)
        out.append(0 if q < 0 else (127 if q > 127 else q))
    return out


def logits(model, qx):
    h = qx
    for layer in model["layers"]:
        m = layer["multiplier"]
        shift = layer["shift"]
        acc = []
        for row, b in zip(layer["weight"], layer["bias"]):
            s = b
            for w, v in zip(row, h):
                s += w * v
            acc.append(s)
        if not m:
            return acc
        half = 1 << (shift - 1)
        h = []
        for s in acc:
            if s < 0:
                s = 0
            q = (s * m + half) >> shift
            h.append(127 if q > 127 else q)
    return h


def predict(model, qx):
    acc = logits(model, qx)
    best = 0
    for i in range(1, len(acc)):
        if acc[i] > acc[best]:
            best = i
    return best
