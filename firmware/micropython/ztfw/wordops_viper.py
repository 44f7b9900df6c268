"""32-bit word arithmetic compiled by the viper emitter: native wrap-around, no heap.

Kept as source in the bundle: the board compiles it to native code at import.
"""
import micropython


@micropython.viper
def add32(dst, src, n: int):
    d = ptr32(dst)
    s = ptr32(src)
    for i in range(n):
        d[i] = d[i] + s[i]


@micropython.viper
def sub32(dst, src, n: int):
    d = ptr32(dst)
    s = ptr32(src)
    for i in range(n):
        d[i] = d[i] - s[i]


@micropython.viper
def ctr_fill(blocks, n: int):
    """AES-CTR counter blocks: blocks 1..n-1 become block 0 with its low 32-bit big-endian
    counter word plus i (the caller makes sure no carry leaves the low word)."""
    b = ptr8(blocks)
    c = (uint(b[12]) << 24) | (uint(b[13]) << 16) | (uint(b[14]) << 8) | uint(b[15])
    i = 1
    while i < n:
        o = 16 * i
        j = 0
        while j < 12:
            b[o + j] = b[j]
            j += 1
        v = c + uint(i)
        b[o + 12] = v >> 24
        b[o + 13] = v >> 16
        b[o + 14] = v >> 8
        b[o + 15] = v
        i += 1
