"""In-place word arithmetic mod 2^32 / 2^64 over buffers (array or bytearray).

32-bit: viper when the port has it (ESP32, unix), plain Python otherwise; both give
the same words. 64-bit words (not used by firmware cohorts, kept for conformance)
use plain Python.
"""
import array
import sys

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
LITTLE = sys.byteorder == "little"


def _add32_py(dst, src, n):
    a = dst if isinstance(dst, array.array) else memoryview(dst)
    s = array.array("I", bytes(src[:4 * n])) if not isinstance(src, array.array) else src
    for i in range(n):
        a[i] = (a[i] + s[i]) & _M32


def _sub32_py(dst, src, n):
    s = array.array("I", bytes(src[:4 * n])) if not isinstance(src, array.array) else src
    for i in range(n):
        dst[i] = (dst[i] - s[i]) & _M32


try:
    from ztfw.wordops_viper import add32 as _add32_fast, sub32 as _sub32_fast
    HAVE_VIPER = True
except (ImportError, SyntaxError, ValueError):
    _add32_fast = _sub32_fast = None
    HAVE_VIPER = False

_use_fast = HAVE_VIPER


def use_viper(flag):
    """Select the viper (True) or plain-Python (False) 32-bit path; tests compare both."""
    global _use_fast
    _use_fast = bool(flag) and HAVE_VIPER


def add32(dst, src, n):
    """dst[i] += src[i] (mod 2^32) for i < n; dst is array('I'), src holds n little-endian words."""
    if _use_fast and LITTLE:
        _add32_fast(dst, src, n)
    else:
        _add32_py(dst, src, n)


def sub32(dst, src, n):
    if _use_fast and LITTLE:
        _sub32_fast(dst, src, n)
    else:
        _sub32_py(dst, src, n)


def add64(dst, src, n, sign):
    """dst: list of ints; src: n little-endian 8-byte words; adds sign * src mod 2^64."""
    for i in range(n):
        w = int.from_bytes(bytes(src[8 * i:8 * i + 8]), "little")
        dst[i] = (dst[i] + w) & _M64 if sign > 0 else (dst[i] - w) & _M64
