"""``compbench list`` (methods, tasks, datasets) and ``compbench show`` (a record)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from compbench.cli.common import console, handle_errors
from compbench.cli.run_cmd import print_record
from compbench.cli.types import PATH
from compbench.datasets import get_dataset_card, list_datasets
from compbench.errors import UsageError, quoted
from compbench.tasks import TASKS, get_task
from compbench.tasks.task_base import TRACKS


def options_table(model: Any) -> Table:
    """A method's options as its ``Options`` model declares them: name, default, valid values, help."""
    from compbench.methods.options import field_range, type_words  # heavy: torch

    t = Table(title="options (-o key=value)", title_justify="left")
    for col in ("option", "default", "valid values", "help"):
        t.add_column(col, overflow="fold", style="cyan" if col == "option" else None)
    for key, info in model.model_fields.items():
        rng = field_range(info)
        valid = rng.describe() if rng is not None else type_words(info)
        default = "chosen for the budget" if info.default is None else str(info.default)
        t.add_row(escape(f"-o {key}"), escape(default), escape(valid), escape(info.description or ""))
    return t


@click.command(name="list")
@click.argument("what", type=click.Choice(["methods", "tasks", "datasets"]))
@click.argument("name", required=False, default=None)
@click.option("--track", default=None, help="Only tasks of this track.")
@handle_errors
def list_cmd(what: str, name: str | None, track: str | None) -> None:
    """List methods, tasks or datasets. ``list methods`` is one short line per method (readable at 80 columns);
    ``list methods NAME`` shows that method's whole card: reference, description and options."""
    if what == "methods" and name is not None:
        from compbench.methods import get_method_class  # heavy: torch

        cls = get_method_class(name)  # unknown names: one line with a suggestion
        c = cls.card
        t = Table(title=f"[bold]{escape(c.name)}[/] v{c.version}", show_header=False, title_justify="left")
        t.add_column("field", style="cyan")
        t.add_column("value", overflow="fold")
        for field_name, value in (("family", c.family), ("tracks", ", ".join(c.modes)), ("reference", c.reference),
                                  ("description", c.description)):
            t.add_row(field_name, escape(str(value)))
        model = getattr(cls, "Options", None)
        if model is None:  # a method without an Options model (the older contract): its card's help
            for opt, text in sorted((c.options or {}).items()):
                t.add_row(f"-o {escape(opt)}", escape(str(text)))
        console.print(t)
        if model is not None and model.model_fields:
            console.print(options_table(model))
        return
    if name is not None:
        raise UsageError(f"'compbench list {what} NAME' is for methods only")
    if what == "methods":
        from compbench.methods import get_method_class, list_methods  # heavy: torch

        t = Table(title="methods (details: compbench list methods NAME)")
        for col, width in (("name", 12), ("family", 15), ("tracks", 13)):
            t.add_column(col, no_wrap=True, min_width=width, max_width=width, overflow="ellipsis")
        t.add_column("description", no_wrap=True, overflow="ellipsis", max_width=max(20, console.width - 53))
        for n in list_methods():
            c = get_method_class(n).card
            t.add_row(c.name, c.family, ", ".join(c.modes), c.description)
    elif what == "tasks":
        if track is not None and track not in TRACKS:
            raise UsageError(f"--track {quoted(track)!r} is not a track; tracks: {', '.join(TRACKS)}")
        t = Table(title="tasks")
        for col in ("track", "name", "version", "metric", "dataset", "protocol"):
            t.add_column(col, overflow="fold")
        for key in TASKS.names():
            tr, name = key.split("/", 1)
            if track and tr != track:
                continue
            c = get_task(tr, name).card
            t.add_row(tr, c.name, str(c.version), c.metric + (" (higher better)" if c.higher_is_better else " (lower better)"),
                      c.dataset or "-", c.protocol)
    else:
        t = Table(title="datasets (offline snapshots; hub id for online use)")
        for col in ("name", "splits", "kind", "hub id", "description"):
            t.add_column(col, overflow="fold")
        for n in list_datasets():
            c = get_dataset_card(n)
            hub = c.hf_id + (f" [{c.hf_config}]" if c.hf_config else "")
            t.add_row(c.name, ", ".join(c.splits), c.kind, hub, c.description)
    console.print(t)


@click.command()
@click.argument("path", type=PATH)
@click.option("--json", "as_json", is_flag=True, help="Print the validated record as JSON.")
@handle_errors
def show(path: Path, as_json: bool) -> None:
    """Pretty-print a result record."""
    from compbench.bench.results.record import to_json  # heavy: pydantic
    from compbench.bench.results.record_store import load_record  # heavy: numpy

    record = load_record(path)
    if as_json:
        click.echo(to_json(record), nl=False)
    else:
        print_record(record, path)


