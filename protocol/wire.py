"""The versioned binary wire format (docs/protocol.md, 1.6).

frame = header (20 bytes, little-endian) || body || Ed25519 signature (64 bytes)
signed bytes = header || SHA-256(body)

Every message is a dataclass carrying the header fields (sender, epoch, round_id) and its own
body fields; `encode(signing_key)` gives the frame and `decode_frame(data)` parses one. Decoders
check every size against the bytes at hand before building anything, consume the body exactly,
and raise MalformedMessage (or UnsupportedVersion) on any deviation.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from protocol.config import MAX_DIM, RoundConfig
from protocol.errors import BadSignature, ConfigurationError, MalformedMessage, UnsupportedVersion
from protocol.prg import word_dtype
from protocol.shamir import PRIME, SHARE_BYTES

MAGIC = b"ZS"
VERSION = 1
HEADER = struct.Struct("<2sBBHHIII")   # magic, version, type, sender, reserved, epoch, round, body_len
HEADER_BYTES = HEADER.size             # 20
SIGNATURE_BYTES = 64
KEY_BYTES = 32
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


# ---------------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class Message:
    sender: int
    epoch: int
    round_id: int
    TYPE: ClassVar[int] = 0

    def body(self) -> bytes:
        raise MalformedMessage(f"{type(self).__name__} has no body encoder")

    def header(self, body_len: int) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.TYPE, self.sender, 0, self.epoch, self.round_id, body_len)

    def encode(self, signing_key: SigningKey) -> bytes:
        body = self.body()
        head = self.header(len(body))
        signature = signing_key.sign(head + hashlib.sha256(body).digest()).signature
        return head + body + signature


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


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    config_digest: bytes = b""
    c_pk: bytes = b""
    s_pk: bytes = b""
    TYPE: ClassVar[int] = ADVERTISE_KEYS

    def body(self) -> bytes:
        return (_sized(self.config_digest, 32, "config_digest") + _sized(self.c_pk, KEY_BYTES, "c_pk")
                + _sized(self.s_pk, KEY_BYTES, "s_pk"))

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "ADVERTISE_KEYS")
        msg = cls(sender, epoch, round_id, r.take(32), r.take(KEY_BYTES), r.take(KEY_BYTES))
        r.done()
        return msg


@dataclass(frozen=True)
class RosterEntry:
    client_id: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes


ROSTER_ENTRY = 2 + 2 * KEY_BYTES + SIGNATURE_BYTES   # 130


@dataclass(frozen=True)
class Roster(Message):
    entries: tuple[RosterEntry, ...] = ()
    TYPE: ClassVar[int] = ROSTER

    def body(self) -> bytes:
        _ascending([e.client_id for e in self.entries], "ROSTER")
        parts = [struct.pack("<HH", len(self.entries), 0)]
        for e in self.entries:
            parts.append(struct.pack("<H", e.client_id) + _sized(e.c_pk, KEY_BYTES, "c_pk")
                         + _sized(e.s_pk, KEY_BYTES, "s_pk") + _sized(e.signature, SIGNATURE_BYTES, "signature"))
        return b"".join(parts)

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "ROSTER")
        count, reserved = r.unpack("<HH")
        if reserved:
            raise MalformedMessage("ROSTER: reserved field set")
        r.expect_entries(count, ROSTER_ENTRY)
        entries = []
        for _ in range(count):
            (cid,) = r.unpack("<H")
            entries.append(RosterEntry(cid, r.take(KEY_BYTES), r.take(KEY_BYTES), r.take(SIGNATURE_BYTES)))
        r.done()
        _ascending([e.client_id for e in entries], "ROSTER")
        return cls(sender, epoch, round_id, tuple(entries))

    def digest(self) -> bytes:
        return hashlib.sha256(self.body()).digest()


@dataclass(frozen=True)
class EncryptedShare:
    peer: int            # recipient in SHARE_KEYS, sender in SHARES_RELAY
    ciphertext: bytes    # nonce (24) || AEAD output (82)


SHARE_ENTRY = 2 + CIPHERTEXT_BYTES   # 108


def _encode_shares(shares, what: str) -> bytes:
    _ascending([s.peer for s in shares], what)
    return struct.pack("<HH", len(shares), 0) + b"".join(
        struct.pack("<H", s.peer) + _sized(s.ciphertext, CIPHERTEXT_BYTES, "ciphertext") for s in shares)


def _parse_shares(body: bytes, what: str) -> tuple[EncryptedShare, ...]:
    r = _Reader(body, what)
    count, reserved = r.unpack("<HH")
    if reserved:
        raise MalformedMessage(f"{what}: reserved field set")
    r.expect_entries(count, SHARE_ENTRY)
    shares = []
    for _ in range(count):
        (peer,) = r.unpack("<H")
        shares.append(EncryptedShare(peer, r.take(CIPHERTEXT_BYTES)))
    r.done()
    _ascending([s.peer for s in shares], what)
    return tuple(shares)


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
class ConsistencySignature(Message):
    signature: bytes = b""
    TYPE: ClassVar[int] = CONSISTENCY_SIGNATURE

    def body(self) -> bytes:
        return _sized(self.signature, SIGNATURE_BYTES, "signature")

    @classmethod
    def parse(cls, sender, epoch, round_id, body):
        r = _Reader(body, "CONSISTENCY_SIGNATURE")
        msg = cls(sender, epoch, round_id, r.take(SIGNATURE_BYTES))
        r.done()
        return msg


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
        sigs = []
        for _ in range(n_sigs):
            (cid,) = r.unpack("<H")
            sigs.append((cid, r.take(SIGNATURE_BYTES)))
        _ascending([cid for cid, _ in sigs], "UNMASK_REQUEST signatures")
        dropped = _client_ids(r, n_dropped, "UNMASK_REQUEST dropped")
        r.done()
        return cls(sender, epoch, round_id, tuple(sigs), dropped)


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
            entries = []
            for _ in range(count):
                (owner,) = r.unpack("<H")
                y = r.take(SHARE_BYTES)
                if int.from_bytes(y, "little") >= PRIME:
                    raise MalformedMessage("UNMASK_SHARES: share value outside the field")
                entries.append((owner, y))
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
        shares = []
        for _ in range(n_b):
            (owner,) = r.unpack("<H")
            y = r.take(SHARE_BYTES)
            if int.from_bytes(y, "little") >= PRIME:
                raise MalformedMessage("UNMASK_ROUND_KEYS: share value outside the field")
            shares.append((owner, y))
        keys = []
        for _ in range(n_k):
            (peer,) = r.unpack("<H")
            keys.append((peer, r.take(ROUND_KEY_BYTES)))
        r.done()
        _ascending([o for o, _ in shares], "UNMASK_ROUND_KEYS self-mask")
        _ascending([d for d, _ in keys], "UNMASK_ROUND_KEYS round keys")
        return cls(sender, epoch, round_id, tuple(shares), tuple(keys))


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
    ConsistencyRequest, ConsistencySignature, UnmaskRequest, UnmaskShares, Abort, UnmaskRoundKeys)}


# ---------------------------------------------------------------------------------- frames
@dataclass(frozen=True, eq=False)
class SignedFrame:
    """A decoded frame: the message, plus what its signature covers."""
    message: Message
    signed: bytes       # header || SHA-256(body)
    signature: bytes

    def verify(self, verify_key: VerifyKey) -> Message:
        try:
            verify_key.verify(self.signed, self.signature)
        except BadSignatureError:
            raise BadSignature(f"{type(self.message).__name__} from {self.message.sender}: "
                               "signature does not verify") from None
        return self.message


@dataclass(frozen=True)
class FrameHeader:
    type: int
    sender: int
    epoch: int
    round_id: int
    body_len: int


def peek(data: bytes) -> FrameHeader:
    """The header of a frame, for routing, without parsing the body or checking the signature."""
    if len(data) < HEADER_BYTES + SIGNATURE_BYTES:
        raise MalformedMessage(f"frame of {len(data)} bytes is shorter than header and signature")
    magic, version, mtype, sender, reserved, epoch, round_id, body_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MalformedMessage(f"bad magic {magic!r}")
    if version != VERSION:
        raise UnsupportedVersion(f"protocol version {version}, this side speaks {VERSION}")
    if mtype not in MESSAGE_TYPES:
        raise MalformedMessage(f"unknown message type 0x{mtype:02x}")
    return FrameHeader(mtype, sender, epoch, round_id, body_len)


def decode_frame(data: bytes, max_body: int = MAX_BODY) -> SignedFrame:
    """Parse one frame; the signature is checked later by whoever knows the sender's key."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessage("a frame is bytes")
    data = bytes(data) if not isinstance(data, bytes) else data
    if len(data) < HEADER_BYTES + SIGNATURE_BYTES:
        raise MalformedMessage(f"frame of {len(data)} bytes is shorter than header and signature")
    magic, version, mtype, sender, reserved, epoch, round_id, body_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise MalformedMessage(f"bad magic {magic!r}")
    if version != VERSION:
        raise UnsupportedVersion(f"protocol version {version}, this side speaks {VERSION}")
    cls = MESSAGE_TYPES.get(mtype)
    if cls is None:
        raise MalformedMessage(f"unknown message type 0x{mtype:02x}")
    if reserved:
        raise MalformedMessage("reserved header field set")
    if body_len > max_body:
        raise MalformedMessage(f"body of {body_len} bytes exceeds the limit of {max_body}")
    if len(data) != HEADER_BYTES + body_len + SIGNATURE_BYTES:
        raise MalformedMessage(f"frame is {len(data)} bytes, header announces "
                               f"{HEADER_BYTES + body_len + SIGNATURE_BYTES}")
    # A view, not a copy: a masked vector is parsed in place.
    body = memoryview(data)[HEADER_BYTES:HEADER_BYTES + body_len]
    message = cls.parse(sender, epoch, round_id, body)
    signed = data[:HEADER_BYTES] + hashlib.sha256(body).digest()
    return SignedFrame(message, signed, data[HEADER_BYTES + body_len:])


def advertise_signed_bytes(entry: RosterEntry, config_digest: bytes, epoch: int, round_id: int) -> bytes:
    """What the entry's signature covers: the rebuilt ADVERTISE_KEYS frame of that client."""
    msg = AdvertiseKeys(entry.client_id, epoch, round_id, config_digest, entry.c_pk, entry.s_pk)
    body = msg.body()
    return msg.header(len(body)) + hashlib.sha256(body).digest()
