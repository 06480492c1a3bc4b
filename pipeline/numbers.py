"""Numbers a user gives (a CLI flag or a page widget), checked in the function both call: one sentence each.

A command line gives ints and floats; a page or a script may pass NaN, infinity, a fraction where a
count is wanted, a bool or text. Each is refused here with the flag's name and the allowed range,
before it can become a traceback deep inside numpy, a pool of a million workers or a negative seed.
"""
from __future__ import annotations

import math
import numbers

from pipeline.cli import UserError

SEED_MAX = 2**32 - 1      # numpy's classic seed range; every seeded step accepts it
WORKERS_MAX = 256         # processes or threads of one step


def whole(value, name: str, low: int, high: int, hint: str = "") -> int:
    """``value`` as an ``int`` in ``[low, high]``.

    Raises:
        UserError: a bool, text, NaN, infinity, a fraction, or a number outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} must be a whole number from {low} to {high}, not {value!r}{hint}")
    if not isinstance(value, numbers.Integral):
        if not math.isfinite(value) or value != math.floor(value):
            raise UserError(f"{name} must be a whole number from {low} to {high}, not {value!r}{hint}")
    number = int(value)
    if number < low:
        raise UserError(f"{name} {number} must be at least {low}{hint}")
    if number > high:
        raise UserError(f"{name} {number} must be at most {high}{hint}")
    return number


def real(value, name: str, low: float, high: float, *, low_open: bool = False, hint: str = "") -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (``(low, high]`` with ``low_open``).

    Raises:
        UserError: a bool, text, NaN, infinity or a number outside the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number from {low:g} to {high:g}, not {value!r}{hint}")
    number = float(value)
    if number < low or (low_open and number == low):
        raise UserError(f"{name} {number:g} must be {'more than' if low_open else 'at least'} {low:g}{hint}")
    if number > high:
        raise UserError(f"{name} {number:g} must be at most {high:g}{hint}")
    return number


def seed(value, name: str = "--seed") -> int:
    """A seed: a whole number from 0 to :data:`SEED_MAX`."""
    return whole(value, name, 0, SEED_MAX)


def workers(value, name: str = "--workers") -> int:
    """A count of processes or threads: 1 to :data:`WORKERS_MAX`."""
    return whole(value, name, 1, WORKERS_MAX)
