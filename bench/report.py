"""The one way benchmarks and experiments print what they measured.

`--json`: one JSON object on one line (what scripts and the docs' tables read). Without it: the
command's own text view when it has one, else the same object indented for a person.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Callable


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def emit(report: dict, as_json: bool, text: Callable[[dict], str] | None = None, file=None) -> None:
    out = file or sys.stdout
    if as_json:
        print(json.dumps(report), file=out)
    elif text is not None:
        print(text(report), file=out)
    else:
        print(json.dumps(report, indent=1), file=out)


def process_clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): the clock the in-process round simulator takes."""
    return time.perf_counter(), time.process_time()


def key_value_lines(width: int) -> Callable[[dict], str]:
    """A text view: one `key  value` line per top-level entry."""
    return lambda report: "\n".join(f"{key:{width}s} {value}" for key, value in report.items())
