"""``compbench export``: fit a method at a budget on a track's table and write a self-contained artifact.

The artifact's format and its loader are :mod:`compbench.artifact`. :func:`export_cell` resolves the cell exactly
as ``compbench run`` does (:func:`compbench.bench.cell.context.prepare`: names, options, budget), loads the track's
table through the track's own ``load`` hook, configures the method for the budget and compresses with the cell's
seed: the same fit the cell's record came from (every posthoc fit is deterministic under its seed, which the
determinism tests hold), so the artifact's module is the record's module. When the results folder holds the
cell's record, its scores and intervals go into ``config.json`` and the card. The decode speed of the *loaded*
module against ``nn.Embedding`` (same process, 1 thread, Zipf ids, median of alternating rounds) is measured at
export and written into the card (:func:`decode_speed`).
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compbench import __version__
from compbench.artifact import (
    CARD,
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS,
    describe_module,
    load_embedding,
)
from compbench.bench.cell.accounting import stored_bytes
from compbench.bench.cell.context import prepare, seed_everything
from compbench.bench.cell.runner import track_hooks
from compbench.bench.measure.core import apply_threads, compare_lookup
from compbench.bench.results.record_store import ResultStore, file_mode
from compbench.checksums import sha256_file
from compbench.errors import CompbenchError, UsageError


def _tensors(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state_dict's tensors, each storage once (``aliases``: a second name of a shared tensor -> its first)."""
    out: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], str], str] = {}
    for name, t in module.state_dict(keep_vars=False).items():
        t = t.detach()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), str(t.dtype))
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        out[name] = t.cpu().contiguous()
    return out, aliases


def write_artifact(module: nn.Module, out: Path | str, facts: dict[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``module`` and ``facts`` as an artifact folder (see :mod:`compbench.artifact`); returns the folder."""
    from safetensors.torch import save_file

    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise UsageError(f"{folder} exists and is not empty; choose another -o or pass --overwrite")
    tree = describe_module(module)
    tensors, aliases = _tensors(module)
    tmp = folder.with_name(folder.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS))

    (tmp / WEIGHTS).chmod(file_mode())  # safetensors writes 0600; an artifact is meant to be shared
    counted = stored_bytes(module)
    file_bytes = (tmp / WEIGHTS).stat().st_size
    header = int.from_bytes((tmp / WEIGHTS).read_bytes()[:8], "little") + 8
    shapes = {k: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for k, t in tensors.items()}
    for alias, target in aliases.items():
        shapes[alias] = shapes[target]
    cfg = {"format": FORMAT, "format_version": FORMAT_VERSION, **facts,
           "shape": [int(module.num_embeddings), int(module.embedding_dim)],  # type: ignore[arg-type]
           "stored_bytes": counted, "file_bytes": file_bytes, "header_bytes": header,
           "weights_sha256": sha256_file(tmp / WEIGHTS), "tensors": dict(sorted(shapes.items())), "aliases": aliases,
           "compbench_version": __version__, "torch_version": torch.__version__, "module": tree}
    (tmp / CONFIG).write_text(json.dumps(cfg, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    (tmp / CARD).write_text(card(cfg), encoding="utf-8")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def decode_speed(module: nn.Module, *, iters: int = 30, seed: int = 0) -> dict[str, Any]:
    """Lookup speed of ``module`` vs ``nn.Embedding`` of its materialised table, same ids, same process
    (1 thread, Zipf ids: :func:`compbench.bench.measure.core.compare_lookup`)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            dense = nn.Embedding.from_pretrained(module.materialize().float(), freeze=True)  # type: ignore[operator]
            res = compare_lookup(module, dense, num_embeddings=int(module.num_embeddings),  # type: ignore[arg-type]
                                 device=torch.device("cpu"), iters=iters, seed=seed)
    finally:
        torch.set_num_threads(prev)
    return {"ratio": res["ratio"], "tokens_per_s": res["candidate"]["median"],
            "dense_tokens_per_s": res["dense"]["median"], "threads": 1, "iters": iters,
            "workload": (res.get("workload") or {}).get("kind")}


def card(cfg: dict[str, Any]) -> str:
    """The artifact's README.md, from its config."""
    v, d = cfg["shape"]
    lines = [f"# {cfg['method']} at {cfg['budget']}: a compressed {v:,} x {d} embedding", "",
             f"Written by `compbench export` (compbench {cfg['compbench_version']}) on {cfg.get('created_at', '?')}.", "",
             "| fact | value |", "|---|---|",
             f"| method | {cfg['method']} v{cfg['method_version']} ({cfg.get('family', '')}) |",
             f"| options | `{json.dumps(cfg.get('options') or {}, sort_keys=True)}` |",
             f"| source table | {cfg.get('source', {}).get('name', '?')}, sha256 `{str(cfg.get('source', {}).get('sha256'))[:16]}...` |",
             f"| budget | {cfg['budget']} of the fp32 table; achieved {cfg.get('achieved_ratio', 0):.2f}x |",
             f"| stored bytes (counted) | {cfg['stored_bytes']:,} |",
             f"| file bytes | {cfg['file_bytes']:,} (header {cfg['header_bytes']:,}) |",
             f"| record | `{cfg.get('record_key')}` |",
             f"| loaded back, bit for bit | {cfg.get('roundtrip_bitwise_equal')} |"]
    rec = cfg.get("record") or {}
    if rec.get("main") is not None:
        iv = rec.get("interval") or {}
        ci = f" [{iv['low']:.4f}, {iv['high']:.4f}]" if iv.get("low") is not None else ""
        lines.append(f"| score | {rec.get('metric')} = {rec['main']:.4f}{ci} on {rec.get('task')} |")
    speed = cfg.get("decode_speed") or {}
    if speed.get("ratio") is not None:
        lines.append(f"| decode speed | {speed['ratio']:.2f}x nn.Embedding ({speed['tokens_per_s']:,.0f} vs "
                     f"{speed['dense_tokens_per_s']:,.0f} tokens/s, 1 CPU thread, Zipf ids) |")
    lines += ["", "Load it (torch and safetensors only; nothing in this folder is executed or unpickled):", "",
              "```python", "import compbench", "emb = compbench.load_embedding(\"THIS_FOLDER\")",
              "rows = emb(torch.tensor([[1, 2, 3]]))          # like nn.Embedding",
              "compbench.apply(model, \"THIS_FOLDER\")           # transformers / sentence-transformers", "```", ""]
    return "\n".join(lines)


def export_cell(config: Any, out: Path | str, *, results: Path | str | None = None, overwrite: bool = False,
                speed: bool = True) -> dict[str, Any]:
    """Fit the cell ``config`` (a RunConfig) and write its artifact; returns the artifact's config."""
    ctx = prepare(config, None)
    if ctx.method.card.name == "dense" or not ctx.method.supports("posthoc"):
        raise UsageError(f"method '{ctx.method.card.name}' has nothing to export (export takes a posthoc method)")
    folder = Path(out)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise UsageError(f"{folder} exists and is not empty; choose another -o or pass --overwrite")
    apply_threads(ctx.threads)
    seed_everything(ctx.config.seed)
    hooks = track_hooks(ctx)
    subject = hooks.load(ctx)
    v, d = subject.num_embeddings, subject.dim
    budget = ctx.budget_info(v * d * 4)
    method_config = ctx.method.configure(v, d, budget.allowed_bytes)
    module = hooks.produce(ctx, subject, method_config, ctx.config.seed).cpu().eval()

    nbytes = stored_bytes(module)
    if nbytes > budget.allowed_bytes:
        raise UsageError(f"the fitted module stores {nbytes:,} B, over the budget's {budget.allowed_bytes:,} B")
    facts: dict[str, Any] = {
        "method": ctx.method.card.name, "method_version": ctx.method.card.version, "family": ctx.method.card.family,
        "options": dict(ctx.config.options), "config": method_config, "budget": str(ctx.budget),
        "achieved_ratio": v * d * 4 / nbytes if nbytes else None, "reference_bytes": v * d * 4,
        "dtype": "float32", "seed": ctx.config.seed, "track": ctx.config.track, "task": ctx.task.card.name,
        "record_key": ctx.key, "identity": ctx.identity.to_dict(),
        "source": {"name": subject.model.get("name"), "revision": subject.revision,
                   "sha256": _table_sha256(subject)},
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
    if results is not None:
        store = ResultStore(results)
        if store.exists(ctx.key):
            try:
                rec = store.read(ctx.key)
                facts["record"] = {"main": rec.metrics.main, "metric": rec.task.metric, "task": rec.task.name,
                                   "interval": rec.metrics.interval, "scores": rec.metrics.scores,
                                   "stored_bytes": rec.budget.stored_bytes, "status": rec.status}
            except Exception:  # noqa: BLE001 - an unreadable record is simply not quoted
                facts["record"] = None
    folder = write_artifact(module, folder, facts, overwrite=overwrite)
    cfg = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    loaded = load_embedding(folder)
    ids = torch.randint(0, v, (64, 128), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the artifact, loaded back, decodes exactly as the fitted module does
        cfg["roundtrip_bitwise_equal"] = bool(torch.equal(loaded(ids), module(ids)))
    if speed:
        cfg["decode_speed"] = decode_speed(loaded)
    (folder / CONFIG).write_text(json.dumps(cfg, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    (folder / CARD).write_text(card(cfg), encoding="utf-8")
    if not cfg["roundtrip_bitwise_equal"]:
        raise CompbenchError(f"the artifact in {folder} does not decode bit for bit as the fitted module: a bug")
    return cfg


def _table_sha256(subject: Any) -> str:
    import hashlib

    table = subject.state.get("table")
    if table is None:
        return ""
    return hashlib.sha256(table.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


__all__ = ["card", "decode_speed", "export_cell", "write_artifact"]
