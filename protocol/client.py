"""The client side of a secure-aggregation round, driven message by message.

    session = ClientSession(client_id, identity, directory, epoch_keys, round_id)
    session.set_input(update, weight)          # any time before the SHARES_RELAY arrives
    reply = session.receive(frame_from_server) # bytes to send back, or None

Every check happens before any state changes: a refused frame raises a ProtocolError subclass
and the session stays where it was (RoundAborted is the exception: it is final).

The client takes part only above its own `SecurityFloor` (docs/protocol.md 2.2, 2.4), fixed when
the agent was provisioned: whatever the server announces, a round below it is refused with a
typed reason before any key or share leaves the client. In a round that fixes a sparse graph
(1.7) the client commits to a random contribution in its signed advert, reveals it once the
roster is fixed, and derives the graph from every member's reveal: the server can neither choose
nor predict the graph when it chooses the roster.

In a key-reuse round (docs/protocol.md 1.8, 2.7) the frames after ADVERTISE_KEYS are
authenticated with the session key shared with the server instead of Ed25519, and the
consistency check uses pairwise tags with the neighbours instead of survivor signatures.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
from nacl.bindings import (crypto_aead_xchacha20poly1305_ietf_decrypt,
                           crypto_aead_xchacha20poly1305_ietf_encrypt)
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from ztfl.protocol import fixedpoint, graph, kdf, session, shamir, wire
from ztfl.protocol.config import RoundConfig, SecurityFloor, group_size
from ztfl.protocol.errors import (BadSignature, ConfigurationError, ConsistencyViolation, DecryptionFailed,
                                  DuplicateMessage, InvalidTransition, MalformedMessage, NoEpochGraph,
                                  RevealMismatch, RevealMissing, RoundAborted, UnknownSender, WrongRound)
from ztfl.protocol.keys import EpochKeys
from ztfl.protocol.prg import apply_masks, word_dtype
from ztfl.protocol.stages import Stage, client_transitions, next_stage


def encrypt_share(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def decrypt_share(key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext[24:], aad, ciphertext[:24], key)
    except CryptoError:
        raise DecryptionFailed("encrypted share failed authentication") from None


@dataclass
class ClientWork:
    """Public-key and MAC operations one session performed (what a round costs a small device);
    X25519 operations are counted by the epoch keys (`EpochKeys.agreements`)."""
    ed25519_verify: int = 0
    ed25519_sign: int = 0
    session_tags: int = 0          # frame tags computed or checked (1.8)
    consistency_tags: int = 0      # pairwise consistency tags computed or checked (2.7)


@dataclass
class _RoundState:
    """What the client has learnt so far in this round (replaced wholesale on each step)."""
    config: RoundConfig | None = None
    config_digest: bytes = b""
    reveal: bytes = b""                                 # r_u, committed in the advert (1.7)
    roster: dict[int, wire.RosterEntry] = field(default_factory=dict)
    roster_digest: bytes = b""
    neighbours: frozenset[int] = frozenset()
    seed: bytes = b""                                   # b_u
    own_share: tuple[int, int] = (0, 0)                 # (y_b, y_s) at x = self
    held: dict[int, tuple[int, int]] = field(default_factory=dict)   # owner -> (y_b, y_s)
    share_keys: dict[int, bytes] = field(default_factory=dict)       # neighbour -> AEAD key
    survivors: tuple[int, ...] = ()


DEFAULT_FLOOR = SecurityFloor()


class ClientSession:
    def __init__(self, client_id: int, identity: SigningKey, directory: Mapping[int, VerifyKey],
                 epoch_keys: EpochKeys, round_id: int,
                 randbytes: Callable[[int], bytes] = os.urandom, workers: int = 1,
                 floor: SecurityFloor = DEFAULT_FLOOR):
        if not 1 <= client_id <= 0xFFFF:
            raise ValueError("client ids are 1..65535")
        if wire.SERVER_ID not in directory:
            raise ValueError("the directory must hold the server's identity key (id 0)")
        self.client_id = client_id
        self.identity = identity
        self.directory = directory
        self.keys = epoch_keys
        self.round_id = round_id
        self.randbytes = randbytes
        self.workers = workers          # threads for mask expansion (1 on a microcontroller-class host)
        # The agent's own limits (provisioning), never the round's: nothing the server sends lowers them.
        self.floor = floor
        self.stage = Stage.ADVERTISE_KEYS
        self._state = _RoundState()
        self._update: np.ndarray | None = None
        self._encoded: np.ndarray | None = None     # already encoded words (e.g. with DP noise)
        self._weight = 1
        # True once this client dealt shares of its mask key s_sk in this round (docs 1.2).
        self.dealt_shares = False
        self.abort_reason: int | None = None
        self.released: dict[str, frozenset[int]] = {"self_mask": frozenset(), "secret_key": frozenset()}
        self.work = ClientWork()

    # ------------------------------------------------------------------ public API
    @property
    def epoch(self) -> int:
        return self.keys.epoch

    @property
    def config(self) -> RoundConfig | None:
        return self._state.config

    @property
    def keys_exposed(self) -> bool:
        """Whether the server may hold this client's mask secret after this round: it dealt shares
        of s_sk and did not finish as a signed survivor. The keys' epoch must then end."""
        return self.dealt_shares and self.stage != Stage.DONE

    def set_input(self, update, weight: int = 1) -> None:
        """The model update (floats, length dim) and its integer weight (e.g. sample count)."""
        self._update = np.asarray(update, dtype=np.float64).ravel()
        self._encoded = None
        self._weight = weight

    def set_encoded_input(self, words) -> None:
        """An input already in the fixed-point domain: dim + 1 words mod 2^B, the weight last (what
        `fixedpoint.encode` returns, possibly with integer noise added by `privacy.add_noise`)."""
        words = np.asarray(words).ravel()
        if words.dtype.kind not in "iu":
            raise ValueError(f"encoded words must be integers, got {words.dtype}")
        weight = int(words[-1]) if words.size else 0
        self._encoded = words
        self._update = None
        self._weight = weight

    @property
    def key_reuse(self) -> bool:
        """Whether this is a key-reuse round (known once the ROUND_CONFIG was accepted)."""
        return self._state.config is not None and self._state.config.key_reuse

    def receive(self, data: bytes) -> bytes | None:
        """Handle one frame from the server; return the reply frame, if any.

        Checks in this order (docs/protocol.md 1.8): the frame parses, the sender is the server,
        its authentication mode is the one this round kind uses for its type, the signature or
        this client's session tag verifies, epoch and round match, the stage allows the type;
        then the stage handler's checks."""
        frame = wire.decode_frame(data, self._max_body(), self._max_recipients())
        msg = frame.message
        if msg.sender != wire.SERVER_ID:
            raise UnknownSender(f"frame from {msg.sender}, expected the server (0)")
        key_reuse = self.key_reuse
        frame.require_auth(wire.expected_auth(msg.TYPE, key_reuse))
        if frame.auth == wire.AUTH_SIGNATURE:
            self.work.ed25519_verify += 1
            frame.verify(self.directory[wire.SERVER_ID])
        else:
            self.work.session_tags += 1
            frame.verify_recipient(self.client_id, self._session_key())
        if msg.epoch != self.epoch or msg.round_id != self.round_id:
            raise WrongRound(f"frame for epoch {msg.epoch} round {msg.round_id}, session is "
                             f"epoch {self.epoch} round {self.round_id}")
        next_stage(self._transitions(self._state), self.stage, msg.TYPE)
        handler = self._HANDLERS[msg.TYPE]
        try:
            reply, state = handler(self, msg)
        except RoundAborted:
            self.stage = Stage.ABORTED
            raise
        # The round kind (and so its table) is known once the configuration is: ROUND_CONFIG
        # leads to GraphReveal in a round that fixes its graph, to ShareKeys otherwise.
        self.stage = next_stage(self._transitions(state), self.stage, msg.TYPE)
        self._state = state
        return self._encode(reply) if reply is not None else None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _transitions(state: _RoundState) -> dict:
        config = state.config
        return client_transitions(config is not None and config.key_reuse,
                                  config is not None and config.reveals_graph)

    def _session_key(self) -> bytes:
        return self.keys.session_key(self.client_id, self.directory[wire.SERVER_ID])

    def _encode(self, reply: wire.Message) -> bytes:
        if wire.expected_auth(reply.TYPE, self.key_reuse) == wire.AUTH_SESSION:
            self.work.session_tags += 1
            return reply.encode_tagged(self._session_key())
        self.work.ed25519_sign += 1
        return reply.encode(self.identity)

    def _max_recipients(self) -> int:
        return self._state.config.max_clients if self._state.config else 0xFFFF

    def _max_body(self) -> int:
        """The largest body the server may send: a roster of max_clients (of the id space before
        the configuration is known)."""
        n = self._state.config.max_clients if self._state.config else 0xFFFF
        return 4 + n * max(wire.ROSTER_ENTRY, 2 + wire.SIGNATURE_BYTES + 2)

    def _reply(self, cls, **fields):
        return cls(self.client_id, self.epoch, self.round_id, **fields)

    def _group(self, state: _RoundState) -> list[int]:
        return sorted(state.neighbours | {self.client_id})

    # ------------------------------------------------------------------ stage handlers
    def _on_config(self, msg: wire.RoundConfigMessage):
        config = msg.config
        self.floor.check_config(config)
        if not config.key_reuse and self.keys.uses > 1:
            raise ConfigurationError("these epoch keys served earlier rounds: a round without key reuse "
                                     "would share their secret (docs/protocol.md 2.7); use new keys")
        if self._uses_epoch_graph(config):
            fixed = self.keys.graph
            if fixed is None or fixed.neighbors != config.neighbors:
                raise NoEpochGraph("this key-reuse round keeps the key epoch's neighbour graph, and these keys "
                                   f"hold none with {config.neighbors} neighbours: a graph round must fix it first")
        state = _RoundState(config=config, config_digest=config.digest())
        if config.key_reuse:
            # The session key authenticates every later frame of the round: one X25519 with the
            # server's identity key the first time these keys serve, none afterwards.
            self._session_key()
        commitment = wire.NO_COMMITMENT
        if config.reveals_graph:
            state.reveal = self.randbytes(wire.REVEAL_BYTES)
            commitment = graph.commitment(self.client_id, self.epoch, self.round_id, state.reveal)
            if config.key_reuse:
                self.keys.graph = None      # this round's graph replaces the epoch's
        reply = self._reply(wire.AdvertiseKeys, config_digest=state.config_digest,
                            c_pk=self.keys.c_pk, s_pk=self.keys.s_pk, commitment=commitment)
        return reply, state

    @staticmethod
    def _uses_epoch_graph(config: RoundConfig) -> bool:
        """A later key-reuse round of a sparse graph: the neighbours are the epoch's."""
        return config.key_reuse and bool(config.neighbors) and not config.new_graph

    def _on_roster(self, msg: wire.Roster):
        old = self._state
        config = old.config
        roster = {e.client_id: e for e in msg.entries}
        if len(roster) > config.max_clients:
            raise ConsistencyViolation(f"roster of {len(roster)} exceeds max_clients {config.max_clients}")
        mine = roster.get(self.client_id)
        if mine is None or (mine.c_pk, mine.s_pk, mine.commitment) != (self.keys.c_pk, self.keys.s_pk,
                                                                      self._commitment(old)):
            raise ConsistencyViolation("the roster does not hold this client's advertised keys")
        directory = self.directory
        if not all(cid in directory for cid in roster):
            self._refuse_roster(msg.entries)
        # Every key distinct: one set built in C; the entry-by-entry walk only names the culprit.
        keys = [e.c_pk for e in msg.entries] + [e.s_pk for e in msg.entries]
        if len(set(keys)) != len(keys):
            self._refuse_roster(msg.entries)
        # The floor holds for the group actually announced: this roster's, or the key epoch's.
        fixed = self.keys.graph if self._uses_epoch_graph(config) else None
        self.floor.check_group(config.threshold, fixed.group if fixed else group_size(len(roster), config.neighbors))
        t = config.threshold
        if len(roster) < t:
            raise RoundAborted(f"roster of {len(roster)} is below the threshold {t}")
        state = _RoundState(config=config, config_digest=old.config_digest, reveal=old.reveal, roster=roster,
                            roster_digest=msg.digest())
        if config.reveals_graph:
            # Nothing is dealt before every member's reveal is in: reveal ours, wait for theirs.
            return self._reply(wire.GraphReveal, reveal=old.reveal), state
        if fixed is not None:
            neighbours = fixed.neighbours_of(self.client_id, roster)   # absent members are dropouts
        else:
            neighbours = frozenset(roster) - {self.client_id}         # the complete graph
        return self._deal(state, neighbours)

    def _commitment(self, state: _RoundState) -> bytes:
        if not state.reveal:
            return wire.NO_COMMITMENT
        return graph.commitment(self.client_id, self.epoch, self.round_id, state.reveal)

    def _on_seeds(self, msg: wire.GraphSeeds):
        """Every roster member's reveal: each must match the commitment its member signed, and all
        must be there (leaving one out would let the server pick among graphs); then the graph."""
        old = self._state
        config = old.config
        reveals = dict(msg.reveals)
        missing = set(old.roster) - set(reveals)
        if missing:
            raise RevealMissing(f"no graph reveal of roster members {sorted(missing)}: the graph cannot be "
                                "fixed without them")
        if len(reveals) != len(old.roster):
            raise ConsistencyViolation("graph reveals of clients outside the roster")
        for cid, reveal in msg.reveals:
            if graph.commitment(cid, self.epoch, self.round_id, reveal) != old.roster[cid].commitment:
                raise RevealMismatch(f"the graph reveal of client {cid} does not match its commitment")
        seed = graph.graph_seed(old.roster_digest, reveals)
        members = tuple(sorted(old.roster))
        reply, state = self._deal(old, graph.neighbours_of(self.client_id, members, config.neighbors, seed))
        if config.key_reuse:
            self.keys.graph = graph.FixedGraph(self.epoch, members, config.neighbors, seed)
        return reply, state

    def _deal(self, old: _RoundState, neighbours: frozenset[int]):
        """ShareKeys once the neighbours are known: their roster entries verified, this round's
        secrets generated and shared with them."""
        config, roster = old.config, old.roster
        # Only neighbours' keys are ever used by this client, so only their signatures matter to
        # it (all of them with the complete graph); this keeps SecAgg+ at O(log n) verifications.
        # In a key-reuse round an entry already verified with the same keys under the same
        # identity while this client holds its current keys is not verified again (docs 2.7): the
        # signature binds those keys to that identity, and a replay can only show them again.
        newly_verified = []
        for peer in sorted(neighbours):
            entry = roster[peer]
            known = (peer, self.directory[peer].encode(), entry.c_pk, entry.s_pk)
            if config.key_reuse and known in self.keys.verified_entries:
                continue
            signed = wire.advertise_signed_bytes(entry, old.config_digest, self.epoch, self.round_id)
            self.work.ed25519_verify += 1
            try:
                self.directory[peer].verify(signed, entry.signature)
            except BadSignatureError:
                raise BadSignature(f"roster entry of client {peer} is not signed by it "
                                   "(or it saw another configuration)") from None
            newly_verified.append(known)
        t = config.threshold
        state = _RoundState(config=config, config_digest=old.config_digest, reveal=old.reveal, roster=roster,
                            roster_digest=old.roster_digest, neighbours=neighbours)
        group = self._group(state)
        if len(group) < t:
            raise RoundAborted(f"sharing group of {len(group)} is below the threshold {t}")
        # Validation done: generate this round's secrets and deal them. The self-mask seed is
        # fresh every round even when the epoch's mask key is reused.
        state.seed = self.randbytes(32)
        b_shares = shamir.split(state.seed, t, group, self.randbytes)
        # In a key-reuse round the epoch secret never leaves the client (docs 2.7): the second
        # share slot carries shares of zero, so the frame layout stays the same.
        secret = bytes(32) if config.key_reuse else self.keys.s_sk
        s_shares = shamir.split(secret, t, group, self.randbytes)
        out = []
        for b_share, s_share in zip(b_shares, s_shares):
            peer = b_share.x
            if peer == self.client_id:
                state.own_share = (b_share.y, s_share.y)
                continue
            key = self.keys.share_encryption_key(self.client_id, peer, roster[peer].c_pk)
            state.share_keys[peer] = key
            plaintext = shamir.encode_y(b_share.y) + shamir.encode_y(s_share.y)
            aad = wire.share_aad(self.epoch, self.round_id, self.client_id, peer)
            out.append(wire.EncryptedShare(peer, encrypt_share(key, self.randbytes(24), plaintext, aad)))
        self.dealt_shares = not config.key_reuse
        if config.key_reuse:
            self.keys.verified_entries.update(newly_verified)
        return self._reply(wire.ShareKeys, shares=tuple(out)), state

    def _refuse_roster(self, entries) -> None:
        """Raise for the first entry that names an unenrolled client or repeats a public key."""
        seen_keys: set[bytes] = set()
        for entry in entries:
            if entry.client_id not in self.directory:
                raise UnknownSender(f"roster names unenrolled client {entry.client_id}")
            for key in (entry.c_pk, entry.s_pk):
                if key in seen_keys:
                    raise DuplicateMessage(f"public key of client {entry.client_id} appears twice in the roster")
                seen_keys.add(key)

    def _on_relay(self, msg: wire.SharesRelay):
        old = self._state
        config = old.config
        given = self._update if self._encoded is None else self._encoded[:-1]
        if given is None:
            raise InvalidTransition("no input yet: call set_input() before the shares are relayed")
        if given.size != config.dim:
            raise InvalidTransition(f"input has {given.size} values, the round expects {config.dim}")
        if not 1 <= self._weight <= config.max_weight:
            raise InvalidTransition(f"weight {self._weight} outside 1..{config.max_weight}")
        held = {}
        for share in msg.shares:
            if share.peer not in old.neighbours:
                raise ConsistencyViolation(f"relayed share from {share.peer}, not a neighbour")
            key = old.share_keys[share.peer]
            aad = wire.share_aad(self.epoch, self.round_id, share.peer, self.client_id)
            plaintext = decrypt_share(key, share.ciphertext, aad)
            if len(plaintext) != 2 * shamir.SHARE_BYTES:
                raise MalformedMessage("decrypted share has the wrong length")
            held[share.peer] = (shamir.decode_y(plaintext[:33]), shamir.decode_y(plaintext[33:]))
        if len(held) + 1 < config.threshold:
            raise RoundAborted(f"only {len(held)} neighbours shared keys; threshold {config.threshold}")
        if self._encoded is None:
            encoded = fixedpoint.encode(self._update, self._weight, config.frac_bits, config.clip_q,
                                        config.mask_bits)
        else:
            # Reduction mod 2^B of whatever integers were given (negative noise wraps as it must).
            encoded = self._encoded.astype(np.int64).astype(word_dtype(config.mask_bits))
        # The smaller id adds the pairwise mask, the larger subtracts it.
        adds = [kdf.self_mask_key(old.seed, self.client_id, self.epoch, self.round_id)]
        subtracts = []
        for peer in sorted(held):
            key = self.keys.pairwise_mask_key(self.client_id, peer, old.roster[peer].s_pk, self.round_id)
            (adds if self.client_id < peer else subtracts).append(key)
        apply_masks(encoded, adds, subtracts, config.mask_bits, self.workers)
        state = _RoundState(**{**old.__dict__, "held": held})
        return self._reply(wire.MaskedInput, mask_bits=config.mask_bits, words=encoded), state

    def _on_consistency(self, msg: wire.ConsistencyRequest):
        old = self._state
        survivors = set(msg.survivors)
        if not survivors <= set(old.roster):
            raise ConsistencyViolation("survivor set names clients outside the roster (sets may not grow)")
        if self.client_id not in survivors:
            raise ConsistencyViolation("this client's masked input is not in the survivor set")
        if not (survivors & old.neighbours) <= set(old.held):
            raise ConsistencyViolation("a surviving neighbour never shared keys with this client")
        if len(survivors) < old.config.threshold:
            raise RoundAborted(f"{len(survivors)} survivors, threshold {old.config.threshold}")
        statement = wire.survivors_statement(old.config_digest, self.epoch, self.round_id, msg.survivors)
        state = _RoundState(**{**old.__dict__, "survivors": msg.survivors})
        if old.config.key_reuse:
            # One tag per neighbour in U3 under a key only the two of them hold (docs 2.7).
            tags = tuple((v, self._consistency_tag(old, v, self.client_id, statement))
                         for v in sorted(survivors & old.neighbours))
            return self._reply(wire.ConsistencyTags, tags=tags), state
        self.work.ed25519_sign += 1
        signature = self.identity.sign(statement).signature
        return self._reply(wire.ConsistencySignature, signature=signature), state

    def _consistency_tag(self, state: _RoundState, peer: int, signer: int, statement: bytes) -> bytes:
        """tag_signer->other of the pair (this client, peer) for this round's statement."""
        self.work.consistency_tags += 1
        epoch_key = self.keys.pairwise_epoch_key(self.client_id, peer, state.roster[peer].s_pk)
        return session.consistency_tag(session.consistency_key(epoch_key, self.round_id), signer, statement)

    def _on_unmask(self, msg: wire.UnmaskRequest):
        """Classic round: the survivor signatures of this client's group, then the release."""
        old = self._state
        survivors = set(old.survivors)
        statement = wire.survivors_statement(old.config_digest, self.epoch, self.round_id, old.survivors)
        # Only the group's signatures are checked (docs 2.2): this client releases secrets of
        # owners in its group only, so a non-member's signature cannot change what it gives.
        group = old.neighbours | {self.client_id}
        signed = 0
        for signer, signature in msg.signatures:
            if signer not in survivors:
                raise ConsistencyViolation(f"consistency signature from {signer}, not a survivor")
            if signer not in group:
                continue
            self.work.ed25519_verify += 1
            try:
                self.directory[signer].verify(statement, signature)
            except BadSignatureError:
                raise BadSignature(f"consistency signature of {signer} does not verify") from None
            signed += 1
        if signed < old.config.threshold:
            raise RoundAborted(f"{signed} consistency signatures of this client's group, threshold "
                               f"{old.config.threshold}: no share is released")
        return self._release(old, msg.dropped)

    def _on_unmask_tags(self, msg: wire.UnmaskRequestTags):
        """Key-reuse round: the pairwise tags of the neighbours that confirmed the survivor set this
        client saw (docs 2.7), then the release."""
        old = self._state
        statement = wire.survivors_statement(old.config_digest, self.epoch, self.round_id, old.survivors)
        confirmers = set(old.survivors) & old.neighbours
        for peer, tag in msg.tags:
            if peer not in confirmers:
                raise ConsistencyViolation(f"consistency tag from {peer}, not a neighbour in the survivor set")
            # The server never holds the pairwise epoch key: it can neither forge this tag nor
            # pass off this client's own tag for `peer` (the signer id is in the MAC input).
            if not session.tags_equal(tag, self._consistency_tag(old, peer, peer, statement)):
                raise BadSignature(f"consistency tag of {peer} does not verify")
        if 1 + len(msg.tags) < old.config.threshold:
            raise RoundAborted(f"{1 + len(msg.tags)} members of this client's group confirmed the survivor "
                               f"set, threshold {old.config.threshold}: no share is released")
        return self._release(old, msg.dropped)

    def _release(self, old: _RoundState, dropped_ids):
        """The unmasking answer once the consistency check passed: self-mask shares of surviving
        owners in the group, and for dropped neighbours their secret-key shares (classic) or this
        client's round key with them (key reuse)."""
        survivors = set(old.survivors)
        dropped = set(dropped_ids)
        if dropped & survivors:
            raise ConsistencyViolation(f"clients {sorted(dropped & survivors)} are listed as both "
                                       "surviving and dropped")
        if not dropped <= set(old.roster):
            raise ConsistencyViolation("dropped list names clients outside the roster")
        self_mask, secret_key = [], []
        for owner in sorted(survivors & (set(old.held) | {self.client_id})):
            if old.roster[owner].s_pk in self.keys.revealed_peer_keys:
                raise ConsistencyViolation(f"client {owner}'s mask key was revealed earlier in this epoch; "
                                           "its self-mask share is withheld")
            y_b = old.own_share[0] if owner == self.client_id else old.held[owner][0]
            self_mask.append((owner, shamir.encode_y(y_b)))
        if old.config.key_reuse:
            # Only this round's key with each dropped neighbour: one-way from the epoch key, it
            # unmasks nothing in any other round.
            round_keys = tuple((d, self.keys.pairwise_mask_key(self.client_id, d, old.roster[d].s_pk,
                                                                self.round_id))
                               for d in sorted(dropped & set(old.held)))
            self.released = {"self_mask": frozenset(o for o, _ in self_mask), "secret_key": frozenset(),
                             "round_key": frozenset(d for d, _ in round_keys)}
            return self._reply(wire.UnmaskRoundKeys, self_mask_shares=tuple(self_mask),
                               round_keys=round_keys), old
        for owner in sorted(dropped & set(old.held)):
            secret_key.append((owner, shamir.encode_y(old.held[owner][1])))
        # Committed: from here the peers' keys count as revealed for the rest of the epoch.
        self.keys.revealed_peer_keys.update(old.roster[o].s_pk for o, _ in secret_key)
        self.released = {"self_mask": frozenset(o for o, _ in self_mask),
                         "secret_key": frozenset(o for o, _ in secret_key)}
        return self._reply(wire.UnmaskShares, self_mask_shares=tuple(self_mask),
                           secret_key_shares=tuple(secret_key)), old

    def _on_abort(self, msg: wire.Abort):
        self.abort_reason = msg.reason
        return None, self._state

    _HANDLERS = {
        wire.ROUND_CONFIG: _on_config,
        wire.ROSTER: _on_roster,
        wire.GRAPH_SEEDS: _on_seeds,
        wire.SHARES_RELAY: _on_relay,
        wire.CONSISTENCY_REQUEST: _on_consistency,
        wire.UNMASK_REQUEST: _on_unmask,
        wire.UNMASK_REQUEST_TAGS: _on_unmask_tags,
        wire.ABORT: _on_abort,
    }
