"""Fixed-point encoding of weighted updates into Z_2^B (docs/protocol.md, 1.4).

q = round-half-to-even(x * 2^f), clipped to [-clip_q, clip_q], multiplied by the integer weight,
reduced mod 2^B; the weight itself is appended as the last word. The configuration check that
no sum can wrap lives in protocol.config.
"""
from __future__ import annotations

import numpy as np

from ztfl.protocol.prg import word_dtype


def quantize(values: np.ndarray, frac_bits: int, clip_q: int) -> np.ndarray:
    """Signed int64 fixed-point values, clipped. NaN and infinity are refused."""
    x = np.asarray(values).ravel()
    scaled = np.multiply(x, float(2**frac_bits), dtype=np.float64)
    if not np.isfinite(scaled).all():
        raise ValueError("the update contains NaN or infinity (or overflows float64)")
    if clip_q <= 1 << 53:
        # The bounds are integers exactly representable in float64, so clipping before rounding
        # gives the same result as rounding then clipping, in fewer passes.
        np.minimum(scaled, float(clip_q), out=scaled)
        np.maximum(scaled, -float(clip_q), out=scaled)
        np.rint(scaled, out=scaled)
        return scaled.astype(np.int64)
    limit = float(clip_q)
    np.minimum(scaled, limit, out=scaled)
    np.maximum(scaled, -limit, out=scaled)
    q = np.rint(scaled).astype(np.int64)
    np.clip(q, -clip_q, clip_q, out=q)
    return q


def encode(values: np.ndarray, weight: int, frac_bits: int, clip_q: int,
           mask_bits: int) -> np.ndarray:
    """The dim + 1 words (weighted update, then the weight) in the mask dtype."""
    if not isinstance(weight, (int, np.integer)) or isinstance(weight, bool) or weight < 1:
        raise ValueError(f"the weight must be a positive int, got {weight!r}")
    dtype = word_dtype(mask_bits)
    q = quantize(values, frac_bits, clip_q)
    out = np.empty(q.size + 1, dtype=dtype)
    # w*q fits int64 by the configuration check; the cast to unsigned is the reduction mod 2^B.
    if weight != 1:
        np.multiply(q, np.int64(weight), out=q)
    out[:-1] = q.astype(dtype)  # integer cast wraps: this is the reduction mod 2^B
    out[-1] = weight
    return out


def to_signed(total: np.ndarray, mask_bits: int) -> np.ndarray:
    """Two's-complement reading of totals mod 2^B, widened to int64."""
    signed = np.int32 if mask_bits == 32 else np.int64
    return np.asarray(total).view(signed).astype(np.int64)


def decode_sum(total: np.ndarray, mask_bits: int) -> tuple[np.ndarray, int]:
    """(sum of w*q per element as int64, total weight) from the unmasked total vector."""
    total = np.asarray(total)
    return to_signed(total[:-1], mask_bits), int(total[-1])


def weighted_mean(total: np.ndarray, mask_bits: int, frac_bits: int) -> np.ndarray:
    sums, weight = decode_sum(total, mask_bits)
    if weight <= 0:
        raise ValueError("the total weight is zero")
    return sums.astype(np.float64) / (float(2**frac_bits) * weight)
