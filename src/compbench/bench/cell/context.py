"""A cell resolved and validated into its context: method, task, budget, device, threads, seeds, identity, key.

:func:`prepare` is where every entry point turns a :class:`~compbench.config.RunConfig` into a
:class:`CellContext` (``run``, ``sweep`` planning, ``mteb``, dry runs, the lifecycle's reference look-up);
it raises a UsageError subclass on bad input before any work. :data:`TRACK_RUNNERS` names each track's
hooks (``"module:attr"``, loaded lazily by :mod:`compbench.bench.cell.runner`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from compbench.bench.cell.budget import Budget
from compbench.bench.cell.identity import CellIdentity, resolve_identity
from compbench.bench.cell.input_checks import check_seed, check_seeds, check_threads
from compbench.bench.measure.core import available_cpus, device_name, resolve_device
from compbench.bench.results.record import BudgetInfo, DeviceInfo, MethodInfo, TaskInfo
from compbench.bench.results.record_store import ResultStore
from compbench.bench.tracks.train_settings import cell_seeds
from compbench.config import RunConfig
from compbench.datasets import file_sha256, split_path
from compbench.errors import UsageError
from compbench.methods import get_method
from compbench.methods.method_base import Method
from compbench.tasks import DEFAULT_TASKS, get_task
from compbench.tasks.task_base import TRACKS, Task

TRACK_RUNNERS: dict[str, str] = {
    "posthoc": "compbench.bench.tracks.posthoc_track:PosthocHooks",
    "words": "compbench.bench.tracks.words_track:WordsHooks",
    "store": "compbench.bench.tracks.store_track:StoreHooks",
    "train": "compbench.bench.tracks.train_track:TrainHooks",
    "scale": "compbench.bench.tracks.scale_track:ScaleHooks",
    "lm": "compbench.bench.tracks.lm_track:LMHooks",
    "table": "compbench.bench.tracks.table_track:UserTableHooks",
}

TRACK_MODE = {"posthoc": "posthoc", "train": "train", "words": "posthoc", "store": "posthoc", "scale": "posthoc", "lm": "posthoc", "table": "posthoc"}


@dataclass
class CellContext:
    """Everything a track runner needs, resolved and validated."""

    config: RunConfig
    method: Method
    task: Task
    budget: Budget
    device: torch.device
    threads: int
    key: str
    store: ResultStore | None
    identity: CellIdentity
    seeds: tuple[int, ...] = (0,)
    cache: dict[str, Any] = field(default_factory=dict)  # shared heavy objects (encoder) across cells
    #: a progress display: ``progress(event, what, seconds, done=None, total=None)`` with event ``start`` / ``end``
    #: (phases) or ``tick`` (work with a size: ``done`` of ``total`` units, ``total`` None when unknown); None:
    #: silent. Never part of a record.
    progress: Any = None

    def method_info(self, config: dict[str, Any] | None = None) -> MethodInfo:
        """Record section for the method."""
        c = self.method.card
        return MethodInfo(name=c.name, version=c.version, family=c.family, reference=c.reference,
                          options=dict(self.config.options), config=dict(config or {}),
                          tuned=bool(self.config.tune))

    def task_info(self, data_sha256: dict[str, str]) -> TaskInfo:
        """Record section for the task."""
        return TaskInfo(**self.task.card.to_dict(), data_sha256=data_sha256)

    def device_info(self) -> DeviceInfo:
        """Record section for the device."""
        return DeviceInfo(kind=self.device.type, name=device_name(self.device), threads=self.threads)

    def budget_info(self, reference_bytes: int) -> BudgetInfo:
        """Record section for the budget (stored bytes filled in by the runner)."""
        return BudgetInfo(spec=str(self.budget), reference_bytes=reference_bytes,
                          allowed_bytes=self.budget.resolve(reference_bytes))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (methods also take explicit generators)."""
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def data_sha256(task: Task) -> dict[str, str]:
    """sha256 of every shipped data file the task reads (tasks with their own files define ``data_sha256()``)."""
    own = getattr(task, "data_sha256", None)
    if callable(own):
        return dict(own())
    out = {}
    for ref in task.data_files():
        name, split = ref.split("/", 1)
        out[ref] = file_sha256(split_path(name, split))
    return out


def prepare(config: RunConfig, store: ResultStore | None = None, cache: dict[str, Any] | None = None) -> CellContext:
    """Validate a RunConfig into a CellContext (raises UsageError subclasses on bad input)."""
    if config.track not in TRACKS:
        get_task(config.track, config.task or "")  # raises with a suggestion
    if config.track not in TRACK_RUNNERS:
        raise UsageError(f"track '{config.track}' is not available in this version (available: {', '.join(TRACK_RUNNERS)})")
    task_name = config.task or DEFAULT_TASKS[config.track]
    config = replace(config, task=task_name)
    if config.track == "table" and not config.model:
        raise UsageError("the table track compresses your own table: give it with --table FILE")
    method = get_method(config.method, **config.options)
    task = get_task(config.track, task_name)
    method.require(TRACK_MODE[config.track])
    budget = Budget.parse(config.budget)
    threads = check_threads(config.threads if config.threads is not None else available_cpus()) or 1
    check_seed(config.seed)
    check_seeds(config.seeds or ())
    if config.lookup_workload not in ("zipf", "uniform"):
        raise UsageError(f"lookup workload must be zipf or uniform, got {config.lookup_workload!r}")
    device = resolve_device(config.device)
    identity, key = resolve_identity(config, method, task, budget=str(budget), threads=threads,
                                     device_kind=device.type)
    seeds: tuple[int, ...] = (config.seed,)
    if config.track == "train":
        seeds = cell_seeds(config)
    if store is not None:
        store.check_writable()  # before any work: a finished cell must never be lost to an unwritable folder
    return CellContext(config=replace(config, threads=threads), method=method, task=task, budget=budget,
                       device=device, threads=threads, key=key, store=store, identity=identity, seeds=seeds,
                       cache=cache if cache is not None else {})


__all__ = ["TRACK_MODE", "TRACK_RUNNERS", "CellContext", "data_sha256", "prepare", "seed_everything"]
