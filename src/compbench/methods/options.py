"""Declared ranges of methods' numeric options, checked when a method is constructed.

Each method lists the numeric options of its card in ``Method.option_ranges`` (option name ->
:class:`OptionRange`); :meth:`Method.__init__ <compbench.methods.base.Method>` checks every user value
against it, so ``-o rank=-5`` fails at once with a one-line UsageError (exit 2), before any work and also
in sweeps (a sweep constructs every method while planning). Limits that depend on the table (``M`` must
divide ``d``, ``K`` at most the training rows, a forced size must fit the budget) stay in ``configure``.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from compbench.errors import UsageError, quoted


@dataclass(frozen=True)
class OptionRange:
    """An int or float option's valid values: ``min <= value <= max`` (``min < value`` when ``min_open``),
    plus ``auto``, one value outside the range that means "choose it for me" (e.g. ``partitions=0``)."""

    kind: type = int  # int, float, or bool (a flag: see :func:`flag`)
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    auto: float | None = None

    def describe(self) -> str:
        """The valid values in words, e.g. ``an integer >= 1``, ``a number > 0``, ``an integer in 1..16``."""
        if self.kind is bool:
            return "true or false (also yes/no, on/off, 1/0)"
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

    def check(self, method: str, key: str, value: Any) -> int | float | bool:
        """``value`` cast to ``kind`` when valid; a one-line UsageError naming the option and its range otherwise."""
        def bad() -> UsageError:
            return UsageError(f"option {key}={quoted(value)} of method '{method}' must be {self.describe()}")

        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            word = BOOL_WORDS.get(str(value).strip().lower())
            if word is None:
                raise bad()
            return word
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


def flag() -> OptionRange:
    """A boolean option: ``true/false``, ``yes/no``, ``on/off`` or ``1/0`` (any case), stored as one bool."""
    return OptionRange(bool)


def check_options(method: str, options: Mapping[str, Any], ranges: Mapping[str, OptionRange]) -> None:
    """Check every user option that has a declared range (see :class:`OptionRange`)."""
    for key, value in options.items():
        rng = ranges.get(key)
        if rng is not None:
            rng.check(method, key, value)


#: the words a boolean option accepts (case-insensitive), and the one value each means
BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
_INT = re.compile(r"[+-]?[0-9]{1,30}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
MAX_OPTION_CHARS = 4096  # longer values are refused (a path or a dtype name is far shorter)


def canonical_value(method: str, key: str, value: Any) -> Any:
    """One spelling per value, so one configuration has one cell key: text is NFKC-normalised (a full-width
    digit is the ASCII one) and stripped; an integer or a decimal becomes a number (``-o rank=8`` and a suite's ``rank: 8`` are the same cell). A number in text
    that is not finite (refused by :func:`canonical_options`), an empty value and an over-long one are usage
    errors."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value
        return value
    if not isinstance(value, str):
        return value
    text = unicodedata.normalize("NFKC", value).strip()
    if not text:
        raise UsageError(f"option '{quoted(key)}' of method '{method}' has an empty value; give key=value")
    if len(text) > MAX_OPTION_CHARS:
        raise UsageError(f"option '{quoted(key)}' of method '{method}' is {len(text)} characters long "
                         f"(at most {MAX_OPTION_CHARS})")
    lower = text.lower()
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text) or lower in ("inf", "+inf", "-inf", "nan", "infinity", "-infinity"):
        return float(text)  # a non-finite one is refused by canonical_options (with the option's range if declared)
    return text


def canonical_options(method: str, options: Mapping[str, Any], ranges: Mapping[str, OptionRange]) -> dict[str, Any]:
    """``options`` with every value in its one canonical form (:func:`canonical_value`), flags (options declared
    with :func:`flag`) as bools whatever the spelling (``true/false/yes/no/on/off/1/0``, any case), declared numbers
    checked against their ranges; the result is what the method stores and the key hashes. Words such as ``off``
    stay text for options that are not flags (e.g. rabitq's ``project=off``)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        name = unicodedata.normalize("NFKC", str(key)).strip()
        if not name:
            raise UsageError(f"an option of method '{method}' has no name ({quoted(f'={value}')}); give key=value")
        if name in out:
            raise UsageError(f"option '{quoted(name)}' of method '{method}' is given twice; give it once")
        v = canonical_value(method, name, value)
        rng = ranges.get(name)
        if rng is not None:
            v = rng.check(method, name, v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise UsageError(f"option {quoted(name)}={quoted(value)} of method '{method}' must be a finite number")
        out[name] = v
    return out


__all__ = ["BOOL_WORDS", "OptionRange", "at_least", "canonical_options", "canonical_value", "check_options", "flag",
           "non_negative", "positive"]
