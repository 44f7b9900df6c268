"""Client side of distributed DP: L2 clipping and integer Skellam noise in the fixed-point domain.

No accountant here, so it runs in the agent. The noise is Skellam: Poisson(m) minus Poisson(m)
per coordinate, variance 2m, integer-valued and closed under addition, so the sum of the clients'
noise inside the secure aggregate is again Skellam. Every sample is exact and comes from a
cryptographic source (privacy.sampling): the operating system's CSPRNG unless a keyed stream is
given (tests, benchmarks).
"""
from __future__ import annotations

import numpy as np

from ztfl.privacy.params import DpParams
from ztfl.privacy.sampling import skellam


def clip_l2(update, clip_norm: float) -> np.ndarray:
    """The update scaled down, if needed, to L2 norm at most clip_norm (float64)."""
    x = np.asarray(update, dtype=np.float64).ravel()
    if not np.isfinite(x).all():
        raise ValueError("the update contains NaN or infinity")
    norm = float(np.linalg.norm(x))
    if norm > clip_norm:
        x = x * (clip_norm / norm)
    return x


def skellam_noise(size: int, poisson_mean: int, source=None) -> np.ndarray:
    """Exact symmetric Skellam samples (int64), Poisson(poisson_mean) - Poisson(poisson_mean):
    variance 2 poisson_mean. `source`: privacy.sampling.KeyedWords for reproducible noise; the
    operating system's CSPRNG if None."""
    return skellam(size, poisson_mean, source)


def add_noise(encoded_vector, params: DpParams, source=None) -> np.ndarray:
    """Add this client's share of the noise to an encoded input (the dim + 1 words of
    `protocol.fixedpoint.encode`, weight last, weight 1). Returns int64 words: the protocol's
    `ClientSession.set_encoded_input` reduces them modulo 2^B (negative values wrap as they
    must). The weight word is left alone. The noise has variance 2 * params.poisson_mean, which
    is params.noise_variance for parameters taken from a round configuration."""
    words = np.asarray(encoded_vector)
    if words.ndim != 1 or words.size != params.dim + 1:
        raise ValueError(f"expected {params.dim + 1} encoded words (dim + weight), got shape {words.shape}")
    if words.dtype.kind not in "iu":
        raise ValueError(f"encoded words must be integers, got {words.dtype}")
    if int(words[-1]) != 1:
        raise ValueError("distributed DP sums unweighted updates: the weight word must be 1")
    if isinstance(source, np.random.Generator):
        raise TypeError("the noise needs a cryptographic source (privacy.sampling), not a numpy Generator")
    signed = words.astype(np.int64)
    if words.dtype == np.uint32:     # two's-complement reading of the 32-bit words
        signed = words.view(np.int32).astype(np.int64)
    out = signed.copy()
    out[:-1] += skellam_noise(params.dim, params.poisson_mean, source)
    return out
