"""``compbench report``: render the leaderboard (Markdown + self-contained HTML + plots) from stored records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from compbench.cli.common import console, err_console, handle_errors
from compbench.cli.types import PATH
from compbench.config import leaderboard_results_dir


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
@click.option("--readme", type=PATH, default=None,
              help="Also refresh this file's results block (between compbench:results markers) from summary.md.")
@handle_errors
def report(results: Path | None, out: Path, tasks: tuple[str, ...], devices: tuple[str, ...],
           tracks: tuple[str, ...], readme: Path | None) -> None:
    """Render reports/index.md|html and one page per track, task and device from the stored records."""
    from compbench.leaderboard.report import write_report  # heavy: matplotlib

    with _PageProgress(enabled=err_console.is_terminal) as bar:
        res = write_report(results or leaderboard_results_dir(), out, tasks=tasks, devices=devices, tracks=tracks,
                           progress=bar.update, readme=readme)
    for p in res.problems:
        err_console.print(f"[yellow]skipped malformed record[/] {escape(f'{p.path}: {p.reason}')}", highlight=False, soft_wrap=True)
    removed = f"; removed {len(res.removed)} stale file(s)" if res.removed else ""
    console.print(f"wrote {res.pages} page(s) from {res.records} record(s) to {res.out}/ "
                  f"(index: {res.out / 'index.html'}){removed}", highlight=False, soft_wrap=True)
    if readme is not None:
        state = "updated" if readme in res.files else "already current"
        console.print(f"results block of {readme}: {state}", highlight=False, soft_wrap=True)


class _PageProgress:
    """``report``'s progress on stderr: a bar over the pages with the one being drawn and an ETA (terminals only;
    loading the records comes first and shows a spinner)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> _PageProgress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("report"), BarColumn(), TextColumn("{task.completed}/{task.total} pages"),
                                     TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"),
                                     console=err_console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("loading records", total=None)
        return self

    def update(self, done: int, total: int, page: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total, description=escape(page))

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
