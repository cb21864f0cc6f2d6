"""mteb interop: a compressed encoder as an mteb model, and compbench records from mteb results.

:class:`CompressedMtebModel` is the posthoc-track encoder (all-MiniLM-L6-v2 or ``--model``)
with its token table replaced by a method's compressed table; it is an mteb
``EncoderProtocol`` (``encode`` + ``mteb_model_meta``), so ``mteb.evaluate`` runs any
mteb task with it. Its ``mteb_model_meta`` keeps the base model's name and revision and
carries the compression in ``experiment_kwargs`` (mteb's own mechanism for ablations),
so mteb's result cache keeps compressed and dense runs apart.

:func:`run_mteb` compresses once, checks that every task's data can be loaded *before*
any encoding (offline, a task whose dataset is not in the Hugging Face cache fails fast
with a one-line :class:`~compbench.errors.DataError` naming the dataset), evaluates, and
writes one compbench record per task (track ``posthoc``, task ``mteb-<TaskName>``, main
score = mteb's ``main_score`` averaged over the evaluated splits and subsets, as
``TaskResult.get_score``), with the dense model's score for retention.

For speed the compressed module is materialised into an ``nn.Embedding`` (the outputs
are identical); lookup throughput is measured on the module itself, as in the posthoc track.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compbench.errors import CompbenchError, DataError, UnknownNameError, UsageError, first_line


def _mteb_wrapper_base() -> type:
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    return SentenceTransformerEncoderWrapper


def _meta_name(encoder: Any) -> str:
    from compbench.models.encoder import DEFAULT_MODEL

    name = encoder.info.name
    if name == DEFAULT_MODEL:
        return f"sentence-transformers/{DEFAULT_MODEL}"
    if "/" in name and not Path(name).exists():
        return name
    return f"local/{Path(name).name or 'model'}"


def compressed_mteb_model(encoder: Any, table: torch.Tensor | None, *, method: str, budget: str,
                          options: dict[str, Any] | None = None) -> Any:
    """An mteb model of ``encoder`` with its token table replaced by ``table`` (None: the dense encoder)."""
    base = _mteb_wrapper_base()

    class CompressedMtebModel(base):  # type: ignore[misc, valid-type]
        """``SentenceTransformerEncoderWrapper`` around a copy of the encoder with a compressed token table."""

    st = copy.deepcopy(encoder.st)
    if table is not None:
        emb = st[0].auto_model.embeddings
        emb.word_embeddings = nn.Embedding.from_pretrained(table.float().to(encoder.device), freeze=True)
    model = CompressedMtebModel(st)
    kwargs = {"compbench_method": method, "budget": budget, **{f"option_{k}": v for k, v in (options or {}).items()}}
    update: dict[str, Any] = {"name": _meta_name(encoder), "revision": encoder.info.revision,
                              "experiment_kwargs": None if method == "dense" else kwargs}
    model.mteb_model_meta = model.mteb_model_meta.model_copy(update=update)
    return model


def resolve_tasks(tasks: Sequence[Any]) -> list[Any]:
    """mteb task objects from names (``"STSBenchmark"``) or objects (local tasks)."""
    import mteb

    names = [t for t in tasks if isinstance(t, str)]
    objs = [t for t in tasks if not isinstance(t, str)]
    if not names and not objs:
        raise UsageError("--tasks names no mteb task")
    resolved = []
    for n in names:
        try:
            resolved.append(mteb.get_task(n))
        except KeyError as exc:
            import re

            hint = re.search(r"[Dd]id you mean:? '?([^'\"?]+)", str(exc))
            raise UnknownNameError(f"unknown mteb task '{n}'" + (f"; did you mean '{hint.group(1).strip()}'?" if hint else "")
                                   + " (see mteb.get_tasks())") from exc
    return resolved + objs


def check_data(tasks: Sequence[Any]) -> None:
    """Load every task's data now; a task whose dataset cannot be loaded raises DataError naming it."""
    for task in tasks:
        ds = dict(task.metadata.dataset or {})
        where = ds.get("path", "?") + (f"@{ds['revision'][:12]}" if ds.get("revision") else "")
        try:
            task.load_data()
        except Exception as exc:  # noqa: BLE001 - the dataset is unavailable, whatever the library says
            raise DataError(f"mteb task {task.metadata.name} needs the dataset {where}, which cannot be loaded "
                            f"({first_line(exc)}); run once with network access to fill the "
                            "Hugging Face cache") from exc


def _flat_scores(task_result: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    multi = sum(len(v) for v in task_result.scores.values()) > 1
    for split, entries in task_result.scores.items():
        for entry in entries:
            prefix = f"{split}/{entry.get('hf_subset', 'default')}/" if multi else ""
            for k, v in entry.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[prefix + k] = float(v)
    return out


def _evaluate(model: Any, tasks: Sequence[Any], batch_size: int, mteb_cache: Path | None) -> list[Any]:
    import mteb
    from mteb.cache import ResultCache

    cache = ResultCache(mteb_cache) if mteb_cache is not None else None
    kwargs: dict[str, Any] = {"cache": cache, "show_progress_bar": False, "encode_kwargs": {"batch_size": batch_size}}
    if cache is not None:
        kwargs["overwrite_strategy"] = "only-missing"
    result = mteb.evaluate(model, list(tasks), **kwargs)
    return list(result.task_results)


def run_mteb(method: str, budget: str, tasks: Sequence[Any], *, model: str | None = None,
             options: dict[str, Any] | None = None, device: str = "cpu", threads: int | None = None, seed: int = 0,
             results: Path | None = None, batch_size: int = 64, mteb_cache: Path | None = None, dense: bool = True,
             cache: dict[str, Any] | None = None) -> list[Any]:
    """Compress the encoder's token table with ``method`` at ``budget``, run mteb ``tasks``, write records.

    Returns the compbench records (also written to ``results`` when given). ``cache`` may carry an
    already-loaded encoder under ``"encoder:<model>:<device>"`` (as the runner's cache does).
    """
    from mteb import __version__ as mteb_version

    from compbench.bench.accounting import count_params, stored_bytes, stored_bytes_breakdown
    from compbench.bench.budget import Budget, reference_bytes
    from compbench.bench.measure import apply_threads, available_cpus, compare_lookup, device_name, resolve_device
    from compbench.bench.provenance import collect
    from compbench.bench.record import BudgetInfo, DeviceInfo, MethodInfo, Metrics, Params, Record, TaskInfo, cell_key
    from compbench.bench.runner import seed_everything
    from compbench.bench.store import ResultStore
    from compbench.methods import get_method

    options = dict(options or {})
    m = get_method(method, **options)
    m.require("posthoc")
    b = Budget.parse(budget)
    threads = threads if threads is not None else available_cpus()
    dev = resolve_device(device)
    apply_threads(threads)
    seed_everything(seed)
    task_objs = resolve_tasks(tasks)
    check_data(task_objs)  # fail fast, before loading or compressing anything

    from compbench.models.encoder import SentenceEncoder

    cache = cache if cache is not None else {}
    ekey = f"encoder:{model}:{dev}"
    if ekey not in cache:
        cache[ekey] = SentenceEncoder(model, device=str(dev))
    encoder = cache[ekey]
    dense_table = encoder.token_table
    v, d = dense_table.shape
    ref = reference_bytes(v, d)
    allowed = b.resolve(ref)
    config = m.configure(v, d, allowed)
    module = m.compress(dense_table.to(dev), config, seed=seed).to(dev).eval()
    nbytes = stored_bytes(module)
    if nbytes > allowed:
        raise CompbenchError(f"method '{method}' stored {nbytes:,} B > allowed {allowed:,} B at {budget}")
    with torch.inference_mode():
        table = module.materialize().float()
    lookup = compare_lookup(module, nn.Embedding.from_pretrained(dense_table.to(dev)), num_embeddings=v, device=dev,
                            seed=seed)
    store = ResultStore(results) if results is not None else None
    dense_scores = _dense_scores(encoder, task_objs, method, batch_size, mteb_cache, dense)

    model_obj = compressed_mteb_model(encoder, table, method=m.card.name, budget=str(b), options=options)
    task_results = _evaluate(model_obj, task_objs, batch_size, mteb_cache)
    pc = count_params(module)
    backbone = encoder.info.total_params - v * d
    provenance = collect()
    provenance["mteb_version"] = mteb_version
    records = []
    for tr in task_results:
        md = next(t.metadata for t in task_objs if t.metadata.name == tr.task_name)
        ds = dict(md.dataset or {})
        main = float(tr.get_score())
        dscore = dense_scores.get(tr.task_name)
        task_info = TaskInfo(name=f"mteb-{tr.task_name}", version=1, track="posthoc", metric=md.main_score,
                             higher_is_better=True, tolerance=0.005, dataset=ds.get("path"),
                             protocol=f"mteb {md.type} task {tr.task_name}, splits {', '.join(md.eval_splits)}, "
                                      f"main score {md.main_score} (mean over splits/subsets), mteb {mteb_version}",
                             data_sha256={f"hf-revision:{ds.get('path')}": str(ds.get("revision"))})
        key = cell_key("posthoc", task_info.name, m.card.name, str(b), dev.type, threads, seed, options)
        rec = Record(
            key=key, status="ok", track="posthoc", seed=seed,
            method=MethodInfo(name=m.card.name, version=m.card.version, family=m.card.family,
                              reference=m.card.reference, options=options, config=dict(config)),
            task=task_info,
            budget=BudgetInfo(spec=str(b), reference_bytes=ref, allowed_bytes=allowed, stored_bytes=nbytes,
                              achieved_ratio=ref / nbytes if nbytes else None, breakdown=stored_bytes_breakdown(module)),
            device=DeviceInfo(kind=dev.type, name=device_name(dev), threads=threads),
            params=Params(total=backbone + pc.total, trainable=pc.trainable, embedding=pc.total, backbone=backbone),
            metrics=Metrics(main=main, scores=_flat_scores(tr), dense_score=dscore,
                            retention=(main / dscore) if dscore else None),
            measurements={"eval_time_s": float(tr.evaluation_time or 0.0), "lookup": lookup},
            model=encoder.info.to_dict(), provenance=provenance)
        if store is not None:
            store.write(rec)
        records.append(rec)
    return records


def _dense_scores(encoder: Any, tasks: Sequence[Any], method: str, batch_size: int, mteb_cache: Path | None,
                  enabled: bool) -> dict[str, float]:
    """Main scores of the dense encoder on ``tasks`` (for retention); empty when disabled or for ``dense`` itself."""
    if not enabled or method == "dense":
        return {}
    dense_model = compressed_mteb_model(encoder, None, method="dense", budget="1x")
    return {tr.task_name: float(tr.get_score()) for tr in _evaluate(dense_model, tasks, batch_size, mteb_cache)}


__all__ = ["check_data", "compressed_mteb_model", "resolve_tasks", "run_mteb"]
