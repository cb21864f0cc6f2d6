"""Every baseline at its best: the harness tunes a method for a budget on **validation** data only.

A method declares a small search space for a budget (``Method.tuning_space(V, d, budget_bytes)``: at most
12 option sets, its default first; see each method's docstring for why those). With ``--tune on`` the
lifecycle calls :func:`tune` before the test run:

1. each candidate's options (the user's ``--option`` values win over the space's) are configured for the
   budget (an unattainable candidate is recorded and skipped), the module is built on the table, its stored
   bytes are counted (over budget: recorded and skipped), and it is evaluated on the task's **validation**
   split (``task.validation()``: STS-B validation for ``stsb``) — never a test item;
2. the best in-budget candidate by validation score wins (ties: fewer stored bytes, then the earlier
   candidate); the lifecycle then builds it once more and evaluates it on test, once;
3. **cost cap**: tuning stops after the candidate that brings its time past 10x the default candidate's time
   (fit + validation), a proxy for the untuned cell; the record says whether the cap stopped it.

The record keeps, under ``measurements.tuning``: the search space, every candidate's options, status,
validation score, stored bytes, fit and evaluation seconds, the chosen options, the validation task and the
sha256 of its data, and the tuning time (apart from the test run's fit time).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from compbench.bench.cell.accounting import stored_bytes
from compbench.bench.cell.context import data_sha256
from compbench.errors import UnattainableBudgetError, UsageError
from compbench.methods import get_method

MAX_CANDIDATES = 12
COST_CAP = 10.0


def tune(ctx: Any, hooks: Any, subject: Any, allowed_bytes: int, seed: int) -> tuple[Any, dict[str, Any]]:
    """Tune ``ctx.method`` for ``allowed_bytes`` on the validation split; returns (the chosen method, the facts)."""
    if not ctx.method.has_tuning_space():
        raise UsageError(f"method '{ctx.method.card.name}' declares no tuning space (run it with --tune off)")
    val_fn = getattr(ctx.task, "validation", None)
    val_task = val_fn() if callable(val_fn) else None
    if val_task is None:
        raise UsageError(f"task '{ctx.task.card.name}' has no validation split to tune on (run with --tune off)")
    v, d = subject.num_embeddings, subject.dim
    space = list(ctx.method.tuning_space(v, d, allowed_bytes))[:MAX_CANDIDATES]
    user = dict(ctx.config.options)
    vctx = replace(ctx, task=val_task)
    metric, higher = val_task.card.metric, val_task.card.higher_is_better
    rows: list[dict[str, Any]] = []
    first_unattainable: UnattainableBudgetError | None = None
    t_start = time.perf_counter()
    cap: float | None = None
    stopped = False
    for i, cand in enumerate(space):
        opts = {**cand, **user}
        row: dict[str, Any] = {"candidate": i, "options": dict(sorted(opts.items()))}
        t0 = time.perf_counter()
        try:
            method = get_method(ctx.method.card.name, **opts)
            config = method.configure(v, d, allowed_bytes)
        except UnattainableBudgetError as exc:
            first_unattainable = first_unattainable or exc
            row.update(status="unattainable", error=str(exc))
            rows.append(row)
            continue
        module = hooks.produce(replace(ctx, method=method), subject, config, seed).to(ctx.device)
        fit_s = time.perf_counter() - t0
        nbytes = stored_bytes(module)
        row.update(config=config, stored_bytes=nbytes, fit_time_s=fit_s)
        if nbytes > allowed_bytes:
            row["status"] = "over_budget"
        else:
            t1 = time.perf_counter()
            outcome = hooks.evaluate(replace(vctx, method=method), subject, module, config, seed)
            row.update(status="ok", validation_score=float(outcome.scores[metric]),
                       eval_time_s=time.perf_counter() - t1)
        del module
        rows.append(row)
        spent = time.perf_counter() - t_start
        if cap is None:
            cap = COST_CAP * (time.perf_counter() - t0)
        elif spent > cap and i < len(space) - 1:
            stopped = True
            break
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        if first_unattainable is not None:
            raise first_unattainable
        raise UsageError(f"no candidate of '{ctx.method.card.name}' fits {allowed_bytes:,} B")
    sign = 1.0 if higher else -1.0
    best = max(ok, key=lambda r: (sign * r["validation_score"], -r["stored_bytes"], -r["candidate"]))
    chosen = get_method(ctx.method.card.name, **best["options"])
    facts = {
        "space": [dict(c) for c in space], "candidates": rows, "chosen": best["candidate"],
        "chosen_options": best["options"], "validation": {"task": val_task.card.name,
                                                          "data_sha256": data_sha256(val_task)},
        "time_s": time.perf_counter() - t_start, "cost_cap_s": cap, "stopped_by_cost_cap": stopped,
        "rule": "best validation score among in-budget candidates; ties: fewer stored bytes, then earlier",
    }
    return chosen, facts


__all__ = ["COST_CAP", "MAX_CANDIDATES", "tune"]
