"""mteb tasks as compbench posthoc tasks (``mteb-<TaskName>``) and a compressed encoder as an mteb model.

:class:`MtebTask` makes any mteb task a compbench posthoc task ``mteb-<TaskName>`` (also
``compbench run --task mteb-STSBenchmark``): its card (version, direction, tolerance) comes from mteb's metadata.
:func:`compressed_mteb_model` is the posthoc-track encoder with its token table replaced, as an mteb
``EncoderProtocol``; its ``mteb_model_meta`` keeps the base model's name and revision and carries the compression in
``experiment_kwargs`` (mteb's own mechanism for ablations), so mteb's result cache keeps compressed and dense runs
apart. Running cells over mteb tasks is the harness' job: :func:`compbench.bench.tracks.mteb_interop.run_mteb`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compbench.errors import DataError, UnknownNameError, UsageError, first_line
from compbench.models.encoder import DEFAULT_MODEL
from compbench.tasks.task_base import TaskCard


def _mteb_wrapper_base() -> type:
    from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

    return SentenceTransformerEncoderWrapper


def _meta_name(encoder: Any) -> str:
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


#: mteb main scores where lower is better (every other main score is higher-is-better)
LOWER_IS_BETTER = ("mse", "mae", "rmse", "error", "loss")
#: regression tolerance of an mteb task's main score, by mteb task type (absolute; default 0.005, as compbench's own)
TOLERANCE = {"Clustering": 0.01, "Reranking": 0.005, "Retrieval": 0.005}
#: in-process mteb task objects (e.g. a task whose ``load_data`` reads local files) by name, registered by
#: :func:`run_mteb` so the task registry resolves ``mteb-<name>`` to them in this process
LOCAL_TASKS: dict[str, Any] = {}


class MtebTask:
    """An mteb task as a compbench posthoc task ``mteb-<Name>``: its card comes from mteb's metadata.

    - version: a fingerprint (an int) of the task definition -- name, dataset path and revision, evaluated
      splits and main score -- so records of a changed mteb task are not comparable with older ones;
    - direction: lower is better for error-like main scores (:data:`LOWER_IS_BETTER`), else higher;
    - tolerance: :data:`TOLERANCE` by task type, else 0.005;
    - data: the dataset revision stands in for a file sha256.

    ``evaluate`` runs mteb with the candidate table swapped into a copy of the encoder; its main score is
    mteb's ``TaskResult.get_score()`` (mean over the evaluated splits and subsets).
    """

    def __init__(self, task: Any):
        import hashlib
        import json

        self.mteb_task = task
        md = task.metadata
        ds = dict(md.dataset or {})
        blob = json.dumps({"name": md.name, "dataset": ds.get("path"), "revision": ds.get("revision"),
                           "splits": list(md.eval_splits), "main_score": md.main_score}, sort_keys=True)
        version = int(hashlib.sha256(blob.encode()).hexdigest()[:7], 16)
        higher = not any(w in md.main_score.lower() for w in LOWER_IS_BETTER)
        self.card = TaskCard(name=f"mteb-{md.name}", version=version, track="posthoc", metric=md.main_score,
                             higher_is_better=higher, tolerance=TOLERANCE.get(md.type, 0.005), dataset=ds.get("path"),
                             protocol=f"mteb {md.type} task {md.name}, splits {', '.join(md.eval_splits)}, main score "
                                      f"{md.main_score} (mean over splits/subsets), dataset revision "
                                      f"{ds.get('revision')}")
        self.dataset = ds

    def data_files(self) -> list[str]:
        """No shipped files (see :meth:`data_sha256`)."""
        return []

    def data_sha256(self) -> dict[str, str]:
        """The dataset revision stands in for the data's sha256."""
        return {f"hf-revision:{self.dataset.get('path')}": str(self.dataset.get("revision"))}

    def evaluate(self, ctx: Any) -> dict[str, float]:
        """mteb scores of the encoder with ``ctx.table`` as its token table (a PosthocContext)."""
        dense = bool(torch.equal(ctx.table.cpu(), ctx.dense_table.cpu()))
        tag = "dense" if dense else "table-" + _table_digest(ctx.table)
        model = compressed_mteb_model(ctx.encoder, None if dense else ctx.table, method=tag, budget="-")
        (tr,) = _evaluate(model, [self.mteb_task], ctx.batch_size, None)
        scores = _flat_scores(tr)
        scores[self.card.metric] = float(tr.get_score())
        return scores


def _table_digest(table: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(table.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]


def get_mteb_task(name: str) -> MtebTask:
    """``mteb-<Name>`` -> an :class:`MtebTask` (a task object registered by run_mteb, else ``mteb.get_task``)."""
    base = name.removeprefix("mteb-")
    if base in LOCAL_TASKS:
        return MtebTask(LOCAL_TASKS[base])
    (task,) = resolve_tasks([base])
    return MtebTask(task)


__all__ = ["LOCAL_TASKS", "MtebTask", "check_data", "compressed_mteb_model", "get_mteb_task", "resolve_tasks"]
