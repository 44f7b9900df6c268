"""AES-CTR keystream over the port's cryptolib ECB (which has no CTR mode).

The counter block is the 16-byte initial block read as one 128-bit big-endian
integer, incremented per block: the same as `cryptography`'s modes.CTR. Keystream
is produced into caller-owned buffers in chunks so no whole-vector copy is made.
"""
try:
    from cryptolib import aes as _aes
except ImportError:
    _aes = None

try:
    from ztfw.wordops_viper import ctr_fill as _ctr_fill
except (ImportError, SyntaxError, ValueError):
    _ctr_fill = None

_ECB = 1
_use_cryptolib = _aes is not None
_use_viper = _ctr_fill is not None


def use_cryptolib(flag):
    """Select the port's cryptolib (True) or the pure fallback (False); tests compare both."""
    global _use_cryptolib
    _use_cryptolib = bool(flag) and _aes is not None


def use_viper(flag):
    """Counter blocks written in viper (True) or in Python (False); tests compare both."""
    global _use_viper
    _use_viper = bool(flag) and _ctr_fill is not None
_CHUNK_BLOCKS = 32
_M128 = (1 << 128) - 1


class AesCtr:
    def __init__(self, key, initial_block):
        if len(key) not in (16, 32):
            raise ValueError("AES key must be 16 or 32 bytes")
        if len(initial_block) != 16:
            raise ValueError("CTR initial block must be 16 bytes")
        if _use_cryptolib:
            self._encrypt = _aes(key, _ECB).encrypt
        else:
            from ztfw.aes_pure import AesEcb
            self._encrypt = AesEcb(key).encrypt
        self._counter = int.from_bytes(initial_block, "big")
        self._blocks = bytearray(16 * _CHUNK_BLOCKS)
        self._stream = bytearray(16 * _CHUNK_BLOCKS)
        self._pos = len(self._stream)

    def _refill(self):
        blocks = self._blocks
        c = self._counter
        low = c & 0xFFFFFFFF
        if low + _CHUNK_BLOCKS <= 0xFFFFFFFF:
            # Fast path: only the low 32 bits change within this chunk (in Python, these
            # blocks cost more than encrypting them).
            blocks[0:16] = c.to_bytes(16, "big")
            if _use_viper:
                _ctr_fill(blocks, _CHUNK_BLOCKS)
            else:
                for i in range(1, _CHUNK_BLOCKS):
                    blocks[16 * i:16 * i + 12] = blocks[0:12]
                    blocks[16 * i + 12:16 * i + 16] = (low + i).to_bytes(4, "big")
        else:
            for i in range(_CHUNK_BLOCKS):
                blocks[16 * i:16 * i + 16] = ((c + i) & _M128).to_bytes(16, "big")
        self._counter = (c + _CHUNK_BLOCKS) & _M128
        self._encrypt(blocks, self._stream)
        self._pos = 0

    def readinto(self, buf):
        """Fill `buf` (bytearray or memoryview) with the next len(buf) keystream bytes."""
        n = len(buf)
        done = 0
        stream = self._stream
        while done < n:
            if self._pos == len(stream):
                self._refill()
            take = min(n - done, len(stream) - self._pos)
            buf[done:done + take] = stream[self._pos:self._pos + take]
            self._pos += take
            done += take

    def read(self, n):
        out = bytearray(n)
        self.readinto(out)
        return bytes(out)
