"""The result record: one validated JSON document per cell.

A cell is (track, task and identity tag, method [+options], budget, device, threads, seed(s)); its
identity (model, width, backbone, init, head, recipe) is stored with it (:mod:`compbench.bench.cell.identity`). Records
carry ``schema_version``; :func:`migrate` upgrades older documents step by step
(``update_to_N``) and a newer version is refused with "upgrade compbench".
Floats are rounded at write time (:func:`round_floats`) so files diff cleanly.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compbench.bench.cell.identity import identity_of_record

SCHEMA_VERSION = 2

Status = Literal["ok", "over_budget", "failed", "skipped", "timeout"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodInfo(_Strict):
    name: str
    version: int
    family: str
    reference: str
    options: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    #: the options were chosen on validation data by the harness (measurements.tuning holds the search)
    tuned: bool = False


class TaskInfo(_Strict):
    name: str
    version: int
    track: str
    metric: str
    higher_is_better: bool
    tolerance: float
    dataset: str | None = None
    protocol: str = ""
    data_sha256: dict[str, str] = Field(default_factory=dict)


# Semantic ranges (issue 34): a schema-valid record with a negative byte count or ratio is refused with its
# path by the store, like a malformed one, so `report`, `compare` and `show` skip it with one line.
NonNegativeInt = Annotated[int, Field(ge=0)]


class BudgetInfo(_Strict):
    spec: str
    reference_bytes: NonNegativeInt  # 0 in a record of a cell refused before its table was read
    allowed_bytes: NonNegativeInt
    stored_bytes: NonNegativeInt | None = None
    achieved_ratio: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    breakdown: dict[str, NonNegativeInt] = Field(default_factory=dict)


class DeviceInfo(_Strict):
    kind: str
    name: str
    threads: Annotated[int, Field(ge=1)]


class Params(_Strict):
    total: NonNegativeInt | None = None
    trainable: NonNegativeInt | None = None
    embedding: NonNegativeInt | None = None
    backbone: NonNegativeInt | None = None


class Metrics(_Strict):
    main: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    dense_score: float | None = None
    retention: float | None = None
    seeds: list[int] | None = None
    #: 95% bootstrap interval of ``main`` over the test items (and seeds): low, high, level, method, n_resamples,
    #: seed, n_items, n_seeds (:mod:`compbench.stats`); None when the task gives no per-item outcomes
    interval: dict[str, Any] | None = None
    retention_interval: dict[str, Any] | None = None


IDENTITY_FIELDS = ("track", "model", "width", "backbone", "init", "head", "recipe")


class Record(_Strict):
    """One benchmark cell's result (see "Result records" in docs/concepts.md for every field)."""

    schema_version: int = SCHEMA_VERSION
    key: str
    status: Status
    error: str | None = None
    track: str
    seed: int
    identity: dict[str, Any] | None = None  # compbench.bench.cell.identity.CellIdentity.to_dict(); checked below
    method: MethodInfo
    task: TaskInfo
    budget: BudgetInfo
    device: DeviceInfo
    params: Params = Field(default_factory=Params)
    metrics: Metrics = Field(default_factory=Metrics)
    measurements: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    @field_validator("identity")
    @classmethod
    def _identity_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """An identity names its seven fields with text (and the width as an integer or null), or is absent."""
        if value is None:
            return value
        if set(value) != set(IDENTITY_FIELDS):
            raise ValueError(f"identity must have exactly the fields {', '.join(IDENTITY_FIELDS)}")
        for key in IDENTITY_FIELDS:
            v = value[key]
            ok = (v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)) if key == "width" \
                else isinstance(v, str)
            if not ok:
                raise ValueError(f"identity.{key} has the wrong type ({type(v).__name__})")
        return value


def round_floats(obj: Any, digits: int = 6) -> Any:
    """Round floats to ``digits`` significant digits (non-finite floats become None), recursively."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        if obj == 0.0:
            return 0.0
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    return obj


class SchemaError(ValueError):
    """A record of an unknown (newer) schema version."""


class NewerSchemaError(SchemaError):
    """A record written by a newer compbench (a higher ``schema_version``): read by nothing here, replaced by
    nothing here (:meth:`compbench.bench.results.record_store.ResultStore.write` and the sweep planner leave it untouched)."""


def _update_to_2(doc: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 adds ``identity`` (model, width, backbone, init, head, recipe), derived from what a schema-1
    record holds (:func:`compbench.bench.cell.identity.identity_of_record`)."""
    doc = dict(doc)
    if doc.get("identity") is None:
        try:
            doc["identity"] = identity_of_record(doc)
        except Exception:  # noqa: BLE001 - a record that cannot tell its identity keeps none
            doc["identity"] = None
    return doc


MIGRATIONS: dict[int, Any] = {2: _update_to_2}  # version N -> function upgrading a version N-1 document to N


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a record document to :data:`SCHEMA_VERSION` (refuses newer versions)."""
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SchemaError("missing or non-integer schema_version")
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(f"schema_version {version} is newer than this compbench ({SCHEMA_VERSION}); "
                               "upgrade compbench")
    if version < 1 or any(v not in MIGRATIONS for v in range(version + 1, SCHEMA_VERSION + 1)):
        raise SchemaError(f"schema_version {version} is unknown (this compbench reads 1..{SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        version += 1
        doc = MIGRATIONS[version](doc)
        doc["schema_version"] = version
    return doc


def to_json(record: Record) -> str:
    """Canonical JSON text of a record (sorted keys, rounded floats, trailing newline)."""
    return json.dumps(round_floats(record.model_dump(mode="json")), indent=2, sort_keys=True) + "\n"
