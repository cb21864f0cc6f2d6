"""``compbench ade-lookup``: ADE's Vocabulary-Projection lookup vs the naive two-stage lookup vs dense."""

from __future__ import annotations

import json
import time

import click
from rich.table import Table

from compbench.cli import _quiet_libraries, console, handle_errors


@click.command(name="ade-lookup")
@click.option("--budget", "-b", default="40x", show_default=True, help="Budget that sizes the ADE dictionary.")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | auto.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all available cores).")
@click.option("--batch", type=int, default=64, show_default=True, help="Sequences per lookup call.")
@click.option("--seq", type=int, default=128, show_default=True, help="Tokens per sequence.")
@click.option("--iters", type=int, default=30, show_default=True, help="Timed calls per lookup path.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="Skip the stage-1 refinement (same layout and speed, worse fit).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def ade_lookup(budget: str, device: str, threads: int | None, batch: int, seq: int, iters: int, seed: int,
               quick: bool, as_json: bool) -> None:
    """Time ADE's VP lookup, the naive CSR two-stage lookup and the dense MiniLM table in one run."""
    _quiet_libraries()
    from compbench.bench.budget import Budget, reference_bytes
    from compbench.bench.measure import apply_threads, available_cpus, resolve_device
    from compbench.bench.validate import check_seed, check_threads
    from compbench.errors import UsageError
    from compbench.methods.ade import ADE, vp_benchmark
    from compbench.models.encoder import SentenceEncoder

    if min(batch, seq, iters) < 1:
        raise UsageError("--batch, --seq and --iters must be >= 1")
    check_threads(threads)
    check_seed(seed)
    apply_threads(threads if threads is not None else available_cpus())
    dev = resolve_device(device)
    table = SentenceEncoder(None, device="cpu").token_table
    v, d = table.shape
    allowed = Budget.parse(budget).resolve(reference_bytes(v, d))
    method = ADE(**({"mod_iters": 0, "epochs": 0, "kmeans_iters": 2} if quick else {}))
    config = method.configure(v, d, allowed)
    t0 = time.perf_counter()
    emb = method.compress(table.to(dev), config, seed=seed)
    fit_s = time.perf_counter() - t0
    res = vp_benchmark(emb, table.to(dev), device=dev, batch=batch, seq=seq, iters=iters, seed=seed)
    res.update({"budget": budget, "K": config["anchors"], "S": config["max_active"], "fit_time_s": fit_s,
                **emb.active_stats()})
    if as_json:
        click.echo(json.dumps(res, indent=2, sort_keys=True))
        return
    t = Table(title=f"ADE lookup, {budget} (K={res['K']}, S={res['S']}, mean active {res['mean_active']:.2f}), "
                    f"{res['device']}, {res['threads']} threads, {batch}x{seq} tokens")
    for col in ("path", "median tok/s", "p10", "p90", "n", "vs dense"):
        t.add_column(col)
    for k, label in (("dense", "dense table"), ("vp", "ADE VP (slot table)"), ("naive", "ADE naive (CSR two-stage)")):
        s = res[k]
        t.add_row(label, f"{s['median']:,.0f}", f"{s['p10']:,.0f}", f"{s['p90']:,.0f}", str(s["n"]),
                  f"{s['median'] / res['dense']['median']:.3f}")
    console.print(t)
    console.print(f"VP / naive = {res['ratio_vp_naive']:.3f}; outputs bitwise equal: {res['exact_equal']}")
