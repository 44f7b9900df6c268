"""The consistency check of a classic round covers the client's own group (docs/protocol.md 2.2):
a client verifies the consistency signatures of its neighbours and itself only, needs t of them,
and ignores the others, which cannot change what it releases."""
from __future__ import annotations

import numpy as np
import pytest

from ztfl.protocol import wire
from ztfl.protocol.errors import BadSignature, ConsistencyViolation, RoundAborted
from ztfl.protocol.stages import Stage
from protocol_testkit import Round
from test_protocol_hostile import assert_client_refuses

NOTHING = {"self_mask": frozenset(), "secret_key": frozenset()}


def secagg_plus_at_unmasking():
    """8 clients, 4 neighbours each (groups of 5), threshold 4; client 8 drops after ShareKeys."""
    rnd = Round(n=8, threshold=4, dim=5, neighbors=4)
    while rnd.server.stage != Stage.MASKED_INPUT_COLLECTION:     # through the graph reveal
        rnd.step()
    rnd.step(drop={8})
    rnd.step()
    assert rnd.server.stage == Stage.UNMASKING
    return rnd


def request_of(rnd, c):
    return wire.decode_frame(rnd.to_clients[c]).message


def forged_request(rnd, signatures, dropped):
    return wire.UnmaskRequest(0, 1, 7, tuple(signatures), tuple(dropped)).encode(rnd.cohort.server_identity)


def group_of(rnd, c):
    return rnd.server.neighbours[c] | {c}


def test_a_bad_signature_of_a_non_member_does_not_block_the_round():
    rnd = secagg_plus_at_unmasking()
    c = 1
    request = request_of(rnd, c)
    outsider = next(s for s, _ in request.signatures if s not in group_of(rnd, c))
    junk = rnd.cohort.identities[outsider].sign(b"not the survivor statement").signature
    sigs = [(s, junk if s == outsider else sig) for s, sig in request.signatures]
    reply = rnd.clients[c].receive(forged_request(rnd, sigs, request.dropped))
    msg = wire.decode_frame(reply).message
    assert rnd.clients[c].stage == Stage.DONE
    assert {o for o, _ in msg.self_mask_shares} == group_of(rnd, c) & set(rnd.server.survivors)


def test_a_bad_signature_of_a_group_member_is_refused():
    rnd = secagg_plus_at_unmasking()
    c = 1
    request = request_of(rnd, c)
    member = next(s for s, _ in request.signatures if s in group_of(rnd, c) and s != c)
    other = next(sig for s, sig in request.signatures if s != member)
    sigs = [(s, other if s == member else sig) for s, sig in request.signatures]
    assert_client_refuses(rnd, c, forged_request(rnd, sigs, request.dropped), BadSignature)
    assert rnd.clients[c].released == NOTHING
    # The honest request still goes through afterwards: the refusal changed nothing.
    assert rnd.clients[c].receive(rnd.to_clients[c]) is not None


def test_fewer_than_t_group_signatures_release_nothing_however_many_others_signed():
    rnd = secagg_plus_at_unmasking()
    c = 1
    request = request_of(rnd, c)
    group = group_of(rnd, c)
    members = [s for s, _ in request.signatures if s in group]
    keep = set(members[:rnd.config.threshold - 1])
    sigs = [(s, sig) for s, sig in request.signatures if s in keep or s not in group]
    assert len(sigs) >= rnd.config.threshold          # enough signatures overall, too few of the group
    with pytest.raises(RoundAborted):
        rnd.clients[c].receive(forged_request(rnd, sigs, request.dropped))
    assert rnd.clients[c].stage == Stage.ABORTED
    assert rnd.clients[c].released == NOTHING


def test_a_non_member_signer_outside_the_survivors_is_still_refused():
    rnd = secagg_plus_at_unmasking()
    c = 1
    request = request_of(rnd, c)
    assert 8 in request.dropped
    sigs = sorted(request.signatures + ((8, request.signatures[0][1]),))
    assert_client_refuses(rnd, c, forged_request(rnd, sigs, request.dropped), ConsistencyViolation)


def test_the_round_with_group_checks_aggregates_exactly():
    rnd = Round(n=8, threshold=4, dim=5, neighbors=4)
    result = rnd.run({Stage.MASKED_INPUT_COLLECTION: {8}})
    expected, weight = rnd.expected(result.survivors)
    assert result.survivors == (1, 2, 3, 4, 5, 6, 7)
    assert np.array_equal(result.sums, expected) and result.total_weight == weight
