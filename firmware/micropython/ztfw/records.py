"""The device's feature records: a flash file read row by row, never loaded whole.

Format ZTRC v1 (little-endian): magic "ZTRC", u8 version, u16 n_features, u32 n_rows,
then n_rows x (u8 label, n_features x u8 q) with q = the int8 input quantisation
clamp(floor(x * 127 + 0.5), 0, 127) of the encoded row (docs/models.md).
"""
import array
import struct

MAGIC = b"ZTRC"
HEAD = "<4sBHI"
HEAD_BYTES = 11


class RecordsError(ValueError):
    pass


class Records:
    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
            if len(head) != HEAD_BYTES:
                raise RecordsError("records file shorter than its header")
            magic, version, self.n_features, self.n_rows = struct.unpack(HEAD, head)
            if magic != MAGIC or version != 1:
                raise RecordsError("not a ZTRC v1 records file")
            if self.n_features == 0:
                raise RecordsError("records without features")
            f.seek(0, 2)
            size = f.tell()
        self.row_bytes = 1 + self.n_features
        if size != HEAD_BYTES + self.n_rows * self.row_bytes:
            raise RecordsError("records file is %d bytes, header announces %d"
                               % (size, HEAD_BYTES + self.n_rows * self.row_bytes))

    def __len__(self):
        return self.n_rows

    def rows(self, start=0, count=None):
        """Yield (label, q bytes) for rows start.. (wrapping), `count` of them (default all)."""
        if self.n_rows == 0:
            return
        count = self.n_rows if count is None else count
        buf = bytearray(self.row_bytes)
        with open(self.path, "rb") as f:
            i = start % self.n_rows
            f.seek(HEAD_BYTES + i * self.row_bytes)
            for _ in range(count):
                if f.readinto(buf) != self.row_bytes:
                    raise RecordsError("records file truncated at row %d" % i)
                yield buf[0], bytes(buf[1:])
                i += 1
                if i == self.n_rows:
                    i = 0
                    f.seek(HEAD_BYTES)


def dequantise(q, out):
    """The float row the int8 input stands for (q / 127), into array('f') `out`."""
    for i in range(len(q)):
        out[i] = q[i] / 127.0
    return out


def float_row(n):
    return array.array("f", bytes(4 * n))
