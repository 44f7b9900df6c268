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
