"""The client side of a secure-aggregation round (docs/protocol.md part 2), firmware twin
of protocol.client.ClientSession, driven message by message:

    session = ClientSession(client_id, identity_seed, directory, epoch_keys, round_id)
    session.set_input(source, weight)       # before the SHARES_RELAY arrives
    reply = session.receive(frame)          # bytes, a StreamedFrame, or None

Every check happens before any state changes: a refused frame raises a ProtocolError
subclass and the session stays where it was (RoundAborted is final). Random bytes are
drawn in the same order as the CPython client, so a fixed random source reproduces
its frames byte for byte.
"""
import hashlib
import os

from ztfw import ed25519, graph, secagg_keys as kdf, shamir, xchacha
from ztfw import secagg_wire as wire
from ztfw.masking import MaskedStream
from ztfw.secagg_errors import (BadSignature, ConfigurationError, ConsistencyViolation, DecryptionFailed,
                                DuplicateMessage, InvalidTransition, MalformedMessage, RoundAborted,
                                UnknownSender, WrongRound)

ADVERTISE_KEYS = "AdvertiseKeys"
SHARE_KEYS = "ShareKeys"
MASKED_INPUT_COLLECTION = "MaskedInputCollection"
CONSISTENCY_CHECK = "ConsistencyCheck"
UNMASKING = "Unmasking"
DONE = "Done"
ABORTED = "Aborted"
ORDER = (ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT_COLLECTION, CONSISTENCY_CHECK, UNMASKING, DONE)

# (stage, message type received) -> next stage; anything else is InvalidTransition.
TRANSITIONS = {
    (ADVERTISE_KEYS, wire.ROUND_CONFIG): SHARE_KEYS,
    (SHARE_KEYS, wire.ROSTER): MASKED_INPUT_COLLECTION,
    (MASKED_INPUT_COLLECTION, wire.SHARES_RELAY): CONSISTENCY_CHECK,
    (CONSISTENCY_CHECK, wire.CONSISTENCY_REQUEST): UNMASKING,
    (UNMASKING, wire.UNMASK_REQUEST): DONE,
}
for _s in ORDER[:-1]:
    TRANSITIONS[(_s, wire.ABORT)] = ABORTED

# Largest server frame body this client accepts: a full roster or relay of 65535 entries
# would be ~8 MB; a device caps what it will buffer.
DEFAULT_MAX_BODY = 64 * 1024


def next_stage(stage, mtype):
    try:
        return TRANSITIONS[(stage, mtype)]
    except KeyError:
        raise InvalidTransition("message type 0x%02x is not allowed in stage %s" % (mtype, stage))


class StreamedFrame:
    """A signed frame whose body is produced in chunks (MASKED_INPUT).

    The signature covers header || SHA-256(body), so the body is generated twice: once to
    hash it (then signed), once while writing it out. Nothing body-sized is ever held.
    """

    def __init__(self, head, prefix, body_chunks, seed, public):
        self.head = head
        self.prefix = prefix
        self._chunks = body_chunks     # callable returning a fresh chunk iterator
        h = hashlib.sha256(prefix)
        for c in body_chunks():
            h.update(c)
        self.signature = ed25519.sign(seed, head + h.digest(), public)

    @property
    def nbytes(self):
        return len(self.head) + self.body_len + wire.SIGNATURE_BYTES

    @property
    def body_len(self):
        return int.from_bytes(self.head[16:20], "little")

    def write_to(self, write):
        write(self.head)
        write(self.prefix)
        for c in self._chunks():
            write(c)
        write(self.signature)

    def to_bytes(self):
        out = bytearray()
        self.write_to(out.extend)
        return bytes(out)


class _State:
    """What the client has learnt so far this round (copied, then replaced, on each step)."""

    def __init__(self, src=None):
        self.config = None
        self.roster = {}        # id -> (c_pk, s_pk)
        self.neighbours = ()
        self.seed = b""
        self.own_share = (0, 0)
        self.held = {}          # owner -> (y_b, y_s)
        self.survivors = ()
        if src is not None:
            # Field by field: MicroPython instances have no writable __dict__.
            self.config = src.config
            self.roster = src.roster
            self.neighbours = src.neighbours
            self.seed = src.seed
            self.own_share = src.own_share
            self.held = src.held
            self.survivors = src.survivors


class ClientSession:
    def __init__(self, client_id, identity_seed, directory, epoch_keys, round_id,
                 randbytes=os.urandom, max_body=DEFAULT_MAX_BODY, chunk=256):
        if not 1 <= client_id <= 0xFFFF:
            raise ValueError("client ids are 1..65535")
        if wire.SERVER_ID not in directory:
            raise ValueError("the directory must hold the server's identity key (id 0)")
        self.client_id = client_id
        self.seed = bytes(identity_seed)
        self.public = ed25519.public_key(self.seed)
        self.directory = directory
        self.keys = epoch_keys
        self.round_id = round_id
        self.randbytes = randbytes
        self.max_body = max_body
        self.chunk = chunk
        self.stage = ADVERTISE_KEYS
        self._state = _State()
        self._source = None
        self._dim = 0
        self._weight = 1
        self.abort_reason = None
        self.released = {"self_mask": (), "secret_key": ()}

    @property
    def epoch(self):
        return self.keys.epoch

    @property
    def config(self):
        return self._state.config

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
        frame = wire.decode_frame(data, self.max_body)
        if frame.sender != wire.SERVER_ID:
            raise UnknownSender("frame from %d, expected the server (0)" % frame.sender)
        frame.verify(self.directory[wire.SERVER_ID])
        if frame.epoch != self.epoch or frame.round_id != self.round_id:
            raise WrongRound("frame for epoch %d round %d, session is epoch %d round %d"
                             % (frame.epoch, frame.round_id, self.epoch, self.round_id))
        target = next_stage(self.stage, frame.mtype)
        handler = self._HANDLERS[frame.mtype]
        try:
            reply, state = handler(self, frame.body)
        except RoundAborted:
            self.stage = ABORTED
            raise
        self._state = state
        self.stage = target
        return reply

    # -- helpers ---------------------------------------------------------------------------
    def _frame(self, mtype, body):
        return wire.encode_frame(mtype, self.client_id, self.epoch, self.round_id, body, self.seed, self.public)

    def _group(self, state):
        return sorted(list(state.neighbours) + [self.client_id])

    # -- stage handlers -------------------------------------------------------------------------
    def _on_config(self, body):
        try:
            config = wire.RoundConfig(body)
        except wire.ConfigurationError as e:
            raise MalformedMessage("ROUND_CONFIG: %s" % e)
        if not config.key_reuse and self.keys.uses > 1:
            raise ConfigurationError("these epoch keys served earlier rounds: a round without key reuse "
                                     "would share their secret (docs/protocol.md 2.7); use new keys")
        state = _State()
        state.config = config
        reply = self._frame(wire.ADVERTISE_KEYS,
                            wire.advertise_keys_body(config.digest, self.keys.c_pk, self.keys.s_pk))
        return reply, state

    def _on_roster(self, body):
        old = self._state
        config = old.config
        entries = wire.parse_roster(body)
        if len(entries) > config.max_clients:
            raise ConsistencyViolation("roster of %d exceeds max_clients %d" % (len(entries), config.max_clients))
        roster = {}
        mine = None
        seen = set()
        for cid, c_pk, s_pk, sig in entries:
            if cid == self.client_id:
                mine = (c_pk, s_pk)
            if cid not in self.directory:
                raise UnknownSender("roster names unenrolled client %d" % cid)
            for key in (c_pk, s_pk):
                if key in seen:
                    raise DuplicateMessage("public key of client %d appears twice in the roster" % cid)
                seen.add(key)
            roster[cid] = (c_pk, s_pk)
        if mine is None or mine[0] != self.keys.c_pk or mine[1] != self.keys.s_pk:
            raise ConsistencyViolation("the roster does not hold this client's advertised keys")
        for cid, c_pk, s_pk, sig in entries:
            signed = wire.advertise_signed_bytes(cid, c_pk, s_pk, config.digest, self.epoch, self.round_id)
            try:
                ed25519.verify(self.directory[cid], signed, sig)
            except ed25519.SignatureError:
                raise BadSignature("roster entry of client %d is not signed by it "
                                   "(or it saw another configuration)" % cid)
        t = config.threshold
        if len(roster) < t:
            raise RoundAborted("roster of %d is below the threshold %d" % (len(roster), t))
        digest = hashlib.sha256(body).digest()
        state = _State(old)
        state.roster = roster
        state.neighbours = tuple(graph.neighbours_of(self.client_id, list(roster), config.neighbors, digest))
        state.held = {}
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
        return self._frame(wire.SHARE_KEYS, wire.share_keys_body(out)), state

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
                           wire.MASKED_PREFIX_BYTES + stream.nbytes)
        reply = StreamedFrame(head, wire.masked_input_prefix(stream.words, config.mask_bits),
                              stream.chunks, self.seed, self.public)
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
        signature = ed25519.sign(self.seed, statement, self.public)
        state = _State(old)
        state.survivors = tuple(ids)
        return self._frame(wire.CONSISTENCY_SIGNATURE, signature), state

    def _on_unmask(self, body):
        old = self._state
        sigs, dropped_ids = wire.parse_unmask_request(body)
        survivors = set(old.survivors)
        statement = wire.survivors_statement(old.config.digest, self.epoch, self.round_id, old.survivors)
        for signer, signature in sigs:
            if signer not in survivors:
                raise ConsistencyViolation("consistency signature from %d, not a survivor" % signer)
            try:
                ed25519.verify(self.directory[signer], statement, signature)
            except ed25519.SignatureError:
                raise BadSignature("consistency signature of %d does not verify" % signer)
        if len(sigs) < old.config.threshold:
            raise RoundAborted("%d consistency signatures, threshold %d: no share is released"
                               % (len(sigs), old.config.threshold))
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
            return self._frame(wire.UNMASK_ROUND_KEYS, wire.unmask_round_keys_body(self_mask, round_keys)), old
        for owner in sorted(dropped & set(old.held)):
            secret_key.append((owner, shamir.encode_y(old.held[owner][1])))
        reply = self._frame(wire.UNMASK_SHARES, wire.unmask_shares_body(self_mask, secret_key))
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
        wire.SHARES_RELAY: _on_relay,
        wire.CONSISTENCY_REQUEST: _on_consistency,
        wire.UNMASK_REQUEST: _on_unmask,
        wire.ABORT: _on_abort,
    }
