"""Writes the conformance vectors (tests/vectors/*.json) that protocol.vectors computes.

    python -m ztfl.bench.vectors [OUTDIR]      (default: tests/vectors of this checkout)
"""
from __future__ import annotations

import sys
from pathlib import Path

from ztfl.protocol.vectors import build

OUT = Path(__file__).resolve().parents[1] / "tests" / "vectors"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else OUT
    out.mkdir(parents=True, exist_ok=True)
    for name, text in build().items():
        (out / name).write_text(text)
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
