"""The client side of a secure-aggregation round (docs/protocol.md part 2), firmware twin
of protocol.client.ClientSession, driven message by message:

    session = ClientSession(client_id, identity_seed, directory, epoch_keys, round_id)
    session.set_input(source, weight)       # before the SHARES_RELAY arrives
    reply = session.receive(frame)          # bytes, a StreamedFrame, or None

Every check happens before any state changes: a refused frame raises a ProtocolError
subclass and the session stays where it was (RoundAborted is final). Random bytes are
drawn in the same order as the CPython client, so a fixed random source reproduces
its frames byte for byte.

A key-reuse round (ROUND_CONFIG flag bit 1) authenticates most frames with session tags
instead of Ed25519 and checks the survivor set with pairwise tags (docs/protocol.md 1.8):
after the first round of a set of epoch keys it costs one Ed25519 verification and one
signature.

The board takes part only above its own SecurityFloor (2.2, 2.4), fixed at provisioning: a
round below it is refused with a typed reason before anything leaves the board. A round that
fixes a sparse graph (1.7) commits to a random contribution in the advert, reveals it once the
roster is fixed, and derives the graph from every member's reveal.
"""
import hashlib
import os

from ztfw import ed25519, graph, secagg_keys as kdf, session_auth, shamir, xchacha
from ztfw import secagg_wire as wire
from ztfw.masking import MaskedStream
from ztfw.secagg_errors import (BadSignature, ConfigurationError, ConsistencyViolation, DecryptionFailed,
                                DuplicateMessage, GroupBelowFloor, InvalidTransition, MalformedMessage,
                                NeighborsBelowFloor, NoEpochGraph, RevealMismatch, RevealMissing, RoundAborted,
                                SemiHonestRefused, ThresholdBelowFloor, ThresholdOverrideRefused, UnknownSender,
                                WrongRound)

ADVERTISE_KEYS = "AdvertiseKeys"
GRAPH_REVEAL = "GraphReveal"
SHARE_KEYS = "ShareKeys"
MASKED_INPUT_COLLECTION = "MaskedInputCollection"
CONSISTENCY_CHECK = "ConsistencyCheck"
UNMASKING = "Unmasking"
DONE = "Done"
ABORTED = "Aborted"
ORDER = (ADVERTISE_KEYS, GRAPH_REVEAL, SHARE_KEYS, MASKED_INPUT_COLLECTION, CONSISTENCY_CHECK, UNMASKING, DONE)


def _table(key_reuse, reveal):
    """(stage, server message answered in it) -> next stage, for one round kind: a key-reuse
    round has its own unmask request, a round that fixes its graph its GraphReveal stage."""
    order = [s for s in ORDER if reveal or s != GRAPH_REVEAL]
    answered = {ADVERTISE_KEYS: wire.ROUND_CONFIG, GRAPH_REVEAL: wire.ROSTER,
                SHARE_KEYS: wire.GRAPH_SEEDS if reveal else wire.ROSTER,
                MASKED_INPUT_COLLECTION: wire.SHARES_RELAY, CONSISTENCY_CHECK: wire.CONSISTENCY_REQUEST,
                UNMASKING: wire.UNMASK_REQUEST_TAGS if key_reuse else wire.UNMASK_REQUEST}
    table = {}
    for i in range(len(order) - 1):
        table[(order[i], answered[order[i]])] = order[i + 1]
        table[(order[i], wire.ABORT)] = ABORTED
    return table


# (key reuse, graph reveal) -> transition table; anything not in it is InvalidTransition.
TABLES = {}
for _k in (False, True):
    for _r in (False, True):
        TABLES[(_k, _r)] = _table(_k, _r)

# Largest server frame body this client accepts: a full roster or relay of 65535 entries
# would be ~8 MB; a device caps what it will buffer.
DEFAULT_MAX_BODY = 64 * 1024


def next_stage(stage, mtype, key_reuse=False, reveal=False):
    try:
        return TABLES[(key_reuse, reveal)][(stage, mtype)]
    except KeyError:
        raise InvalidTransition("message type 0x%02x is not allowed in stage %s" % (mtype, stage))


def _kind(config):
    """The round kind of a configuration (before it is known: a classic round without reveal)."""
    if config is None:
        return False, False
    return config.key_reuse, config.reveals_graph


class SecurityFloor:
    """The least protection the board takes part with, from its provisioning, never from the
    round (docs/protocol.md 2.2, 2.4): active security, t > 2g/3 of the group it actually
    sees, groups of at least `min_group`, at least `min_neighbors` SecAgg+ neighbours, never
    the threshold-override flag. A board given no floor gets these defaults."""

    def __init__(self, min_group=5, min_neighbors=4):
        for name, value, lo in (("min_group", min_group, 3), ("min_neighbors", min_neighbors, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= 0xFFFF:
                raise ConfigurationError("%s must be an int in %d..65535, got %r" % (name, lo, value))
        self.min_group = min_group
        self.min_neighbors = min_neighbors

    def check_config(self, config):
        if config.security != wire.ACTIVE:
            raise SemiHonestRefused("security %d (semi-honest): active security only" % config.security)
        if config.threshold_override:
            raise ThresholdOverrideRefused("the threshold-override flag is set")
        group = wire.group_size(config.max_clients, config.neighbors)
        if config.threshold < wire.minimum_threshold(group):
            raise ThresholdBelowFloor("threshold %d for groups of up to %d needs t > 2g/3"
                                      % (config.threshold, group))
        if config.neighbors and config.neighbors < self.min_neighbors:
            raise NeighborsBelowFloor("%d neighbours, at least %d" % (config.neighbors, self.min_neighbors))
        self.check_group(config.threshold, group)

    def check_group(self, threshold, group):
        if group < self.min_group:
            raise GroupBelowFloor("sharing group of %d, at least %d" % (group, self.min_group))
        if threshold < wire.minimum_threshold(group):
            raise ThresholdBelowFloor("threshold %d for a group of %d needs t > 2g/3" % (threshold, group))


def _keeps_epoch_graph(config):
    """A later key-reuse round of a sparse graph: the neighbours are the key epoch's."""
    return config.key_reuse and bool(config.neighbors) and not config.new_graph


class StreamedFrame:
    """A frame whose body is produced in chunks (MASKED_INPUT); nothing body-sized is held.

    The authenticator (a signature or a session tag) covers header || SHA-256(body) and comes
    last, so one pass suffices: the chunks are hashed as they are written out, then the
    authenticator is computed and written. `authenticate(head, digest)` returns it.
    """

    def __init__(self, head, prefix, body_chunks, authenticate, trailer_bytes):
        self.head = head
        self.prefix = prefix
        self._chunks = body_chunks     # callable returning a fresh chunk iterator
        self._authenticate = authenticate
        self.trailer_bytes = trailer_bytes

    @property
    def nbytes(self):
        return len(self.head) + self.body_len + self.trailer_bytes

    @property
    def body_len(self):
        return int.from_bytes(self.head[16:20], "little")

    def write_to(self, write):
        write(self.head)
        write(self.prefix)
        h = hashlib.sha256(self.prefix)
        for c in self._chunks():
            h.update(c)
            write(c)
        write(self._authenticate(self.head, h.digest()))

    def to_bytes(self):
        out = bytearray()
        self.write_to(out.extend)
        return bytes(out)


class _State:
    """What the client has learnt so far this round (copied, then replaced, on each step)."""

    def __init__(self, src=None):
        self.config = None
        self.reveal = b""       # this client's graph reveal r (rounds that fix a graph)
        self.roster = {}        # id -> (c_pk, s_pk, commitment, signature)
        self.roster_digest = b""
        self.neighbours = ()
        self.seed = b""
        self.own_share = (0, 0)
        self.held = {}          # owner -> (y_b, y_s)
        self.survivors = ()
        self.akey = None        # session key with the server (key-reuse rounds)
        if src is not None:
            # Field by field: MicroPython instances have no writable __dict__.
            self.config = src.config
            self.reveal = src.reveal
            self.roster = src.roster
            self.roster_digest = src.roster_digest
            self.neighbours = src.neighbours
            self.seed = src.seed
            self.own_share = src.own_share
            self.held = src.held
            self.survivors = src.survivors
            self.akey = src.akey


class ClientSession:
    def __init__(self, client_id, identity_seed, directory, epoch_keys, round_id,
                 randbytes=os.urandom, max_body=DEFAULT_MAX_BODY, chunk=256, identity_public=None, floor=None):
        if not 1 <= client_id <= 0xFFFF:
            raise ValueError("client ids are 1..65535")
        if wire.SERVER_ID not in directory:
            raise ValueError("the directory must hold the server's identity key (id 0)")
        self.client_id = client_id
        self.seed = bytes(identity_seed)
        # The caller may pass the public key it already holds: deriving it is a scalar multiplication.
        self.public = bytes(identity_public) if identity_public is not None else ed25519.public_key(self.seed)
        self.directory = directory
        self.keys = epoch_keys
        self.round_id = round_id
        self.randbytes = randbytes
        # The board's own limits (provisioning), never the round's.
        self.floor = floor if floor is not None else SecurityFloor()
        self.max_body = max_body
        self.chunk = chunk
        self.stage = ADVERTISE_KEYS
        self._state = _State()
        self._source = None
        self._dim = 0
        self._weight = 1
        self.abort_reason = None
        self.released = {"self_mask": (), "secret_key": ()}
        # True once this client dealt shares of its mask secret s_sk (classic rounds only).
        self.dealt_shares = False
        # Public-key and MAC operations of this round (X25519: keys.agreements), what it costs a board.
        self.work = {"ed25519_verify": 0, "ed25519_sign": 0, "session_tags": 0, "consistency_tags": 0}

    @property
    def epoch(self):
        return self.keys.epoch

    @property
    def config(self):
        return self._state.config

    @property
    def key_reuse(self):
        config = self._state.config
        return config is not None and config.key_reuse

    @property
    def keys_exposed(self):
        """Whether the server may hold this client's mask secret after this round: it dealt
        shares of s_sk and did not finish as a survivor. The keys' epoch must then end."""
        return self.dealt_shares and self.stage != DONE

    def set_input(self, source, weight=1, dim=None):
        """The update: an array of floats, or a callable source(start, n, out) with `dim`."""
        if callable(source):
            if dim is None:
                raise ValueError("a callable source needs its dim")
            self._source = source
            self._dim = dim
        else:
            values = source

            def from_array(start, n, out):
                for i in range(n):
                    out[i] = values[start + i]

            self._source = from_array
            self._dim = len(values)
        self._weight = weight

    def receive(self, data):
        config = self._state.config
        frame = wire.decode_frame(data, self.max_body, config.max_clients if config is not None else 0xFFFF)
        if frame.sender != wire.SERVER_ID:
            raise UnknownSender("frame from %d, expected the server (0)" % frame.sender)
        if self.key_reuse and frame.mtype not in wire.ALWAYS_SIGNED:
            self.work["session_tags"] += 1
            frame.check_tag(self._state.akey, self.client_id)
        else:
            self.work["ed25519_verify"] += 1
            frame.verify(self.directory[wire.SERVER_ID])
        if frame.epoch != self.epoch or frame.round_id != self.round_id:
            raise WrongRound("frame for epoch %d round %d, session is epoch %d round %d"
                             % (frame.epoch, frame.round_id, self.epoch, self.round_id))
        next_stage(self.stage, frame.mtype, *_kind(config))
        handler = self._HANDLERS[frame.mtype]
        try:
            reply, state = handler(self, frame.body)
        except RoundAborted:
            self.stage = ABORTED
            raise
        # The round kind is known once the configuration is: ROUND_CONFIG leads to GraphReveal
        # in a round that fixes its graph, to ShareKeys otherwise.
        self.stage = next_stage(self.stage, frame.mtype, *_kind(state.config))
        self._state = state
        return reply

    # -- helpers ---------------------------------------------------------------------------
    def _frame(self, mtype, body, state):
        """This client's reply: session-tagged in a key-reuse round, except the frames that
        are always signed."""
        if state.config.key_reuse and mtype not in wire.ALWAYS_SIGNED:
            self.work["session_tags"] += 1
            return wire.encode_tagged_frame(mtype, self.client_id, self.epoch, self.round_id, body, state.akey)
        self.work["ed25519_sign"] += 1
        return wire.encode_frame(mtype, self.client_id, self.epoch, self.round_id, body, self.seed, self.public)

    def _authenticator(self, state):
        """(authenticate(head, digest), trailer bytes) for a streamed reply."""
        work = self.work
        if state.config.key_reuse:
            akey = state.akey

            def tag(head, digest):
                work["session_tags"] += 1
                return session_auth.frame_tag(akey, head, digest)

            return tag, wire.TAG_BYTES

        def signature(head, digest):
            work["ed25519_sign"] += 1
            return ed25519.sign(self.seed, head + digest, self.public)

        return signature, wire.SIGNATURE_BYTES

    def _group(self, state):
        return sorted(list(state.neighbours) + [self.client_id])

    # -- stage handlers -------------------------------------------------------------------------
    def _on_config(self, body):
        try:
            config = wire.RoundConfig(body)
        except wire.ConfigurationError as e:
            raise MalformedMessage("ROUND_CONFIG: %s" % e)
        self.floor.check_config(config)
        if not config.key_reuse and self.keys.uses > 1:
            raise ConfigurationError("these epoch keys served earlier rounds: a round without key reuse "
                                     "would share their secret (docs/protocol.md 2.7); use new keys")
        if _keeps_epoch_graph(config):
            fixed = self.keys.graph
            if fixed is None or fixed[0] != config.neighbors:
                raise NoEpochGraph("this key-reuse round keeps the key epoch's graph of %d neighbours, and "
                                   "these keys hold none: a graph round must fix it first" % config.neighbors)
        state = _State()
        state.config = config
        if config.key_reuse:
            # One X25519 per set of epoch keys, then kept with them.
            state.akey = self.keys.session_key(self.client_id, self.directory[wire.SERVER_ID])
        # A round that fixes its graph: r drawn now, committed to in the signed advert.
        state.reveal = self.randbytes(wire.REVEAL_BYTES) if config.reveals_graph else b""
        if state.reveal and config.key_reuse:
            self.keys.graph = None          # this round's graph replaces the epoch's
        body = wire.advertise_keys_body(config.digest, self.keys.c_pk, self.keys.s_pk, self._commitment(state))
        return self._frame(wire.ADVERTISE_KEYS, body, state), state

    def _commitment(self, state):
        if not state.reveal:
            return wire.NO_COMMITMENT
        return graph.commitment(self.client_id, self.epoch, self.round_id, state.reveal)

    def _on_roster(self, body):
        old = self._state
        config = old.config
        entries = wire.parse_roster(body)
        if len(entries) > config.max_clients:
            raise ConsistencyViolation("roster of %d exceeds max_clients %d" % (len(entries), config.max_clients))
        roster = {}
        mine = None
        seen = set()
        for cid, c_pk, s_pk, commitment, sig in entries:
            if cid == self.client_id:
                mine = (c_pk, s_pk, commitment)
            if cid not in self.directory:
                raise UnknownSender("roster names unenrolled client %d" % cid)
            for key in (c_pk, s_pk):
                if key in seen:
                    raise DuplicateMessage("public key of client %d appears twice in the roster" % cid)
                seen.add(key)
            roster[cid] = (c_pk, s_pk, commitment, sig)
        if mine != (self.keys.c_pk, self.keys.s_pk, self._commitment(old)):
            raise ConsistencyViolation("the roster does not hold this client's advertised keys")
        # The floor holds for the group actually announced: this roster's, or the key epoch's.
        fixed = self.keys.graph if _keeps_epoch_graph(config) else None
        t = config.threshold
        self.floor.check_group(t, fixed[1] if fixed else wire.group_size(len(roster), config.neighbors))
        if len(roster) < t:
            raise RoundAborted("roster of %d is below the threshold %d" % (len(roster), t))
        state = _State(old)
        state.roster = roster
        state.roster_digest = hashlib.sha256(body).digest()
        state.held = {}
        if config.reveals_graph:
            # Nothing is dealt before every member's reveal is in: reveal ours, wait for theirs.
            return self._frame(wire.GRAPH_REVEAL, old.reveal, state), state
        if fixed is not None:
            neighbours = tuple(v for v in fixed[2] if v in roster)     # absent members are dropouts
        else:
            neighbours = tuple(cid for cid in sorted(roster) if cid != self.client_id)
        return self._deal(state, neighbours)

    def _on_seeds(self, body):
        """Every roster member's reveal, each the one its member committed to, then the graph."""
        old = self._state
        config = old.config
        reveals = wire.parse_graph_seeds(body)
        given = set(cid for cid, _ in reveals)
        missing = [cid for cid in sorted(old.roster) if cid not in given]
        if missing:
            raise RevealMissing("no graph reveal of roster members %s: the graph cannot be fixed" % missing)
        if len(reveals) != len(old.roster):
            raise ConsistencyViolation("graph reveals of clients outside the roster")
        for cid, reveal in reveals:
            if graph.commitment(cid, self.epoch, self.round_id, reveal) != old.roster[cid][2]:
                raise RevealMismatch("the graph reveal of client %d does not match its commitment" % cid)
        seed = graph.graph_seed(old.roster_digest, reveals)
        neighbours = tuple(graph.neighbours_of(self.client_id, list(old.roster), config.neighbors, seed))
        reply, state = self._deal(_State(old), neighbours)
        if config.key_reuse:
            self.keys.graph = (config.neighbors, wire.group_size(len(old.roster), config.neighbors), neighbours)
        return reply, state

    def _deal(self, state, neighbours):
        """SHARE_KEYS once the neighbours are known: their roster entries verified (only theirs:
        only their keys are used), this round's secrets dealt to them. In a key-reuse round an
        entry already verified under these epoch keys binds the same keys to the same identity."""
        config = state.config
        roster = state.roster
        verified = []
        for cid in neighbours:
            c_pk, s_pk, commitment, signature = roster[cid]
            slot = (cid, bytes(self.directory[cid]), c_pk, s_pk)
            if config.key_reuse and slot in self.keys.verified_entries:
                continue
            signed = wire.advertise_signed_bytes(cid, c_pk, s_pk, commitment, config.digest, self.epoch,
                                                 self.round_id)
            self.work["ed25519_verify"] += 1
            try:
                ed25519.verify(self.directory[cid], signed, signature)
            except ed25519.SignatureError:
                raise BadSignature("roster entry of client %d is not signed by it "
                                   "(or it saw another configuration)" % cid)
            verified.append(slot)
        t = config.threshold
        state.neighbours = neighbours
        group = self._group(state)
        if len(group) < t:
            raise RoundAborted("sharing group of %d is below the threshold %d" % (len(group), t))
        # Validation done: this round's secrets, dealt in the reference client's order.
        state.seed = self.randbytes(32)
        b_shares = shamir.split(state.seed, t, group, self.randbytes)
        # In a key-reuse round the epoch secret never leaves the client (docs/protocol.md 2.7):
        # the second share slot carries shares of zero, so the frame layout stays the same.
        secret = bytes(32) if config.key_reuse else self.keys.s_sk
        s_shares = shamir.split(secret, t, group, self.randbytes)
        out = []
        for (peer, y_b), (_, y_s) in zip(b_shares, s_shares):
            if peer == self.client_id:
                state.own_share = (y_b, y_s)
                continue
            key = self.keys.share_encryption_key(self.client_id, peer, roster[peer][0])
            plaintext = shamir.encode_y(y_b) + shamir.encode_y(y_s)
            aad = wire.share_aad(self.epoch, self.round_id, self.client_id, peer)
            nonce = self.randbytes(24)
            out.append((peer, nonce + xchacha.encrypt(key, nonce, plaintext, aad)))
        reply = self._frame(wire.SHARE_KEYS, wire.share_keys_body(out), state)
        if config.key_reuse:
            for slot in verified:
                self.keys.verified_entries.add(slot)
        else:
            self.dealt_shares = True
        return reply, state

    def _on_relay(self, body):
        old = self._state
        config = old.config
        if self._source is None:
            raise InvalidTransition("no input yet: call set_input() before the shares are relayed")
        if self._dim != config.dim:
            raise InvalidTransition("input has %d values, the round expects %d" % (self._dim, config.dim))
        if not 1 <= self._weight <= config.max_weight:
            raise InvalidTransition("weight %d outside 1..%d" % (self._weight, config.max_weight))
        held = {}
        for peer, ct in wire.parse_shares(body, "SHARES_RELAY"):
            if peer not in old.neighbours:
                raise ConsistencyViolation("relayed share from %d, not a neighbour" % peer)
            key = self.keys.share_encryption_key(self.client_id, peer, old.roster[peer][0])
            aad = wire.share_aad(self.epoch, self.round_id, peer, self.client_id)
            try:
                plaintext = xchacha.decrypt(key, ct[:24], ct[24:], aad)
            except xchacha.AeadError:
                raise DecryptionFailed("encrypted share from %d failed authentication" % peer)
            if len(plaintext) != 2 * shamir.SHARE_BYTES:
                raise MalformedMessage("decrypted share has the wrong length")
            try:
                held[peer] = (shamir.decode_y(plaintext[:33]), shamir.decode_y(plaintext[33:]))
            except shamir.ShamirError as e:
                raise MalformedMessage("decrypted share from %d: %s" % (peer, e))
        if len(held) + 1 < config.threshold:
            raise RoundAborted("only %d neighbours shared keys; threshold %d" % (len(held), config.threshold))
        plus = [kdf.self_mask_key(old.seed, self.client_id, self.epoch, self.round_id)]
        minus = []
        for peer in sorted(held):
            key = self.keys.pairwise_mask_key(self.client_id, peer, old.roster[peer][1], self.round_id)
            # The smaller id adds the pairwise mask, the larger subtracts it.
            (plus if self.client_id < peer else minus).append(key)
        stream = MaskedStream(config.dim, config.mask_bits, config.frac_bits, config.clip_q, self._weight,
                              self._source, plus, minus, self.chunk)
        head = wire.header(wire.MASKED_INPUT, self.client_id, self.epoch, self.round_id,
                           wire.MASKED_PREFIX_BYTES + stream.nbytes,
                           wire.AUTH_SESSION if config.key_reuse else wire.AUTH_SIGNATURE)
        authenticate, trailer = self._authenticator(old)
        reply = StreamedFrame(head, wire.masked_input_prefix(stream.words, config.mask_bits),
                              stream.chunks, authenticate, trailer)
        state = _State(old)
        state.held = held
        return reply, state

    def _on_consistency(self, body):
        old = self._state
        ids = wire.parse_consistency_request(body)
        survivors = set(ids)
        for cid in ids:
            if cid not in old.roster:
                raise ConsistencyViolation("survivor set names clients outside the roster (sets may not grow)")
        if self.client_id not in survivors:
            raise ConsistencyViolation("this client's masked input is not in the survivor set")
        for cid in old.neighbours:
            if cid in survivors and cid not in old.held:
                raise ConsistencyViolation("a surviving neighbour never shared keys with this client")
        if len(survivors) < old.config.threshold:
            raise RoundAborted("%d survivors, threshold %d" % (len(survivors), old.config.threshold))
        statement = wire.survivors_statement(old.config.digest, self.epoch, self.round_id, ids)
        state = _State(old)
        state.survivors = tuple(ids)
        if old.config.key_reuse:
            # One pairwise tag per surviving neighbour, under a key the server never holds.
            tags = []
            for peer in sorted(old.neighbours):
                if peer in survivors:
                    vkey = self.keys.consistency_key(self.client_id, peer, old.roster[peer][1], self.round_id)
                    tags.append((peer, session_auth.consistency_tag(vkey, self.client_id, statement)))
            self.work["consistency_tags"] += len(tags)
            return self._frame(wire.CONSISTENCY_TAGS, wire.consistency_tags_body(tags), state), state
        self.work["ed25519_sign"] += 1
        signature = ed25519.sign(self.seed, statement, self.public)
        return self._frame(wire.CONSISTENCY_SIGNATURE, signature, state), state

    def _on_unmask(self, body):
        """UNMASK_REQUEST (classic round): the group's survivor signatures."""
        old = self._state
        sigs, dropped_ids = wire.parse_unmask_request(body)
        survivors = set(old.survivors)
        statement = wire.survivors_statement(old.config.digest, self.epoch, self.round_id, old.survivors)
        # Only the group's signatures are checked (docs/protocol.md 2.2): this client releases
        # secrets of owners in its group only, so a non-member's signature changes nothing it gives.
        group = set(old.neighbours)
        group.add(self.client_id)
        signed = 0
        for signer, signature in sigs:
            if signer not in survivors:
                raise ConsistencyViolation("consistency signature from %d, not a survivor" % signer)
            if signer not in group:
                continue
            self.work["ed25519_verify"] += 1
            try:
                ed25519.verify(self.directory[signer], statement, signature)
            except ed25519.SignatureError:
                raise BadSignature("consistency signature of %d does not verify" % signer)
            signed += 1
        if signed < old.config.threshold:
            raise RoundAborted("%d consistency signatures of this client's group, threshold %d: "
                               "no share is released" % (signed, old.config.threshold))
        return self._release(old, dropped_ids)

    def _on_unmask_tags(self, body):
        """UNMASK_REQUEST_TAGS (key-reuse round): the neighbours' pairwise tags to this client."""
        old = self._state
        tags, dropped_ids = wire.parse_unmask_request_tags(body)
        survivors = set(old.survivors)
        statement = wire.survivors_statement(old.config.digest, self.epoch, self.round_id, old.survivors)
        for peer, tag in tags:
            if peer not in survivors or peer not in old.neighbours:
                raise ConsistencyViolation("consistency tag from %d, not a surviving neighbour" % peer)
            vkey = self.keys.consistency_key(self.client_id, peer, old.roster[peer][1], self.round_id)
            self.work["consistency_tags"] += 1
            if not session_auth.same(tag, session_auth.consistency_tag(vkey, peer, statement)):
                raise BadSignature("consistency tag of %d does not verify" % peer)
        if 1 + len(tags) < old.config.threshold:
            raise RoundAborted("%d consistency tags and this client, threshold %d: no share is released"
                               % (len(tags), old.config.threshold))
        return self._release(old, dropped_ids)

    def _release(self, old, dropped_ids):
        survivors = set(old.survivors)
        dropped = set(dropped_ids)
        both = dropped & survivors
        if both:
            raise ConsistencyViolation("clients %s are listed as both surviving and dropped" % sorted(both))
        for cid in dropped:
            if cid not in old.roster:
                raise ConsistencyViolation("dropped list names clients outside the roster")
        self_mask = []
        secret_key = []
        holders = set(old.held)
        holders.add(self.client_id)
        for owner in sorted(survivors & holders):
            if old.roster[owner][1] in self.keys.revealed_peer_keys:
                raise ConsistencyViolation("client %d's mask key was revealed earlier in this epoch; "
                                           "its self-mask share is withheld" % owner)
            y_b = old.own_share[0] if owner == self.client_id else old.held[owner][0]
            self_mask.append((owner, shamir.encode_y(y_b)))
        if old.config.key_reuse:
            # Only this round's key with each dropped neighbour: one-way from the epoch key, it
            # unmasks nothing in any other round.
            round_keys = [(d, self.keys.pairwise_mask_key(self.client_id, d, old.roster[d][1], self.round_id))
                          for d in sorted(dropped & set(old.held))]
            self.released = {"self_mask": tuple(o for o, _ in self_mask), "secret_key": (),
                             "round_key": tuple(d for d, _ in round_keys)}
            return self._frame(wire.UNMASK_ROUND_KEYS, wire.unmask_round_keys_body(self_mask, round_keys), old), old
        for owner in sorted(dropped & set(old.held)):
            secret_key.append((owner, shamir.encode_y(old.held[owner][1])))
        reply = self._frame(wire.UNMASK_SHARES, wire.unmask_shares_body(self_mask, secret_key), old)
        # Committed: from here these peers' keys count as revealed for the rest of the epoch.
        for o, _ in secret_key:
            self.keys.revealed_peer_keys.add(old.roster[o][1])
        self.released = {"self_mask": tuple(o for o, _ in self_mask),
                         "secret_key": tuple(o for o, _ in secret_key)}
        return reply, old

    def _on_abort(self, body):
        self.abort_reason = wire.parse_abort(body)
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
