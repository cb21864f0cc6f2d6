"""``compbench export``: fit a method at a budget and write a self-contained artifact (:mod:`compbench.export`)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from compbench.bench.cell.input_checks import check_seed, check_threads
from compbench.bench.cell.plugins import import_plugins
from compbench.cli.common import console, err_console, handle_errors, parse_options
from compbench.cli.run_cmd import table_track, with_frequencies
from compbench.cli.types import PATH
from compbench.config import RunConfig, default_results_dir


@click.command("export")
@click.option("--method", "-m", required=True, help="Posthoc method name (see `compbench list methods`).")
@click.option("--budget", "-b", required=True, help="Memory budget: '40x', '1.5MiB', ...")
@click.option("--track", default="posthoc", show_default=True,
              help="Whose table: posthoc (the encoder's token table) | lm (a causal LM's) | words | store.")
@click.option("--task", "-t", default=None, help="The cell's task (names the record whose scores the card quotes).")
@click.option("--model", default=None, help="Encoder or language model (default: the track's default).")
@click.option("--table", "table", default=None,
              help="Your own table (.npy, .safetensors with --tensor, or a Hugging Face model folder) instead of a model's.")
@click.option("--tensor", "tensor", default=None, help="With --table FILE.safetensors: the tensor to compress.")
@click.option("--frequencies", "frequencies", default=None,
              help="Token counts for tiered / mde-posthoc (.npy of V counts or parquet id, count).")
@click.option("--option", "-o", "options", multiple=True, help="Method hyperparameter override key=value.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads for the fit (default: all available).")
@click.option("--results", type=PATH, default=None,
              help="Where to look for the cell's record to quote (default: $COMPBENCH_RESULTS, else results/local/).")
@click.option("--out", "-o", "out", type=PATH, required=True, help="The artifact folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing, non-empty artifact folder.")
@click.option("--no-speed", is_flag=True, help="Skip the decode-speed measurement.")
@click.option("--import", "imports", multiple=True, metavar="MODULE[:FUNC]",
              help="Import a module (and call FUNC) first, to register an out-of-tree method (repeatable; installed "
                   "packages with a compbench.methods entry point need no flag).")
@handle_errors
def export_command(method: str, budget: str, track: str, task: str | None, model: str | None,
                   options: tuple[str, ...], seed: int, threads: int | None, results: Path | None, out: Path,
                   overwrite: bool, no_speed: bool, table: str | None = None, tensor: str | None = None,
                   frequencies: str | None = None, imports: tuple[str, ...] = ()) -> None:
    """Fit METHOD at BUDGET and write embedding.safetensors + config.json + README.md to --out.

    Load it with ``compbench.load_embedding(DIR)``; put it into a model with ``compbench.apply(model, DIR)``.
    """
    from compbench.export import export_cell  # heavy: torch

    import_plugins(imports)
    check_threads(threads)
    check_seed(seed)
    extra: dict[str, str] = {}
    track, model = table_track(track, model, table, tensor, extra)
    cfg = RunConfig(method=method, budget=budget, track=track, task=task, threads=threads, seed=seed,
                    options=with_frequencies(method, parse_options(options, method), frequencies), model=model,
                    extra=extra)

    with err_console.status(f"exporting {method} at {budget}: loading the table, fitting, writing, checking the "
                            "round trip" + ("" if no_speed else ", timing the decode")):  # shown on a terminal only
        info = export_cell(cfg, out, results=results or default_results_dir(), overwrite=overwrite,
                           speed=not no_speed)
    speed = info.get("decode_speed") or {}
    sp = f"; decode {speed['ratio']:.2f}x nn.Embedding (1 thread)" if speed.get("ratio") is not None else ""
    console.print(escape(f"wrote {out}: {info['method']} at {info['budget']} (achieved {info['achieved_ratio']:.2f}x), "
                         f"{info['stored_bytes']:,} B counted, {info['file_bytes']:,} B on disk{sp}"))
