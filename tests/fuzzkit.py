"""Hypothesis strategies shared by the fuzz tests: valid seeds edited in place, raw bytes, and a
check that a decoder refusing a buffer allocated no more than a small multiple of its size."""
from __future__ import annotations

import tracemalloc

from hypothesis import strategies as st

from ztfl.bench.fuzz_targets import Target


@st.composite
def edited(draw, seeds: list[bytes]) -> bytes:
    """One of `seeds` with 1-4 edits; each edit overwrites, inserts or deletes at a position."""
    buf = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(buf)))
        kind = draw(st.sampled_from(("overwrite", "insert", "delete", "truncate")))
        if kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            buf[pos:pos + len(chunk)] = chunk
        elif kind == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del buf[pos:pos + draw(st.integers(1, 16))]
        else:
            del buf[pos:]
    return bytes(buf)


def inputs_for(target: Target):
    return st.one_of(edited(target.seeds()), st.binary(max_size=512))


def decode_typed(target: Target, data: bytes):
    """Decode; a refusal must be one of the target's error classes (anything else propagates)."""
    try:
        return target.decode(data)
    except target.errors as exc:
        return exc


def peak_allocation(fn, *args) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn(*args)
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
