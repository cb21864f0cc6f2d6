"""Records for cells that produced no result of their own: ``skipped`` (known before running: wrong
track, unavailable device, unattainable budget) and ``failed`` (a crash, a killed worker, a timeout)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from compbench.bench.cell.budget import Budget
from compbench.bench.cell.identity import cell_key
from compbench.bench.cell.plan import _device_kind, fingerprint, resolve_cell
from compbench.bench.cell.provenance import collect, run_command
from compbench.bench.measure.core import available_cpus, device_name
from compbench.bench.results.record import BudgetInfo, DeviceInfo, MethodInfo, Record, TaskInfo
from compbench.config import RunConfig
from compbench.errors import CompbenchError
from compbench.methods import get_method_class
from compbench.tasks import DEFAULT_TASKS, get_task


def outcome_record(config: RunConfig, status: str, error: str, *, key: str | None = None,
                   reference_bytes: int | None = None, skip: str | None = None,
                   measurements: dict[str, Any] | None = None) -> Record:
    """A ``skipped`` or ``failed`` record for a cell that produced no result (the reason in ``error``).

    ``reference_bytes`` is 0 when the cell never reached the table (unknown)."""
    task_name = config.task or DEFAULT_TASKS.get(config.track, "")
    mc = get_method_class(config.method).card
    task = get_task(config.track, task_name)
    budget = Budget.parse(config.budget)
    threads = config.threads if config.threads is not None else available_cpus()
    kind = _device_kind(config.device)
    try:
        import torch

        dname = device_name(torch.device(config.device if kind == "cuda" and config.device != "auto" else kind))
    except Exception:  # noqa: BLE001 - no such device here: keep what the user asked for
        dname = config.device

    ref = int(reference_bytes or 0)
    provenance = collect(command=" ".join(run_command(config)))
    provenance["run_config"] = replace(config, task=task_name, threads=threads).to_dict()
    provenance["sweep"] = {"fingerprint": fingerprint(config), "skip": skip}
    identity: dict[str, Any] | None = None
    try:
        resolved = resolve_cell(config)
        identity = resolved.identity.to_dict()
        key = key or resolved.key
    except CompbenchError:  # settings that do not resolve: the plain key of the cell
        if key is None:
            key = cell_key(config.track, task_name, mc.name, str(budget), kind, threads, config.seed, config.options)
    return Record(
        key=key,
        status=status,  # type: ignore[arg-type]
        error=error,
        identity=identity,
        track=config.track,
        seed=config.seed,
        method=MethodInfo(name=mc.name, version=mc.version, family=mc.family, reference=mc.reference,
                          options=dict(config.options)),
        task=TaskInfo(**task.card.to_dict()),
        budget=BudgetInfo(spec=str(budget), reference_bytes=ref, allowed_bytes=budget.resolve(ref) if ref else
                          (budget.max_bytes or 0)),
        device=DeviceInfo(kind=kind, name=dname, threads=threads),
        measurements=dict(measurements or {}),
        provenance=provenance,
    )


__all__ = ["outcome_record"]
