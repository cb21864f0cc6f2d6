"""``compbench ade-lookup``: ADE's Vocabulary-Projection lookup vs the naive two-stage lookup vs dense.

It is one ordinary cell (``ade`` on the posthoc ``fidelity`` task) run through the harness' lifecycle, so it
writes a record like every other cell; the lifecycle times the VP module, the dense table and ADE's naive
two-stage lookup (the method's :meth:`~compbench.methods.method_base.Method.lookup_variants`) in one rotation
on the same ids, and checks that VP and naive outputs are bitwise equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from compbench.bench.cell.input_checks import check_seed, check_threads
from compbench.cli.common import console, handle_errors, quiet_libraries
from compbench.cli.types import PATH
from compbench.config import RunConfig, default_results_dir
from compbench.errors import UsageError

#: stage-1 settings of ``--quick`` (same layout and lookup speed, a worse fit)
QUICK = {"mod_iters": 0, "epochs": 0, "kmeans_iters": 2}


@click.command(name="ade-lookup")
@click.option("--budget", "-b", default="40x", show_default=True, help="Budget that sizes the ADE dictionary.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | auto.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all available cores).")
@click.option("--iters", type=int, default=30, show_default=True, help="Timed calls per lookup path.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lookup-workload", type=click.Choice(["zipf", "uniform"]), default="zipf", show_default=True,
              help="How the 64 x 128 lookup ids are drawn (see `compbench run --help`).")
@click.option("--quick", is_flag=True, help="Skip the stage-1 refinement (same layout and speed, worse fit).")
@click.option("--results", type=PATH, default=None,
              help="Results folder (default: $COMPBENCH_RESULTS, else results/local/).")
@click.option("--json", "as_json", is_flag=True, help="Print the lookup measurements as JSON.")
@handle_errors
def ade_lookup(budget: str, device: str, threads: int | None, iters: int, seed: int, lookup_workload: str,
               quick: bool, results: Path | None, as_json: bool) -> None:
    """Time ADE's VP lookup, the naive CSR two-stage lookup and the dense MiniLM table in one run (and record it)."""
    quiet_libraries()
    from compbench.bench.cell.runner import run_cell  # heavy: torch
    from compbench.bench.results.record_store import ResultStore  # heavy: numpy

    if iters < 1:
        raise UsageError("--iters must be >= 1")
    check_threads(threads)
    check_seed(seed)
    cfg = RunConfig(method="ade", budget=budget, track="posthoc", task="fidelity", device=device, threads=threads,
                    seed=seed, options=dict(QUICK) if quick else {}, lookup_iters=iters, fresh_process=True,
                    lookup_workload=lookup_workload)
    store = ResultStore(results or default_results_dir())
    record = run_cell(cfg, store)
    if record.status != "ok":
        raise UsageError(f"the ADE cell ended {record.status}: {record.error}")
    lk = record.measurements["lookup"]
    naive = lk["variants"]["naive"]
    res = {"dense": lk["dense"], "vp": lk["candidate"], "naive": {k: naive[k] for k in ("median", "p10", "p90", "n")},
           "ratio_vp_dense": lk["ratio"], "ratio_naive_dense": naive["ratio"],
           "ratio_vp_naive": 1.0 / naive["ratio_to_candidate"], "exact_equal": naive["equal_to_candidate"],
           "workload": lk["workload"], "K": record.method.config.get("anchors"),
           "S": record.method.config.get("max_active"), "fit_time_s": record.measurements.get("fit_time_s"),
           "threads": record.device.threads, "device": record.device.kind, "record": str(store.path_for(record.key))}
    if as_json:
        click.echo(json.dumps(res, indent=2, sort_keys=True))
        return
    t = Table(title=f"ADE lookup, {budget} (K={res['K']}, S={res['S']}), {res['device']}, {res['threads']} threads, "
                    f"{lk['batch']}x{lk['seq']} tokens ({lk['workload']['kind']})")
    for col in ("path", "median tok/s", "p10", "p90", "n", "vs dense"):
        t.add_column(col)
    for k, label in (("dense", "dense table"), ("vp", "ADE VP (slot table)"), ("naive", "ADE naive (CSR two-stage)")):
        s = res[k]
        t.add_row(label, f"{s['median']:,.0f}", f"{s['p10']:,.0f}", f"{s['p90']:,.0f}", str(s["n"]),
                  f"{s['median'] / res['dense']['median']:.3f}")
    console.print(t)
    console.print(f"VP / naive = {res['ratio_vp_naive']:.3f}; outputs bitwise equal: {res['exact_equal']}; "
                  f"fidelity {record.metrics.main:.4f}; record {res['record']}")
