"""The suite file's schema: pydantic models of a suite document and of one grid, and their errors as one line.

A suite file is a mapping: ``name``, ``description``, ``imports`` and ``grids`` (a list of grid mappings), plus any
grid key at the top level as the default of every grid. The models check the document's shape and every value's
type and range (strict: ``threads: true`` or ``seeds: "0"`` is refused, never coerced); the names inside (methods,
tasks, budgets, method options) are checked against the registries afterwards by :mod:`compbench.bench.sweeps.suite`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from compbench.config import MAX_FIT_SECONDS
from compbench.errors import UsageError, quoted


def _listify(value: Any) -> Any:
    """One scalar for a list of one (``budgets: 10x``)."""
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


def _texts(value: Any) -> Any:
    """Names as stripped text, in order, duplicates removed (numbers allowed: ``budgets: [10, 40]``)."""
    value = _listify(value)
    if isinstance(value, list):
        if not value:
            raise ValueError("must be a non-empty list")
        for v in value:
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                raise ValueError(f"entries must be strings, got {v!r}")
        return list(dict.fromkeys(str(v).strip() for v in value))
    return value


Names = Annotated[list[str], BeforeValidator(_texts)]
Seed = Annotated[int, Field(ge=0)]


class TaskSpec(BaseModel):
    """A task written as a mapping: ``{track: posthoc, name: stsb}``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    track: str
    name: str


class GridSpec(BaseModel):
    """One grid of a suite (every key optional here: a grid inherits the suite's top-level keys)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    methods: Names | None = None
    budgets: Names | None = None
    tasks: Annotated[list[str | TaskSpec], BeforeValidator(_listify)] | None = None
    devices: Names | None = None
    seeds: Annotated[list[Seed], BeforeValidator(_listify), Field(min_length=1)] | None = None
    threads: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, dict[str, Any]] | None = None
    aggregate_seeds: bool | None = None
    batch_size: Annotated[int, Field(ge=1, le=1 << 20)] | None = None
    lookup_iters: Annotated[int, Field(ge=1, le=10_000)] | None = None
    lookup_workload: Literal["zipf", "uniform"] | None = None
    model: Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, int | float) else v)] | None = None
    extra: dict[str, Any] | None = None
    tune: bool | None = None
    max_fit_seconds: Annotated[float, Field(ge=0, le=MAX_FIT_SECONDS)] | None = None


GRID_KEYS = tuple(GridSpec.model_fields)


class SuiteSpec(GridSpec):
    """A suite document: its name, description, imports and grids, and the grid keys every grid inherits."""

    name: str | None = None
    description: str | None = None
    imports: Annotated[list[Annotated[str, Field(min_length=1)]], BeforeValidator(_listify)] | None = None
    grids: Annotated[list[GridSpec], Field(min_length=1)] | None = None


SUITE_KEYS = ("name", "description", "imports", "grids", *GRID_KEYS)

#: what a value must be, in words, for the error line (pydantic's own words otherwise)
_WANT = {
    "seeds": "a non-empty list, each an integer >= 0", "threads": "an integer >= 1",
    "batch_size": "an integer in 1..1048576", "lookup_iters": "an integer in 1..10000",
    "max_fit_seconds": f"a number of seconds in 0..{int(MAX_FIT_SECONDS)} (30 days; 0 or null: no limit)",
    "aggregate_seeds": "true or false", "tune": "true or false", "lookup_workload": "zipf or uniform",
    "options": "a mapping of a method name to {option: value}",
    "extra": "a mapping of track settings (train: backbone, d_model, max_steps, max_train_samples, "
             "max_eval_samples, recipe)",
    "imports": "a list of module names or .py paths", "grids": "a non-empty list of mappings",
    "tasks": "a list of 'track/name' (e.g. posthoc/stsb) or mappings with track and name",
}


def _where(source: str, ctx: str) -> str:
    return f"suite {source or '<dict>'}{(': ' + ctx) if ctx else ''}"


def validate_suite_doc(doc: Any, source: str) -> SuiteSpec:
    """``doc`` validated as a :class:`SuiteSpec`; the first problem as one line naming the key and its grid."""
    if not isinstance(doc, Mapping):
        raise UsageError(f"{_where(source, '')}: a suite must be a YAML mapping with methods, budgets and tasks")
    try:
        return SuiteSpec.model_validate(dict(doc))
    except ValidationError as exc:
        raise _one_line(exc, doc, source) from None


def _one_line(exc: ValidationError, doc: Any, source: str) -> UsageError:
    err = exc.errors()[0]
    loc = list(err.get("loc") or ())
    ctx = ""
    if len(loc) >= 2 and loc[0] == "grids" and isinstance(loc[1], int):
        ctx, loc = f"grids[{loc[1]}]", loc[2:]
    key = str(loc[0]) if loc else "?"
    if key == "tasks":  # a task entry that is neither text nor a {track, name} mapping
        return UsageError(f"{_where(source, ctx)}: 'tasks' must be {_WANT['tasks']}")
    if err.get("type") == "extra_forbidden":
        allowed = GRID_KEYS if ctx else SUITE_KEYS
        hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        return UsageError(f"{_where(source, ctx)}: unknown key '{quoted(key)}'"
                          + (f"; did you mean '{hint[0]}'?" if hint else "") + f" (keys: {', '.join(allowed)})")
    msg = str(err.get("msg", "is invalid"))
    if msg.startswith("Value error, "):
        return UsageError(f"{_where(source, ctx)}: '{key}' {msg.removeprefix('Value error, ')}")
    want = _WANT.get(key)
    got = f", got {quoted(err.get('input'))}" if not isinstance(err.get("input"), Mapping | list) else ""
    if want is not None:
        return UsageError(f"{_where(source, ctx)}: '{key}' must be {want}{got}")
    return UsageError(f"{_where(source, ctx)}: '{key}': {msg[:1].lower() + msg[1:]}{got}")


__all__ = ["GRID_KEYS", "SUITE_KEYS", "GridSpec", "SuiteSpec", "TaskSpec", "validate_suite_doc"]
