"""The server (aggregator) side of a secure-aggregation round, driven message by message.

    server = ServerSession(config, identity, directory, epoch, round_id)
    broadcast = server.round_config()               # send to every candidate client
    server.receive(frame)                           # each client frame of the current stage
    out = server.close_stage()                      # when all arrived or the stage timed out
    ...                                             # out.broadcast / out.unicast go to clients
    result = server.result                          # after closing Unmasking

The caller owns the clock and the transport; this module does no I/O. A refused frame raises a
ProtocolError subclass and changes nothing. Closing a stage with too few clients aborts the
round: `close_stage` then returns the ABORT frame and `server.stage` is ABORTED.

In a key-reuse round (docs/protocol.md 1.8, 2.7) the server derives each client's session key
from the c_pk of its signed ADVERTISE_KEYS and tags the later frames with it instead of signing
them; the consistency check runs on pairwise tags it relays but cannot check or forge.

A round that fixes a sparse graph (1.7) collects every roster member's graph reveal and relays all
of them; one missing reveal aborts the attempt (choosing whose reveal counts would choose the
graph). The key-reuse round that fixed an epoch's graph leaves it in `epoch_graphs`, which the
caller passes to every round of the epoch (like `revealed_keys`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ztfl.protocol import fixedpoint, graph, kdf, session, shamir, wire
from ztfl.protocol.config import RoundConfig, check_rules
from ztfl.protocol.errors import (BadSignature, ConsistencyViolation, DuplicateMessage, NoEpochGraph, RoundAborted,
                                  ShamirError, UnknownSender, WrongRound)
from ztfl.protocol.prg import apply_masks, default_workers, word_dtype
from ztfl.protocol.stages import CLOSE, Stage, next_stage, server_transitions


@dataclass
class StageOutput:
    """Frames to send after a stage closes: one for everyone listed, and/or one per client."""
    broadcast: bytes | None = None
    recipients: tuple[int, ...] = ()
    unicast: dict[int, bytes] = field(default_factory=dict)

    def frame_for(self, client_id: int) -> bytes | None:
        if client_id in self.unicast:
            return self.unicast[client_id]
        return self.broadcast if client_id in self.recipients else None


@dataclass
class AggregateResult:
    total: np.ndarray              # dim + 1 words mod 2^B: sum of encoded w*q, then sum of w
    mask_bits: int
    frac_bits: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    @property
    def sums(self) -> np.ndarray:
        """Sum over survivors of w*q per element, as signed integers."""
        return fixedpoint.decode_sum(self.total, self.mask_bits)[0]

    @property
    def total_weight(self) -> int:
        return int(self.total[-1])

    def mean(self) -> np.ndarray:
        return fixedpoint.weighted_mean(self.total, self.mask_bits, self.frac_bits)


class ServerSession:
    def __init__(self, config: RoundConfig, identity: SigningKey, directory: Mapping[int, VerifyKey],
                 epoch: int, round_id: int, workers: int | None = None,
                 revealed_keys: set[bytes] | None = None,
                 session_keys: dict[tuple[int, int, bytes], bytes] | None = None,
                 epoch_graphs: dict[int, graph.FixedGraph] | None = None):
        # What every agent refuses, an honest server does not announce.
        check_rules(config)
        self.config = config
        # Mask public keys whose secret was reconstructed earlier in this epoch (shared across
        # rounds by the caller): their owners must re-key before they take part again.
        self.revealed_keys = revealed_keys if revealed_keys is not None else set()
        self.workers = default_workers() if workers is None else workers
        self.identity = identity
        # Key-reuse rounds: (client, epoch, c_pk) -> session key, shareable across the rounds of
        # an epoch like `revealed_keys` (a client keeps c_pk for its keys' lifetime).
        self.session_cache = session_keys if session_keys is not None else {}
        self.akeys: dict[int, bytes] = {}        # this round's session key of each client in U1
        self._g_sk: bytes | None = None
        self.transitions = server_transitions(config.key_reuse, config.reveals_graph)
        # Key epoch -> the neighbour graph its revealing round fixed (shared across the epoch's rounds).
        self.epoch_graphs = epoch_graphs if epoch_graphs is not None else {}
        self.fixed_graph: graph.FixedGraph | None = None
        if config.key_reuse and config.neighbors and not config.new_graph:
            self.fixed_graph = self.epoch_graphs.get(epoch)
            if self.fixed_graph is None or self.fixed_graph.neighbors != config.neighbors:
                raise NoEpochGraph(f"no neighbour graph of {config.neighbors} neighbours fixed for epoch {epoch}: "
                                   "announce a graph round (new_graph) first")
        self.directory = {cid: key for cid, key in directory.items() if cid != wire.SERVER_ID}
        self.epoch = epoch
        self.round_id = round_id
        self.stage = Stage.ADVERTISE_KEYS
        self.config_digest = config.digest()
        # The largest body a client may send in this round (checked before anything is parsed).
        self.max_body = max(wire.MASKED_PREFIX.size + config.words * config.word_bytes,
                            4 + wire.SHARE_ENTRY * config.max_clients,
                            4 + 2 * wire.UNMASK_ENTRY * config.max_clients,
                            4 + wire.CONSISTENCY_TAG_ENTRY * config.max_clients)
        self.result: AggregateResult | None = None
        self.abort_reason: str | None = None
        # Per-stage collections; U1..U5 are their key sets.
        self.adverts: dict[int, wire.RosterEntry] = {}
        self.keys_in_use: set[bytes] = set()      # c_pk and s_pk of every advert in U1
        self.roster: wire.Roster | None = None
        self.reveals: dict[int, bytes] = {}        # member -> its graph reveal (rounds that fix a graph)
        self.neighbours: dict[int, frozenset[int]] = {}
        self.shares: dict[int, dict[int, bytes]] = {}          # sender -> recipient -> ciphertext
        self.accumulator: np.ndarray | None = None
        self.masked_from: set[int] = set()
        self.survivors: tuple[int, ...] = ()
        # sender -> survivor signature (classic) or its tags ((peer, tag), ...) (key reuse)
        self.consistency: dict[int, object] = {}
        self.dropped: tuple[int, ...] = ()
        self.unmask: dict[int, wire.UnmaskShares] = {}

    # ------------------------------------------------------------------ sets
    @property
    def u1(self) -> frozenset[int]:
        return frozenset(self.adverts)

    @property
    def u2(self) -> frozenset[int]:
        return frozenset(self.shares)

    # ------------------------------------------------------------------ framing
    def _frame(self, cls, recipients=(), **fields) -> bytes:
        """A server frame: tagged for `recipients` when this round kind tags its type, else signed."""
        msg = cls(wire.SERVER_ID, self.epoch, self.round_id, **fields)
        if wire.expected_auth(cls.TYPE, self.config.key_reuse) == wire.AUTH_SESSION:
            return msg.encode_for({c: self.akeys[c] for c in recipients})
        return msg.encode(self.identity)

    def round_config(self) -> bytes:
        return self._frame(wire.RoundConfigMessage, config=self.config)

    def _session_key(self, client: int, c_pk: bytes) -> bytes:
        slot = (client, self.epoch, bytes(c_pk))
        key = self.session_cache.get(slot)
        if key is None:
            if self._g_sk is None:
                self._g_sk = session.server_curve_secret(self.identity)
            key = session.server_session_key(self._g_sk, c_pk, client, self.epoch)
            self.session_cache[slot] = key
        return key

    def receive(self, data: bytes) -> None:
        """Accept one client frame of the current stage.

        Checks in this order: the frame parses, the sender is enrolled, its authentication mode is
        the one this round kind uses for its type, the signature (or, in a key-reuse round, the
        session tag under the key of the sender's ADVERTISE_KEYS) verifies, epoch and round match,
        the stage collects the type; then the stage's own checks."""
        frame = wire.decode_frame(data, self.max_body)
        msg = frame.message
        key = self.directory.get(msg.sender)
        if key is None:
            raise UnknownSender(f"client {msg.sender} is not enrolled")
        frame.require_auth(wire.expected_auth(msg.TYPE, self.config.key_reuse))
        if frame.auth == wire.AUTH_SIGNATURE:
            frame.verify(key)
        else:
            akey = self.akeys.get(msg.sender)
            if akey is None:
                raise UnknownSender(f"client {msg.sender} advertised no keys in this round: no session key")
            frame.verify_tag(akey)
        if msg.epoch != self.epoch or msg.round_id != self.round_id:
            raise WrongRound(f"frame for epoch {msg.epoch} round {msg.round_id}, round is "
                             f"epoch {self.epoch} round {self.round_id}")
        next_stage(self.transitions, self.stage, msg.TYPE)
        self._COLLECT[msg.TYPE](self, msg, frame)

    def close_stage(self) -> StageOutput:
        """End the current stage's collection; returns what to send next."""
        target = next_stage(self.transitions, self.stage, CLOSE)
        try:
            out = self._CLOSE[self.stage](self)
        except RoundAborted as exc:
            return self.abort(str(exc), exc.code)
        self.stage = target
        return out

    def abort(self, reason: str, code: int = wire.ABORT_TOO_FEW_CLIENTS) -> StageOutput:
        self.stage = Stage.ABORTED
        self.abort_reason = reason
        return StageOutput(broadcast=self._frame(wire.Abort, reason=code),
                           recipients=tuple(sorted(self.adverts)))

    def _require(self, count: int, what: str) -> None:
        if count < self.config.threshold:
            raise RoundAborted(f"{count} {what}, threshold {self.config.threshold}",
                               wire.ABORT_TOO_FEW_CLIENTS)

    @staticmethod
    def _first_from(sender: int, expected, collected, why_not: str, what: str) -> None:
        """A stage takes one message of its kind from each client it expects."""
        if sender not in expected:
            raise UnknownSender(f"client {sender} {why_not}")
        if sender in collected:
            raise DuplicateMessage(f"second {what} from {sender}")

    # ------------------------------------------------------------------ AdvertiseKeys
    def _collect_advert(self, msg: wire.AdvertiseKeys, frame: wire.SignedFrame) -> None:
        if msg.sender in self.adverts:
            raise DuplicateMessage(f"second ADVERTISE_KEYS from {msg.sender}")
        if msg.config_digest != self.config_digest:
            raise ConsistencyViolation(f"client {msg.sender} signed another configuration")
        if msg.s_pk in self.revealed_keys:
            raise ConsistencyViolation(f"client {msg.sender}'s mask key was revealed in this epoch: "
                                       "it must generate new epoch keys")
        if msg.c_pk == msg.s_pk or msg.c_pk in self.keys_in_use or msg.s_pk in self.keys_in_use:
            raise DuplicateMessage(f"client {msg.sender} advertises a public key already in use")
        if not self.config.reveals_graph and msg.commitment != wire.NO_COMMITMENT:
            raise ConsistencyViolation(f"client {msg.sender} commits to a graph reveal in a round without one")
        if self.fixed_graph is not None and msg.sender not in self.fixed_graph.members:
            raise ConsistencyViolation(f"client {msg.sender} is not in epoch {self.epoch}'s neighbour graph: it "
                                       "takes part from the next round that fixes a graph")
        if len(self.adverts) >= self.config.max_clients:
            raise ConsistencyViolation(f"roster is full ({self.config.max_clients} clients)")
        if self.config.key_reuse:
            # The signed advert binds c_pk to the identity: the session key derived from it is
            # this client's for the rest of the round (a low-order c_pk is refused here).
            self.akeys[msg.sender] = self._session_key(msg.sender, msg.c_pk)
        self.adverts[msg.sender] = wire.RosterEntry(msg.sender, msg.c_pk, msg.s_pk, frame.signature, msg.commitment)
        self.keys_in_use.update((msg.c_pk, msg.s_pk))

    def _close_advertise(self) -> StageOutput:
        self._require(len(self.adverts), "clients advertised keys")
        members = tuple(sorted(self.adverts))
        self.roster = wire.Roster(wire.SERVER_ID, self.epoch, self.round_id, tuple(self.adverts[c] for c in members))
        if not self.config.reveals_graph:
            # The complete graph, or the key epoch's graph (members absent from this roster are dropouts).
            self._set_neighbours(self.fixed_graph.neighbours(members) if self.fixed_graph
                                 else graph.neighbours(members, 0, b""))
        return StageOutput(broadcast=self._frame(wire.Roster, recipients=members, entries=self.roster.entries),
                           recipients=members)

    def _set_neighbours(self, neighbours: dict[int, frozenset[int]]) -> None:
        self.neighbours = neighbours
        self._require(min(len(n) + 1 for n in neighbours.values()), "members in the smallest sharing group")

    # ------------------------------------------------------------------ GraphReveal
    def _collect_reveal(self, msg: wire.GraphReveal, frame) -> None:
        u = msg.sender
        self._first_from(u, self.adverts, self.reveals, "is not in the roster", "GRAPH_REVEAL")
        if graph.commitment(u, self.epoch, self.round_id, msg.reveal) != self.adverts[u].commitment:
            raise ConsistencyViolation(f"the graph reveal of client {u} does not match its commitment")
        self.reveals[u] = msg.reveal

    def _close_reveal(self) -> StageOutput:
        # Every member's reveal or none: a graph over the reveals that arrived would let whoever
        # decides which arrive choose among graphs after seeing the honest ones.
        missing = sorted(set(self.adverts) - set(self.reveals))
        if missing:
            raise RoundAborted(f"roster members {missing} did not reveal: the graph cannot be fixed without them",
                               wire.ABORT_TOO_FEW_CLIENTS)
        members = tuple(sorted(self.adverts))
        seed = graph.graph_seed(self.roster.digest(), self.reveals)
        self._set_neighbours(graph.neighbours(members, self.config.neighbors, seed))
        if self.config.key_reuse:
            self.epoch_graphs[self.epoch] = graph.FixedGraph(self.epoch, members, self.config.neighbors, seed)
        seeds = self._frame(wire.GraphSeeds, recipients=members, reveals=tuple(sorted(self.reveals.items())))
        return StageOutput(broadcast=seeds, recipients=members)

    # ------------------------------------------------------------------ ShareKeys
    def _collect_shares(self, msg: wire.ShareKeys, frame) -> None:
        self._first_from(msg.sender, self.adverts, self.shares, "is not in the roster", "SHARE_KEYS")
        recipients = {s.peer for s in msg.shares}
        if recipients != self.neighbours[msg.sender]:
            raise ConsistencyViolation(f"client {msg.sender} must share with exactly its neighbours")
        self.shares[msg.sender] = {s.peer: s.ciphertext for s in msg.shares}

    def _close_share_keys(self) -> StageOutput:
        self._require(len(self.shares), "clients shared keys")
        out = StageOutput()
        for v in sorted(self.shares):
            relayed = tuple(wire.EncryptedShare(u, self.shares[u][v])
                            for u in sorted(self.neighbours[v] & self.u2))
            out.unicast[v] = self._frame(wire.SharesRelay, recipients=(v,), shares=relayed)
        return out

    # ------------------------------------------------------------------ MaskedInputCollection
    def _collect_masked(self, msg: wire.MaskedInput, frame) -> None:
        self._first_from(msg.sender, self.shares, self.masked_from, "did not share keys in this round",
                         "MASKED_INPUT")
        if msg.mask_bits != self.config.mask_bits or msg.words.size != self.config.words:
            raise ConsistencyViolation(f"masked input of {msg.words.size} x {msg.mask_bits} bits, round "
                                       f"expects {self.config.words} x {self.config.mask_bits}")
        if self.accumulator is None:
            self.accumulator = np.zeros(self.config.words, dtype=word_dtype(self.config.mask_bits))
        np.add(self.accumulator, msg.words, out=self.accumulator)
        self.masked_from.add(msg.sender)

    def _close_masked(self) -> StageOutput:
        self._require(len(self.masked_from), "masked inputs")
        self.survivors = tuple(sorted(self.masked_from))
        self.dropped = tuple(sorted(self.u2 - self.masked_from))
        # A broadcast carries a tag for every roster member (docs 1.8), as a signature would serve them all.
        request = self._frame(wire.ConsistencyRequest, recipients=tuple(sorted(self.adverts)),
                              survivors=self.survivors)
        return StageOutput(broadcast=request, recipients=self.survivors)

    # ------------------------------------------------------------------ ConsistencyCheck
    def _collect_consistency(self, msg: wire.ConsistencySignature, frame) -> None:
        self._first_from(msg.sender, self.masked_from, self.consistency, "is not a survivor", "CONSISTENCY_SIGNATURE")
        statement = wire.survivors_statement(self.config_digest, self.epoch, self.round_id, self.survivors)
        try:
            self.directory[msg.sender].verify(statement, msg.signature)
        except BadSignatureError:
            raise BadSignature(f"consistency signature of {msg.sender} does not verify") from None
        self.consistency[msg.sender] = msg.signature

    def _collect_consistency_tags(self, msg: wire.ConsistencyTags, frame) -> None:
        u = msg.sender
        self._first_from(u, self.masked_from, self.consistency, "is not a survivor", "CONSISTENCY_TAGS")
        # The tags are MACs under keys only u and each neighbour hold: the server checks the list
        # is exactly u's neighbours in U3 and relays them; it cannot check or forge them.
        expected = sorted(self.neighbours[u] & set(self.survivors))
        if [peer for peer, _ in msg.tags] != expected:
            raise ConsistencyViolation(f"client {u} must tag exactly its neighbours in the survivor set")
        self.consistency[u] = msg.tags

    def _close_consistency(self) -> StageOutput:
        self._require(len(self.consistency), "consistency signatures")
        signers = tuple(sorted(self.consistency))
        if self.config.key_reuse:
            # One request per confirmer u with the tags tag_v->u of every v in U4 that tagged u.
            received = {v: dict(self.consistency[v]) for v in signers}
            out = StageOutput()
            for u in signers:
                tags = tuple((v, received[v][u]) for v in signers if u in received[v])
                out.unicast[u] = self._frame(wire.UnmaskRequestTags, recipients=(u,), tags=tags,
                                             dropped=self.dropped)
            return out
        request = self._frame(wire.UnmaskRequest,
                              signatures=tuple((c, self.consistency[c]) for c in signers),
                              dropped=self.dropped)
        return StageOutput(broadcast=request, recipients=signers)

    # ------------------------------------------------------------------ Unmasking
    def _collect_unmask(self, msg, frame) -> None:
        u = msg.sender
        self._first_from(u, self.consistency, self.unmask, "did not sign the survivor set", "unmasking message")
        # The round kind's transition table admits UNMASK_ROUND_KEYS (key reuse) or UNMASK_SHARES.
        b_owners = {o for o, _ in msg.self_mask_shares}
        s_owners = {o for o, _ in (msg.round_keys if self.config.key_reuse else msg.secret_key_shares)}
        if b_owners & s_owners:
            raise ConsistencyViolation(f"client {u} sent both share kinds for {sorted(b_owners & s_owners)}")
        holds = (self.neighbours[u] & self.u2) | {u}
        if not b_owners <= set(self.survivors) & holds:
            raise ConsistencyViolation(f"client {u} sent self-mask shares it cannot hold")
        if not s_owners <= set(self.dropped) & holds:
            raise ConsistencyViolation(f"client {u} sent secret-key shares it cannot hold")
        self.unmask[u] = msg

    def _close_unmask(self) -> StageOutput:
        t = self.config.threshold
        b_shares: dict[int, list[shamir.Share]] = {o: [] for o in self.survivors}
        s_shares: dict[int, list[shamir.Share]] = {o: [] for o in self.dropped}
        reuse = self.config.key_reuse
        for u in sorted(self.unmask):
            msg = self.unmask[u]
            for owner, y in msg.self_mask_shares:
                b_shares[owner].append(shamir.Share(u, shamir.decode_y(y)))
            for owner, y in () if reuse else msg.secret_key_shares:
                s_shares[owner].append(shamir.Share(u, shamir.decode_y(y)))
        if reuse:
            s_shares = {}
        for owner, shares in (*b_shares.items(), *s_shares.items()):
            if len(shares) < t:
                raise RoundAborted(f"{len(shares)} shares for client {owner}, threshold {t}",
                                   wire.ABORT_RECONSTRUCTION_FAILED)
        total = self.accumulator
        adds, subtracts = [], []
        try:
            for owner in self.survivors:
                seed = shamir.reconstruct_checked(b_shares[owner], t)
                subtracts.append(kdf.self_mask_key(seed, owner, self.epoch, self.round_id))
            for d in self.dropped if reuse else ():
                # Every surviving neighbour of d that masked with d must give its round key with d:
                # without one, that mask cannot be removed, and d's epoch secret is never asked for.
                for v in sorted(self.neighbours[d] & set(self.survivors)):
                    given = dict(self.unmask[v].round_keys) if v in self.unmask else {}
                    if d not in given:
                        raise RoundAborted(f"survivor {v} did not give its round key with dropped {d}",
                                           wire.ABORT_RECONSTRUCTION_FAILED)
                    (subtracts if v < d else adds).append(given[d])
            for d in () if reuse else self.dropped:
                s_sk = shamir.reconstruct_checked(s_shares[d], t)
                if kdf.x25519_public(s_sk) != self.adverts[d].s_pk:
                    raise RoundAborted(f"reconstructed key of {d} does not match its advertised key",
                                       wire.ABORT_RECONSTRUCTION_FAILED)
                for v in sorted(self.neighbours[d] & set(self.survivors)):
                    key = kdf.pairwise_mask_key(s_sk, self.adverts[v].s_pk, d, v, self.epoch, self.round_id)
                    # v added the mask if v < d, subtracted it otherwise: undo that.
                    (subtracts if v < d else adds).append(key)
        except ShamirError as exc:
            raise RoundAborted(f"reconstruction failed: {exc}", wire.ABORT_RECONSTRUCTION_FAILED) from exc
        apply_masks(total, adds, subtracts, self.config.mask_bits, self.workers)
        if not reuse:
            self.revealed_keys.update(self.adverts[d].s_pk for d in self.dropped)
        self.result = AggregateResult(total=total, mask_bits=self.config.mask_bits,
                                      frac_bits=self.config.frac_bits, survivors=self.survivors,
                                      dropped=self.dropped)
        return StageOutput()

    _COLLECT = {
        wire.ADVERTISE_KEYS: _collect_advert,
        wire.GRAPH_REVEAL: _collect_reveal,
        wire.SHARE_KEYS: _collect_shares,
        wire.MASKED_INPUT: _collect_masked,
        wire.CONSISTENCY_SIGNATURE: _collect_consistency,
        wire.CONSISTENCY_TAGS: _collect_consistency_tags,
        wire.UNMASK_SHARES: _collect_unmask,
        wire.UNMASK_ROUND_KEYS: _collect_unmask,
    }
    _CLOSE = {
        Stage.ADVERTISE_KEYS: _close_advertise,
        Stage.GRAPH_REVEAL: _close_reveal,
        Stage.SHARE_KEYS: _close_share_keys,
        Stage.MASKED_INPUT_COLLECTION: _close_masked,
        Stage.CONSISTENCY_CHECK: _close_consistency,
        Stage.UNMASKING: _close_unmask,
    }
