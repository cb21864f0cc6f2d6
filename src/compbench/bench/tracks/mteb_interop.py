"""mteb interop: compbench records from mteb results (the tasks and the mteb model: :mod:`compbench.tasks.mteb_tasks`).

:class:`CompressedMtebModel` is the posthoc-track encoder (all-MiniLM-L6-v2 or ``--model``)
with its token table replaced by a method's compressed table; it is an mteb
``EncoderProtocol`` (``encode`` + ``mteb_model_meta``), so ``mteb.evaluate`` runs any
mteb task with it. Its ``mteb_model_meta`` keeps the base model's name and revision and
carries the compression in ``experiment_kwargs`` (mteb's own mechanism for ablations),
so mteb's result cache keeps compressed and dense runs apart.

:class:`MtebTask` makes any mteb task a compbench posthoc task ``mteb-<TaskName>`` (also
``compbench run --task mteb-STSBenchmark``): its card (version, direction, tolerance) comes
from mteb's metadata. :func:`run_mteb` checks that every task's data can be loaded *before*
any encoding (offline, a task whose dataset is not in the Hugging Face cache fails fast
with a one-line :class:`~compbench.errors.DataError` naming the dataset), then runs one cell
per task through the harness' lifecycle (:mod:`compbench.bench.cell.lifecycle`): compression, byte
accounting (over budget is recorded, not raised), evaluation, lookup throughput, memory and
the record, exactly as any other cell. Main score = mteb's ``main_score`` averaged over the
evaluated splits and subsets (``TaskResult.get_score``); retention is against the dense cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compbench.bench.cell.runner import run_cell
from compbench.bench.results.record_store import ResultStore
from compbench.config import RunConfig
from compbench.tasks.mteb_tasks import LOCAL_TASKS, check_data, resolve_tasks


def run_mteb(method: str, budget: str, tasks: Sequence[Any], *, model: str | None = None,
             options: dict[str, Any] | None = None, device: str = "cpu", threads: int | None = None, seed: int = 0,
             results: Path | None = None, batch_size: int = 64, mteb_cache: Path | None = None, dense: bool = True,
             cache: dict[str, Any] | None = None) -> list[Any]:
    """Compress the encoder's token table with ``method`` at ``budget`` and run each mteb task as one cell
    (task ``mteb-<Name>``) through the harness' lifecycle; returns the records (written to ``results``).

    Every task's data is loaded first, so a missing dataset stops the run before any compression. With
    ``dense``, each task's dense reference is a planned dependency: for tasks given by name it runs in a
    fresh process first (as for ``compbench run``); for task objects that only exist in this process
    (a local ``load_data``) it runs in this process before the candidate, and both records say
    ``fresh_process: false``. ``mteb_cache`` is accepted for compatibility and not used: every cell evaluates.
    """
    from dataclasses import replace

    task_objs = resolve_tasks(tasks)
    check_data(task_objs)  # fail fast, before loading or compressing anything
    local = {t.metadata.name for t in tasks if not isinstance(t, str)}
    for t in task_objs:
        if t.metadata.name in local:
            LOCAL_TASKS[t.metadata.name] = t
    store = ResultStore(results) if results is not None else None
    cache = cache if cache is not None else {}
    records = []
    for t in task_objs:
        cfg = RunConfig(method=method, budget=budget, track="posthoc", task=f"mteb-{t.metadata.name}", device=device,
                        threads=threads, seed=seed, options=dict(options or {}), model=model, batch_size=batch_size,
                        fresh_process=False)
        in_process = t.metadata.name in local
        if dense and in_process and method != "dense" and store is not None:
            run_cell(replace(cfg, method="dense", budget="1x", options={}), store, cache=cache, references=False)
        records.append(run_cell(cfg, store, cache=cache, references=dense and not in_process))
    return records


__all__ = ["run_mteb"]
