"""``compbench report``: render the leaderboard (Markdown + self-contained HTML + plots) from stored records."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from compbench.cli import console, err_console, handle_errors
from compbench.cli_types import PATH


@click.command()
@click.option("--results", type=PATH, default=None,
              help="Results folder to read (default: $COMPBENCH_RESULTS, else results/, the committed "
                   "leaderboard; your own runs are in results/local/).")
@click.option("--out", type=PATH, default=Path("reports"), show_default=True,
              help="Folder to write the report into (pages no longer generated are removed; other files are kept).")
@click.option("--task", "tasks", multiple=True, help="Only this task ('stsb' or 'posthoc/stsb'); repeatable.")
@click.option("--device", "devices", multiple=True,
              help="Only this device ('cpu', 'cuda' or a label like 'cpu-1t'); repeatable.")
@click.option("--track", "tracks", multiple=True, help="Only this track (posthoc, train, words, store); repeatable.")
@handle_errors
def report(results: Path | None, out: Path, tasks: tuple[str, ...], devices: tuple[str, ...],
           tracks: tuple[str, ...]) -> None:
    """Render reports/index.md|html and one page per track, task and device from the stored records."""
    from compbench.config import leaderboard_results_dir
    from compbench.leaderboard.report import write_report

    res = write_report(results or leaderboard_results_dir(), out, tasks=tasks, devices=devices, tracks=tracks)
    for p in res.problems:
        err_console.print(f"[yellow]skipped malformed record[/] {escape(f'{p.path}: {p.reason}')}", highlight=False, soft_wrap=True)
    removed = f"; removed {len(res.removed)} stale file(s)" if res.removed else ""
    console.print(f"wrote {res.pages} page(s) from {res.records} record(s) to {res.out}/ "
                  f"(index: {res.out / 'index.html'}){removed}", highlight=False, soft_wrap=True)
