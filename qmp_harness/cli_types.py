"""Argument types for the command lines of ``benchmarks/`` and other small tools.

argparse calls a ``type=`` function on each value and turns its ``ArgumentTypeError`` into one
line naming the flag (exit status 2), before anything runs. These types give the benchmarks the
refusals the training scripts already have, where a zero or a typo used to surface as a
``ZeroDivisionError`` or a Gymnasium traceback after minutes of work.

>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> _ = parser.add_argument("--steps", type=at_least(1))
>>> parser.parse_args(["--steps", "3000"]).steps
3000
>>> at_least(1)("0")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: must be an integer >= 1, got '0'
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from qmp_envs.suites import SUITES


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (``1e4`` and ``10_000`` are accepted).

    Args:
        minimum: the smallest value allowed.

    Returns:
        A function from the flag's text to its int.

    Raises:
        argparse.ArgumentTypeError: (from the returned function) for text that is not a whole
            number, or a number below ``minimum``.
    """

    def parse(text: str) -> int:
        try:
            value = float(text.replace("_", ""))
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value.is_integer() and value >= minimum):
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return int(value)

    parse.__name__ = f"integer >= {minimum}"  # what argparse names in its messages
    return parse


def positive_real(text: str) -> float:
    """An argparse type: a finite number > 0.

    Args:
        text: the flag's text.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: for text that is not a number, or one that is NaN, inf or
            not above 0.
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def qmp_env_id(text: str) -> str:
    """An argparse type: the id of one of the toolkit's suites (``qmp/...``).

    Args:
        text: the flag's text.

    Returns:
        The id, unchanged.

    Raises:
        argparse.ArgumentTypeError: for an id that is not one of ``qmp_envs.suites.SUITES``,
            with the ids that are.
    """
    if text not in SUITES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a qmp suite; registered ids are {', '.join(SUITES)}"
        )
    return text
