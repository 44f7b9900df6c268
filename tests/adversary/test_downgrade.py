"""(a) Security downgrade. A gateway announcing less protection than the agent's own floor —
semi-honest thresholds, the override flag, a threshold at or below 2g/3 of the group actually
announced, a group or a SecAgg+ neighbourhood below the provisioned minimum — is refused with a
typed reason before anything of the agent's leaves it: no advert, no share, no masked input, so
nothing the gateway saw can unmask the agent's input. The same for the CPython client (and the
agent built on it) and for the firmware in real MicroPython."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.agent.secagg import AgentAggregation
from ztfl.firmware_tools.micropython_host import FirmwareClient, run_json
from ztfl.protocol import wire
from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import SEMI_HONEST, RoundConfig, SecurityFloor
from ztfl.protocol.errors import (BelowSecurityFloor, GroupBelowFloor, NeighborsBelowFloor, SemiHonestRefused,
                                  ThresholdBelowFloor, ThresholdOverrideRefused)
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.simulate import Cohort
from ztfl.protocol.stages import Stage

from adversary.hostile import config_frame, signed

EPOCH, ROUND = 1, 7
IDS = [1, 2, 3, 4, 5]
VICTIM = 1

# (what the gateway announces, the refusal, its reason code)
DOWNGRADES = [
    ({"security": SEMI_HONEST, "threshold": 3}, SemiHonestRefused, "semi_honest_refused"),
    ({"threshold": 1, "threshold_override": True}, ThresholdOverrideRefused, "threshold_override_refused"),
    ({"threshold": 3}, ThresholdBelowFloor, "threshold_below_floor"),                     # 3 of 5, active
    ({"max_clients": 4, "threshold": 3}, GroupBelowFloor, "group_below_floor"),
    ({"max_clients": 20, "neighbors": 2, "threshold": 3}, NeighborsBelowFloor, "neighbors_below_floor"),
]
IDS_OF = [f"{k}" for k in ("semi-honest", "override-t1", "t-below-2g/3", "group-of-4", "two-neighbours")]


def victim_session(cohort: Cohort, floor: SecurityFloor | None = None) -> ClientSession:
    session = ClientSession(VICTIM, cohort.identities[VICTIM], cohort.directory, EpochKeys.generate(EPOCH), ROUND,
                            **({"floor": floor} if floor is not None else {}))
    session.set_input(np.linspace(-1, 1, 8), 1)
    return session


def assert_nothing_left(session: ClientSession, sent: list[bytes]) -> None:
    """What the gateway holds of the victim: no frame at all, so no key, share or masked input."""
    assert sent == []
    assert session.stage in (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS)
    assert not session.dealt_shares and session._state.seed == b""
    assert session.released == {"self_mask": frozenset(), "secret_key": frozenset()}


@pytest.mark.parametrize("fields, error, reason", DOWNGRADES, ids=IDS_OF)
def test_the_agent_refuses_a_downgraded_round_config(fields, error, reason):
    cohort = Cohort.create(IDS, EPOCH)
    victim, sent = victim_session(cohort), []
    with pytest.raises(error) as refused:
        sent.append(victim.receive(config_frame(cohort.server_identity, EPOCH, ROUND, **fields)))
    assert refused.value.reason == reason and isinstance(refused.value, BelowSecurityFloor)
    assert victim.stage == Stage.ADVERTISE_KEYS
    assert_nothing_left(victim, sent)
    # The same client takes part in the round the floor allows (t = 4 of 5): the refusal was the floor.
    assert victim.receive(config_frame(cohort.server_identity, EPOCH, ROUND, threshold=4)) is not None


def _honest_roster(cohort: Cohort, config_fields: dict, members) -> tuple[bytes, bytes]:
    """The ROUND_CONFIG and a ROSTER of `members`' genuine adverts (the victim's included)."""
    config = config_frame(cohort.server_identity, EPOCH, ROUND, **config_fields)
    entries = []
    for c in members:
        session = ClientSession(c, cohort.identities[c], cohort.directory, cohort.epoch_keys[c], ROUND)
        frame = wire.decode_frame(session.receive(config))
        msg = frame.message
        entries.append(wire.RosterEntry(c, msg.c_pk, msg.s_pk, frame.signature, msg.commitment))
    return config, signed(cohort.server_identity, EPOCH, ROUND, wire.Roster, entries=tuple(entries))


def test_the_agent_refuses_a_roster_whose_group_is_below_its_floor():
    """The configuration allows groups of 5, the roster the gateway shows has 4: the floor holds
    for the group actually announced, not for max_clients."""
    cohort = Cohort.create(IDS, EPOCH)
    cohort.epoch_keys[VICTIM] = EpochKeys.generate(EPOCH)
    config, roster = _honest_roster(cohort, {"threshold": 4}, [1, 2, 3, 4])
    victim = ClientSession(VICTIM, cohort.identities[VICTIM], cohort.directory, cohort.epoch_keys[VICTIM], ROUND)
    victim.set_input(np.zeros(8), 1)
    victim.receive(config)                                   # its advert: public keys only
    sent = []
    with pytest.raises(GroupBelowFloor) as refused:
        sent.append(victim.receive(roster))
    assert refused.value.reason == "group_below_floor"
    assert_nothing_left(victim, sent)


def test_the_floor_is_the_agents_provisioning_not_the_rounds():
    """A stricter provisioned floor refuses a round the default accepts, through the agent's own
    handle on the round too; nothing in the round can change it."""
    cohort = Cohort.create(IDS, EPOCH)
    strict = SecurityFloor(min_group=8, min_neighbors=6)
    frame = config_frame(cohort.server_identity, EPOCH, ROUND, threshold=4)
    with pytest.raises(GroupBelowFloor):
        victim_session(cohort, strict).receive(frame)
    agent = AgentAggregation(sid=VICTIM, identity=cohort.identities[VICTIM],
                             server_pk=bytes(cohort.server_identity.verify_key),
                             peers={c: bytes(cohort.identities[c].verify_key) for c in IDS}, round_id=ROUND,
                             keys=EpochKeys.generate(EPOCH), floor=strict)
    with pytest.raises(GroupBelowFloor):
        agent.receive(frame)
    sparse = config_frame(cohort.server_identity, EPOCH, ROUND, max_clients=40, neighbors=4, threshold=4)
    with pytest.raises(NeighborsBelowFloor):
        victim_session(cohort, strict).receive(sparse)
    assert victim_session(cohort).receive(sparse) is not None          # the default floor's minimum is 4


# ------------------------------------------------------------------ the firmware, in MicroPython
@pytest.fixture(scope="module")
def firmware_cohort():
    cohort = Cohort.create(IDS, EPOCH)
    return cohort, {k: bytes(v) for k, v in cohort.directory.items()}


def _firmware_victim(cohort, directory) -> FirmwareClient:
    fw = FirmwareClient()
    keys = EpochKeys.generate(EPOCH)
    fw.open_session(VICTIM, cohort.identities[VICTIM].encode(), directory, EPOCH, keys.c_sk, keys.s_sk, ROUND)
    fw.set_input([0.25] * 8, 1)
    return fw


def test_the_firmware_refuses_every_downgrade_with_the_same_typed_reason(firmware_cohort):
    cohort, directory = firmware_cohort
    with _firmware_victim(cohort, directory) as fw:
        for fields, error, _ in DOWNGRADES:
            reply, refused = fw.receive(config_frame(cohort.server_identity, EPOCH, ROUND, **fields))
            assert (reply, refused) == (None, error.__name__), fields
            assert fw.stage == "AdvertiseKeys"
        # The board takes part in the round its floor allows, and refuses a roster of 4 for it.
        config, roster = _honest_roster(cohort, {"threshold": 4}, [2, 3, 4])
        reply, refused = fw.receive(config)
        assert refused is None and reply is not None
        advert = wire.decode_frame(reply)
        own = wire.RosterEntry(VICTIM, advert.message.c_pk, advert.message.s_pk, advert.signature)
        short = wire.decode_frame(roster).message.entries
        small = signed(cohort.server_identity, EPOCH, ROUND, wire.Roster, entries=(own, *short))
        assert fw.receive(small) == (None, "GroupBelowFloor")
        assert fw.stage == "ShareKeys"                   # nothing dealt: no share of the board left it


_FLOOR_SCRIPT = r"""
import sys, json
from binascii import unhexlify
from ztfw.secagg_client import ClientSession, SecurityFloor
from ztfw.secagg_keys import EpochKeys
from ztfw.secagg_errors import ProtocolError
d = json.loads(sys.stdin.read())
directory = {int(k): unhexlify(v) for k, v in d["directory"].items()}
out = []
for floor in (None, SecurityFloor(min_group=8, min_neighbors=6)):
    s = ClientSession(1, unhexlify(d["seed"]), directory, EpochKeys(1, bytes(range(32)), bytes(range(32, 64))), 7,
                      floor=floor)
    try:
        s.receive(unhexlify(d["frame"]))
        out.append("")
    except ProtocolError as e:
        out.append(type(e).__name__)
print(json.dumps(out))
"""


def test_the_boards_floor_comes_from_its_provisioning(firmware_cohort):
    cohort, directory = firmware_cohort
    frame = config_frame(cohort.server_identity, EPOCH, ROUND, threshold=4)
    out = run_json(_FLOOR_SCRIPT, {"directory": {str(k): v.hex() for k, v in directory.items()},
                                   "seed": cohort.identities[VICTIM].encode().hex(), "frame": frame.hex()})
    assert out == ["", "GroupBelowFloor"]
