"""HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869): the port has no hmac module."""
import hashlib

_BLOCK = 64


def hmac_sha256(key, message):
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    inner = hashlib.sha256(ipad)
    inner.update(message)
    outer = hashlib.sha256(opad)
    outer.update(inner.digest())
    return outer.digest()


def hkdf_extract(salt, ikm):
    if not salt:
        salt = bytes(32)
    return hmac_sha256(salt, ikm)


def hkdf_expand(prk, info, length):
    if length > 255 * 32:
        raise ValueError("HKDF-SHA256 output is at most 8160 bytes")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes((counter,)))
        out.extend(block)
        counter += 1
    return bytes(out[:length])


def hkdf(ikm, salt, info, length):
    return hkdf_expand(hkdf_extract(salt, ikm), info, length)
