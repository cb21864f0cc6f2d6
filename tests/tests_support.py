"""Helpers shared by tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from compbench.bench.cell.identity import cell_key
from compbench.bench.results.record import BudgetInfo, DeviceInfo, MethodInfo, Record, TaskInfo


def make_record(method: str = "svd", budget: str = "10x", seed: int = 0, main: float | None = 0.5,
                status: str = "ok", task: str = "stsb", track: str = "posthoc") -> Record:
    """A small valid record for store / report / compare tests."""
    key = cell_key(track, task, method, budget, "cpu", 1, seed)
    return Record(
        key=key, status=status, track=track, seed=seed,
        method=MethodInfo(name=method, version=1, family="low-rank", reference="x", config={"rank": 3}),
        task=TaskInfo(name=task, version=1, track=track, metric="cosine_spearman", higher_is_better=True, tolerance=0.005),
        budget=BudgetInfo(spec=budget, reference_bytes=1000, allowed_bytes=100, stored_bytes=90, achieved_ratio=11.1111111),
        device=DeviceInfo(kind="cpu", name="test", threads=1),
        metrics={"main": main, "scores": {"cosine_spearman": main} if main is not None else {}},
    )
