"""The result record: one validated JSON document per cell.

A cell is (track, task, method [+options], budget, device, threads, seed). Records
carry ``schema_version``; :func:`migrate` upgrades older documents step by step
(``update_to_N``) and a newer version is refused with "upgrade compbench".
Floats are rounded at write time (:func:`round_floats`) so files diff cleanly.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Status = Literal["ok", "over_budget", "failed", "skipped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodInfo(_Strict):
    name: str
    version: int
    family: str
    reference: str
    options: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


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


class BudgetInfo(_Strict):
    spec: str
    reference_bytes: int
    allowed_bytes: int
    stored_bytes: int | None = None
    achieved_ratio: float | None = None
    breakdown: dict[str, int] = Field(default_factory=dict)


class DeviceInfo(_Strict):
    kind: str
    name: str
    threads: int


class Params(_Strict):
    total: int | None = None
    trainable: int | None = None
    embedding: int | None = None
    backbone: int | None = None


class Metrics(_Strict):
    main: float | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    dense_score: float | None = None
    retention: float | None = None
    seeds: list[int] | None = None


class Record(_Strict):
    """One benchmark cell's result (see README "Result records" for every field)."""

    schema_version: int = SCHEMA_VERSION
    key: str
    status: Status
    error: str | None = None
    track: str
    seed: int
    method: MethodInfo
    task: TaskInfo
    budget: BudgetInfo
    device: DeviceInfo
    params: Params = Field(default_factory=Params)
    metrics: Metrics = Field(default_factory=Metrics)
    measurements: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)


def options_suffix(options: dict[str, Any]) -> str:
    """``""`` without options, else ``"+<8 hex>"``: a stable hash of the sorted options."""
    if not options:
        return ""
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return "+" + hashlib.sha256(blob).hexdigest()[:8]


def cell_key(track: str, task: str, method: str, budget: str, device_kind: str, threads: int, seed: int,
             options: dict[str, Any] | None = None) -> str:
    """The cell's key, also its relative path without ``.json``:
    ``track/task/method[+opts]/budget/<device>-<threads>t-s<seed>``."""
    return f"{track}/{task}/{method}{options_suffix(options or {})}/{budget}/{device_kind}-{threads}t-s{seed}"


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


MIGRATIONS: dict[int, Any] = {}  # version N -> function upgrading a version N-1 document to N


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a record document to :data:`SCHEMA_VERSION` (refuses newer versions)."""
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SchemaError("missing or non-integer schema_version")
    if version > SCHEMA_VERSION:
        raise SchemaError(f"schema_version {version} is newer than this compbench ({SCHEMA_VERSION}); upgrade compbench")
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
