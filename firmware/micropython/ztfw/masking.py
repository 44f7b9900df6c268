"""Fixed-point encoding and masking of one update, streamed in chunks (docs/protocol.md 1.3-1.4).

Y_u = E_u + PRG(skey_u) + sum_{v > u} PRG(mkey_uv) - sum_{v < u} PRG(mkey_uv)   (mod 2^B)

The update is never copied whole: each chunk of `chunk` words is encoded from the
caller's source, the keystream of every mask is added into it, and the chunk is
handed on (to SHA-256 for the signature, then to the socket). One AES-CTR stream per
mask key advances chunk by chunk, so memory is O(chunk x masks), not O(dim).
"""
import array
import math
import struct

from ztfw import wordops
from ztfw.aes_ctr import AesCtr

try:
    import uctypes
except ImportError:
    uctypes = None

ZERO_COUNTER = bytes(16)


class EncodingError(ValueError):
    pass


def quantize(x, frac_bits, clip_q):
    """round_half_to_even(x * 2^f) clipped to [-clip_q, clip_q]; NaN and infinity refused."""
    if x != x or x in (math.inf, -math.inf):
        raise EncodingError("the update contains NaN or infinity")
    v = x * (1 << frac_bits)
    limit = clip_q + 1
    # Clip in float first (as the reference does) so huge values never become big ints.
    if v > limit:
        v = float(limit)
    elif v < -limit:
        v = -float(limit)
    q = round(v)
    if q > clip_q:
        return clip_q
    if q < -clip_q:
        return -clip_q
    return q


class MaskedStream:
    """The dim + 1 words of one client's masked input, produced chunk by chunk.

    source(start, n, out): writes the n update values starting at `start` into `out`
    (an array('f') of at least n). plus_keys / minus_keys: 16-byte mask keys added /
    subtracted (the self-mask key and the pairwise keys of larger peers are added).
    """

    def __init__(self, dim, mask_bits, frac_bits, clip_q, weight, source, plus_keys, minus_keys, chunk=256):
        if mask_bits not in (32, 64):
            raise EncodingError("mask_bits must be 32 or 64")
        if not isinstance(weight, int) or weight < 1:
            raise EncodingError("the weight must be a positive int")
        self.dim = dim
        self.words = dim + 1
        self.mask_bits = mask_bits
        self.word_bytes = mask_bits // 8
        self.frac_bits = frac_bits
        self.clip_q = clip_q
        self.weight = weight
        self.source = source
        self.plus_keys = list(plus_keys)
        self.minus_keys = list(minus_keys)
        self.chunk = chunk

    @property
    def nbytes(self):
        return self.words * self.word_bytes

    def chunks(self):
        """Yield buffers of little-endian masked words, in order, covering all dim + 1 words."""
        chunk = self.chunk
        wb = self.word_bytes
        mod = (1 << self.mask_bits) - 1
        streams = [(AesCtr(k, ZERO_COUNTER), 1) for k in self.plus_keys]
        streams += [(AesCtr(k, ZERO_COUNTER), -1) for k in self.minus_keys]
        values = array.array("f", bytes(4 * chunk))
        ks = bytearray(wb * chunk)
        raw = None
        if self.mask_bits == 32:
            acc = array.array("I", bytes(4 * chunk))
            if uctypes is not None and wordops.LITTLE:
                # A byte view of the same memory: chunks go out without a copy, and with
                # a length in bytes (len() of an array('I') view counts words).
                raw = memoryview(uctypes.bytearray_at(uctypes.addressof(acc), 4 * chunk))
        else:
            acc = [0] * chunk
        w = self.weight
        frac_bits = self.frac_bits
        clip_q = self.clip_q
        scale = float(1 << frac_bits)
        inside = float(clip_q)
        start = 0
        while start < self.words:
            n = min(chunk, self.words - start)
            n_vals = min(n, self.dim - start) if start < self.dim else 0
            if n_vals:
                self.source(start, n_vals, values)
            for i in range(n_vals):
                v = values[i] * scale
                # Fast path: strictly inside the clip range, round() needs no clipping (NaN and
                # infinity fail the comparison and take quantize(), which refuses them).
                if -inside < v < inside:
                    acc[i] = (w * round(v)) & mod
                else:
                    acc[i] = (w * quantize(values[i], frac_bits, clip_q)) & mod
            if n_vals < n:
                acc[n_vals] = w   # the last word of the vector is the weight
            view = memoryview(ks)[:wb * n]
            for stream, sign in streams:
                stream.readinto(view)
                if self.mask_bits == 32:
                    if sign > 0:
                        wordops.add32(acc, ks, n)
                    else:
                        wordops.sub32(acc, ks, n)
                else:
                    wordops.add64(acc, ks, n, sign)
            if raw is not None:
                yield raw[:4 * n]
            elif self.mask_bits == 32:
                yield struct.pack("<%dI" % n, *acc[:n])
            else:
                yield struct.pack("<%dQ" % n, *acc[:n])
            start += n
