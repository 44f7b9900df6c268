"""The micro model on the firmware (real MicroPython): int8 inference identical to
models.micro on the host, the compact ZTMI form parsed strictly, and local training that
learns."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from ztfl.models.micro import MicroConfig, MicroMLP, int8_logits, quantise, quantise_input
from ztfl.firmware_tools.micropython_host import run_json

_INFER = r"""
import sys, json
from binascii import unhexlify
from ztfw.micro_model import QuantModel, MicroModelError, quantise_input
d = json.loads(sys.stdin.read())
out = {"bad": []}
m = QuantModel.from_bytes(unhexlify(d["model"]))
out["logits"] = [m.logits(quantise_input(x)) for x in d["rows"]]
out["classes"] = [m.predict(quantise_input(x)) for x in d["rows"]]
out["roundtrip"] = m.to_bytes() == unhexlify(d["model"])
for blob in d["bad"]:
    try:
        QuantModel.from_bytes(unhexlify(blob))
        out["bad"].append("accepted")
    except MicroModelError as e:
        out["bad"].append("refused")
print(json.dumps(out))
"""



class _one_thread:
    """Tiny models train far faster on one thread than with torch's pool on a loaded machine."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _trained_micro(n_features=20, n_classes=4, seed=0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.random((256, n_features)).astype(np.float32)
    y = (x[:, 0] * n_classes).astype(np.int64).clip(0, n_classes - 1)
    model = MicroMLP(MicroConfig.fitting(n_features, n_classes))
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    with _one_thread():
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            opt.step()
    return model, x, y


def test_int8_inference_is_bit_identical_to_the_host():
    model, x, _ = _trained_micro()
    q = quantise(model, x[:64], ["normal", "dos", "probe", "r2l"])
    blob = q.to_bytes()
    rows = np.concatenate([x[:40], [[-0.5] * 20, [1.7] * 20, [0.5] * 20]]).astype(np.float64)
    out = run_json(_INFER, {"model": blob.hex(), "rows": rows.tolist(), "bad": []})
    expected = int8_logits(q, quantise_input(rows))
    assert out["logits"] == expected.tolist()
    assert out["classes"] == np.argmax(expected, axis=1).tolist()
    assert out["roundtrip"] is True


def test_malformed_micro_models_are_refused():
    model, x, _ = _trained_micro(8, 2)
    blob = quantise(model, x[:32, :8], ["a", "b"]).to_bytes()
    n_in, n_out = struct.unpack_from("<HH", blob, 7)
    bad = [
        b"XXMI" + blob[4:],                      # magic
        blob[:4] + b"\x02" + blob[5:],           # version
        blob[:-1],                               # truncated biases
        blob + b"\x00",                          # trailing byte
        blob[:5] + struct.pack("<H", 0) + blob[7:],           # no layers
        blob[:7] + struct.pack("<HH", 200, 200) + blob[11:],  # layer sizes beyond the bytes (and 8k params)
        blob[:7] + struct.pack("<HH", n_in, 0) + blob[11:],   # empty layer
        blob[:16] + b"\x80" + blob[17:],         # weight -128 is outside the symmetric range
    ]
    out = run_json(_INFER, {"model": blob.hex(), "rows": [], "bad": [b.hex() for b in bad]})
    assert out["bad"] == ["refused"] * len(bad)


_TRAIN = r"""
import sys, json, array, gc
from ztfw.micro_model import FloatMLP, quantise_input
d = json.loads(sys.stdin.read())
sizes = d["sizes"]
m = FloatMLP(sizes)
m.init_random(bytes(range(256)))
rows = [array.array("f", r) for r in d["x"]]
labels = d["y"]
losses = [m.train_epoch(rows, labels, 0.05) for _ in range(d["epochs"])]
acc = sum(1 for r, y in zip(rows, labels) if m.predict(r) == y) / len(rows)
q = m.quantise(rows[:32])
qacc = sum(1 for r, y in zip(rows, labels) if q.predict(quantise_input(r)) == y) / len(rows)
print(json.dumps({"losses": losses, "acc": acc, "qacc": qacc, "flat": list(m.params)}))
"""


def test_local_training_learns_and_keeps_the_host_parameter_layout():
    rng = np.random.default_rng(5)
    x = rng.random((120, 10)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(int)
    sizes = [10, 16, 8, 2]
    out = run_json(_TRAIN, {"sizes": sizes, "x": x.tolist(), "y": y.tolist(), "epochs": 6}, timeout=300)
    assert out["losses"][-1] < 0.75 * out["losses"][0]
    assert out["acc"] >= 0.85 and out["qacc"] >= 0.8
    # The flat vector is the host's models.params order: loading it into the torch model must
    # give the same predictions as the device's float forward pass.
    model = MicroMLP(MicroConfig(10, 2, (16, 8)))
    from ztfl.models.params import set_flat
    set_flat(model, np.asarray(out["flat"], dtype=np.float32))
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    assert (pred == y).mean() == pytest.approx(out["acc"], abs=1e-9)
