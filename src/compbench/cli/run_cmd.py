"""``compbench run``: one cell (plan, compress or train, evaluate, measure, one record), its progress display and
its result panel."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from compbench.bench.cell.input_checks import check_seed, check_seeds, check_threads
from compbench.bench.cell.plugins import import_plugins
from compbench.cli.common import console, err_console, handle_errors, parse_options
from compbench.cli.types import PATH, SECONDS
from compbench.config import RunConfig, default_results_dir
from compbench.errors import UsageError


@click.command()
@click.option("--method", "-m", required=True, help="Method name (see `compbench list methods`).")
@click.option("--budget", "-b", required=True, help="Memory budget: '40x', '10x', '1.5x' or '1.5MiB', '800KB', '1172044B'.")
@click.option("--track", default="posthoc", show_default=True, help="posthoc | train | words | store | scale | lm.")
@click.option("--task", "-t", default=None, help="Task name (default: the track's default, stsb for posthoc).")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | cuda:N | auto.")
@click.option("--threads", type=int, default=None, help="CPU threads (default: all available cores); recorded.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", default=None, help="Train track: comma-separated seeds aggregated as mean +- std (e.g. 0,1,2).")
@click.option("--results", type=PATH, default=None,
              help="Results folder (default: $COMPBENCH_RESULTS, else results/local/, which git ignores; "
                   "the committed leaderboard is written only with an explicit --results results).")
@click.option("--option", "-o", "options", multiple=True, help="Method hyperparameter override key=value (repeatable).")
@click.option("--model", default=None, help="Sentence encoder path or hub id (default: bundled all-MiniLM-L6-v2).")
@click.option("--json", "as_json", is_flag=True, help="Print the record (with --dry-run: the plan) as JSON on stdout.")
@click.option("--dry-run", is_flag=True,
              help="Resolve method, budget, task, device, threads, key and attainability; print the plan and "
                   "exit without loading a model or writing anything.")
@click.option("--lookup-workload", type=click.Choice(["zipf", "uniform"]), default="zipf", show_default=True,
              help="How lookup-throughput ids are drawn: token frequencies of the shipped calibration corpus (zipf; "
                   "a Zipf law for other tables) or uniformly; recorded.")
@click.option("--tune", type=click.Choice(["on", "off"]), default="off", show_default=True,
              help="Choose the method's options for the budget on the task's validation split first (never test); "
                   "a tuned cell is its own variant, <method>+tuned.")
@click.option("--max-fit-seconds", type=SECONDS, default=3600.0, show_default=True,
              help="Stop a fit (compress or training, summed over seeds) that runs longer and record the cell as "
                   "timeout; 0: no limit.")
@click.option("--backbone", default=None, help="Train track: classifier backbone, transformer (default) | bag.")
@click.option("--d-model", "d_model", type=int, default=None, help="Train track: embedding/model width (default 128).")
@click.option("--max-steps", type=int, default=None, help="Train track: cap on optimiser steps (smoke runs; in the key).")
@click.option("--max-train-samples", type=int, default=None,
              help="Train track, smoke runs/tests: train on a seeded subset of N examples (in the key).")
@click.option("--max-eval-samples", type=int, default=None,
              help="Train track, smoke runs/tests: seeded subsets of N validation and N test examples (in the key).")
@click.option("--lm-mode", "lm_mode", type=click.Choice(["input", "tied"]), default=None,
              help="Track lm: input (only the input table is compressed; dense head, untied; default) | tied "
                   "(one compressed table for the input and the output head).")
@click.option("--heal", type=click.IntRange(0, 100_000), default=None,
              help="Track lm: after compression, train the module's float tensors for this many steps to match "
                   "the dense model's next-token distribution (KL) on calibration text; 0/absent: off.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display (it is shown only when stderr is a terminal).")
@click.option("--table", "table", default=None,
              help="Your own table: .npy, .safetensors (with --tensor NAME) or a Hugging Face model folder; runs the "
                   "table track (fidelity).")
@click.option("--tensor", "tensor", default=None, help="With --table FILE.safetensors: the tensor to compress.")
@click.option("--frequencies", "frequencies", default=None,
              help="Token counts for the frequency-aware methods (tiered, mde-posthoc): a .npy of V counts or a "
                   "parquet file (id, count); the same as -o frequencies=file:PATH.")
@click.option("--max-windows", "max_windows", type=click.IntRange(1, 10_000), default=None,
              help="Track lm: evaluate only the first N windows (smoke runs; in the key as +wN).")
@click.option("--recipe", "recipe", multiple=True,
              help="Train track: override a recipe/backbone setting key=value, e.g. lr=3e-3, layers=2 (repeatable; in the key).")
@click.option("--import", "imports", multiple=True, metavar="MODULE[:FUNC]",
              help="Import a module (and call FUNC) first, to register an out-of-tree method (repeatable; installed "
                   "packages with a compbench.methods entry point need no flag).")
@handle_errors
def run(method: str, budget: str, track: str, task: str | None, device: str, threads: int | None, seed: int,
        seeds: str | None, results: Path | None, options: tuple[str, ...], model: str | None, as_json: bool,
        backbone: str | None, d_model: int | None, max_steps: int | None, max_train_samples: int | None,
        max_eval_samples: int | None, recipe: tuple[str, ...], dry_run: bool, lookup_workload: str,
        tune: str, max_fit_seconds: float, lm_mode: str | None = None, heal: int | None = None,
        max_windows: int | None = None, table: str | None = None, tensor: str | None = None,
        quiet: bool = False, frequencies: str | None = None, imports: tuple[str, ...] = ()) -> None:
    """Run one cell: compress (or train), evaluate, measure, write one record.

    Every run first plans the cell (what --dry-run prints): names, options, budget and attainability are
    checked before a model is loaded.
    """
    from compbench.bench.cell.dryrun import plan_cell  # heavy: torch
    from compbench.bench.cell.runner import run_cell  # heavy: torch
    from compbench.bench.results.record import to_json  # heavy: pydantic
    from compbench.bench.results.record_store import ResultStore  # heavy: numpy

    import_plugins(imports)
    check_threads(threads)
    check_seed(seed)
    seed_list = None
    if seeds:
        try:
            seed_list = tuple(int(s) for s in seeds.split(",") if s.strip())
        except ValueError as exc:
            raise UsageError(f"--seeds expects comma-separated integers, got '{seeds}'") from exc
        check_seeds(seed_list)
    train_flags = {"backbone": backbone, "d_model": d_model, "max_steps": max_steps,
                   "max_train_samples": max_train_samples, "max_eval_samples": max_eval_samples}
    extra: dict[str, Any] = {k: v for k, v in train_flags.items() if v is not None}
    if recipe:
        bad = [r for r in recipe if "=" not in r]
        if bad:
            raise UsageError(f"--recipe expects key=value, got '{bad[0]}'")
        extra["recipe"] = parse_options(recipe)
    if extra and track != "train":
        raise UsageError("--backbone, --d-model, --max-steps, --max-train-samples, --max-eval-samples and --recipe "
                         "apply to --track train only")
    if (lm_mode is not None or heal is not None or max_windows is not None) and track != "lm":
        raise UsageError("--lm-mode, --heal and --max-windows apply to --track lm only")
    if max_windows:
        extra["max_windows"] = max_windows
    track, model = table_track(track, model, table, tensor, extra)
    if lm_mode is not None and lm_mode != "input":
        extra["lm_mode"] = lm_mode
    if heal:
        extra["heal"] = heal
    cfg = RunConfig(method=method, budget=budget, track=track, task=task, device=device, threads=threads, seed=seed,
                    options=with_frequencies(method, parse_options(options, method), frequencies), model=model, fresh_process=True, seeds=seed_list, extra=extra,
                    lookup_workload=lookup_workload, tune=tune == "on", max_fit_seconds=max_fit_seconds or None)
    root = results or default_results_dir()
    plan = plan_cell(cfg, root)  # before any work: bad names, options and unattainable budgets fail here
    if dry_run:
        print_plan(plan, as_json)
        return
    store = ResultStore(root)
    show = err_console.is_terminal and not quiet
    with PhaseDisplay(err_console, enabled=show) as display:
        record = run_cell(cfg, store, progress=display.report if show else None)
    if as_json:
        click.echo(to_json(record), nl=False)
    else:
        print_record(record, store.path_for(record.key))


class PhaseDisplay:
    """What ``run`` is doing, on stderr: each phase as it starts, with a live elapsed time; for work with a size
    (sentences encoded, perplexity windows) a bar with done/total and an ETA; and a line when a phase ends (its
    start offset and duration). Phases may nest (the innermost one gets the ticks). Off when not a terminal."""

    def __init__(self, console: Console, enabled: bool = True):
        self.console, self.enabled = console, enabled
        self.live: Any = None
        self.t0 = 0.0
        self.tasks: list[tuple[str, Any]] = []  # open phases, outermost first: (name, rich task id)

    def __enter__(self) -> PhaseDisplay:
        import time

        self.t0 = time.perf_counter()
        if self.enabled:
            self.live = Progress(SpinnerColumn(), TextColumn("{task.description}"), _SizedBar(bar_width=28),
                                 _DoneOfTotal(), TimeElapsedColumn(), _Eta(), console=self.console, transient=True)
            self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.stop()

    def report(self, event: str, what: str, seconds: float, done: int | None = None,
               total: int | None = None) -> None:
        """``progress(event, what, seconds, done=None, total=None)`` (see
        :class:`compbench.bench.cell.context.CellContext`)."""
        import time

        if self.live is None:
            return
        elapsed = time.perf_counter() - self.t0
        if event == "start":
            self.tasks.append((what, self.live.add_task(escape(what), total=None)))
        elif event == "tick":
            if not self.tasks:
                self.tasks.append((what, self.live.add_task(escape(what), total=None)))
            _, tid = self.tasks[-1]
            self.live.update(tid, description=escape(what), total=total, completed=done or 0)
        else:
            for i in range(len(self.tasks) - 1, -1, -1):
                if self.tasks[i][0] == what:
                    self.live.remove_task(self.tasks.pop(i)[1])
                    break
            self.console.print(f"[dim]{elapsed:7.1f} s[/]  {escape(what)}: done in {seconds:.1f} s",
                               highlight=False)


class _SizedBar(BarColumn):
    """A bar only for work with a known size."""

    def render(self, task: Any) -> Any:
        return super().render(task) if task.total else Text("")


class _DoneOfTotal(ProgressColumn):
    """``done/total`` for work with a known size."""

    def render(self, task: Any) -> Any:
        return Text(f"{int(task.completed):,}/{int(task.total):,}") if task.total else Text("")


class _Eta(TimeRemainingColumn):
    """``eta 0:01:02`` for work with a known size."""

    def render(self, task: Any) -> Any:
        return Text.assemble("eta ", super().render(task)) if task.total else Text("")


def with_frequencies(method: str, options: dict[str, Any], frequencies: str | None) -> dict[str, Any]:
    """``--frequencies FILE`` as the method's ``frequencies=file:<absolute path>`` option (UsageError for a method
    without that option, or when -o frequencies is given too)."""
    if frequencies is None:
        return options
    from compbench.methods import get_method_class  # heavy: torch

    if "frequencies" not in (get_method_class(method).card.options or {}):
        raise UsageError(f"--frequencies applies to the frequency-aware methods (tiered, mde-posthoc), not '{method}'")
    if "frequencies" in options:
        raise UsageError("give the token counts once: --frequencies FILE or -o frequencies=..., not both")
    path = Path(frequencies)
    if not path.is_file():
        raise UsageError(f"--frequencies {frequencies[:200]}: no such file")
    return {**options, "frequencies": f"file:{path.resolve()}"}


def table_track(track: str, model: str | None, table: str | None, tensor: str | None,
                extra: dict[str, Any]) -> tuple[str, str | None]:
    """``--table FILE`` is the table track with the file as its model (UsageError on conflicting flags)."""
    if table is None:
        if tensor is not None:
            raise UsageError("--tensor applies with --table FILE.safetensors only")
        return track, model
    if track not in ("posthoc", "table"):
        raise UsageError(f"--table runs the table track; it cannot be combined with --track {track}")
    if model is not None:
        raise UsageError("--table FILE is the table to compress; --model does not apply to it")
    if tensor is not None:
        extra["tensor"] = tensor
    return "table", table


def print_plan(plan: Any, as_json: bool = False) -> None:
    """Print a planned cell (``run --dry-run``): a short table, or JSON."""
    d = plan.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2, sort_keys=True, default=str))
        return
    t = Table(title=f"[bold]dry run[/]: {escape(d['key'])}", show_header=False, title_justify="left")
    t.add_column("field", style="cyan")
    t.add_column("value", overflow="fold")
    opts = f"  {json.dumps(d['options'], sort_keys=True)}" if d["options"] else ""
    t.add_row("method", escape(f"{d['method']} v{d['method_version']}{opts}"))
    resolved = d.get("resolved_options") or {}
    if resolved:  # every option's value: the user's (marked *) or the declared default
        t.add_row("options", escape(", ".join(f"{k}={v}{'*' if k in d['options'] else ''}"
                                              for k, v in sorted(resolved.items()))))
    t.add_row("track", escape(d["track"]))
    t.add_row("task", escape(f"{d['task']} v{d['task_version']}"))
    if d["allowed_bytes"] is not None:
        v, dim = d["table_shape"]
        budget = (f"{d['budget']}: allows {d['allowed_bytes']:,} B of {d['reference_bytes']:,} B "
                  f"({v:,} x {dim} fp32); attainable")
        t.add_row("budget", escape(budget))
        top = {k: v for k, v in (d["method_config"] or {}).items() if not isinstance(v, (dict, list, tuple))}
        t.add_row("config", escape(json.dumps(top, sort_keys=True, default=str)))  # --json has all of it
    else:
        t.add_row("budget", escape(f"{d['budget']} (the table's size, and so attainability, is known only "
                                   "once the model is loaded)"))
    seeds = f"seeds {','.join(map(str, d['seeds']))}" if d["seeds"] else f"seed {d['seed']}"
    t.add_row("device", escape(f"{d['device']}, {d['threads']} threads, {seeds}"))
    t.add_row("key", escape(d["key"]))
    if plan.identity is not None:
        ident = plan.identity
        t.add_row("identity", escape(ident.describe() if hasattr(ident, "describe") else str(ident)))
    ref = d.get("reference")
    if ref:
        state = f"held by {ref['held_by']}" if ref["held"] else "missing: runs first, in a fresh process"
        t.add_row("reference", escape(f"{ref['key']} ({state})" + ("; a system: no retention" if ref["system"] else "")))
    t.add_row("record", escape(d["record"]))
    console.print(t)


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def one_line_config(config: dict[str, Any] | None, limit: int = 100) -> str:
    """The method's configuration in one line: its scalar settings (nested parts are in the record), cut at
    ``limit`` characters."""
    flat = {k: v for k, v in (config or {}).items() if not isinstance(v, (dict, list, tuple))}
    text = json.dumps(flat, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def print_record(record: Any, path: Path | None = None) -> None:
    """Pretty-print a record summary with rich."""
    t = Table(title=f"[bold]{escape(record.key)}[/]", show_header=False, title_justify="left")
    t.add_column("field", style="cyan")
    t.add_column("value")
    status_style = {"ok": "green", "over_budget": "yellow", "failed": "red", "skipped": "dim",
                    "timeout": "red"}.get(record.status, "")
    t.add_row("status", f"[{status_style}]{record.status}[/]" + (f"  ({escape(record.error)})" if record.error else ""))
    t.add_row("method", escape(f"{record.method.name} v{record.method.version}  {one_line_config(record.method.config)}"))
    t.add_row("task", escape(f"{record.task.name} v{record.task.version} ({record.track}); metric {record.task.metric}"))
    b = record.budget
    ratio = f"{b.achieved_ratio:.2f}x" if b.achieved_ratio else "-"
    t.add_row("budget", f"{escape(b.spec)}: allowed {_fmt_bytes(b.allowed_bytes)} of {_fmt_bytes(b.reference_bytes)}; "
                        f"stored {_fmt_bytes(b.stored_bytes)} (achieved {ratio})")
    m = record.metrics
    if m.main is not None:
        extra = f"  (std {m.scores['main_std']:.4f} over seeds {m.seeds})" if "main_std" in m.scores else ""
        ci = m.interval or {}
        if ci.get("low") is not None:
            extra += f"  [{ci['low']:.4f}, {ci['high']:.4f}]"
        t.add_row("score", f"{escape(record.task.metric)} = {m.main:.4f}{extra}")
        if record.track == "lm" and "perplexity" in m.scores:
            sc = m.scores
            ppl_ci = f" [{math.exp(ci['low']):.2f}, {math.exp(ci['high']):.2f}]" if ci.get("low") is not None else ""
            t.add_row("language model", f"perplexity {sc['perplexity']:.2f}{ppl_ci} ({sc['ppl_ratio']:.3g}x dense); "
                                        f"KL to dense {sc['kl']:.4f} nats/token; top-1 agreement {sc['top1']:.3f}")
            shipped = record.measurements.get("shipped")
            if shipped and shipped.get("ratio_vs_shipped"):
                t.add_row("vs shipped", f"{shipped['ratio_vs_shipped']:.2f}x smaller than the shipped "
                                        f"{escape(str(shipped['format']))} table ({_fmt_bytes(shipped['bytes'])})")
    if m.retention is not None:
        t.add_row("retention", f"{m.retention:.4f} of dense {m.dense_score:.4f}")
    lk = record.measurements.get("lookup")
    if lk:
        t.add_row("lookup", f"{lk['candidate']['median']:,.0f} tok/s (p10 {lk['candidate']['p10']:,.0f}, p90 "
                            f"{lk['candidate']['p90']:,.0f}, n {lk['candidate']['n']}) vs dense "
                            f"{lk['dense']['median']:,.0f} tok/s: ratio {lk['ratio']:.3f}")
    for k in ("fit_time_s", "eval_time_s", "train_time_s"):
        if k in record.measurements:
            t.add_row(k.replace("_s", " (s)").replace("_", " "), f"{record.measurements[k]:.2f}")
    for k in ("train_throughput", "eval_throughput"):  # train track
        if k in record.measurements:
            t.add_row(k.replace("_", " "), f"{record.measurements[k]['mean']:,.1f} samples/s (mean over seeds)")
    mem = record.measurements.get("memory") or {}
    if mem:
        s = f"peak RSS {_fmt_bytes(mem.get('peak_rss_bytes'))}"
        if mem.get("peak_allocated_bytes") is not None:
            s += f"; GPU peak allocated {_fmt_bytes(mem['peak_allocated_bytes'])}, reserved {_fmt_bytes(mem['peak_reserved_bytes'])}"
        t.add_row("memory", s)
    p = record.params
    t.add_row("params", f"embedding {p.embedding or 0:,} (trainable {p.trainable or 0:,}); total {p.total or 0:,}")
    t.add_row("device", escape(f"{record.device.kind} ({record.device.name}), {record.device.threads} threads, seed {record.seed}"))
    pv = record.provenance
    t.add_row("provenance", escape(f"git {str(pv.get('git_sha'))[:10]}{' (dirty)' if pv.get('git_dirty') else ''}, "
                                   f"{pv.get('created_at')}"))
    if path is not None:
        t.add_row("record", escape(str(path)))
    console.print(t)


