"""The secure-aggregation wire format (docs/protocol.md 1.6, 1.8), firmware side.

frame = header (20 bytes) || body || authenticator, over header || SHA-256(body):
  auth 0: an Ed25519 signature (64 bytes);
  auth 1 (key-reuse rounds): session tags, one 16-byte tag from a client, or
          `count u16 || count x (id u16 || tag 16)` from the server (one per recipient).
Decoders check every size against the bytes at hand before building anything,
consume the body exactly and raise MalformedMessage with a reason.
"""
import hashlib
import struct

from ztfw import ed25519, session_auth
from ztfw.secagg_errors import BadSignature, ConfigurationError, MalformedMessage, UnsupportedVersion
from ztfw.shamir import PRIME, SHARE_BYTES

MAGIC = b"ZS"
VERSION = 1
HEADER_FMT = "<2sBBHHIII"
HEADER_BYTES = 20
SIGNATURE_BYTES = 64
KEY_BYTES = 32
CIPHERTEXT_BYTES = 24 + 2 * SHARE_BYTES + 16   # 106
SERVER_ID = 0
MAX_DIM = 1 << 27

ROUND_CONFIG = 0x01
ADVERTISE_KEYS = 0x02
ROSTER = 0x03
SHARE_KEYS = 0x04
SHARES_RELAY = 0x05
MASKED_INPUT = 0x06
CONSISTENCY_REQUEST = 0x07
CONSISTENCY_SIGNATURE = 0x08
UNMASK_REQUEST = 0x09
UNMASK_SHARES = 0x0A
ABORT = 0x0B
UNMASK_ROUND_KEYS = 0x0C   # key-reuse rounds (docs/protocol.md 2.7): replaces UNMASK_SHARES
CONSISTENCY_TAGS = 0x0D    # key-reuse rounds (1.8): replaces CONSISTENCY_SIGNATURE
UNMASK_REQUEST_TAGS = 0x0E  # key-reuse rounds (1.8): replaces UNMASK_REQUEST
GRAPH_REVEAL = 0x0F        # rounds that fix a sparse graph (1.7): this client's reveal
GRAPH_SEEDS = 0x10         # ... and every roster member's reveal, relayed by the server
KNOWN_TYPES = (ROUND_CONFIG, ADVERTISE_KEYS, ROSTER, SHARE_KEYS, SHARES_RELAY, MASKED_INPUT,
               CONSISTENCY_REQUEST, CONSISTENCY_SIGNATURE, UNMASK_REQUEST, UNMASK_SHARES, ABORT,
               UNMASK_ROUND_KEYS, CONSISTENCY_TAGS, UNMASK_REQUEST_TAGS, GRAPH_REVEAL, GRAPH_SEEDS)

AUTH_SIGNATURE = 0
AUTH_SESSION = 1
TAG_BYTES = session_auth.TAG_BYTES
TAG_ENTRY = 2 + TAG_BYTES                            # 18
# Frames that stay Ed25519-signed in a key-reuse round: ROUND_CONFIG announces the mode, ABORT
# must be believable without a session, ADVERTISE_KEYS binds c_pk (hence akey) to the identity.
ALWAYS_SIGNED = (ROUND_CONFIG, ABORT, ADVERTISE_KEYS)

SURVIVORS_CONTEXT = b"ztfl/secagg/v1/survivors"
SHARE_AAD_CONTEXT = b"ztfl/secagg/v1/share"

CONFIG_FMT = "<IBBBBHHHHQI"
CONFIG_BYTES = 28
ROSTER_ENTRY = 2 + 3 * KEY_BYTES + SIGNATURE_BYTES   # 162: id, c_pk, s_pk, commitment, signature
SHARE_ENTRY = 2 + CIPHERTEXT_BYTES                   # 108
UNMASK_ENTRY = 2 + SHARE_BYTES                       # 35
MASKED_PREFIX_BYTES = 8
REVEAL_BYTES = 32
GRAPH_SEED_ENTRY = 2 + REVEAL_BYTES                  # 34
NO_COMMITMENT = bytes(32)       # the commitment of a round that reveals nothing

SEMI_HONEST = 0
ACTIVE = 1
FLAG_THRESHOLD_OVERRIDE = 0x01
FLAG_KEY_REUSE = 0x02          # epoch secrets are never shared (docs/protocol.md 2.7)
FLAG_NEW_GRAPH = 0x04          # key-reuse rounds: this round fixes the key epoch's graph (1.7)
ROUND_KEY_BYTES = 16


# -- helpers -----------------------------------------------------------------------
def _ascending(ids, what):
    for i in range(1, len(ids)):
        if not ids[i - 1] < ids[i]:
            raise MalformedMessage("%s: ids must be strictly ascending (duplicate or unsorted %d)"
                                   % (what, ids[i]))
    if ids and ids[0] == SERVER_ID:
        raise MalformedMessage("%s: id 0 is the server, not a client" % what)
    return ids


def _expect(body, pos, need, what):
    if pos + need != len(body):
        raise MalformedMessage("%s: %d bytes expected after offset %d, %d present"
                               % (what, need, pos, len(body) - pos))


def header(mtype, sender, epoch, round_id, body_len, auth=AUTH_SIGNATURE):
    return struct.pack(HEADER_FMT, MAGIC, VERSION, mtype, sender, auth, epoch, round_id, body_len)


def signed_bytes(head, body_digest):
    return head + body_digest


def encode_frame(mtype, sender, epoch, round_id, body, seed, public):
    """An Ed25519-signed frame (auth 0)."""
    head = header(mtype, sender, epoch, round_id, len(body))
    signature = ed25519.sign(seed, head + hashlib.sha256(body).digest(), public)
    return head + body + signature


def encode_tagged_frame(mtype, sender, epoch, round_id, body, akey):
    """A client's session-tagged frame (auth 1): one tag under its session key."""
    head = header(mtype, sender, epoch, round_id, len(body), AUTH_SESSION)
    return head + body + session_auth.frame_tag(akey, head, hashlib.sha256(body).digest())


class Frame:
    """A decoded frame. `signature` (auth 0), or `tags` (auth 1: [(recipient, tag)] of a server
    frame, [(sender, tag)] of a client frame)."""

    def __init__(self, mtype, sender, auth, epoch, round_id, body, signed, signature, tags):
        self.mtype = mtype
        self.sender = sender
        self.auth = auth
        self.epoch = epoch
        self.round_id = round_id
        self.body = body
        self.signed = signed
        self.signature = signature
        self.tags = tags

    def verify(self, public):
        if self.auth != AUTH_SIGNATURE:
            raise BadSignature("frame type 0x%02x from %d: wrong authentication mode (session tags, "
                               "a signature expected)" % (self.mtype, self.sender))
        try:
            ed25519.verify(public, self.signed, self.signature)
        except ed25519.SignatureError as e:
            raise BadSignature("frame type 0x%02x from %d: %s" % (self.mtype, self.sender, e))

    def check_tag(self, akey, holder):
        """The tag for `holder` (this client, or the sender of a client frame) under `akey`."""
        if self.auth != AUTH_SESSION:
            raise BadSignature("frame type 0x%02x from %d: wrong authentication mode (a signature, "
                               "session tags expected)" % (self.mtype, self.sender))
        for cid, tag in self.tags:
            if cid == holder:
                if not session_auth.same(tag, session_auth.frame_tag(akey, self.signed[:HEADER_BYTES],
                                                                     self.signed[HEADER_BYTES:])):
                    raise BadSignature("frame type 0x%02x from %d: session tag does not verify"
                                       % (self.mtype, self.sender))
                return
        raise BadSignature("frame type 0x%02x from %d carries no session tag for %d"
                           % (self.mtype, self.sender, holder))


def decode_frame(data, max_body, max_recipients=0xFFFF):
    """Parse the frame envelope; the body is parsed by the type's parser, the authenticator
    checked by whoever knows the sender's key (`max_recipients` bounds a server frame's tags)."""
    n = len(data)
    if n < HEADER_BYTES + TAG_BYTES:
        raise MalformedMessage("frame of %d bytes is shorter than header and authenticator" % n)
    magic, version, mtype, sender, auth, epoch, round_id, body_len = struct.unpack_from(HEADER_FMT, data, 0)
    if magic != MAGIC:
        raise MalformedMessage("bad magic %r" % magic)
    if version != VERSION:
        raise UnsupportedVersion("protocol version %d, this side speaks %d" % (version, VERSION))
    if mtype not in KNOWN_TYPES:
        raise MalformedMessage("unknown message type 0x%02x" % mtype)
    if auth not in (AUTH_SIGNATURE, AUTH_SESSION):
        raise MalformedMessage("unknown authentication mode %d" % auth)
    if body_len > max_body:
        raise MalformedMessage("body of %d bytes exceeds the limit of %d" % (body_len, max_body))
    end = HEADER_BYTES + body_len
    signature = None
    tags = None
    if auth == AUTH_SIGNATURE:
        if n != end + SIGNATURE_BYTES:
            raise MalformedMessage("frame is %d bytes, header announces %d" % (n, end + SIGNATURE_BYTES))
        signature = bytes(data[end:])
    elif sender != SERVER_ID:
        if n != end + TAG_BYTES:
            raise MalformedMessage("frame is %d bytes, header announces %d" % (n, end + TAG_BYTES))
        tags = [(sender, bytes(data[end:]))]
    else:
        if n < end + 2:
            raise MalformedMessage("frame is %d bytes, too short for its tag count" % n)
        count = struct.unpack_from("<H", data, end)[0]
        if not 1 <= count <= max_recipients:
            raise MalformedMessage("%d session tags, expected 1..%d" % (count, max_recipients))
        if n != end + 2 + TAG_ENTRY * count:
            raise MalformedMessage("frame is %d bytes, header and tag count announce %d"
                                   % (n, end + 2 + TAG_ENTRY * count))
        tags = []
        pos = end + 2
        for _ in range(count):
            tags.append((struct.unpack_from("<H", data, pos)[0], bytes(data[pos + 2:pos + TAG_ENTRY])))
            pos += TAG_ENTRY
        _ascending([cid for cid, _ in tags], "session tags")
    body = bytes(data[HEADER_BYTES:end])
    signed = bytes(data[:HEADER_BYTES]) + hashlib.sha256(body).digest()
    return Frame(mtype, sender, auth, epoch, round_id, body, signed, signature, tags)


# -- ROUND_CONFIG ------------------------------------------------------------------------
def group_size(n, neighbors):
    if neighbors == 0 or neighbors >= n - 1:
        return n
    return neighbors + 1


def minimum_threshold(group):
    """The smallest t > 2g/3 (active security)."""
    return 2 * group // 3 + 1


class RoundConfig:
    """A decoded ROUND_CONFIG: refused here only when it cannot be expressed or could wrap the
    modulus. Whether the board takes part is its SecurityFloor's decision (secagg_client)."""

    def __init__(self, body):
        if len(body) != CONFIG_BYTES:
            raise MalformedMessage("ROUND_CONFIG body is 28 bytes, got %d" % len(body))
        (self.dim, self.mask_bits, self.frac_bits, self.security, flags, self.threshold,
         self.neighbors, self.max_clients, reserved, self.clip_q,
         self.max_weight) = struct.unpack(CONFIG_FMT, body)
        if reserved or flags & ~(FLAG_THRESHOLD_OVERRIDE | FLAG_KEY_REUSE | FLAG_NEW_GRAPH):
            raise MalformedMessage("reserved bits set in ROUND_CONFIG")
        self.threshold_override = bool(flags & FLAG_THRESHOLD_OVERRIDE)
        self.key_reuse = bool(flags & FLAG_KEY_REUSE)
        self.new_graph = bool(flags & FLAG_NEW_GRAPH)
        # Every sparse classic round, and the key-reuse round that starts an epoch's graph.
        self.reveals_graph = bool(self.neighbors) and (not self.key_reuse or self.new_graph)
        self.body = bytes(body)
        self.digest = hashlib.sha256(self.body).digest()
        self._validate()

    def _validate(self):
        if not 1 <= self.dim <= MAX_DIM:
            raise ConfigurationError("dim %d out of range" % self.dim)
        if self.max_clients < 2:
            raise ConfigurationError("max_clients must be at least 2")
        if self.mask_bits not in (32, 64):
            raise ConfigurationError("mask_bits must be 32 or 64, got %d" % self.mask_bits)
        if self.frac_bits > self.mask_bits - 2:
            raise ConfigurationError("frac_bits %d too large" % self.frac_bits)
        if not 1 <= self.clip_q <= (1 << 63) - 1:
            raise ConfigurationError("clip_q out of range")
        if self.max_weight < 1:
            raise ConfigurationError("max_weight must be at least 1")
        if self.neighbors % 2:
            raise ConfigurationError("neighbors must be even (Harary graph)")
        if self.security not in (SEMI_HONEST, ACTIVE):
            raise ConfigurationError("security must be 0 or 1, got %d" % self.security)
        if self.new_graph and not (self.key_reuse and self.neighbors):
            raise ConfigurationError("the new-graph flag belongs to key-reuse rounds with a sparse graph")
        group = group_size(self.max_clients, self.neighbors)
        if not 1 <= self.threshold <= group:
            raise ConfigurationError("threshold %d must be in 1..%d" % (self.threshold, group))
        half = (1 << (self.mask_bits - 1)) - 1
        if self.max_clients * self.max_weight * self.clip_q > half:
            raise ConfigurationError("clients x weight x clip_q can wrap the modulus")
        if self.max_clients * self.max_weight > half:
            raise ConfigurationError("the sum of weights can wrap the modulus")


def encode_round_config(dim, threshold, max_clients, mask_bits=32, frac_bits=16, clip_q=8 << 16,
                        max_weight=1, neighbors=0, security=ACTIVE, threshold_override=False, key_reuse=False,
                        new_graph=False):
    flags = ((FLAG_THRESHOLD_OVERRIDE if threshold_override else 0) | (FLAG_KEY_REUSE if key_reuse else 0)
             | (FLAG_NEW_GRAPH if new_graph else 0))
    return struct.pack(CONFIG_FMT, dim, mask_bits, frac_bits, security, flags, threshold, neighbors,
                       max_clients, 0, clip_q, max_weight)


# -- bodies the client builds ---------------------------------------------------------------
def advertise_keys_body(config_digest, c_pk, s_pk, commitment):
    return bytes(config_digest) + bytes(c_pk) + bytes(s_pk) + bytes(commitment)


def share_keys_body(shares):
    """shares: [(to, ciphertext 106)] ascending by `to`."""
    _ascending([to for to, _ in shares], "SHARE_KEYS")
    out = bytearray(struct.pack("<HH", len(shares), 0))
    for to, ct in shares:
        if len(ct) != CIPHERTEXT_BYTES:
            raise MalformedMessage("ciphertext must be %d bytes" % CIPHERTEXT_BYTES)
        out.extend(struct.pack("<H", to))
        out.extend(ct)
    return bytes(out)


def masked_input_prefix(count, mask_bits):
    return struct.pack("<IB3x", count, mask_bits)


def unmask_shares_body(self_mask_shares, secret_key_shares):
    """Each list: [(owner, y bytes 33)] ascending by owner."""
    out = bytearray(struct.pack("<HH", len(self_mask_shares), len(secret_key_shares)))
    for what, entries in (("self-mask", self_mask_shares), ("secret-key", secret_key_shares)):
        _ascending([o for o, _ in entries], "UNMASK_SHARES " + what)
        for owner, y in entries:
            if len(y) != SHARE_BYTES:
                raise MalformedMessage("share must be 33 bytes")
            out.extend(struct.pack("<H", owner))
            out.extend(y)
    return bytes(out)


def unmask_round_keys_body(self_mask_shares, round_keys):
    """Key-reuse unmasking: self-mask shares [(owner, y 33)] and this client's round key with
    each dropped neighbour [(peer, key 16)], both ascending."""
    out = bytearray(struct.pack("<HH", len(self_mask_shares), len(round_keys)))
    _ascending([o for o, _ in self_mask_shares], "UNMASK_ROUND_KEYS self-mask")
    _ascending([d for d, _ in round_keys], "UNMASK_ROUND_KEYS round keys")
    for owner, y in self_mask_shares:
        if len(y) != SHARE_BYTES:
            raise MalformedMessage("share must be 33 bytes")
        out.extend(struct.pack("<H", owner))
        out.extend(y)
    for peer, key in round_keys:
        if len(key) != ROUND_KEY_BYTES:
            raise MalformedMessage("round key must be 16 bytes")
        out.extend(struct.pack("<H", peer))
        out.extend(key)
    return bytes(out)


def consistency_tags_body(tags):
    """CONSISTENCY_TAGS: [(peer, tag 16)] ascending, one per neighbour in U3."""
    _ascending([v for v, _ in tags], "CONSISTENCY_TAGS")
    out = bytearray(struct.pack("<HH", len(tags), 0))
    for peer, tag in tags:
        if len(tag) != TAG_BYTES:
            raise MalformedMessage("consistency tag must be %d bytes" % TAG_BYTES)
        out.extend(struct.pack("<H", peer))
        out.extend(tag)
    return bytes(out)


def survivors_statement(config_digest, epoch, round_id, survivors):
    return (SURVIVORS_CONTEXT + bytes(config_digest) + struct.pack("<IIH", epoch, round_id, len(survivors))
            + struct.pack("<%dH" % len(survivors), *survivors))


def share_aad(epoch, round_id, sender, recipient):
    return SHARE_AAD_CONTEXT + struct.pack("<IIHH", epoch, round_id, sender, recipient)


def advertise_signed_bytes(client_id, c_pk, s_pk, commitment, config_digest, epoch, round_id):
    """What a ROSTER entry's signature covers: that client's rebuilt ADVERTISE_KEYS frame."""
    body = advertise_keys_body(config_digest, c_pk, s_pk, commitment)
    return header(ADVERTISE_KEYS, client_id, epoch, round_id, len(body)) + hashlib.sha256(body).digest()


# -- bodies the client parses ----------------------------------------------------------------
def parse_roster(body):
    """[(id, c_pk, s_pk, commitment, signature)] ascending by id."""
    if len(body) < 4:
        raise MalformedMessage("ROSTER: truncated")
    count, reserved = struct.unpack_from("<HH", body, 0)
    if reserved:
        raise MalformedMessage("ROSTER: reserved field set")
    _expect(body, 4, count * ROSTER_ENTRY, "ROSTER")
    entries = []
    pos = 4
    for _ in range(count):
        cid = struct.unpack_from("<H", body, pos)[0]
        entries.append((cid, body[pos + 2:pos + 34], body[pos + 34:pos + 66], body[pos + 66:pos + 98],
                        body[pos + 98:pos + ROSTER_ENTRY]))
        pos += ROSTER_ENTRY
    _ascending([e[0] for e in entries], "ROSTER")
    return entries


def _records(body, pos, count, entry):
    """`count` entries of `entry` bytes from `pos`, each an id u16 and its bytes: [(id, bytes)]."""
    out = []
    for _ in range(count):
        out.append((struct.unpack_from("<H", body, pos)[0], body[pos + 2:pos + entry]))
        pos += entry
    return out


def _id_list(body, what, entry):
    """count u16, reserved u16 = 0, then count entries (id ascending, bytes)."""
    if len(body) < 4:
        raise MalformedMessage("%s: truncated" % what)
    count, reserved = struct.unpack_from("<HH", body, 0)
    if reserved:
        raise MalformedMessage("%s: reserved field set" % what)
    _expect(body, 4, count * entry, what)
    out = _records(body, 4, count, entry)
    _ascending([i for i, _ in out], what)
    return out


def parse_shares(body, what):
    """[(peer, ciphertext)] ascending by peer (SHARES_RELAY: peer is the sender)."""
    return _id_list(body, what, SHARE_ENTRY)


def parse_graph_seeds(body):
    """GRAPH_SEEDS: [(member, reveal 32)] ascending by member."""
    return _id_list(body, "GRAPH_SEEDS", GRAPH_SEED_ENTRY)


def parse_consistency_request(body):
    if len(body) < 4:
        raise MalformedMessage("CONSISTENCY_REQUEST: truncated")
    count, reserved = struct.unpack_from("<HH", body, 0)
    if reserved:
        raise MalformedMessage("CONSISTENCY_REQUEST: reserved field set")
    _expect(body, 4, 2 * count, "CONSISTENCY_REQUEST")
    return _ascending(list(struct.unpack_from("<%dH" % count, body, 4)), "CONSISTENCY_REQUEST")


def _request(body, what, entry):
    """n u16, n_dropped u16, n entries of `entry` bytes (ascending ids), then the dropped ids."""
    if len(body) < 4:
        raise MalformedMessage("%s: truncated" % what)
    n, n_dropped = struct.unpack_from("<HH", body, 0)
    _expect(body, 4, n * entry + 2 * n_dropped, what)
    listed = _records(body, 4, n, entry)
    _ascending([i for i, _ in listed], what + " entries")
    dropped = _ascending(list(struct.unpack_from("<%dH" % n_dropped, body, 4 + n * entry)), what + " dropped")
    return listed, dropped


def parse_unmask_request(body):
    """([(signer, signature)], [dropped ids])."""
    return _request(body, "UNMASK_REQUEST", 2 + SIGNATURE_BYTES)


def parse_unmask_request_tags(body):
    """([(from, tag 16)] ascending, [dropped ids])."""
    return _request(body, "UNMASK_REQUEST_TAGS", TAG_ENTRY)


def parse_abort(body):
    if len(body) != 4:
        raise MalformedMessage("ABORT: body must be 4 bytes")
    reason, reserved = struct.unpack("<HH", body)
    if reserved:
        raise MalformedMessage("ABORT: reserved field set")
    return reason


def check_share_value(y):
    if int.from_bytes(bytes(y), "little") >= PRIME:
        raise MalformedMessage("share value outside the field")
