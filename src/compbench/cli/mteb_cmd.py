"""``compbench mteb``: run MTEB tasks with a compressed encoder and write compbench records."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from compbench.bench.cell.input_checks import check_seed, check_threads
from compbench.bench.cell.plugins import import_plugins
from compbench.cli.common import console, handle_errors, parse_options
from compbench.cli.types import BATCH_SIZE, PATH
from compbench.config import default_results_dir
from compbench.errors import UsageError, quoted


@click.command(name="mteb")
@click.option("--method", "-m", required=True, help="Method name (see `compbench list methods`).")
@click.option("--budget", "-b", required=True, help="Memory budget of the token table ('40x', '1.5MiB', ...).")
@click.option("--tasks", "-t", required=True, help="Comma-separated mteb task names, e.g. STSBenchmark,Banking77Classification.")
@click.option("--model", default=None, help="Sentence encoder path or hub id (default: bundled all-MiniLM-L6-v2).")
@click.option("--option", "-o", "options", multiple=True, help="Method hyperparameter override key=value (repeatable).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | auto.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all available cores); recorded.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=BATCH_SIZE, default=64, show_default=True)
@click.option("--results", type=PATH, default=None,
              help="Results folder (default: $COMPBENCH_RESULTS, else results/local/, which git ignores; "
                   "the committed leaderboard is written only with an explicit --results results).")
@click.option("--mteb-cache", type=PATH, default=None,
              help="mteb ResultCache folder (default: none, always evaluate).")
@click.option("--dense/--no-dense", default=True, show_default=True,
              help="Also evaluate the dense encoder for retention.")
@click.option("--import", "imports", multiple=True, metavar="MODULE[:FUNC]",
              help="Import a module (and call FUNC) first, to register an out-of-tree method (repeatable; installed "
                   "packages with a compbench.methods entry point need no flag).")
@handle_errors
def mteb_command(method: str, budget: str, tasks: str, model: str | None, options: tuple[str, ...], device: str,
                 threads: int | None, seed: int, batch_size: int, results: Path | None, mteb_cache: Path | None,
                 dense: bool, imports: tuple[str, ...] = ()) -> None:
    """Run MTEB tasks with the encoder's token table compressed by METHOD at BUDGET (needs the tasks' data:
    online, or already in the Hugging Face cache)."""
    from compbench.bench.measure.core import resolve_device  # heavy: torch
    from compbench.bench.tracks.mteb_interop import run_mteb  # heavy: torch

    import_plugins(imports)
    check_threads(threads)
    check_seed(seed)
    resolve_device(device)  # an unknown device or a missing GPU is one line, before any network or data access
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if not names:
        raise UsageError(f"--tasks {quoted(tasks)!r} names no task; give comma-separated MTEB task names")
    root = results or default_results_dir()
    records = run_mteb(method, budget, names, model=model, options=parse_options(options, method), device=device,
                       threads=threads, seed=seed, results=root, batch_size=batch_size, mteb_cache=mteb_cache,
                       dense=dense)
    t = Table(title=f"mteb: {method} at {budget}")
    for col in ("task", "metric", "score", "dense", "retention", "stored", "record"):
        t.add_column(col, overflow="fold")
    for r in records:
        m = r.metrics
        t.add_row(r.task.name, r.task.metric, f"{m.main:.4f}", f"{m.dense_score:.4f}" if m.dense_score else "-",
                  f"{m.retention:.4f}" if m.retention else "-",
                  f"{r.budget.stored_bytes:,} B ({r.budget.achieved_ratio:.2f}x)",
                  str(root / f"{r.key}.json"))
    console.print(t)
