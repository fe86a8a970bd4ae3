"""argparse value types shared by the subcommands: numbers checked at parse time, with a clear message."""

from __future__ import annotations

import argparse
import math


def number(cast, test, what: str):
    """An argparse type: ``cast(text)`` that must pass ``test``, else "expected WHAT, got TEXT"."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = number(int, lambda v: v > 0, "an integer > 0")
non_negative_int = number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = number(float, lambda v: v > 0 and math.isfinite(v), "a number > 0")
non_negative_float = number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
