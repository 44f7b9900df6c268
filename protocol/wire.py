"""The versioned binary wire format (docs/protocol.md, 1.6 and 1.8).

frame = header (20 bytes, little-endian) || body || trailer
signed bytes = header || SHA-256(body)          (what a signature or a session tag covers)
trailer, by the header's `auth` field:
    0: Ed25519 signature (64 bytes)
    1: session tags (1.8): a client's frame ends with one 16-byte tag; a server's frame with
       count u16 || count x (recipient id u16 || tag 16), ids strictly ascending

Every message is a dataclass carrying the header fields (sender, epoch, round_id) and its own
body fields; `encode(signing_key)` gives a signed frame, `encode_tagged(akey)` a client's tagged
frame, `encode_for(akeys)` a server's tagged frame, and `decode_frame(data)` parses any of them.
Decoders check every size against the bytes at hand before building anything, consume the body
and the trailer exactly, and raise MalformedMessage (or UnsupportedVersion) on any deviation.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ztfl.protocol import session
from ztfl.protocol.config import MAX_DIM, RoundConfig
from ztfl.protocol.errors import BadSignature, ConfigurationError, MalformedMessage, UnsupportedVersion
from ztfl.protocol.prg import word_dtype
from ztfl.protocol.shamir import PRIME, SHARE_BYTES

MAGIC = b"ZS"
VERSION = 1
HEADER = struct.Struct("<2sBBHHIII")   # magic, version, type, sender, auth, epoch, round, body_len
HEADER_BYTES = HEADER.size             # 20
SIGNATURE_BYTES = 64
AUTH_SIGNATURE = 0                     # the frame ends with an Ed25519 signature
AUTH_SESSION = 1                       # the frame ends with session tags (key-reuse rounds, 1.8)
TAG_BYTES = session.TAG_BYTES          # 16
RECIPIENT_TAG_ENTRY = 2 + TAG_BYTES    # 18: recipient id, tag
MIN_FRAME = HEADER_BYTES + TAG_BYTES   # the shortest trailer is one client tag
KEY_BYTES = 32
REVEAL_BYTES = 32                      # a client's graph seed contribution r (1.7)
CIPHERTEXT_BYTES = 24 + 2 * SHARE_BYTES + 16   # nonce || 66-byte plaintext || tag = 106
SERVER_ID = 0
# Largest body any message may have: a 64-bit masked vector of MAX_DIM + 1 words.
MAX_BODY = 8 + (MAX_DIM + 1) * 8

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
CONSISTENCY_TAGS = 0x0D    # key-reuse rounds: replaces CONSISTENCY_SIGNATURE
UNMASK_REQUEST_TAGS = 0x0E  # key-reuse rounds: replaces UNMASK_REQUEST, one frame per client
GRAPH_REVEAL = 0x0F        # rounds that fix a sparse graph (docs/protocol.md 1.7): a client's reveal
GRAPH_SEEDS = 0x10         # ... and every roster member's reveal, relayed to all of them

# Every frame of a classic round is Ed25519-signed. In a key-reuse round every frame carries session
# tags (docs/protocol.md 1.8) except these: ROUND_CONFIG (it announces the round kind), ABORT, and
# ADVERTISE_KEYS (it binds c_pk, hence the session key, to the identity).
ALWAYS_SIGNED = frozenset({ROUND_CONFIG, ABORT, ADVERTISE_KEYS})

ABORT_TOO_FEW_CLIENTS = 1
ABORT_RECONSTRUCTION_FAILED = 2
ABORT_PROTOCOL_VIOLATION = 3
ABORT_TIMEOUT = 4

SURVIVORS_CONTEXT = b"ztfl/secagg/v1/survivors"
SHARE_AAD_CONTEXT = b"ztfl/secagg/v1/share"


# ---------------------------------------------------------------------------------- helpers
class _Reader:
    """Reads a body front to back; every read is bounds-checked, `done()` demands exhaustion."""

    def __init__(self, data: bytes, what: str):
        self.data = memoryview(data)
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedMessage(f"{self.what}: truncated (need {n} bytes at offset {self.pos}, "
                                   f"have {len(self.data) - self.pos})")
        out = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def records(self, record: struct.Struct, count: int) -> list[tuple]:
        """`count` fixed-size records in one pass: a list of field tuples, no per-field copies
        (a 1,000-entry roster is decoded on every client of a round)."""
        n = count * record.size
        if count < 0 or self.pos + n > len(self.data):
            raise MalformedMessage(f"{self.what}: truncated (need {count} entries of {record.size} bytes "
                                   f"at offset {self.pos}, have {len(self.data) - self.pos})")
        out = list(record.iter_unpack(self.data[self.pos:self.pos + n]))
        self.pos += n
        return out

    def expect_entries(self, count: int, entry_bytes: int) -> None:
        """Refuse a count the remaining bytes cannot hold, before anything is built from it."""
        if count * entry_bytes != len(self.data) - self.pos:
            raise MalformedMessage(f"{self.what}: {count} entries of {entry_bytes} bytes do not match "
                                   f"the {len(self.data) - self.pos} bytes left")

    def done(self) -> None:
        if self.pos != len(self.data):
            raise MalformedMessage(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


def _ascending(ids, what: str) -> tuple[int, ...]:
    ids = tuple(ids)
    for a, b in zip(ids, ids[1:]):
        if not a < b:
            raise MalformedMessage(f"{what}: ids must be strictly ascending (duplicate or unsorted {b})")
    if ids and ids[0] == SERVER_ID:
        raise MalformedMessage(f"{what}: id 0 is the server, not a client")
    return ids


def _share_entries(r: "_Reader", count: int, kind: str) -> list[tuple[int, bytes]]:
    """`count` (owner u16, Shamir share value) records; a value outside the field is refused."""
    entries = []
    for _ in range(count):
        (owner,) = r.unpack("<H")
        y = r.take(SHARE_BYTES)
        if int.from_bytes(y, "little") >= PRIME:
            raise MalformedMessage(f"{kind}: share value outside the field")
        entries.append((owner, y))
    return entries


def _counted(body: bytes, what: str, record: struct.Struct) -> tuple[tuple, ...]:
    """A body of `count u16, reserved u16 = 0, count records`, each led by an ascending id."""
    r = _Reader(body, what)
    count, reserved = r.unpack("<HH")
    if reserved:
        raise MalformedMessage(f"{what}: reserved field set")
    r.expect_entries(count, record.size)
    records = tuple(r.records(record, count))
    r.done()
    _ascending([rec[0] for rec in records], what)
    return records


def _client_ids(reader: _Reader, count: int, what: str) -> tuple[int, ...]:
    return _ascending(struct.unpack(f"<{count}H", reader.take(2 * count)), what)


def _sized(value: bytes, n: int, what: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) != n:
        raise MalformedMessage(f"{what} must be {n} bytes")
    return bytes(value)


def survivors_statement(config_digest: bytes, epoch: int, round_id: int, survivors) -> bytes:
    """The bytes each client signs in ConsistencyCheck."""
    survivors = tuple(survivors)
    return (SURVIVORS_CONTEXT + config_digest + struct.pack("<IIH", epoch, round_id, len(survivors))
            + struct.pack(f"<{len(survivors)}H", *survivors))


def share_aad(epoch: int, round_id: int, sender: int, recipient: int) -> bytes:
    return SHARE_AAD_CONTEXT + struct.pack("<IIHH", epoch, round_id, sender, recipient)


def expected_auth(mtype: int, key_reuse: bool) -> int:
    """The authentication a frame of this type must carry in a round of this kind."""
    return AUTH_SESSION if key_reuse and mtype not in ALWAYS_SIGNED else AUTH_SIGNATURE


def signed_bytes(header: bytes, body) -> bytes:
    return bytes(header) + hashlib.sha256(body).digest()


# ---------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message:
    sender: int
    epoch: int
    round_id: int
    TYPE: ClassVar[int] = 0

    def body(self) -> bytes:
        raise MalformedMessage(f"{type(self).__name__} has no body encoder")

    def header(self, body_len: int, auth: int = AUTH_SIGNATURE) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.TYPE, self.sender, auth, self.epoch, self.round_id, body_len)

    def encode(self, signing_key: SigningKey) -> bytes:
        """An Ed25519-signed frame (auth 0)."""
        body = self.body()
        head = self.header(len(body))
        signature = signing_key.sign(signed_bytes(head, body)).signature
        return head + body + signature

    def encode_tagged(self, akey: bytes) -> bytes:
        """A client's session-tagged frame (auth 1): one tag under its session key."""
        if self.sender == SERVER_ID:
            raise MalformedMessage("a server frame carries one tag per recipient: use encode_for")
        body = self.body()
        head = self.header(len(body), AUTH_SESSION)
        return head + body + session.frame_tag(akey, signed_bytes(head, body))

    def encode_for(self, akeys: dict[int, bytes]) -> bytes:
        """The server's session-tagged frame (auth 1): one tag per recipient id, ascending."""
        if self.sender != SERVER_ID:
            raise MalformedMessage("only the server's frames carry recipient tags")
        ids = _ascending(sorted(akeys), "recipient tags")
        if not ids:
            raise MalformedMessage("a tagged server frame has at least one recipient")
        body = self.body()
        head = self.header(len(body), AUTH_SESSION)
        signed = signed_bytes(head, body)
        trailer = struct.pack("<H", len(ids)) + b"".join(
            struct.pack("<H", cid) + session.frame_tag(akeys[cid], signed) for cid in ids)
        return head + body + trailer


@dataclass(frozen=True)
class RoundConfigMessage(Message):
    config: RoundConfig = None
    TYPE: ClassVar[int] = ROUND_CONFIG

    def body(self) -> bytes:
        return self.config.encode()

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        try:
            config = RoundConfig.decode(body)
        except ConfigurationError as exc:
            raise MalformedMessage(f"ROUND_CONFIG: {exc}") from exc
        return cls(sender, epoch, round_id, config)


NO_COMMITMENT = bytes(32)   # the commitment of a round that reveals nothing


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    config_digest: bytes = b""
    c_pk: bytes = b""
    s_pk: bytes = b""
    commitment: bytes = NO_COMMITMENT   # SHA-256 commitment to the graph reveal r (1.7)
    TYPE: ClassVar[int] = ADVERTISE_KEYS

    def body(self) -> bytes:
        return (_sized(self.config_digest, 32, "config_digest") + _sized(self.c_pk, KEY_BYTES, "c_pk")
                + _sized(self.s_pk, KEY_BYTES, "s_pk") + _sized(self.commitment, 32, "commitment"))

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "ADVERTISE_KEYS")
        msg = cls(sender, epoch, round_id, r.take(32), r.take(KEY_BYTES), r.take(KEY_BYTES), r.take(32))
        r.done()
        return msg


@dataclass(frozen=True)
class RosterEntry:
    client_id: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes
    commitment: bytes = NO_COMMITMENT   # on the wire before the signature (1.6)


ROSTER_ENTRY = 2 + 3 * KEY_BYTES + SIGNATURE_BYTES   # 162: id, c_pk, s_pk, commitment, signature
_ROSTER_RECORD = struct.Struct(f"<H{KEY_BYTES}s{KEY_BYTES}s32s{SIGNATURE_BYTES}s")


@dataclass(frozen=True)
class Roster(Message):
    entries: tuple[RosterEntry, ...] = ()
    # SHA-256 of the body this roster was decoded from: a decoded body is canonical (every field
    # checked, nothing left over), so it equals the hash of the re-encoded body at no cost.
    body_digest: bytes = field(default=b"", compare=False, repr=False)
    TYPE: ClassVar[int] = ROSTER

    def body(self) -> bytes:
        _ascending([e.client_id for e in self.entries], "ROSTER")
        parts = [struct.pack("<HH", len(self.entries), 0)]
        for e in self.entries:
            parts.append(struct.pack("<H", e.client_id) + _sized(e.c_pk, KEY_BYTES, "c_pk")
                         + _sized(e.s_pk, KEY_BYTES, "s_pk") + _sized(e.commitment, 32, "commitment")
                         + _sized(e.signature, SIGNATURE_BYTES, "signature"))
        return b"".join(parts)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "ROSTER")
        count, reserved = r.unpack("<HH")
        if reserved:
            raise MalformedMessage("ROSTER: reserved field set")
        r.expect_entries(count, ROSTER_ENTRY)
        entries = tuple(RosterEntry(cid, c_pk, s_pk, signature, commitment)
                        for cid, c_pk, s_pk, commitment, signature in r.records(_ROSTER_RECORD, count))
        r.done()
        _ascending([e.client_id for e in entries], "ROSTER")
        return cls(sender, epoch, round_id, entries, hashlib.sha256(body).digest())

    def digest(self) -> bytes:
        return self.body_digest or hashlib.sha256(self.body()).digest()


@dataclass(frozen=True)
class EncryptedShare:
    peer: int            # recipient in SHARE_KEYS, sender in SHARES_RELAY
    ciphertext: bytes    # nonce (24) || AEAD output (82)


SHARE_ENTRY = 2 + CIPHERTEXT_BYTES   # 108
_SHARE_RECORD = struct.Struct(f"<H{CIPHERTEXT_BYTES}s")


def _encode_shares(shares, what: str) -> bytes:
    _ascending([s.peer for s in shares], what)
    return struct.pack("<HH", len(shares), 0) + b"".join(
        struct.pack("<H", s.peer) + _sized(s.ciphertext, CIPHERTEXT_BYTES, "ciphertext") for s in shares)


def _parse_shares(body: bytes, what: str) -> tuple[EncryptedShare, ...]:
    return tuple(EncryptedShare(*record) for record in _counted(body, what, _SHARE_RECORD))


@dataclass(frozen=True)
class _ShareList(Message):
    """A list of encrypted shares: a client's ShareKeys upload, or the server relaying them."""
    shares: tuple[EncryptedShare, ...] = ()
    LABEL: ClassVar[str] = ""

    def body(self) -> bytes:
        return _encode_shares(self.shares, self.LABEL)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        return cls(sender, epoch, round_id, _parse_shares(body, cls.LABEL))


@dataclass(frozen=True)
class ShareKeys(_ShareList):
    TYPE: ClassVar[int] = SHARE_KEYS
    LABEL: ClassVar[str] = "SHARE_KEYS"


@dataclass(frozen=True)
class SharesRelay(_ShareList):
    TYPE: ClassVar[int] = SHARES_RELAY
    LABEL: ClassVar[str] = "SHARES_RELAY"


MASKED_PREFIX = struct.Struct("<IB3x")   # count u32, mask_bits u8, 3 reserved bytes


@dataclass(frozen=True, eq=False)
class MaskedInput(Message):
    mask_bits: int = 32
    words: np.ndarray = field(default=None, repr=False)
    TYPE: ClassVar[int] = MASKED_INPUT

    def body(self) -> bytes:
        dtype = word_dtype(self.mask_bits)
        words = np.ascontiguousarray(self.words, dtype=dtype)
        return MASKED_PREFIX.pack(words.size, self.mask_bits) + words.tobytes()

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        if len(body) < MASKED_PREFIX.size:
            raise MalformedMessage("MASKED_INPUT: truncated prefix")
        count, mask_bits = MASKED_PREFIX.unpack_from(body)
        if bytes(body[5:8]) != b"\x00\x00\x00":
            raise MalformedMessage("MASKED_INPUT: reserved bytes set")
        if mask_bits not in (32, 64):
            raise MalformedMessage(f"MASKED_INPUT: mask_bits {mask_bits}")
        if count < 2 or MASKED_PREFIX.size + count * (mask_bits // 8) != len(body):
            raise MalformedMessage(f"MASKED_INPUT: {count} words of {mask_bits} bits do not match "
                                   f"a {len(body)}-byte body")
        words = np.frombuffer(body, dtype=word_dtype(mask_bits), offset=MASKED_PREFIX.size)
        return cls(sender, epoch, round_id, mask_bits, words)


@dataclass(frozen=True)
class ConsistencyRequest(Message):
    survivors: tuple[int, ...] = ()
    TYPE: ClassVar[int] = CONSISTENCY_REQUEST

    def body(self) -> bytes:
        ids = _ascending(self.survivors, "CONSISTENCY_REQUEST")
        return struct.pack("<HH", len(ids), 0) + struct.pack(f"<{len(ids)}H", *ids)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "CONSISTENCY_REQUEST")
        count, reserved = r.unpack("<HH")
        if reserved:
            raise MalformedMessage("CONSISTENCY_REQUEST: reserved field set")
        r.expect_entries(count, 2)
        ids = _client_ids(r, count, "CONSISTENCY_REQUEST")
        r.done()
        return cls(sender, epoch, round_id, ids)


@dataclass(frozen=True)
class _OneValue(Message):
    """A body that is one fixed-size byte string: the message's own (last) field."""
    SIZE: ClassVar[int] = 0
    LABEL: ClassVar[str] = ""

    def __init_subclass__(cls, label: str = "", size: int = 0, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.LABEL, cls.SIZE = label, size

    def body(self) -> bytes:
        name = fields(self)[-1].name
        return _sized(getattr(self, name), self.SIZE, name)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, cls.LABEL)
        msg = cls(sender, epoch, round_id, r.take(cls.SIZE))
        r.done()
        return msg


@dataclass(frozen=True)
class ConsistencySignature(_OneValue, label="CONSISTENCY_SIGNATURE", size=SIGNATURE_BYTES):
    signature: bytes = b""
    TYPE: ClassVar[int] = CONSISTENCY_SIGNATURE


_SIGNATURE_RECORD = struct.Struct(f"<H{SIGNATURE_BYTES}s")


@dataclass(frozen=True)
class UnmaskRequest(Message):
    signatures: tuple[tuple[int, bytes], ...] = ()   # (signer id, signature over U3), ascending
    dropped: tuple[int, ...] = ()
    TYPE: ClassVar[int] = UNMASK_REQUEST

    def body(self) -> bytes:
        _ascending([cid for cid, _ in self.signatures], "UNMASK_REQUEST signatures")
        dropped = _ascending(self.dropped, "UNMASK_REQUEST dropped")
        return (struct.pack("<HH", len(self.signatures), len(dropped))
                + b"".join(struct.pack("<H", cid) + _sized(sig, SIGNATURE_BYTES, "signature")
                           for cid, sig in self.signatures)
                + struct.pack(f"<{len(dropped)}H", *dropped))

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "UNMASK_REQUEST")
        n_sigs, n_dropped = r.unpack("<HH")
        r.expect_entries(1, n_sigs * (2 + SIGNATURE_BYTES) + 2 * n_dropped)
        # (signer id, signature) is the record's own field tuple: no per-entry work in Python.
        sigs = tuple(r.records(_SIGNATURE_RECORD, n_sigs))
        _ascending([cid for cid, _ in sigs], "UNMASK_REQUEST signatures")
        dropped = _client_ids(r, n_dropped, "UNMASK_REQUEST dropped")
        r.done()
        return cls(sender, epoch, round_id, sigs, dropped)


UNMASK_ENTRY = 2 + SHARE_BYTES   # 35


@dataclass(frozen=True)
class UnmaskShares(Message):
    self_mask_shares: tuple[tuple[int, bytes], ...] = ()    # (owner, y 33 bytes), ascending
    secret_key_shares: tuple[tuple[int, bytes], ...] = ()
    TYPE: ClassVar[int] = UNMASK_SHARES

    def body(self) -> bytes:
        parts = [struct.pack("<HH", len(self.self_mask_shares), len(self.secret_key_shares))]
        for what, entries in (("self-mask", self.self_mask_shares), ("secret-key", self.secret_key_shares)):
            _ascending([owner for owner, _ in entries], f"UNMASK_SHARES {what}")
            parts.extend(struct.pack("<H", owner) + _sized(y, SHARE_BYTES, "share") for owner, y in entries)
        return b"".join(parts)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "UNMASK_SHARES")
        n_b, n_s = r.unpack("<HH")
        r.expect_entries(n_b + n_s, UNMASK_ENTRY)
        lists = []
        for count, what in ((n_b, "self-mask"), (n_s, "secret-key")):
            entries = _share_entries(r, count, "UNMASK_SHARES")
            _ascending([o for o, _ in entries], f"UNMASK_SHARES {what}")
            lists.append(tuple(entries))
        r.done()
        return cls(sender, epoch, round_id, lists[0], lists[1])


ROUND_KEY_BYTES = 16
ROUND_KEY_ENTRY = 2 + ROUND_KEY_BYTES   # 18


@dataclass(frozen=True)
class UnmaskRoundKeys(Message):
    """Unmasking in a key-reuse round: self-mask shares as in UNMASK_SHARES, and instead of shares
    of a dropped client's epoch secret, the sender's own round key with each dropped neighbour."""
    self_mask_shares: tuple[tuple[int, bytes], ...] = ()    # (owner, y 33 bytes), ascending
    round_keys: tuple[tuple[int, bytes], ...] = ()          # (dropped peer, mkey 16 bytes), ascending
    TYPE: ClassVar[int] = UNMASK_ROUND_KEYS

    def body(self) -> bytes:
        _ascending([owner for owner, _ in self.self_mask_shares], "UNMASK_ROUND_KEYS self-mask")
        _ascending([peer for peer, _ in self.round_keys], "UNMASK_ROUND_KEYS round keys")
        parts = [struct.pack("<HH", len(self.self_mask_shares), len(self.round_keys))]
        parts.extend(struct.pack("<H", o) + _sized(y, SHARE_BYTES, "share") for o, y in self.self_mask_shares)
        parts.extend(struct.pack("<H", d) + _sized(k, ROUND_KEY_BYTES, "round key") for d, k in self.round_keys)
        return b"".join(parts)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "UNMASK_ROUND_KEYS")
        n_b, n_k = r.unpack("<HH")
        if n_b * UNMASK_ENTRY + n_k * ROUND_KEY_ENTRY != len(body) - 4:
            raise MalformedMessage(f"UNMASK_ROUND_KEYS: {n_b} shares and {n_k} keys do not match "
                                   f"the {len(body) - 4} bytes left")
        shares = _share_entries(r, n_b, "UNMASK_ROUND_KEYS")
        keys = []
        for _ in range(n_k):
            (peer,) = r.unpack("<H")
            keys.append((peer, r.take(ROUND_KEY_BYTES)))
        r.done()
        _ascending([o for o, _ in shares], "UNMASK_ROUND_KEYS self-mask")
        _ascending([d for d, _ in keys], "UNMASK_ROUND_KEYS round keys")
        return cls(sender, epoch, round_id, tuple(shares), tuple(keys))


CONSISTENCY_TAG_ENTRY = 2 + TAG_BYTES   # 18: peer id, tag
_TAG_RECORD = struct.Struct(f"<H{TAG_BYTES}s")


def _encode_tag_list(tags, what: str) -> bytes:
    _ascending([peer for peer, _ in tags], what)
    return b"".join(struct.pack("<H", peer) + _sized(tag, TAG_BYTES, "tag") for peer, tag in tags)


def _parse_tag_list(reader: _Reader, count: int, what: str) -> tuple[tuple[int, bytes], ...]:
    tags = tuple(reader.records(_TAG_RECORD, count))
    _ascending([peer for peer, _ in tags], what)
    return tags


@dataclass(frozen=True)
class ConsistencyTags(Message):
    """Key-reuse rounds (docs/protocol.md 2.7): client u's pairwise consistency tags, one for each
    neighbour v in U3, instead of a survivor signature."""
    tags: tuple[tuple[int, bytes], ...] = ()     # (peer v, tag_u->v), ascending
    TYPE: ClassVar[int] = CONSISTENCY_TAGS

    def body(self) -> bytes:
        return struct.pack("<HH", len(self.tags), 0) + _encode_tag_list(self.tags, "CONSISTENCY_TAGS")

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        return cls(sender, epoch, round_id, _counted(body, "CONSISTENCY_TAGS", _TAG_RECORD))


@dataclass(frozen=True)
class UnmaskRequestTags(Message):
    """Key-reuse rounds: the unmasking request to one client u, with the tags tag_v->u of every
    neighbour v whose CONSISTENCY_TAGS arrived, and the dropped clients (U2 minus U3)."""
    tags: tuple[tuple[int, bytes], ...] = ()     # (from v, tag_v->u), ascending
    dropped: tuple[int, ...] = ()
    TYPE: ClassVar[int] = UNMASK_REQUEST_TAGS

    def body(self) -> bytes:
        dropped = _ascending(self.dropped, "UNMASK_REQUEST_TAGS dropped")
        return (struct.pack("<HH", len(self.tags), len(dropped))
                + _encode_tag_list(self.tags, "UNMASK_REQUEST_TAGS tags")
                + struct.pack(f"<{len(dropped)}H", *dropped))

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "UNMASK_REQUEST_TAGS")
        n_tags, n_dropped = r.unpack("<HH")
        r.expect_entries(1, n_tags * CONSISTENCY_TAG_ENTRY + 2 * n_dropped)
        tags = _parse_tag_list(r, n_tags, "UNMASK_REQUEST_TAGS tags")
        dropped = _client_ids(r, n_dropped, "UNMASK_REQUEST_TAGS dropped")
        r.done()
        return cls(sender, epoch, round_id, tags, dropped)


@dataclass(frozen=True)
class GraphReveal(_OneValue, label="GRAPH_REVEAL", size=REVEAL_BYTES):
    """A client's graph seed contribution r, sent once the roster (and its commitment) is fixed."""
    reveal: bytes = b""
    TYPE: ClassVar[int] = GRAPH_REVEAL


GRAPH_SEED_ENTRY = 2 + REVEAL_BYTES   # 34: member id, reveal
_REVEAL_RECORD = struct.Struct(f"<H{REVEAL_BYTES}s")


@dataclass(frozen=True)
class GraphSeeds(Message):
    """Every roster member's reveal, relayed by the server to all of them (ascending ids)."""
    reveals: tuple[tuple[int, bytes], ...] = ()
    TYPE: ClassVar[int] = GRAPH_SEEDS

    def body(self) -> bytes:
        _ascending([cid for cid, _ in self.reveals], "GRAPH_SEEDS")
        return struct.pack("<HH", len(self.reveals), 0) + b"".join(
            struct.pack("<H", cid) + _sized(r, REVEAL_BYTES, "reveal") for cid, r in self.reveals)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        return cls(sender, epoch, round_id, _counted(body, "GRAPH_SEEDS", _REVEAL_RECORD))


@dataclass(frozen=True)
class Abort(Message):
    reason: int = ABORT_PROTOCOL_VIOLATION
    TYPE: ClassVar[int] = ABORT

    def body(self) -> bytes:
        return struct.pack("<HH", self.reason, 0)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "ABORT")
        reason, reserved = r.unpack("<HH")
        r.done()
        if reserved:
            raise MalformedMessage("ABORT: reserved field set")
        return cls(sender, epoch, round_id, reason)


MESSAGE_TYPES: dict[int, type[Message]] = {cls.TYPE: cls for cls in (
    RoundConfigMessage, AdvertiseKeys, Roster, ShareKeys, SharesRelay, MaskedInput,
    ConsistencyRequest, ConsistencySignature, UnmaskRequest, UnmaskShares, Abort, UnmaskRoundKeys,
    ConsistencyTags, UnmaskRequestTags, GraphReveal, GraphSeeds)}


# ---------------------------------------------------------------------------------- frames
@dataclass(frozen=True, eq=False)
class SignedFrame:
    """A decoded frame: the message, what its authenticator covers, and the authenticator: an
    Ed25519 signature (auth 0), a client's session tag or a server's recipient tags (auth 1)."""
    message: Message
    signed: bytes       # header || SHA-256(body)
    signature: bytes    # auth 0: 64 bytes; auth 1: empty
    auth: int = AUTH_SIGNATURE
    tag: bytes = b""                                # auth 1, client frame
    tags: tuple[tuple[int, bytes], ...] = ()        # auth 1, server frame: (recipient, tag)

    def _describe(self) -> str:
        return f"{type(self.message).__name__} from {self.message.sender}"

    def require_auth(self, auth: int) -> None:
        if self.auth != auth:
            want = "an Ed25519 signature" if auth == AUTH_SIGNATURE else "session tags"
            raise BadSignature(f"{self._describe()}: wrong authentication mode (this round expects {want})")

    def verify(self, verify_key: VerifyKey) -> Message:
        """Check the Ed25519 signature of an auth-0 frame."""
        self.require_auth(AUTH_SIGNATURE)
        try:
            verify_key.verify(self.signed, self.signature)
        except BadSignatureError:
            raise BadSignature(f"{self._describe()}: signature does not verify") from None
        return self.message

    def verify_tag(self, akey: bytes) -> Message:
        """Check a client frame's session tag (the server's side)."""
        self.require_auth(AUTH_SESSION)
        if not session.tags_equal(self.tag, session.frame_tag(akey, self.signed)):
            raise BadSignature(f"{self._describe()}: session tag does not verify")
        return self.message

    def verify_recipient(self, recipient: int, akey: bytes) -> Message:
        """Check the tag a server frame carries for `recipient` (the client's side)."""
        self.require_auth(AUTH_SESSION)
        mine = [tag for cid, tag in self.tags if cid == recipient]
        if not mine:
            raise BadSignature(f"{self._describe()}: no session tag for client {recipient}")
        if not session.tags_equal(mine[0], session.frame_tag(akey, self.signed)):
            raise BadSignature(f"{self._describe()}: session tag for client {recipient} does not verify")
        return self.message


@dataclass(frozen=True)
class FrameHeader:
    """The fields of a frame's 20-byte header (docs/protocol.md 1.6), magic and version checked."""
    type: int
    sender: int
    epoch: int
    round_id: int
    body_len: int
    auth: int = AUTH_SIGNATURE


def peek(data: bytes) -> FrameHeader:
    """The header of a frame after the checks every frame gets (length, magic, version, type,
    auth), without parsing the body or checking the authenticator. The one reader of header bytes:
    routing, topic checks and `decode_frame` all go through it."""
    if len(data) < MIN_FRAME:
        raise MalformedMessage(f"frame of {len(data)} bytes is shorter than a header and a tag")
    magic, version, mtype, sender, auth, epoch, round_id, body_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MalformedMessage(f"bad magic {magic!r}")
    if version != VERSION:
        raise UnsupportedVersion(f"protocol version {version}, this side speaks {VERSION}")
    if mtype not in MESSAGE_TYPES:
        raise MalformedMessage(f"unknown message type 0x{mtype:02x}")
    if auth not in (AUTH_SIGNATURE, AUTH_SESSION):
        raise MalformedMessage(f"unknown authentication mode {auth}")
    return FrameHeader(mtype, sender, epoch, round_id, body_len, auth)


def _recipient_tags(data: bytes, start: int, max_recipients: int) -> tuple[tuple[int, bytes], ...]:
    """The trailer of a server's tagged frame: count u16, then count x (id u16, tag 16)."""
    if len(data) < start + 2:
        raise MalformedMessage("tagged server frame: no recipient count")
    (count,) = struct.unpack_from("<H", data, start)
    if not 1 <= count <= max_recipients:
        raise MalformedMessage(f"tagged server frame: {count} recipient tags, allowed 1..{max_recipients}")
    if len(data) != start + 2 + RECIPIENT_TAG_ENTRY * count:
        raise MalformedMessage(f"frame is {len(data)} bytes, header and {count} recipient tags announce "
                               f"{start + 2 + RECIPIENT_TAG_ENTRY * count}")
    reader = _Reader(memoryview(data)[start + 2:], "recipient tags")
    tags = _parse_tag_list(reader, count, "recipient tags")
    reader.done()
    return tags


def decode_frame(data: bytes, max_body: int = MAX_BODY, max_recipients: int = 0xFFFF) -> SignedFrame:
    """Parse one frame; the signature or tag is checked later by whoever holds the key."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage("a frame is bytes")
    data = bytes(data) if not isinstance(data, bytes) else data
    head = peek(data)
    if head.body_len > max_body:
        raise MalformedMessage(f"body of {head.body_len} bytes exceeds the limit of {max_body}")
    end = HEADER_BYTES + head.body_len
    signature, tag, tags = b"", b"", ()
    if head.auth == AUTH_SIGNATURE:
        if len(data) != end + SIGNATURE_BYTES:
            raise MalformedMessage(f"frame is {len(data)} bytes, header announces {end + SIGNATURE_BYTES}")
        signature = data[end:]
    elif head.sender != SERVER_ID:
        if len(data) != end + TAG_BYTES:
            raise MalformedMessage(f"frame is {len(data)} bytes, header announces {end + TAG_BYTES}")
        tag = data[end:]
    else:
        tags = _recipient_tags(data, end, max_recipients)
    # A view, not a copy: a masked vector is parsed in place.
    body = memoryview(data)[HEADER_BYTES:end]
    message = MESSAGE_TYPES[head.type].parse(head.sender, head.epoch, head.round_id, body)
    return SignedFrame(message, signed_bytes(data[:HEADER_BYTES], body), signature, head.auth, tag, tags)


def advertise_signed_bytes(entry: RosterEntry, config_digest: bytes, epoch: int, round_id: int) -> bytes:
    """What the entry's signature covers: the rebuilt ADVERTISE_KEYS frame of that client."""
    msg = AdvertiseKeys(entry.client_id, epoch, round_id, config_digest, entry.c_pk, entry.s_pk, entry.commitment)
    body = msg.body()
    return msg.header(len(body)) + hashlib.sha256(body).digest()
