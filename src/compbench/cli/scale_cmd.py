"""``compbench scale``: run the scale track's grid (or part of it), then write the cost-curve report."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from compbench.cli.common import console, handle_errors
from compbench.cli.sweep_cmd import sweep
from compbench.cli.types import PATH, SECONDS
from compbench.config import default_results_dir
from compbench.errors import UsageError


@click.command("scale")
@click.option("--methods", default=None, help="Comma-separated methods (default: the shipped scale suite's).")
@click.option("--tasks", default=None,
              help="Comma-separated shapes: minilm, mpnet, glove, synth-v{32k,128k,256k}-d{768,2048,4096} "
                   "(default: the shipped scale suite's).")
@click.option("--budgets", default=None, help="Comma-separated budgets (default 40x).")
@click.option("--results", type=PATH, default=None,
              help="Results folder (default: $COMPBENCH_RESULTS, else results/local/).")
@click.option("--out", type=PATH, default=None,
              help="Report folder (default: <results>/../reports/scale when --results is given, else reports/scale).")
@click.option("--jobs", "-j", type=int, default=1, show_default=True,
              help="Cells at once (peak memory and time are per cell; 1 for quotable costs).")
@click.option("--max-fit-seconds", type=SECONDS, default=None,
              help="Stop a longer fit and record the cell as timeout (default: the suite's 1800 s; 0: no limit).")
@click.option("--report-only", is_flag=True, help="Only (re)write the report from the records already stored.")
@click.option("--dry-run", is_flag=True, help="Print the planned cells and exit.")
@click.pass_context
@handle_errors
def scale_command(click_ctx: click.Context, methods: str | None, tasks: str | None, budgets: str | None,
                  results: Path | None, out: Path | None, jobs: int, max_fit_seconds: float | None,
                  report_only: bool, dry_run: bool) -> None:
    """Cost curves: fit time and peak memory of posthoc methods against table size (the scale track).

    Runs the shipped ``scale`` suite (each cell in its own process, resumable like any sweep), then writes
    scale.md, scale.json and two log-log plots with the fitted exponents.
    """
    from compbench.bench.results.record_store import ResultStore  # heavy: numpy
    from compbench.leaderboard.scale_report import write_scale_report  # heavy: numpy

    root = results or default_results_dir()
    if not report_only:
        prefixed = None if tasks is None else ",".join(t if "/" in t else f"scale/{t}" for t in tasks.split(","))
        try:
            click_ctx.invoke(sweep, suite_arg="scale", suite_opt=None, methods=methods, budgets=budgets,
                             tasks=prefixed, seeds=None, devices=None, threads=None, results=root,
                             overwrite="only-missing", executor="local", jobs=jobs, address=None, cell_timeout=None,
                             max_fit_seconds=max_fit_seconds, imports=(), dry_run=dry_run, as_json=False,
                             progress=None)
        except SystemExit as exc:  # failed or timed-out cells (exit 1) still get their report; a usage error
            if exc.code not in (0, 1, None):  # (exit 2) or an interrupt (130) stops here with its own code
                raise
    if dry_run:
        return
    if not Path(root).is_dir():
        raise UsageError(f"--results {str(root)[:200]}: no such folder (run the scale suite first, or point "
                         "--results at its records)")
    folder = out or (Path(results).parent / "reports" / "scale" if results is not None else Path("reports/scale"))
    records, _ = ResultStore(root).load_all()
    budget = budgets.split(",")[0] if budgets else "40x"
    res = write_scale_report(records, folder, budget)
    console.print(f"wrote the scale report ({res['rows']} cell(s), {len(res['summary'])} method(s)) to "
                  f"{escape(str(folder))}/scale.md", highlight=False, soft_wrap=True)
