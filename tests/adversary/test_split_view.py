"""(b) The split view, t = 3 of 5 and one colluding agent. The gateway shows the victim and some
honest agents a survivor set in which the victim survived (they release shares of its self-mask
seed) and the other honest agents one in which it dropped (they release shares of its mask
secret); the colluder signs both views and gives both shares. With both secrets the gateway
strips the victim's masks from the masked input it received.

Against agents that accept t = 3 the attack recovers the victim's input while every honest agent
ends Done (the control below shows the attack code works). The agents' floor refuses t = 3
(semi-honest, or active below 2g/3) before any key leaves them; at the smallest threshold it
allows, t = 4 of 5, no split gathers t signatures on both views: whatever the split, one side
refuses to release (RoundAborted) and the gateway never holds both secrets."""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product

import numpy as np
import pytest

from ztfl.protocol import fixedpoint, shamir, wire
from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import ACTIVE, SEMI_HONEST, SecurityFloor
from ztfl.protocol.errors import ProtocolError, RoundAborted, SemiHonestRefused, ThresholdBelowFloor
from ztfl.protocol.simulate import Cohort
from ztfl.protocol.stages import Stage

from adversary.hostile import config_frame, secret, signed, unmask

EPOCH, ROUND, DIM = 1, 7, 8
IDS = (1, 2, 3, 4, 5)
VICTIM, COLLUDER = 1, 5
HONEST = (1, 2, 3, 4)


class NoFloor(SecurityFloor):
    """The agents as they were: any threshold the gateway signs (the attack's control only)."""

    def check_config(self, config):
        pass

    def check_group(self, threshold, group):
        pass


@dataclass
class Outcome:
    refusals: dict[int, ProtocolError] = field(default_factory=dict)
    stages: dict[int, Stage] = field(default_factory=dict)
    recovered: np.ndarray | None = None
    victim_input: np.ndarray | None = None
    b_shares: int = 0
    s_shares: int = 0


def split_view(threshold: int, security: int, survived: set[int], dropped: set[int],
               floor: SecurityFloor | None = None) -> Outcome:
    """The attack with `survived` shown the victim in U3 and `dropped` shown it dropped."""
    cohort = Cohort.create(IDS, EPOCH)
    key = cohort.server_identity
    kw = {"floor": floor} if floor is not None else {}
    clients = {c: ClientSession(c, cohort.identities[c], cohort.directory, cohort.epoch_keys[c], ROUND, **kw)
               for c in IDS}
    rng = np.random.default_rng(threshold)
    inputs = {c: rng.uniform(-2, 2, DIM) for c in IDS}
    for c in IDS:
        clients[c].set_input(inputs[c], 1)
    out = Outcome()

    def send(c: int, frame: bytes) -> bytes | None:
        try:
            return clients[c].receive(frame)
        except ProtocolError as exc:
            out.refusals[c] = exc
            return None

    def finish() -> Outcome:
        out.stages = {c: clients[c].stage for c in IDS}
        return out

    config = config_frame(key, EPOCH, ROUND, dim=DIM, threshold=threshold, security=security)
    adverts = {c: send(c, config) for c in IDS}
    if None in adverts.values():
        return finish()
    entries = []
    for c in IDS:
        frame = wire.decode_frame(adverts[c])
        entries.append(wire.RosterEntry(c, frame.message.c_pk, frame.message.s_pk, frame.signature,
                                        frame.message.commitment))
    roster = signed(key, EPOCH, ROUND, wire.Roster, entries=tuple(entries))
    dealt = {c: wire.decode_frame(send(c, roster)).message for c in IDS}
    masked = {}
    for v in IDS:
        relayed = tuple(wire.EncryptedShare(u, s.ciphertext) for u in IDS for s in dealt[u].shares if s.peer == v)
        masked[v] = wire.decode_frame(send(v, signed(key, EPOCH, ROUND, wire.SharesRelay, shares=relayed))).message
    views = {"survived": tuple(IDS), "dropped": tuple(c for c in IDS if c != VICTIM)}
    shown = {c: "survived" for c in survived} | {c: "dropped" for c in dropped}
    statements, signatures = {}, {name: [] for name in views}
    digest = wire.decode_frame(config).message.config.digest()
    for name, u3 in views.items():
        statements[name] = wire.survivors_statement(digest, EPOCH, ROUND, u3)
        # The colluder signs whatever the gateway asks: the gateway holds its identity key.
        signatures[name].append((COLLUDER, cohort.identities[COLLUDER].sign(statements[name]).signature))
    for c, name in shown.items():
        reply = send(c, signed(key, EPOCH, ROUND, wire.ConsistencyRequest, survivors=views[name]))
        if reply is not None:
            signatures[name].append((c, wire.decode_frame(reply).message.signature))
    b_shares, s_shares = [], []
    for c, name in shown.items():
        request = signed(key, EPOCH, ROUND, wire.UnmaskRequest, signatures=tuple(sorted(signatures[name])),
                         dropped=() if name == "survived" else (VICTIM,))
        reply = send(c, request) if c not in out.refusals else None
        if reply is not None:
            msg = wire.decode_frame(reply).message
            b_shares += [shamir.Share(c, shamir.decode_y(y)) for o, y in msg.self_mask_shares if o == VICTIM]
            s_shares += [shamir.Share(c, shamir.decode_y(y)) for o, y in msg.secret_key_shares if o == VICTIM]
    # The colluder's own shares of the victim, read from its session.
    y_b, y_s = clients[COLLUDER]._state.held[VICTIM]
    b_shares.append(shamir.Share(COLLUDER, y_b))
    s_shares.append(shamir.Share(COLLUDER, y_s))
    out.b_shares, out.s_shares = len(b_shares), len(s_shares)
    seed, s_sk = secret(b_shares, threshold), secret(s_shares, threshold)
    out.victim_input = fixedpoint.encode(inputs[VICTIM], 1, 16, 8 << 16, 32)
    if seed is not None and s_sk is not None:
        peers = {e.client_id: e.s_pk for e in entries if e.client_id != VICTIM}
        out.recovered = unmask(masked[VICTIM].words, seed, s_sk, VICTIM, peers, EPOCH, ROUND, 32)
    return finish()


# The split of the attack: the victim and agent 2 see the victim survive, agents 3 and 4 see it drop.
SURVIVED, DROPPED = {1, 2}, {3, 4}


def test_the_attack_recovers_the_input_from_agents_that_accept_t_3():
    """Control: without the floor the split view works, and every honest agent ends Done."""
    for security in (SEMI_HONEST, ACTIVE):
        out = split_view(3, security, SURVIVED, DROPPED, floor=NoFloor())
        assert out.refusals == {}
        assert all(out.stages[c] == Stage.DONE for c in HONEST)
        assert np.array_equal(out.recovered, out.victim_input)


@pytest.mark.parametrize("security, error, reason", [(SEMI_HONEST, SemiHonestRefused, "semi_honest_refused"),
                                                     (ACTIVE, ThresholdBelowFloor, "threshold_below_floor")],
                         ids=["semi-honest", "active"])
def test_the_agents_refuse_t_3_of_5_before_any_key_leaves_them(security, error, reason):
    out = split_view(3, security, SURVIVED, DROPPED)
    assert set(out.refusals) == set(IDS)
    assert all(isinstance(e, error) and e.reason == reason for e in out.refusals.values())
    assert all(out.stages[c] == Stage.ADVERTISE_KEYS for c in IDS)
    assert out.recovered is None


SPLITS = [(frozenset(c for c, side in zip(HONEST, sides) if side == "A"),
           frozenset(c for c, side in zip(HONEST, sides) if side == "B"))
          for sides in product("AB-", repeat=len(HONEST)) if sides[0] != "B"]


@pytest.mark.parametrize("survived, dropped", SPLITS,
                         ids=[f"A{''.join(map(str, sorted(a)))}-B{''.join(map(str, sorted(b)))}" for a, b in SPLITS])
def test_at_t_4_of_5_no_split_view_recovers_the_input(survived, dropped):
    """Every way of splitting the honest agents (the victim never sees itself dropped: it would
    refuse the survivor set), at the smallest threshold the floor allows."""
    out = split_view(4, ACTIVE, set(survived), set(dropped))
    assert out.recovered is None
    assert out.b_shares < 4 or out.s_shares < 4
    if survived and dropped:
        # A genuine split: one of the two views cannot gather t = 4 signatures of the group, and
        # its agents refuse with the typed reason instead of releasing anything.
        refused = [c for c, e in out.refusals.items() if isinstance(e, RoundAborted)]
        assert refused and all(out.refusals[c].reason == "round_aborted" for c in refused)
        assert all(out.stages[c] == Stage.ABORTED for c in refused)
