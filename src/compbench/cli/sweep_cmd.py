"""``compbench sweep`` and ``compbench compare``: thin CLI wrappers over bench.sweeps.sweep and bench.results.compare."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from compbench.bench.cell.input_checks import check_seeds, check_threads
from compbench.bench.cell.plugins import import_plugins
from compbench.cli.common import console, err_console, handle_errors
from compbench.cli.types import PATH, SECONDS
from compbench.config import default_results_dir
from compbench.errors import UsageError

_STATUS_STYLE = {"ok": "green", "over_budget": "yellow", "failed": "red", "skipped": "dim", "timeout": "red"}


def _status_text(record: Any) -> str:
    style = _STATUS_STYLE.get(record.status, "")
    score = f" {record.task.metric}={record.metrics.main:.4f}" if record.metrics.main is not None else ""
    why = f" ({escape(record.error)})" if record.error and record.status != "ok" else ""
    return f"[{style}]{record.status}[/]{score}{why}"


class _SigtermAsInterrupt:
    """Treat SIGTERM like Ctrl-C while a sweep runs (stop cleanly, keep finished records)."""

    def __enter__(self) -> _SigtermAsInterrupt:
        def handler(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt
        try:
            self._old = signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


@click.command()
@click.argument("suite_arg", metavar="[SUITE]", required=False)
@click.option("--suite", "-s", "suite_opt", default=None,
              help="Shipped suite name (smoke, default, full) or a path to a suite YAML file.")
@click.option("--methods", default=None, help="Override: comma-separated method names (every grid).")
@click.option("--budgets", default=None, help="Override: comma-separated budgets, e.g. 10x,40x.")
@click.option("--tasks", default=None, help="Override: comma-separated tasks, track/name or a bare name.")
@click.option("--seeds", default=None, help="Override: comma-separated seeds, e.g. 0,1,2.")
@click.option("--devices", default=None, help="Override: comma-separated devices (cpu, cuda, auto).")
@click.option("--threads", type=int, default=None, help="Override: CPU threads per cell.")
@click.option("--results", type=PATH, default=None,
              help="Results folder (default: $COMPBENCH_RESULTS, else results/local/, which git ignores; "
                   "the committed leaderboard is written only with an explicit --results results).")
@click.option("--overwrite", type=click.Choice(["never", "only-missing", "always"]), default="only-missing",
              show_default=True, help="Which existing records to re-run (only-missing: missing, stale, failed).")
@click.option("--executor", type=click.Choice(["local", "ray", "inline"]), default="local", show_default=True,
              help="local: a pool of fresh processes; ray: Ray tasks; inline: this process (debugging).")
@click.option("--jobs", "-j", type=int, default=1, show_default=True, help="Local executor: cells run at once.")
@click.option("--address", default=None, help="Ray executor: cluster address (default: start a local Ray).")
@click.option("--cell-timeout", type=float, default=None, help="Local executor: stop a cell after this many seconds.")
@click.option("--max-fit-seconds", type=SECONDS, default=None,
              help="Override: stop a fit that runs longer and record the cell as timeout (suite key "
                   "max_fit_seconds; default 3600; 0: no limit).")
@click.option("--import", "imports", multiple=True, metavar="MODULE[:FUNC]",
              help="Import a module (and call FUNC) in the sweep and in every worker, to register out-of-tree "
                   "methods/tasks (repeatable).")
@click.option("--dry-run", is_flag=True,
              help="Resolve and plan every cell (names, options, budgets, keys, what is up to date), print the "
                   "plan and exit without running or writing anything.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@handle_errors
def sweep(suite_arg: str | None, suite_opt: str | None, methods: str | None, budgets: str | None, tasks: str | None,
          seeds: str | None, devices: str | None, threads: int | None, results: Path | None, overwrite: str,
          executor: str, jobs: int, address: str | None, cell_timeout: float | None, max_fit_seconds: float | None,
          imports: tuple[str, ...], dry_run: bool, as_json: bool, progress: bool | None) -> None:
    """Run a suite: every cell (method x budget x task x device x seed) into one record each.

    Re-running the same command resumes: cells with an up-to-date record are reused. Exit codes:
    0 all cells ok/skipped/over budget, 1 some cell failed or timed out, 2 usage error, 130 interrupted.
    """
    from compbench.bench.cell.plan import prepare_sweep  # heavy: torch
    from compbench.bench.results.record_store import ResultStore  # heavy: numpy
    from compbench.bench.sweeps.suite import apply_overrides, load_suite  # heavy: torch
    from compbench.bench.sweeps.sweep import make_executor, run_sweep  # heavy: torch

    if suite_arg and suite_opt:
        raise UsageError("give the suite either as an argument or with --suite, not both")
    spec = suite_arg or suite_opt
    if not spec:
        raise UsageError("no suite: use --suite smoke|default|full or give a path to a suite YAML file")
    local_cores = not (executor == "ray" and address)  # a Ray cluster's cells run on other machines
    check_threads(threads, upper=local_cores)
    if seeds is not None:
        try:
            check_seeds(int(x) for x in seeds.split(",") if x.strip())
        except ValueError:
            pass  # not integers: apply_overrides says so
    import_plugins(imports)
    suite = apply_overrides(load_suite(spec), methods=methods, budgets=budgets, tasks=tasks, seeds=seeds,
                            devices=devices, threads=threads, max_fit_seconds=max_fit_seconds)
    for g in suite.grids:  # values from the suite file (or the overrides): the same rules as the flags
        check_threads(g.threads, f"suite {suite.name}: threads" if threads is None else "--threads", upper=local_cores)
        check_seeds(g.seeds, f"suite {suite.name}: seeds" if seeds is None else "--seeds")
    store = ResultStore(results or default_results_dir())
    if executor != "local" and cell_timeout is not None:
        raise UsageError("--cell-timeout is only supported by the local executor")
    if jobs < 1:  # checked before planning, so a dry run (and `compbench scale`) refuses it too
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if executor != "local" and jobs != 1:
        raise UsageError("--jobs is for the local executor (Ray schedules by each cell's CPU/GPU request)")
    if executor != "ray" and address:
        raise UsageError("--address is only used with --executor ray")
    cells = prepare_sweep(suite, store, overwrite)
    n_run = sum(c.action == "run" for c in cells)
    n_skip = sum(c.action == "skip" for c in cells)
    n_cached = sum(c.action == "cached" for c in cells)
    header = (f"suite [bold]{escape(suite.name)}[/]: {len(cells)} cells ({n_run} to run, {n_skip} skipped, "
              f"{n_cached} up to date) -> {escape(str(store.root))}")
    if dry_run:
        t = Table(title=f"suite {escape(suite.name)}: {len(cells)} cells", title_justify="left")
        for col in ("cell", "action", "note"):
            t.add_column(col, overflow="fold")
        for c in cells:
            note = c.skip_reason if c.action == "skip" else c.note
            t.add_row(escape(c.key) + (" (reference)" if c.reference else ""), c.action, escape(note or ""))
        if as_json:
            click.echo(json.dumps([{"key": c.key, "action": c.action, "note": (c.skip_reason if c.action == "skip"
                                                                                  else c.note), "reference": c.reference}
                                   for c in cells], indent=2))
        else:
            console.print(t)
        return
    store.check_writable()  # one clear error before the header, the executor or any cell
    ex = make_executor(executor, jobs=jobs, address=address, imports=(*imports, *suite.imports),
                       cell_timeout=cell_timeout)
    show_bar = progress if progress is not None else err_console.is_terminal
    err_console.print(header, highlight=False)
    todo = n_run

    bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[running]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=err_console, disable=not show_bar, transient=False)
    running: set[str] = set()

    def on_event(ev: Any) -> None:
        if ev.kind == "start" and ev.cell is not None:
            running.add(ev.cell.key)
            bar.update(task_id, running=f"{len(running)} running")
        elif ev.kind == "done" and ev.cell is not None and ev.record is not None:
            running.discard(ev.cell.key)
            if ev.cell.action == "run":  # known skips are written up front and not counted (they would skew the ETA)
                bar.update(task_id, advance=1, running=f"{len(running)} running")
            secs = f" [dim]{ev.seconds:.1f}s[/]" if ev.seconds else ""
            bar.console.print(f"  {escape(ev.cell.key)}: {_status_text(ev.record)}{secs}", highlight=False, soft_wrap=True)

    with bar, _SigtermAsInterrupt():
        task_id = bar.add_task(f"sweep {suite.name}", total=todo, running="")
        result = run_sweep(cells, store, ex, on_event=on_event)
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        st = ", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items())) or "nothing run"
        err_console.print(f"done in {result.seconds:.1f}s: {st}; {summary['cached']} up to date; records in {escape(str(store.root))}",
                          highlight=False)
    if result.interrupted:
        err_console.print(f"[bold red]interrupted[/]: {len(result.records)} record(s) written, "
                          f"{len(result.missing)} cell(s) missing; re-run the same command to resume", highlight=False)
        sys.exit(130)
    if result.failed:
        err_console.print(f"[bold red]error:[/] {len(result.failed)} cell(s) failed: "
                          + escape("; ".join(f"{r.key}: {r.error}" for r in result.failed[:5])), highlight=False, soft_wrap=True)
        sys.exit(1)


@click.command()
@click.argument("base", type=PATH)
@click.argument("new", type=PATH)
@click.option("--markdown", "markdown", type=PATH, default=None,
              help="Write a Markdown summary (for a PR comment) to this file ('-' for stdout).")
@click.option("--allow-missing", is_flag=True, help="Cells of BASE missing in NEW do not fail the comparison.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-cell outcome as JSON on stdout.")
@handle_errors
def compare(base: Path, new: Path, markdown: Path | None, allow_missing: bool, as_json: bool) -> None:
    """Compare two results folders (asv rules); exit 1 on a regression.

    Status, stored bytes and params must match exactly; the main score must stay within the task's
    tolerance; throughput is reported but not gating; a changed method/task version is not comparable.
    """
    from compbench.bench.results.compare import compare_dirs, to_markdown  # heavy: numpy

    comp = compare_dirs(base, new, allow_missing=allow_missing)
    for role, problems in (("base", comp.base_problems), ("new", comp.new_problems)):
        for p in problems:
            err_console.print(f"[yellow]warning:[/] {role}: skipped malformed record {escape(f'{p.path}: {p.reason}')}",
                              highlight=False, soft_wrap=True)
    md = to_markdown(comp)
    if markdown is not None:
        if str(markdown) == "-":
            click.echo(md, nl=False)
        else:
            try:
                markdown.parent.mkdir(parents=True, exist_ok=True)
                markdown.write_text(md, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"cannot write {markdown}: {exc.strerror or exc}") from exc
    if as_json:
        click.echo(json.dumps([{"key": d.key, "kind": d.kind, "reasons": d.reasons, "metric": d.metric,
                                "base": d.base_score, "new": d.new_score, "tolerance": d.tolerance,
                                "throughput_ratio": d.throughput_ratio} for d in comp.diffs], indent=2))
    elif str(markdown) != "-":
        _print_comparison(comp)
    sys.exit(comp.exit_code)


def _print_comparison(comp: Any) -> None:
    style = {"regression": "red", "missing": "red", "improvement": "green", "not_comparable": "yellow",
             "unchanged": "", "new": "cyan"}
    t = Table(title=f"{comp.base_dir} -> {comp.new_dir}", title_justify="left")
    for col in ("cell", "outcome", "metric", "base", "new", "delta", "lookup new/base", "detail"):
        t.add_column(col, overflow="fold")
    for d in comp.diffs:
        s = style.get(d.kind, "")
        t.add_row(escape(d.key), f"[{s}]{d.kind}[/]" if s else d.kind, escape(d.metric or "-"),
                  "-" if d.base_score is None else f"{d.base_score:.4f}",
                  "-" if d.new_score is None else f"{d.new_score:.4f}",
                  "-" if d.delta is None else f"{d.delta:+.4f}",
                  "-" if d.throughput_ratio is None else f"{d.throughput_ratio:.2f}x",
                  escape("; ".join(d.reasons)) if d.kind != "unchanged" else "")
    console.print(t)
    c = comp.counts
    verdict = ("[bold red]FAIL[/]" if comp.exit_code else "[bold green]OK[/]")
    console.print(f"{verdict}: {c['regression']} regression(s), {c['missing']} missing, {c['improvement']} improvement(s), "
                  f"{c['not_comparable']} not comparable, {c['unchanged']} unchanged, {c['new']} new", highlight=False)
