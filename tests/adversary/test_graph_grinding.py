"""(c) Roster grinding. The SecAgg+ graph decides who holds a victim's shares; a gateway that could
compute the graph of a roster before sending it would try rosters (leaving out a few honest
advertisers each time) until one puts enough colluders in the victim's group: with c colluders
among the victim's group of g and threshold t, the split view of test_split_view unmasks the
victim once c >= 2t - g.

The old seed (the roster digest alone) let it: its best of N rosters succeeds with probability
1 - (1 - p)^N. With commit and reveal (docs/protocol.md 1.7) the seed also hashes every member's
reveal, committed to in the signed adverts and revealed only once the roster is fixed: the
gateway's best of N rosters, chosen on any guess of the honest reveals, succeeds as often as one
uniformly random graph, p. Steering the seed afterwards (changing or dropping a reveal) is refused
before any share is dealt, and in later key-reuse rounds the fixed graph can only lose members."""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import hypergeom

from ztfl.protocol import graph, wire
from ztfl.protocol.client import ClientSession
from ztfl.protocol.config import RoundConfig, minimum_threshold
from ztfl.protocol.errors import ConsistencyViolation, RevealMismatch, RevealMissing
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.server import ServerSession
from ztfl.protocol.simulate import Cohort, run_round
from ztfl.protocol.stages import Stage
from protocol_testkit import Round

EPOCH, ROUND = 1, 7
# 33 advertisers, each roster leaves 3 honest ones out: rosters of 30, 6 neighbours (groups of
# 7, t = 5), 6 colluders. The split view needs 2t - g = 3 colluders in the victim's group.
VICTIM, COLLUDERS, HONEST = 1, tuple(range(2, 8)), tuple(range(8, 34))
K, LEFT_OUT = 6, 3
GROUP = K + 1
T = minimum_threshold(GROUP)
NEEDED = 2 * T - GROUP
ROSTER_SIZE = 1 + len(COLLUDERS) + len(HONEST) - LEFT_OUT
TRIES, ATTACKS = 32, 200
# A fresh uniformly random graph: the victim's K neighbours among the other members.
P_UNIFORM = float(hypergeom.sf(NEEDED - 1, ROSTER_SIZE - 1, len(COLLUDERS), K))


def entries(rng: random.Random, reveals: dict[int, bytes]) -> dict[int, wire.RosterEntry]:
    """Every advertiser's roster entry as the gateway holds it (keys, signature, commitment)."""
    return {c: wire.RosterEntry(c, rng.randbytes(32), rng.randbytes(32), rng.randbytes(64),
                                graph.commitment(c, EPOCH, ROUND, reveals[c]))
            for c in (VICTIM, *COLLUDERS, *HONEST)}


def colluders_with_victim(ids, seed: bytes) -> int:
    return len(graph.neighbours_of(VICTIM, ids, K, seed) & set(COLLUDERS))


def candidate_rosters(rng: random.Random, adverts: dict[int, wire.RosterEntry]):
    """The rosters a grinding gateway tries: all advertisers but LEFT_OUT honest ones (counted as dropouts)."""
    for _ in range(TRIES):
        out = set(rng.sample(HONEST, LEFT_OUT))
        members = sorted(c for c in adverts if c not in out)
        yield members, wire.Roster(0, EPOCH, ROUND, tuple(adverts[c] for c in members)).digest()


def old_rule_attack(seed: int) -> bool:
    """Seed = roster digest: the gateway computes each candidate's graph exactly and keeps the best."""
    rng = random.Random(seed)
    adverts = entries(rng, {c: bytes(32) for c in (VICTIM, *COLLUDERS, *HONEST)})
    return max(colluders_with_victim(m, d) for m, d in candidate_rosters(rng, adverts)) >= NEEDED


def new_rule_attack(seed: int) -> bool:
    """Seed = H(roster digest, every reveal): the gateway knows its colluders' reveals and the
    honest commitments only; it picks the candidate whose graph looks best under its guess of the
    honest reveals, then the honest reveals arrive (drawn only now, as the agents do)."""
    rng = random.Random(seed)
    colluder_reveals = {c: rng.randbytes(32) for c in COLLUDERS}
    honest_reveals = {c: hashlib.sha256(b"honest" + seed.to_bytes(4, "little") + bytes([c])).digest()
                      for c in (VICTIM, *HONEST)}
    adverts = entries(rng, {**colluder_reveals, **honest_reveals})
    guess = {c: bytes(32) for c in (VICTIM, *HONEST)}

    def predicted(members, digest):
        return colluders_with_victim(members, graph.graph_seed(digest, {c: {**guess, **colluder_reveals}[c]
                                                                        for c in members}))
    members, digest = max(candidate_rosters(rng, adverts), key=lambda md: predicted(*md))
    actual = graph.graph_seed(digest, {c: {**honest_reveals, **colluder_reveals}[c] for c in members})
    return colluders_with_victim(members, actual) >= NEEDED


def test_grinding_the_old_seed_succeeds_and_the_revealed_seed_gives_no_advantage():
    old = sum(old_rule_attack(s) for s in range(ATTACKS)) / ATTACKS
    new = sum(new_rule_attack(s) for s in range(ATTACKS)) / ATTACKS
    best_of_n = 1 - (1 - P_UNIFORM) ** TRIES
    sigma = math.sqrt(P_UNIFORM * (1 - P_UNIFORM) / ATTACKS)
    # The old rule: the best of 32 offline tries, as the formula says (and far above one draw).
    assert old > 0.8 and abs(old - best_of_n) < 0.1, (old, best_of_n)
    # The new rule: what a fresh uniform draw gives, within 4 standard deviations.
    assert abs(new - P_UNIFORM) < 4 * sigma, (new, P_UNIFORM)
    assert new < old / 4


# ------------------------------------------------------------------ steering after the reveal
def at_seeds(n: int = 10) -> Round:
    """A sparse round (4 neighbours) with every reveal in: the clients wait for GRAPH_SEEDS."""
    rnd = Round(n=n, threshold=4, dim=4, neighbors=4)
    while rnd.server.stage != Stage.SHARE_KEYS:
        rnd.step()
    return rnd


def steered(rnd: Round, reveals) -> bytes:
    return wire.GraphSeeds(0, EPOCH, ROUND, tuple(reveals)).encode(rnd.cohort.server_identity)


@pytest.mark.parametrize("attack, error, reason", [
    ("replace a colluder's reveal", RevealMismatch, "reveal_mismatch"),
    ("leave a member's reveal out", RevealMissing, "reveal_missing"),
    ("add a reveal of a non-member", ConsistencyViolation, "consistency_violation"),
])
def test_a_gateway_that_steers_the_seed_after_the_reveals_is_refused_before_any_share(attack, error, reason):
    rnd = at_seeds()
    honest = wire.decode_frame(rnd.to_clients[VICTIM]).message.reveals
    if attack.startswith("replace"):
        reveals = [(c, hashlib.sha256(r).digest() if c == 2 else r) for c, r in honest]
    elif attack.startswith("leave"):
        reveals = [(c, r) for c, r in honest if c != 3]
    else:
        reveals = sorted(honest + ((99, bytes(32)),))
    frame = steered(rnd, reveals)
    victim = rnd.clients[VICTIM]
    with pytest.raises(error) as refused:
        victim.receive(frame)
    assert refused.value.reason == reason
    # Nothing of the victim's secrets left it: the gateway saw its public keys, commitment and
    # reveal, no share, no masked input; its input is not recoverable from that.
    assert victim._state.seed == b"" and victim._state.share_keys == {}
    assert not victim.dealt_shares and victim.keys.graph is None
    assert VICTIM not in rnd.server.shares and VICTIM not in rnd.server.masked_from
    if error is not ConsistencyViolation:
        assert victim.stage == Stage.ABORTED            # final: the attempt is over for this agent
    # The honest relay still gives every agent the same graph as the server.
    for c in rnd.ids[1:]:
        assert rnd.clients[c].receive(rnd.to_clients[c]) is not None
        assert rnd.clients[c]._state.neighbours == rnd.server.neighbours[c]


def test_the_server_refuses_a_reveal_that_does_not_match_its_commitment_and_aborts_without_it():
    rnd = Round(n=8, threshold=4, dim=4, neighbors=4)
    rnd.step()
    reply = rnd.clients[2].receive(rnd.to_clients[2])
    forged = wire.GraphReveal(2, EPOCH, ROUND, bytes(32)).encode(rnd.cohort.identities[2])
    with pytest.raises(ConsistencyViolation):
        rnd.server.receive(forged)
    for c in rnd.ids:
        if c != 2:
            rnd.server.receive(rnd.clients[c].receive(rnd.to_clients[c]))
    out = rnd.server.close_stage()              # 2's reveal never counted: no graph, no shares
    assert rnd.server.stage == Stage.ABORTED and rnd.server.neighbours == {}
    assert wire.decode_frame(out.broadcast).message.reason == wire.ABORT_TOO_FEW_CLIENTS
    assert reply is not None                    # client 2's own honest reveal was ready all along


def test_later_rounds_of_a_key_epoch_cannot_regrind_the_graph():
    """After the revealing round, a gateway leaving honest members out of a later roster only
    removes neighbours: the victim's group never gains a colluder, below t the victim releases
    nothing, and a client outside the epoch's graph cannot be slipped in."""
    ids = list(range(1, 21))
    colluders = {2, 3}                        # at most 2 of the victim's 4 neighbours: 2 honest at least
    config = RoundConfig(dim=4, threshold=4, max_clients=20, neighbors=4, key_reuse=True, new_graph=True)
    later_config = replace(config, new_graph=False)
    cohort = Cohort.create(ids)
    graphs: dict = {}
    first = run_round(config, cohort, {c: np.zeros(4) for c in ids}, epoch_graphs=graphs)
    assert first.result is not None
    before = first.server.neighbours[VICTIM]
    honest_neighbours = sorted(before - colluders)
    # One honest neighbour left out: a dropout, not a new graph.
    present = [c for c in ids if c != honest_neighbours[0]]
    later = run_round(later_config, cohort, {c: np.zeros(4) for c in present}, round_id=2, epoch_graphs=graphs)
    after = later.server.neighbours[VICTIM]
    assert later.result is not None and later.clients[VICTIM]._state.neighbours == after
    assert after == before - {honest_neighbours[0]} and after & colluders == before & colluders
    assert cohort.epoch_keys[VICTIM].graph.group == 5 and graphs[EPOCH].members == tuple(ids)
    # Two left out: the victim's group falls below t; it refuses to deal (typed, final).
    present = [c for c in ids if c not in honest_neighbours[:2]]
    third = run_round(later_config, cohort, {c: np.zeros(4) for c in present}, round_id=3, epoch_graphs=graphs)
    assert third.result is None and third.clients[VICTIM].stage == Stage.ABORTED
    assert VICTIM not in third.server.shares
    # A client the epoch's graph does not hold is refused, whatever graph it claims to know.
    outsider = Cohort.create([21])
    directory = {**cohort.directory, 21: outsider.identities[21].verify_key}
    server = ServerSession(later_config, cohort.server_identity, directory, EPOCH, 4, epoch_graphs=graphs)
    keys = EpochKeys.generate(EPOCH)
    keys.graph = graphs[EPOCH]
    advert = ClientSession(21, outsider.identities[21], directory, keys, 4).receive(server.round_config())
    with pytest.raises(ConsistencyViolation, match="not in epoch"):
        server.receive(advert)
