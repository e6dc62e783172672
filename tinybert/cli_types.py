"""Flag checks shared by train.py and eval.py: argparse `type=` validators and a parser with one-line errors.

A bad number is refused while the flags are parsed, before any data is read or any folder is made, with one line
that names the flag and what it expects, e.g.

    train.py: error: argument --lr: expected a finite number > 0, got 'nan'

and exit code 2 (argparse's code for usage errors). Each validator takes the flag's text and returns the value.
"""

from __future__ import annotations

import argparse
import math
import sys

MIN_SEQUENCE = 3  # [CLS], [SEP] and one real token (the masked one in pre-training, the text in fine-tuning)
MAX_SEED = 999_999  # see `seed`


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line ("prog: error: ... (see --help)") instead of the whole usage
    block above it: with forty flags the usage block hides the line that matters."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def int_at_least(minimum: int, why: str = ""):
    """A validator for integers >= minimum; `why` explains the bound in the error message."""
    what = f"an integer >= {minimum}" + (f" ({why})" if why else "")

    def check(text: str) -> int:
        value = _number(text, int, what)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    check.__name__ = f"int>={minimum}"  # argparse names the type in some messages
    return check


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)
sequence_length = int_at_least(MIN_SEQUENCE, "room for [CLS], [SEP] and one token")


def seed_int(text: str) -> int:
    """0 <= seed <= MAX_SEED: the mask and batch-order generators are seeded with seed * ~1e12 + ..., which must
    fit in 64 bits (a larger seed would fail mid-run, after the run folder was made)."""
    what = f"an integer from 0 to {MAX_SEED}"
    value = _number(text, int, what)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def finite_float(text: str, what: str) -> float:
    value = _number(text, float, what)
    if not math.isfinite(value):  # float() accepts 'nan' and 'inf'; no setting here means either
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def finite_positive_float(text: str) -> float:
    what = "a finite number > 0"
    value = finite_float(text, what)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def finite_nonnegative_float(text: str) -> float:
    what = "a finite number >= 0"
    value = finite_float(text, what)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def probability(text: str) -> float:
    """Strictly between 0 and 1 (e.g. --mlm-prob: 0 masks nothing, 1 leaves nothing to read)."""
    what = "a number between 0 and 1, both excluded"
    value = finite_float(text, what)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def dropout_rate(text: str) -> float:
    """In [0, 1): dropout 1 would zero every activation."""
    what = "a number >= 0 and < 1"
    value = finite_float(text, what)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value
