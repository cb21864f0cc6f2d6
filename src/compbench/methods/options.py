"""Declared ranges of methods' numeric options, checked when a method is constructed.

Each method lists the numeric options of its card in ``Method.option_ranges`` (option name ->
:class:`OptionRange`); :meth:`Method.__init__ <compbench.methods.base.Method>` checks every user value
against it, so ``-o rank=-5`` fails at once with a one-line UsageError (exit 2), before any work and also
in sweeps (a sweep constructs every method while planning). Limits that depend on the table (``M`` must
divide ``d``, ``K`` at most the training rows, a forced size must fit the budget) stay in ``configure``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compbench.errors import UsageError, quoted


@dataclass(frozen=True)
class OptionRange:
    """An int or float option's valid values: ``min <= value <= max`` (``min < value`` when ``min_open``),
    plus ``auto``, one value outside the range that means "choose it for me" (e.g. ``partitions=0``)."""

    kind: type = int
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    auto: float | None = None

    def describe(self) -> str:
        """The valid values in words, e.g. ``an integer >= 1``, ``a number > 0``, ``an integer in 1..16``."""
        what = "an integer" if self.kind is int else "a number"
        if self.min is not None and self.max is not None:
            text = f"{what} in {_num(self.min)}..{_num(self.max)}"
        elif self.min is not None:
            text = f"{what} {'>' if self.min_open else '>='} {_num(self.min)}"
        elif self.max is not None:
            text = f"{what} <= {_num(self.max)}"
        else:
            text = f"a finite {'integer' if self.kind is int else 'number'}"
        if self.auto is not None:
            text += f" (or {_num(self.auto)} = automatic)"
        return text

    def check(self, method: str, key: str, value: Any) -> int | float:
        """``value`` cast to ``kind`` when valid; a one-line UsageError naming the option and its range otherwise."""
        def bad() -> UsageError:
            return UsageError(f"option {key}={quoted(value)} of method '{method}' must be {self.describe()}")

        if isinstance(value, bool):
            raise bad()
        try:
            number = float(value) if self.kind is float else _as_int(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise bad() from exc
        if not math.isfinite(number):
            raise bad()
        if self.auto is not None and number == self.auto:
            return number
        if self.min is not None and (number <= self.min if self.min_open else number < self.min):
            raise bad()
        if self.max is not None and number > self.max:
            raise bad()
        return number


def _as_int(value: Any) -> int:
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(value)
        return int(value)
    return int(str(value).strip()) if isinstance(value, str) else int(value)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def at_least(low: int, *, auto: int | None = None, high: int | None = None) -> OptionRange:
    """An integer option ``>= low`` (and ``<= high``), e.g. a size, rank or iteration count."""
    return OptionRange(int, low, high, auto=auto)


def positive() -> OptionRange:
    """A float option ``> 0`` (a standard deviation, a learning rate, a ratio)."""
    return OptionRange(float, 0, min_open=True)


def non_negative() -> OptionRange:
    """A float option ``>= 0`` (a threshold)."""
    return OptionRange(float, 0)


def check_options(method: str, options: Mapping[str, Any], ranges: Mapping[str, OptionRange]) -> None:
    """Check every user option that has a declared range (see :class:`OptionRange`)."""
    for key, value in options.items():
        rng = ranges.get(key)
        if rng is not None:
            rng.check(method, key, value)


__all__ = ["OptionRange", "at_least", "check_options", "non_negative", "positive"]
