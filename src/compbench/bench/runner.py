"""Run one benchmark cell: resolve names and budget, dispatch to the track's runner, write the record.

Track runners are looked up lazily in :data:`TRACK_RUNNERS` (``"module:function"``),
each a ``function(ctx: CellContext) -> Record``.
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from compbench.bench.budget import Budget
from compbench.bench.measure import apply_threads, available_cpus, device_name, resolve_device
from compbench.bench.record import BudgetInfo, DeviceInfo, MethodInfo, Record, TaskInfo, cell_key
from compbench.bench.store import ResultStore
from compbench.config import RunConfig
from compbench.errors import UsageError
from compbench.methods import get_method
from compbench.methods.base import Method
from compbench.tasks import DEFAULT_TASKS, get_task
from compbench.tasks.base import TRACKS, Task

TRACK_RUNNERS: dict[str, str] = {
    "posthoc": "compbench.bench.posthoc:run_posthoc",
    "words": "compbench.bench.words:run_words",
    "store": "compbench.bench.store_track:run_store",
    "train": "compbench.bench.train:run_train",
}

TRACK_MODE = {"posthoc": "posthoc", "train": "train", "words": "posthoc", "store": "posthoc"}


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
    cache: dict[str, Any] = field(default_factory=dict)  # shared heavy objects (encoder) across cells

    def method_info(self, config: dict[str, Any] | None = None) -> MethodInfo:
        """Record section for the method."""
        c = self.method.card
        return MethodInfo(name=c.name, version=c.version, family=c.family, reference=c.reference,
                          options=dict(self.config.options), config=dict(config or {}))

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
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def data_sha256(task: Task) -> dict[str, str]:
    """sha256 of every shipped data file the task reads (tasks with their own files define ``data_sha256()``)."""
    from compbench.datasets import file_sha256, split_path

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
    method = get_method(config.method, **config.options)
    task = get_task(config.track, task_name)
    method.require(TRACK_MODE[config.track])
    budget = Budget.parse(config.budget)
    threads = config.threads if config.threads is not None else available_cpus()
    if threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    if config.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {config.seed}")
    device = resolve_device(config.device)
    key = cell_key(config.track, task.card.name, method.card.name, str(budget), device.type, threads, config.seed,
                   config.options)
    if config.track == "train":  # train cells: settings overrides and --seeds are part of the key
        from compbench.bench.train import train_key

        key = train_key(key, config, task, method)
    if store is not None:
        store.check_writable()  # before any work: a finished cell must never be lost to an unwritable folder
    return CellContext(config=replace(config, threads=threads), method=method, task=task, budget=budget,
                       device=device, threads=threads, key=key, store=store, cache=cache if cache is not None else {})


def run_cell(config: RunConfig, store: ResultStore | None = None, *, write: bool = True,
             cache: dict[str, Any] | None = None) -> Record:
    """Run one cell and (by default) write its record atomically into ``store``.

    Raises UsageError (bad names, budgets, devices; unattainable budget) before any work is done.
    """
    ctx = prepare(config, store, cache)
    apply_threads(ctx.threads)
    seed_everything(config.seed)
    module_name, fn = TRACK_RUNNERS[config.track].split(":")
    runner = getattr(importlib.import_module(module_name), fn)
    record: Record = runner(ctx)
    if write and store is not None:
        store.write(record)
    return record
