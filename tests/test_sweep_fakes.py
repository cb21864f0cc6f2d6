"""A fast stand-in for the posthoc track runner, used by the sweep tests (no tests in this file).

Install it in sweep workers with ``--import test_sweep_fakes:install`` (the tests put ``tests/``
on PYTHONPATH; importing alone has no side effect): it points ``TRACK_RUNNERS["posthoc"]`` at
:func:`run_fake`, which runs the *real*
method (configure -> compress, so budgets, unattainable budgets and byte accounting are
genuine) on a small seeded table instead of MiniLM's, and scores table fidelity. Fault
injection through environment variables (inherited by worker processes):

- ``COMPBENCH_FAKE_SLEEP``: seconds to sleep in every cell;
- ``COMPBENCH_FAKE_FIT_SLEEP``: ``method:seconds:python|native``: a slow fit (FakeHooks), for the fit watchdog;
- ``COMPBENCH_FAKE_CRASH``: comma-separated ``method:mode`` with mode ``raise`` | ``segv`` | ``kill`` | ``exit``;
- ``COMPBENCH_FAKE_DIE_IN_WRITE``: a method name: the process SIGKILLs itself half-way through
  writing that method's record (after the temp file got half of the JSON);
- ``COMPBENCH_FAKE_SHIFT``: a float added to every main score (regression injection);
- ``COMPBENCH_FAKE_OOM_ABOVE``: raise ``torch.cuda.OutOfMemoryError`` when the evaluation batch is larger;
- ``COMPBENCH_FAKE_FUTURE_RECORD``: a method name: its worker writes a record this code cannot validate (as a
  worker running newer code than its sweep would).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from typing import Any

import torch

from compbench.bench.cell.accounting import count_params, stored_bytes, stored_bytes_breakdown
from compbench.bench.cell.budget import reference_bytes
from compbench.bench.cell.context import TRACK_RUNNERS
from compbench.bench.cell.provenance import collect
from compbench.bench.results.record import Metrics, Params, Record, to_json
from compbench.bench.results.record_store import ResultStore
from compbench.tasks.posthoc import table_fidelity

FAKE_RUNNER = "test_sweep_fakes:run_fake"


def install() -> None:
    """Use the fake runner for the posthoc track and arm the write-time fault injection (this process only)."""
    TRACK_RUNNERS["posthoc"] = FAKE_RUNNER
    ResultStore.write = _write  # type: ignore[method-assign]


def fake_table() -> torch.Tensor:
    """A seeded 256 x 32 table with low intrinsic dimension (like real embeddings)."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(256, 8, generator=g) @ torch.randn(8, 32, generator=g)
    return (base + 0.1 * torch.randn(256, 32, generator=g)) * 0.05


def _crash(method: str) -> None:
    specs = dict(s.split(":", 1) for s in os.environ.get("COMPBENCH_FAKE_CRASH", "").split(",") if ":" in s)
    mode = specs.get(method)
    if mode is None:
        return
    if mode == "raise":
        raise RuntimeError(f"injected failure in {method}")
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "exit":
        os._exit(3)


def run_fake(ctx: Any) -> Record:
    """The posthoc runner's contract on a tiny table (see the module docstring)."""
    time.sleep(float(os.environ.get("COMPBENCH_FAKE_SLEEP", "0") or 0))
    _crash(ctx.method.card.name)
    oom_above = os.environ.get("COMPBENCH_FAKE_OOM_ABOVE")
    if oom_above and ctx.config.batch_size > int(oom_above):
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fake) at batch {ctx.config.batch_size}")
    table = fake_table()
    v, d = table.shape
    ref = reference_bytes(v, d)
    budget = ctx.budget_info(ref)
    config = ctx.method.configure(v, d, budget.allowed_bytes)
    module = ctx.method.compress(table, config, seed=ctx.config.seed).eval()
    budget.stored_bytes = stored_bytes(module)
    budget.breakdown = stored_bytes_breakdown(module)
    budget.achieved_ratio = ref / budget.stored_bytes
    pc = count_params(module)
    provenance = collect()
    provenance["run_config"] = ctx.config.to_dict()
    base = dict(key=ctx.key, track=ctx.config.track, seed=ctx.config.seed, method=ctx.method_info(config),
                task=ctx.task_info({}), budget=budget, device=ctx.device_info(),
                params=Params(total=pc.total, trainable=pc.trainable, embedding=pc.total), provenance=provenance)
    if budget.stored_bytes > budget.allowed_bytes:
        return Record(status="over_budget", error="over budget", **base)
    with torch.inference_mode():
        scores = table_fidelity(table, module.materialize(), n_queries=64, k=5)
    main = scores.get(ctx.task.card.metric, scores["mean_row_cosine"]) + float(os.environ.get("COMPBENCH_FAKE_SHIFT", "0"))
    t0 = time.perf_counter()
    with torch.inference_mode():
        module(torch.arange(v))
    lookup = {"candidate": {"median": v / max(time.perf_counter() - t0, 1e-9), "p10": 0.0, "p90": 0.0, "n": 1},
              "dense": {"median": 1.0, "p10": 0.0, "p90": 0.0, "n": 1}, "ratio": 1.0}
    return Record(status="ok", metrics=Metrics(main=main, scores=scores), measurements={"lookup": lookup}, **base)


_original_write = ResultStore.write


def _write(self: ResultStore, record: Record) -> Any:
    if os.environ.get("COMPBENCH_FAKE_FUTURE_RECORD") == record.method.name:  # a record from newer code
        import json

        path = self.path_for(record.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = json.loads(to_json(record))
        doc["field_from_a_newer_compbench"] = 1
        path.write_text(json.dumps(doc))
        return path
    if os.environ.get("COMPBENCH_FAKE_DIE_IN_WRITE") == record.method.name and record.status != "failed":
        path = self.path_for(record.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, _tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        text = to_json(record).encode()
        os.write(fd, text[: len(text) // 2])
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return _original_write(self, record)


FAKE_HOOKS = "test_sweep_fakes:FakeHooks"


def _slow_fit(method: str) -> None:
    """``COMPBENCH_FAKE_FIT_SLEEP=method:seconds:python|native``: a slow fit, as Python-level steps (interruptible)
    or as one blocking call (like a long faiss routine: the interrupt waits for it)."""
    for spec in filter(None, os.environ.get("COMPBENCH_FAKE_FIT_SLEEP", "").split(",")):
        name, seconds, mode = spec.split(":")
        if name != method:
            continue
        if mode == "native":
            time.sleep(float(seconds))
        else:
            end = time.perf_counter() + float(seconds)
            while time.perf_counter() < end:
                time.sleep(0.01)


def install_hooks() -> None:
    """Use :class:`FakeHooks` for the posthoc track (this process only; workers: ``--import
    test_sweep_fakes:install_hooks``)."""
    TRACK_RUNNERS["posthoc"] = FAKE_HOOKS


class FakeHooks:
    """The posthoc track's hooks on :func:`fake_table` (through the real lifecycle): table fidelity.

    ``COMPBENCH_FAKE_ALLOC_MB`` (``method:MB``, comma-separated) makes that method's evaluation allocate and
    touch MB megabytes, so a test can see whose peak memory includes what.
    """

    def __init__(self, ctx: Any):
        self.ctx = ctx

    def load(self, ctx: Any) -> Any:
        from compbench.bench.cell.lifecycle import Subject

        table = fake_table()
        return Subject(num_embeddings=table.shape[0], dim=table.shape[1], model={"name": "fake-table"},
                       data_sha256={}, state={"table": table})

    def produce(self, ctx: Any, subject: Any, config: dict[str, Any], seed: int) -> torch.nn.Module:
        _slow_fit(ctx.method.card.name)
        return ctx.method.compress(subject.state["table"], config, seed=seed).eval()

    def evaluate(self, ctx: Any, subject: Any, module: torch.nn.Module, config: dict[str, Any], seed: int) -> Any:
        import numpy as np

        from compbench.bench.cell.lifecycle import Outcome

        specs = dict(s.split(":", 1) for s in os.environ.get("COMPBENCH_FAKE_ALLOC_MB", "").split(",") if ":" in s)
        mb = int(specs.get(ctx.method.card.name, "0"))
        if mb:
            block = np.ones(mb * 1024 * 1024 // 8)  # touched: resident
            block.sum()
            del block
        with torch.inference_mode():
            scores = table_fidelity(subject.state["table"], module.materialize(), n_queries=64, k=5)
        scores.setdefault(ctx.task.card.metric, scores["mean_row_cosine"])
        return Outcome(scores=scores)

    def dense_module(self, ctx: Any, subject: Any) -> torch.nn.Module:
        return torch.nn.Embedding.from_pretrained(subject.state["table"], freeze=True)
