"""The mask generator: AES-128-CTR keystream read as little-endian words (docs/protocol.md, 1.3).

Counter block: 128-bit big-endian, starting at 0. Words: uint32 or uint64, little-endian.
Keystreams are written into caller-owned buffers so a round allocates once per vector, not
once per peer.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ZERO_COUNTER = bytes(16)
WORD_DTYPES = {32: np.dtype("<u4"), 64: np.dtype("<u8")}


def word_dtype(mask_bits: int) -> np.dtype:
    try:
        return WORD_DTYPES[mask_bits]
    except KeyError:
        raise ValueError(f"mask_bits must be 32 or 64, not {mask_bits!r}") from None


def keystream(key16: bytes, nbytes: int) -> bytes:
    """`nbytes` of AES-128-CTR keystream (encryption of zeros). Small sizes only: vectors, graph."""
    if len(key16) != 16:
        raise ValueError("the mask generator key is 16 bytes (AES-128)")
    enc = Cipher(algorithms.AES(key16), modes.CTR(ZERO_COUNTER)).encryptor()
    return enc.update(bytes(nbytes)) + enc.finalize()


class MaskGenerator:
    """Expands 16-byte keys into mask vectors of a fixed length and word size.

    One instance per vector shape; it owns a zero input buffer and an output buffer so
    expanding a mask costs one AES pass and no allocation.
    """

    def __init__(self, nwords: int, mask_bits: int):
        self.dtype = word_dtype(mask_bits)
        self.nwords = nwords
        self.nbytes = nwords * self.dtype.itemsize
        self._zeros = bytes(self.nbytes)
        # update_into needs room for one extra block minus one byte.
        self._out = bytearray(self.nbytes + 15)
        self._view = np.frombuffer(self._out, dtype=np.uint8)[: self.nbytes].view(self.dtype)

    def expand(self, key16: bytes) -> np.ndarray:
        """The mask for `key16`, as a read-only view valid until the next call."""
        if len(key16) != 16:
            raise ValueError("the mask generator key is 16 bytes (AES-128)")
        enc = Cipher(algorithms.AES(key16), modes.CTR(ZERO_COUNTER)).encryptor()
        enc.update_into(self._zeros, self._out)
        return self._view

    def add(self, acc: np.ndarray, key16: bytes) -> None:
        np.add(acc, self.expand(key16), out=acc)

    def subtract(self, acc: np.ndarray, key16: bytes) -> None:
        np.subtract(acc, self.expand(key16), out=acc)


def mask(key16: bytes, nwords: int, mask_bits: int) -> np.ndarray:
    """A fresh copy of one mask vector."""
    return MaskGenerator(nwords, mask_bits).expand(key16).copy()


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def apply_masks(acc: np.ndarray, add_keys: Sequence[bytes], subtract_keys: Sequence[bytes],
                mask_bits: int, workers: int = 1) -> None:
    """acc += sum of masks(add_keys) - sum of masks(subtract_keys), modulo 2^B, in place.

    With workers > 1 the keys are split over threads (AES-CTR and numpy release the GIL), each
    summing into its own buffer; addition mod 2^B is commutative, so the result is identical.
    """
    jobs = [(k, True) for k in add_keys] + [(k, False) for k in subtract_keys]
    workers = max(1, min(workers, len(jobs) // 2))

    def run(chunk, target):
        gen = MaskGenerator(target.size, mask_bits)
        for key, plus in chunk:
            (gen.add if plus else gen.subtract)(target, key)

    if workers == 1:
        run(jobs, acc)
        return
    chunks = [jobs[i::workers] for i in range(workers)]
    partials = [np.zeros_like(acc) for _ in chunks[1:]]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run, chunks[0], acc)]
        futures += [pool.submit(run, chunk, part) for chunk, part in zip(chunks[1:], partials)]
        for f in futures:
            f.result()
    for part in partials:
        np.add(acc, part, out=acc)
