"""Train-track settings: the resolved recipe and backbone of a cell, its key tag and its seeds.

Kept apart from the trainer (:mod:`compbench.bench.tracks.train_track`) so that resolving a cell's identity and key
(:mod:`compbench.bench.cell.identity`) needs neither torch training code nor the lifecycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from compbench.errors import DataError, UsageError
from compbench.models.classifier import BackboneConfig
from compbench.models.model_registry import named_model
from compbench.tasks.train import TrainRecipe, TrainTask

DEFAULT_D_MODEL = BackboneConfig().d_model

# RunConfig.extra keys of the train track (the CLI's --backbone, --d-model, --max-steps,
# --max-train-samples, --max-eval-samples and repeatable --recipe key=value fill them):
EXTRA_KEYS = {
    "backbone": "kind",  # transformer | bag
    "d_model": "d_model",
    "max_steps": "max_steps",
    "max_train_samples": "max_train_samples",
    "max_eval_samples": "max_eval_samples",
}
# Short key tags for the flags above; any other override is tagged "<name>=<value>".
_TAGS = {"kind": "{}", "d_model": "d{}", "max_steps": "steps{}", "max_train_samples": "n{}", "max_eval_samples": "neval{}"}
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """The resolved recipe and backbone of a cell, and the user overrides that differ from the task's defaults."""

    recipe: TrainRecipe
    backbone: BackboneConfig
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """Key suffix of the task segment: ``""`` for the track's defaults, else e.g. ``"+bag+d64+lr=0.003"``
        (a method whose width is fixed by its pretrained table, ADE, gets ``+d384``: its identity says so)."""
        return "".join("+" + _TAGS.get(k, k + "={}").format(_fmt(v)) for k, v in self.overrides.items())

    @property
    def recipe_tag(self) -> str:
        """The recipe overrides alone (``lr=0.003+patience=5``), ``""`` for the task's recipe."""
        rfields = set(TrainRecipe.field_names())
        return "+".join(_TAGS.get(k, k + "={}").format(_fmt(v)) for k, v in self.overrides.items() if k in rfields)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _cast(name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):  # pragma: no cover - no bool fields today
            return str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"train setting {name}={value!r} must be {type(default).__name__}") from exc


def pretrained_dim(model: str | None) -> int:
    """Hidden width of the pretrained encoder whose token table initialises ``train_init="pretrained"`` methods."""
    entry = named_model(model)
    if entry is not None:  # a named model's width is part of its registry entry (tested against its config.json)
        return entry.dim
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(str(model)).hidden_size)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read the hidden size of '{model}': {type(exc).__name__}: {exc}") from exc


def resolve_settings(task: TrainTask, method: Any, extra: Mapping[str, Any], model: str | None = None) -> TrainSettings:
    """Task defaults + ``extra`` overrides (see :data:`EXTRA_KEYS`; ``extra["recipe"]`` may set any
    :class:`TrainRecipe` or :class:`BackboneConfig` field). Raises UsageError on unknown or bad values."""
    rfields = TrainRecipe.field_names()
    bfields = tuple(f for f in BackboneConfig.field_names() if f != "max_len")  # max_len lives in the recipe
    raw: dict[str, Any] = {}
    for key, fname in EXTRA_KEYS.items():
        if extra.get(key) is not None:
            raw[fname] = extra[key]
    for key, value in dict(extra.get("recipe") or {}).items():
        name = "kind" if key == "backbone" else key
        if name not in rfields and name not in bfields:
            known = ", ".join(sorted({*rfields, *bfields} - {"kind"} | {"backbone"}))
            raise UsageError(f"unknown train setting '{key}' (settings: {known})")
        if name in raw and str(raw[name]) != str(value):
            raise UsageError(f"train setting '{key}' given twice with different values ({raw[name]!r}, {value!r})")
        raw[name] = value

    forced_d = pretrained_dim(model) if getattr(method.card, "train_init", "random") == "pretrained" else None
    base_recipe = task.recipe
    base_backbone = BackboneConfig(d_model=forced_d or DEFAULT_D_MODEL, max_len=base_recipe.max_len)
    rvals = {k: _cast(k, v, getattr(base_recipe, k)) for k, v in raw.items() if k in rfields}
    bvals = {k: _cast(k, v, getattr(base_backbone, k)) for k, v in raw.items() if k in bfields}
    for k, v in {**rvals, **bvals}.items():
        if isinstance(v, str) and not _SAFE.match(v):
            raise UsageError(f"train setting {k}={v!r} may only contain letters, digits, '_', '.' and '-'")
    if forced_d is not None and bvals.get("d_model", forced_d) != forced_d:
        raise UsageError(f"method '{method.card.name}' is initialised from the pretrained {forced_d}-d token table, "
                         f"so d_model must be {forced_d} (got {bvals['d_model']})")
    recipe = base_recipe.with_(**rvals)
    backbone = base_backbone.with_(max_len=recipe.max_len, **bvals)
    overrides = {}  # canonical order: backbone fields, then recipe fields
    track_default = BackboneConfig(d_model=DEFAULT_D_MODEL, max_len=base_recipe.max_len)
    for k in bfields:
        if k == "d_model" and backbone.d_model != DEFAULT_D_MODEL:  # also a width fixed by a pretrained table
            overrides[k] = backbone.d_model
        elif k != "d_model" and k in bvals and bvals[k] != getattr(track_default, k):
            overrides[k] = bvals[k]
    for k in rfields:
        if k in rvals and rvals[k] != getattr(base_recipe, k):
            overrides[k] = rvals[k]
    return TrainSettings(recipe=recipe, backbone=backbone, overrides=overrides)


def cell_seeds(config: Any) -> tuple[int, ...]:
    """The seeds of a train cell: ``config.seeds`` when given, else ``(config.seed,)`` (validated)."""
    seeds = tuple(int(s) for s in config.seeds) if config.seeds else (int(config.seed),)
    if any(s < 0 for s in seeds):
        raise UsageError(f"seeds must be >= 0, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds has duplicates: {list(seeds)}")
    return seeds


__all__ = ["DEFAULT_D_MODEL", "EXTRA_KEYS", "TrainSettings", "cell_seeds", "pretrained_dim", "resolve_settings"]
