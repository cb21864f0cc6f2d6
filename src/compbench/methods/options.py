"""A method's options, declared once.

Each method declares its options as one typed model, a subclass of :class:`MethodOptions` set as
``Method.Options``: one field per option, written with :func:`opt` (its default, its help line and, for a number,
its valid values as an :class:`OptionRange`)::

    class Options(MethodOptions):
        rank: int | None = opt(None, "force a rank (must fit the budget)", at_least(1))
        dtype: Literal["float32", "float16"] = opt("float32", "storage of the factors")

Everything else derives from that model (``Method.__init_subclass__``): the card's option help
(``card.options``, what ``compbench list methods NAME`` shows with each option's type, default and valid values),
the declared ranges (``Method.option_ranges``), the validation of user values, and the typed values a method reads
(``self.option("rank")``, or ``self.opts.rank``). :meth:`Method.__init__ <compbench.methods.method_base.Method>` checks
every user value when the method is constructed, so ``-o rank=-5`` fails at once with a one-line UsageError
(exit 2), before any work and also in sweeps (a sweep constructs every method while planning). Limits that depend
on the table (``M`` must divide ``d``, ``K`` at most the training rows, a forced size must fit the budget) stay in
``configure``. Adding an option is one line in the model.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo

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


class MethodOptions(BaseModel):
    """A method's options: one field per option, each declared with :func:`opt` (default, help, valid values).

    The model is the one place an option is declared; unknown options are refused (``extra="forbid"``), values are
    immutable once validated, and a number given for a text option is taken as its text (``-o dtype=8``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _choices_in_any_case(cls, data: Any) -> Any:
        """A choice (a ``Literal`` option) in any case and with spaces around it: ``-o op=ADD`` is ``add``."""
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for key, value in data.items():
            info = cls.model_fields.get(key)
            base = _base_type(info.annotation) if info is not None else None
            if isinstance(value, str) and get_origin(base) is Literal:
                for choice in get_args(base):
                    if isinstance(choice, str) and choice.lower() == value.strip().lower():
                        out[key] = choice
        return out


_RANGE_KEY = "compbench_range"


def opt(default: Any, help: str, valid: OptionRange | None = None) -> Any:
    """One option of a :class:`MethodOptions` model: its ``default`` (None: chosen from the budget or the table),
    a one-line ``help`` (without the default: it is shown from the model) and, for a number, its ``valid``
    values (:func:`at_least`, :func:`positive`, ...; booleans are flags without saying so)."""
    extra = {_RANGE_KEY: valid} if valid is not None else None
    return Field(default, description=help, json_schema_extra=extra)  # type: ignore[arg-type]


def _base_type(annotation: Any) -> Any:
    """``int`` for ``int | None``, the Literal itself for ``Literal[...] | None``; unions of several types: None."""
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not NoneType]
        return args[0] if len(args) == 1 else None
    return annotation


def field_range(info: FieldInfo) -> OptionRange | None:
    """The valid values of one option: its declared :class:`OptionRange`, else the one its type implies (a bool
    option is a flag, an int or float one any finite number); None for text and choices (the model checks those)."""
    extra = info.json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get(_RANGE_KEY), OptionRange):
        return extra[_RANGE_KEY]  # type: ignore[return-value]
    base = _base_type(info.annotation)
    if base is bool:
        return flag()
    if base is int:
        return OptionRange(int)
    if base is float:
        return OptionRange(float)
    return None


def option_ranges(model: type[MethodOptions]) -> dict[str, OptionRange]:
    """Option name -> valid values, for every option of ``model`` that is a number or a flag."""
    out = {}
    for name, info in model.model_fields.items():
        rng = field_range(info)
        if rng is not None:
            out[name] = rng
    return out


def type_words(info: FieldInfo) -> str:
    """An option's type in words: ``integer``, ``number``, ``flag``, ``text`` or ``one of a, b``."""
    base = _base_type(info.annotation)
    if get_origin(base) is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(base))
    return {bool: "flag", int: "integer", float: "number", str: "text"}.get(base, "value")


def describe_option(info: FieldInfo) -> str:
    """The help line of an option with its default and valid values, as the card shows it."""
    rng = field_range(info)
    valid = rng.describe() if rng is not None else type_words(info)
    default = "chosen for the budget" if info.default is None else repr(info.default)
    return f"{info.description or ''} [default: {default}; {valid}]".strip()


def option_help(model: type[MethodOptions]) -> dict[str, str]:
    """Option name -> its help line with default and valid values (the card's ``options``)."""
    return {name: describe_option(info) for name, info in model.model_fields.items()}


def validate_options(method: str, model: type[MethodOptions], options: Mapping[str, Any]) -> MethodOptions:
    """``options`` (already canonical) validated by ``model``; the first problem as a one-line UsageError."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err.get("loc") else "?"
        if err.get("type") == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields)) or "none"
            raise UsageError(f"method '{method}' has no option {quoted(key)} (options: {known})") from None
        msg = str(err.get("msg", "is invalid")).replace("\n", " ")
        raise UsageError(f"option {quoted(key)}={quoted(options.get(key))} of method '{method}': "
                         f"{msg[:1].lower() + msg[1:]}") from None


__all__ = ["BOOL_WORDS", "MethodOptions", "OptionRange", "at_least", "canonical_options", "canonical_value",
           "check_options", "describe_option", "field_range", "flag", "non_negative", "opt", "option_help",
           "option_ranges", "positive", "type_words", "validate_options"]
