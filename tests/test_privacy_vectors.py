"""tests/vectors/dp.json: the signed DP record of ROUND_CONFIG (docs/protocol.md 1.6), rebuilt here
field by field with struct, decoded, its frame's signature checked, and every refused body refused
with the documented error."""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from nacl.signing import VerifyKey

from ztfl.privacy.params import DpParams
from ztfl.protocol import errors, vectors, wire
from ztfl.protocol.config import RoundConfig

DP = json.loads((Path(__file__).resolve().parent / "vectors" / "dp.json").read_text())


def test_the_file_is_what_the_generator_writes():
    assert (Path(__file__).resolve().parent / "vectors" / "dp.json").read_text() == vectors.build()["dp.json"]


def test_the_dp_body_is_the_plain_body_with_the_flag_and_the_record():
    plain, body, rec = bytes.fromhex(DP["plain_body"]), bytes.fromhex(DP["dp_body"]), DP["dp_record"]
    assert len(plain) == 28 and len(body) == 48
    assert body[:7] == plain[:7] and body[7] == plain[7] | 0x08 and body[8:28] == plain[8:]
    assert body[28:] == struct.pack("<BBHQQ", rec["mechanism"], 0, rec["min_survivors"], rec["l2_clip_q"],
                                    rec["poisson_mean"])
    assert hashlib.sha256(body).hexdigest() == DP["dp_digest"] != DP["plain_digest"]
    config = RoundConfig.decode(body)
    assert config.encode() == body and RoundConfig.decode(plain).dp is None
    params = DpParams.of_round(config)
    assert (params.clip_norm, params.noise_variance, params.min_survivors) == \
        (rec["l2_clip_q"] / 2 ** 16, 2.0 * rec["poisson_mean"], rec["min_survivors"])


def test_the_signed_frame_carries_the_record():
    frame = bytes.fromhex(DP["frame"])
    msg = wire.decode_frame(frame).verify(VerifyKey(bytes.fromhex(DP["server_public"])))
    assert msg.config.encode() == bytes.fromhex(DP["dp_body"])
    header, body = frame[:wire.HEADER_BYTES], frame[wire.HEADER_BYTES:-64]
    VerifyKey(bytes.fromhex(DP["server_public"])).verify(header + hashlib.sha256(body).digest(), frame[-64:])
    # A flipped bit in the record breaks the signature: the DP record is as signed as the rest.
    forged = bytearray(frame)
    forged[wire.HEADER_BYTES + 40] ^= 1
    with pytest.raises(errors.BadSignature):
        wire.decode_frame(bytes(forged)).verify(VerifyKey(bytes.fromhex(DP["server_public"])))


@pytest.mark.parametrize("case", DP["refused"], ids=lambda c: c["case"])
def test_refused_bodies(case):
    with pytest.raises(getattr(errors, case["error"])):
        RoundConfig.decode(bytes.fromhex(case["body"]))
