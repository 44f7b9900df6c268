"""A participant whose identity key is a point of small order.

Under a cofactorless check without the strict rules, A = the neutral element makes R = [s]B,
S = s a valid signature of every message (and an order-8 A does so for one message in eight):
whoever seats such a key signs in its name without any secret. The gateway here forges a
roster: participant 2's entry carries keys the gateway chose and that message-free signature,
so a client accepting it would encrypt its shares to the gateway and mask with keys the gateway
holds. The firmware client (the real MicroPython unix port) and the CPython client (PyNaCl, which
is libsodium) both refuse the roster with BadSignature, before any share is dealt.
"""
from __future__ import annotations

from dataclasses import replace

import nacl.bindings
import numpy as np
import pytest

from ztfl.firmware_tools.micropython_host import FirmwareClient
from ztfl.protocol import wire
from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import RoundConfig, minimum_threshold
from ztfl.protocol.errors import BadSignature
from ztfl.protocol.server import ServerSession
from ztfl.protocol.simulate import Cohort

IDS = (1, 2, 3, 4, 5, 6)
VICTIM, SYBIL = 1, 2
EPOCH, ROUND = 5, 2
CONFIG = RoundConfig(dim=8, threshold=minimum_threshold(len(IDS)), max_clients=len(IDS), max_weight=4)
L = 2 ** 252 + 27742317777372353535851937790883648493
# y of the order-8 points (libsodium's blocklist); the neutral element is y = 1.
Y_ORDER8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
SMALL_ORDER_KEYS = {"neutral element": (1).to_bytes(32, "little"),
                    "order 8": Y_ORDER8.to_bytes(32, "little")}


def message_free_signature(public: bytes, signed: bytes) -> bytes:
    """R = [s]B, S = s: it verifies under the neutral element for every message, under an
    order-8 key for the messages whose challenge is a multiple of 8 (the forger retries s)."""
    import hashlib
    for s in range(1, 1000):
        r = nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(s.to_bytes(32, "little"))
        k = int.from_bytes(hashlib.sha512(r + public + signed).digest(), "little") % L
        if public == SMALL_ORDER_KEYS["neutral element"] or k % 8 == 0:
            return r + s.to_bytes(32, "little")
    raise AssertionError("no message-free signature found")


def forged_roster(cohort: Cohort, roster_frame: bytes, sybil_key: bytes) -> bytes:
    """The roster the server built, with the sybil's entry re-signed without its secret and
    the whole frame signed again by the gateway's (genuine) identity key."""
    roster = wire.decode_frame(roster_frame).message
    entries = []
    for e in roster.entries:
        if e.client_id == SYBIL:
            signed = wire.advertise_signed_bytes(e, CONFIG.digest(), EPOCH, ROUND)
            e = replace(e, signature=message_free_signature(sybil_key, signed))
        entries.append(e)
    return replace(roster, entries=tuple(entries), body_digest=b"").encode(cohort.server_identity)


def first_two_frames(cohort: Cohort, victim_answer) -> tuple[bytes, bytes]:
    """ROUND_CONFIG and the honest server's ROSTER, every client advertising its keys (the
    sybil's keys are the gateway's own: it ran that client)."""
    server = ServerSession(CONFIG, cohort.server_identity, cohort.directory, EPOCH, ROUND)
    config = server.round_config()
    for c in IDS:
        if c == VICTIM:
            reply = victim_answer(config)
        else:
            reply = ClientSession(c, cohort.identities[c], cohort.directory, cohort.epoch_keys[c],
                                  ROUND).receive(config)
        server.receive(reply)
    return config, server.close_stage().frame_for(VICTIM)


@pytest.mark.parametrize("kind", sorted(SMALL_ORDER_KEYS))
def test_clients_refuse_a_roster_signed_under_a_small_order_key(kind):
    sybil_key = SMALL_ORDER_KEYS[kind]
    cohort = Cohort.create(IDS, EPOCH)
    # What the victim was told participant 2's identity key is.
    seen = {c: bytes(k) for c, k in cohort.directory.items()} | {SYBIL: sybil_key}

    # CPython: PyNaCl takes the 32 bytes as a key and refuses every signature under it.
    from nacl.signing import VerifyKey
    victim = ClientSession(VICTIM, cohort.identities[VICTIM], {c: VerifyKey(k) for c, k in seen.items()},
                           cohort.epoch_keys[VICTIM], ROUND)
    victim.set_input(np.zeros(CONFIG.dim), 1)
    _, roster = first_two_frames(cohort, victim.receive)
    forged = forged_roster(cohort, roster, sybil_key)
    with pytest.raises(BadSignature):
        victim.receive(forged)
    assert not victim.dealt_shares

    # The firmware, in MicroPython: the same refusal, and nothing sent.
    keys = cohort.epoch_keys[VICTIM]
    with FirmwareClient() as fw:
        fw.open_session(VICTIM, bytes(cohort.identities[VICTIM]), seen, EPOCH, keys.c_sk, keys.s_sk, ROUND)
        fw.set_input(np.zeros(CONFIG.dim), 1)
        _, roster = first_two_frames(cohort, lambda frame: fw.receive(frame)[0])
        assert fw.receive(forged_roster(cohort, roster, sybil_key)) == (None, "BadSignature")
