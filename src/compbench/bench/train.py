"""The train track runner: train a classifier from scratch around a method's embedding, evaluate, measure.

One record per cell aggregates every seed of ``--seeds`` (default: just ``--seed``):
``metrics.main`` = mean test accuracy, ``scores.main_std`` = sample standard deviation over the
seeds (ddof=1; 0 for one seed), ``scores.accuracy_s<seed>`` per seed, ``metrics.seeds`` the list.
The record key ends in ``-s<seed>`` for one seed and ``-s0-1-2`` for ``--seeds 0,1,2``; any
non-default backbone / recipe setting is appended to the task segment (``trec+bag+d64+steps20``),
so a smoke or ablation run never overwrites the default cell (:func:`train_key`).

Per seed (all randomness from the seed: python/numpy/torch are re-seeded, the shuffling uses its
own ``torch.Generator``, ``torch.use_deterministic_algorithms(True, warn_only=True)`` is on):

1. ``method.build(V, d, config, seed=seed, init_table=...)`` (``init_table`` = the MiniLM token
   table for methods whose card says ``train_init="pretrained"``; d_model is then the MiniLM width);
   its stored bytes are checked against the budget *before* training (over budget: no training);
2. ``method.custom_classifier(...)`` or the task's backbone (``models/classifier.py``) around it;
3. AdamW with linear warm-up and decay, gradient clipping, ``min(epochs, max_steps)`` steps,
   validation every ``eval_every`` steps, early stopping with ``patience``; the best-validation
   state is restored and evaluated on test.

Measured: train throughput (training samples per second of training-step time, validation
excluded), eval throughput (test samples per second), peak memory *during training* (CPU: the
process high-water mark ``VmHWM``, reset before each seed through ``/proc/self/clear_refs`` where
Linux allows it, else the process-lifetime ``ru_maxrss``; CUDA: peak allocated / reserved), params
(total / trainable / embedding / backbone), the embedding's stored bytes after training (harness
accounting) and achieved ratio, and the embedding module's lookup throughput against a dense
``nn.Embedding`` of the same shape (``compare_lookup``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import statistics
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compbench.bench.accounting import count_params, stored_bytes, stored_bytes_breakdown
from compbench.bench.budget import reference_bytes
from compbench.bench.measure import (
    Stopwatch,
    compare_lookup,
    current_rss_bytes,
    gpu_peak,
    peak_rss_bytes,
    reset_gpu_peak,
)
from compbench.bench.provenance import collect
from compbench.bench.record import Metrics, Params, Record
from compbench.errors import CompbenchError, DataError, RecordError, UsageError
from compbench.models.classifier import BackboneConfig, build_classifier
from compbench.tasks.train import SPLIT_SEED, TrainRecipe, TrainTask, load_tokenizer, tokenize_source

DEFAULT_D_MODEL = BackboneConfig().d_model

# RunConfig.extra keys of the train track (the CLI's --backbone, --d-model, --max-steps,
# --max-train-samples, --max-eval-samples and repeatable --recipe key=value fill them):
EXTRA_KEYS = {
    "backbone": "kind",  # transformer | bag
    "d_model": "d_model",
    "max_steps": "max_steps",
    "max_train_samples": "max_train_samples",
    "max_eval_samples": "max_eval_samples",
}
# Short key tags for the flags above; any other override is tagged "<name>=<value>".
_TAGS = {"kind": "{}", "d_model": "d{}", "max_steps": "steps{}", "max_train_samples": "n{}", "max_eval_samples": "neval{}"}
_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


# -- settings ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """The resolved recipe and backbone of a cell, and the user overrides that differ from the task's defaults."""

    recipe: TrainRecipe
    backbone: BackboneConfig
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        """Key suffix of the task segment: ``""`` for the task's defaults, else e.g. ``"+bag+d64+lr=0.003"``."""
        return "".join("+" + _TAGS.get(k, k + "={}").format(_fmt(v)) for k, v in self.overrides.items())


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _cast(name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):  # pragma: no cover - no bool fields today
            return str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"train setting {name}={value!r} must be {type(default).__name__}") from exc


def pretrained_dim(model: str | None) -> int:
    """Hidden width of the pretrained encoder whose token table initialises ``train_init="pretrained"`` methods."""
    import json

    from compbench.models.encoder import DEFAULT_MODEL, default_model_dir

    if model in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            return int(json.loads((default_model_dir() / "config.json").read_text())["hidden_size"])
        except (OSError, KeyError, ValueError) as exc:  # pragma: no cover - a broken install
            raise DataError(f"cannot read the bundled model's config.json: {exc}") from exc
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(model).hidden_size)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot read the hidden size of '{model}': {type(exc).__name__}: {exc}") from exc


def resolve_settings(task: TrainTask, method: Any, extra: Mapping[str, Any], model: str | None = None) -> TrainSettings:
    """Task defaults + ``extra`` overrides (see :data:`EXTRA_KEYS`; ``extra["recipe"]`` may set any
    :class:`TrainRecipe` or :class:`BackboneConfig` field). Raises UsageError on unknown or bad values."""
    rfields = TrainRecipe.field_names()
    bfields = tuple(f for f in BackboneConfig.field_names() if f != "max_len")  # max_len lives in the recipe
    raw: dict[str, Any] = {}
    for key, fname in EXTRA_KEYS.items():
        if extra.get(key) is not None:
            raw[fname] = extra[key]
    for key, value in dict(extra.get("recipe") or {}).items():
        name = "kind" if key == "backbone" else key
        if name not in rfields and name not in bfields:
            known = ", ".join(sorted({*rfields, *bfields} - {"kind"} | {"backbone"}))
            raise UsageError(f"unknown train setting '{key}' (settings: {known})")
        if name in raw and str(raw[name]) != str(value):
            raise UsageError(f"train setting '{key}' given twice with different values ({raw[name]!r}, {value!r})")
        raw[name] = value

    forced_d = pretrained_dim(model) if getattr(method.card, "train_init", "random") == "pretrained" else None
    base_recipe = task.recipe
    base_backbone = BackboneConfig(d_model=forced_d or DEFAULT_D_MODEL, max_len=base_recipe.max_len)
    rvals = {k: _cast(k, v, getattr(base_recipe, k)) for k, v in raw.items() if k in rfields}
    bvals = {k: _cast(k, v, getattr(base_backbone, k)) for k, v in raw.items() if k in bfields}
    for k, v in {**rvals, **bvals}.items():
        if isinstance(v, str) and not _SAFE.match(v):
            raise UsageError(f"train setting {k}={v!r} may only contain letters, digits, '_', '.' and '-'")
    if forced_d is not None and bvals.get("d_model", forced_d) != forced_d:
        raise UsageError(f"method '{method.card.name}' is initialised from the pretrained {forced_d}-d token table, "
                         f"so d_model must be {forced_d} (got {bvals['d_model']})")
    recipe = base_recipe.with_(**rvals)
    backbone = base_backbone.with_(max_len=recipe.max_len, **bvals)
    overrides = {}  # canonical order: backbone fields, then recipe fields
    for k in bfields:
        if k in bvals and bvals[k] != getattr(base_backbone, k):
            overrides[k] = bvals[k]
    for k in rfields:
        if k in rvals and rvals[k] != getattr(base_recipe, k):
            overrides[k] = rvals[k]
    return TrainSettings(recipe=recipe, backbone=backbone, overrides=overrides)


def cell_seeds(config: Any) -> tuple[int, ...]:
    """The seeds of a train cell: ``config.seeds`` when given, else ``(config.seed,)`` (validated)."""
    seeds = tuple(int(s) for s in config.seeds) if config.seeds else (int(config.seed),)
    if any(s < 0 for s in seeds):
        raise UsageError(f"seeds must be >= 0, got {list(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds has duplicates: {list(seeds)}")
    return seeds


def train_key(key: str, config: Any, task: TrainTask, method: Any) -> str:
    """Turn the generic cell key into the train-track key (settings tag on the task, all seeds at the end)."""
    parts = key.split("/")
    settings = resolve_settings(task, method, config.extra, config.model)
    parts[1] = parts[1] + settings.tag
    parts[-1] = re.sub(r"-s\d+$", "-s" + "-".join(str(s) for s in cell_seeds(config)), parts[-1])
    return "/".join(parts)


# -- data ----------------------------------------------------------------------------------------


@dataclass
class SplitTensors:
    """One split ready for batching: padded ids, lengths and labels (CPU or device tensors)."""

    ids: torch.Tensor  # [n, max_len] long
    lengths: torch.Tensor  # [n] long (CPU)
    labels: torch.Tensor  # [n] long

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids [b, L], mask [b, L], labels [b])`` for rows ``idx``, trimmed to the longest row."""
        length = int(self.lengths[idx].max())
        didx = idx.to(self.ids.device)
        ids = self.ids[didx, :length]
        mask = torch.arange(length, device=ids.device).unsqueeze(0) < self.lengths[idx].to(ids.device).unsqueeze(1)
        return ids.to(device), mask.to(device), self.labels[didx].to(device)


def get_tokenizer(ctx: Any) -> tuple[Any, Any]:
    """(tokenizer, TokenizerInfo) for this cell, cached in ``ctx.cache``."""
    key = f"tokenizer:{ctx.config.model}"
    if key not in ctx.cache:
        ctx.cache[key] = load_tokenizer(ctx.config.model)
    return ctx.cache[key]


def token_cache_dir(ctx: Any) -> Path | None:
    """``extra["cache_dir"]``, else ``<results>/.cache/tokens`` when the cell has a store, else None (memory only)."""
    if ctx.config.extra.get("cache_dir"):
        return Path(ctx.config.extra["cache_dir"])
    if ctx.store is not None:
        return Path(ctx.store.root) / ".cache" / "tokens"
    return None


def load_splits(ctx: Any, task: TrainTask, recipe: TrainRecipe, device: torch.device) -> tuple[dict[str, SplitTensors], dict[str, Any]]:
    """Tokenised train / val / test tensors (ids on ``device``) and a description of the splits."""
    tokenizer, info = get_tokenizer(ctx)
    parts = task.splits(recipe)
    cache_dir = token_cache_dir(ctx)
    out: dict[str, SplitTensors] = {}
    labels_cache: dict[str, np.ndarray] = {}
    for name, part in parts.items():
        mkey = f"tokens:{task.dataset}:{part.source}:{recipe.max_len}:{info.sha256}"
        if mkey not in ctx.cache:
            ctx.cache[mkey] = tokenize_source(task, part.source, tokenizer, info, recipe.max_len, cache_dir)
        ids, lengths = ctx.cache[mkey]
        if part.source not in labels_cache:
            labels_cache[part.source] = task.labels_of(part.source)
        y = labels_cache[part.source]
        sel = part.indices
        out[name] = SplitTensors(ids=torch.from_numpy(ids[sel].astype(np.int64)).to(device),
                                 lengths=torch.from_numpy(lengths[sel].astype(np.int64)),
                                 labels=torch.from_numpy(y[sel]).to(device))
    num_classes = task.num_classes()
    for name, st in out.items():
        if len(st) and (int(st.labels.min()) < 0 or int(st.labels.max()) >= num_classes):
            raise DataError(f"task '{task.card.name}': {name} labels outside 0..{num_classes - 1}")
    desc = {name: {"source": f"{task.dataset}/{p.source}", "n": len(p)} for name, p in parts.items()}
    desc["split_seed"] = SPLIT_SEED
    return out, desc


# -- training ------------------------------------------------------------------------------------


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True, warn_only=True)`` for the block (restored after).

    On CUDA, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` is set when unset (cuBLAS needs it to be deterministic).
    """
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def reset_rss_peak() -> bool:
    """Reset this process' RSS high-water mark (Linux ``/proc/self/clear_refs`` 5); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_hwm_bytes() -> int:
    """This process' RSS high-water mark since the last reset (``VmHWM``), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover
        pass
    return peak_rss_bytes()  # pragma: no cover


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters: torch's fused kernel where every parameter allows it
    (several times faster on CPU for large tables; same update rule), else the default implementation."""
    groups = _param_groups(model, recipe.weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=recipe.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(_param_groups(model, recipe.weight_decay), lr=recipe.lr)


def lr_lambda(total_steps: int, warmup_steps: int) -> Any:
    """Linear warm-up over ``warmup_steps`` then linear decay to 0 at ``total_steps`` (a LambdaLR factor)."""
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return f


@torch.inference_mode()
def evaluate_accuracy(model: nn.Module, split: SplitTensors, batch_size: int, device: torch.device) -> tuple[float, float]:
    """(accuracy, seconds) of ``model`` on ``split`` in order, batches of ``batch_size``."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    order = torch.arange(len(split))
    with Stopwatch(device) as sw:
        for start in range(0, len(split), batch_size):
            ids, mask, y = split.batch(order[start:start + batch_size], device)
            correct += (model(ids, mask).argmax(-1) == y).sum()
    model.train(was_training)
    return float(correct) / max(1, len(split)), sw.seconds


@dataclass
class SeedResult:
    """What one seed's training produced."""

    seed: int
    test_accuracy: float
    val_accuracy: float
    best_step: int
    steps: int
    planned_steps: int
    epochs: float
    stopped_early: bool
    train_time_s: float
    train_samples: int
    test_time_s: float
    train_peak_rss_bytes: int
    gpu: dict[str, int] | None
    final_train_loss: float
    history: list[dict[str, float]]
    optimizer: str = "AdamW"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable view for the record."""
        d = dict(self.__dict__)
        d["train_samples_per_s"] = self.train_samples / self.train_time_s if self.train_time_s > 0 else None
        return d


class NonFiniteLoss(CompbenchError):
    """Training diverged (NaN / inf loss)."""


def train_seed(model: nn.Module, data: dict[str, SplitTensors], recipe: TrainRecipe, *, seed: int,
               device: torch.device, eval_batch_size: int) -> SeedResult:
    """Train ``model`` with ``recipe`` (early stopping on ``data["val"]``), restore the best state, test it."""
    train = data["train"]
    n = len(train)
    spe = math.ceil(n / recipe.batch_size)
    planned = recipe.epochs * spe
    if recipe.max_steps:
        planned = min(planned, recipe.max_steps)
    eval_every = max(1, min(recipe.eval_every, spe))
    warmup = int(recipe.warmup_fraction * planned)
    opt = make_optimizer(model, recipe)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(planned, warmup))
    g = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()

    reset_rss_peak()
    reset_gpu_peak(device)
    model.train()
    best_acc, best_step, best_state = -1.0, 0, None
    bad, step, seen, train_time = 0, 0, 0, 0.0
    history: list[dict[str, float]] = []
    loss_sum = torch.zeros((), device=device)
    loss_n = 0
    last_loss = float("nan")
    stopped = False
    order = torch.randperm(n, generator=g)
    pos = 0
    while step < planned and not stopped:
        seg = min(eval_every - step % eval_every, planned - step)
        with Stopwatch(device) as sw:
            for _ in range(seg):
                if pos >= n:
                    order, pos = torch.randperm(n, generator=g), 0
                idx = order[pos:pos + recipe.batch_size]
                pos += len(idx)
                ids, mask, y = train.batch(idx, device)
                loss = loss_fn(model(ids, mask), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if recipe.clip_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
                opt.step()
                sched.step()
                loss_sum += loss.detach()
                loss_n += 1
                seen += len(idx)
                step += 1
        train_time += sw.seconds
        last_loss = float(loss_sum) / max(1, loss_n)
        if not math.isfinite(last_loss):
            raise NonFiniteLoss(f"seed {seed}: non-finite training loss by step {step}")
        loss_sum.zero_()
        loss_n = 0
        val_acc, _ = evaluate_accuracy(model, data["val"], eval_batch_size, device)
        history.append({"step": step, "train_loss": last_loss, "val_accuracy": val_acc})
        if val_acc > best_acc:
            best_acc, best_step, bad = val_acc, step, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= recipe.patience and step < planned:
                stopped = True
    train_peak = rss_hwm_bytes()
    gpu = gpu_peak(device)
    if best_state is not None:
        model.load_state_dict(best_state)
    test_acc, test_time = evaluate_accuracy(model, data["test"], eval_batch_size, device)
    return SeedResult(seed=seed, test_accuracy=test_acc, val_accuracy=best_acc, best_step=best_step, steps=step,
                      planned_steps=planned, epochs=seen / n, stopped_early=stopped, train_time_s=train_time,
                      train_samples=seen, test_time_s=test_time, train_peak_rss_bytes=train_peak, gpu=gpu,
                      final_train_loss=last_loss, history=history,
                      optimizer="AdamW(fused)" if opt.defaults.get("fused") else "AdamW")


# -- the cell ------------------------------------------------------------------------------------


def _init_table(ctx: Any, v: int, d: int) -> torch.Tensor:
    from compbench.bench.posthoc import get_encoder

    table = get_encoder(ctx).token_table
    if tuple(table.shape) != (v, d):
        raise DataError(f"the pretrained token table is {tuple(table.shape)} but the tokenizer/backbone need ({v}, {d})")
    return table


def _dense_score(ctx: Any, d_model: int) -> tuple[float | None, str | None]:
    """Mean accuracy of the dense reference cell with the same settings, when the store has it (never run here)."""
    from dataclasses import replace

    from compbench.bench.runner import prepare

    if ctx.method.card.name == "dense" or ctx.store is None:
        return None, None
    extra = dict(ctx.config.extra)
    if d_model != DEFAULT_D_MODEL:
        extra["d_model"] = d_model
    try:
        dctx = prepare(replace(ctx.config, method="dense", budget="1x", options={}, extra=extra), ctx.store, ctx.cache)
        if not ctx.store.exists(dctx.key):
            return None, dctx.key
        rec = ctx.store.read(dctx.key)
    except (RecordError, UsageError):
        return None, None
    if rec.status != "ok" or rec.task.version != ctx.task.card.version or rec.metrics.main is None:
        return None, dctx.key
    return rec.metrics.main, dctx.key


def _memory(ctx: Any, rss_before: int, lifetime_peak: int, results: list[SeedResult], resettable: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "peak_rss_bytes": max([lifetime_peak, peak_rss_bytes(), *(r.train_peak_rss_bytes for r in results)]),
        "train_peak_rss_bytes": max((r.train_peak_rss_bytes for r in results), default=None),
        "train_peak_rss_method": "VmHWM reset before each seed" if resettable else "process ru_maxrss (not resettable)",
        "rss_before_bytes": rss_before,
        "fresh_process": bool(ctx.config.fresh_process),
    }
    gpus = [r.gpu for r in results if r.gpu]
    if gpus:
        out["peak_allocated_bytes"] = max(g["peak_allocated_bytes"] for g in gpus)
        out["peak_reserved_bytes"] = max(g["peak_reserved_bytes"] for g in gpus)
    return out


def run_train(ctx: Any) -> Record:
    """Run one train-track cell over all its seeds (see the module docstring)."""
    from compbench.bench.runner import data_sha256, seed_everything

    task: TrainTask = ctx.task
    if not isinstance(task, TrainTask):  # pragma: no cover - the registry guarantees it
        raise UsageError(f"task '{task.card.name}' is not a train-track task")
    rss_before = current_rss_bytes()
    lifetime_peak = peak_rss_bytes()
    settings = resolve_settings(task, ctx.method, ctx.config.extra, ctx.config.model)
    recipe, bcfg = settings.recipe, settings.backbone
    seeds = cell_seeds(ctx.config)
    _, tok_info = get_tokenizer(ctx)
    v, d = tok_info.vocab_size, bcfg.d_model
    ref = reference_bytes(v, d)
    budget = ctx.budget_info(ref)
    mconfig = ctx.method.configure(v, d, budget.allowed_bytes)  # raises UnattainableBudgetError
    init_table = _init_table(ctx, v, d) if ctx.method.card.train_init == "pretrained" else None
    data, split_desc = load_splits(ctx, task, recipe, ctx.device)
    num_classes = task.num_classes()
    provenance = collect()
    provenance["run_config"] = ctx.config.to_dict()
    model_info: dict[str, Any] = {"backbone": bcfg.to_dict(), "tokenizer": tok_info.to_dict(), "num_classes": num_classes,
                                  "init": ctx.method.card.train_init}
    measurements: dict[str, Any] = {"recipe": recipe.to_dict(), "splits": split_desc, "eval_batch_size": ctx.config.batch_size}
    if settings.overrides:
        measurements["overrides"] = dict(settings.overrides)

    def base(params: Params) -> dict[str, Any]:
        return dict(key=ctx.key, track=ctx.config.track, seed=seeds[0], method=ctx.method_info(mconfig),
                    task=ctx.task_info(data_sha256(task)), budget=budget, device=ctx.device_info(), params=params,
                    model=model_info, provenance=provenance)

    results: list[SeedResult] = []
    first_embedding: nn.Module | None = None
    params = Params()
    resettable = reset_rss_peak()
    with deterministic_algorithms(ctx.device):
        for s in seeds:
            seed_everything(s)
            with Stopwatch(ctx.device) as build:
                embedding = ctx.method.build(v, d, mconfig, seed=s, init_table=init_table)
            embedding = embedding.to(ctx.device)
            if budget.stored_bytes is None:  # check the budget before any training
                budget.stored_bytes = stored_bytes(embedding)
                budget.breakdown = stored_bytes_breakdown(embedding)
                budget.achieved_ratio = ref / budget.stored_bytes if budget.stored_bytes else None
                measurements["build_time_s"] = build.seconds
                if budget.stored_bytes > budget.allowed_bytes:
                    pc = count_params(embedding)
                    measurements["memory"] = _memory(ctx, rss_before, lifetime_peak, results, resettable)
                    return Record(status="over_budget", metrics=Metrics(seeds=list(seeds)),
                                  error=f"stored {budget.stored_bytes:,} B > allowed {budget.allowed_bytes:,} B",
                                  measurements=measurements, **base(Params(embedding=pc.total, trainable=pc.trainable)))
            model = ctx.method.custom_classifier(embedding, num_classes, mconfig, seed=s)
            if model is None:
                model = build_classifier(embedding, num_classes, bcfg)
            else:
                model_info["backbone"] = {"kind": "custom", "class": type(model).__qualname__,
                                          "module": type(model).__module__}
            model = model.to(ctx.device)
            pe, pm = count_params(embedding), count_params(model)
            params = Params(total=pm.total, trainable=pm.trainable, embedding=pe.total, backbone=pm.total - pe.total)
            try:
                results.append(train_seed(model, data, recipe, seed=s, device=ctx.device,
                                          eval_batch_size=ctx.config.batch_size))
            except NonFiniteLoss as exc:
                measurements["per_seed"] = [r.to_dict() for r in results]
                measurements["memory"] = _memory(ctx, rss_before, lifetime_peak, results, resettable)
                return Record(status="failed", error=str(exc), metrics=Metrics(seeds=list(seeds)),
                              measurements=measurements, **base(params))
            except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
                measurements["memory"] = _memory(ctx, rss_before, lifetime_peak, results, resettable)
                return Record(status="failed", error=f"CUDA out of memory: {exc}".splitlines()[0],
                              metrics=Metrics(seeds=list(seeds)), measurements=measurements, **base(params))
            after = stored_bytes(embedding)  # the harness' figure is taken on the trained module
            if after != budget.stored_bytes:
                budget.stored_bytes = max(after, budget.stored_bytes)
                budget.breakdown = stored_bytes_breakdown(embedding)
                budget.achieved_ratio = ref / budget.stored_bytes if budget.stored_bytes else None
            if first_embedding is None:
                first_embedding = embedding
            else:
                del embedding, model

    if budget.stored_bytes > budget.allowed_bytes:  # grew during training
        measurements["per_seed"] = [r.to_dict() for r in results]
        measurements["memory"] = _memory(ctx, rss_before, lifetime_peak, results, resettable)
        return Record(status="over_budget", metrics=Metrics(seeds=list(seeds)), measurements=measurements,
                      error=f"stored {budget.stored_bytes:,} B after training > allowed {budget.allowed_bytes:,} B",
                      **base(params))
    accs = [r.test_accuracy for r in results]
    main = statistics.fmean(accs)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    scores: dict[str, float] = {"accuracy": main, "main_std": std,
                                "val_accuracy": statistics.fmean(r.val_accuracy for r in results),
                                "n_train": float(len(data["train"])), "n_val": float(len(data["val"])),
                                "n_test": float(len(data["test"]))}
    for r in results:
        scores[f"accuracy_s{r.seed}"] = r.test_accuracy
    train_time = sum(r.train_time_s for r in results)
    test_time = sum(r.test_time_s for r in results)
    measurements.update({
        "train_time_s": train_time,
        "eval_time_s": test_time,
        "train_throughput": {"unit": "samples/s", "mean": statistics.fmean(r.train_samples / r.train_time_s for r in results),
                             "per_seed": [r.train_samples / r.train_time_s for r in results],
                             "batch_size": recipe.batch_size},
        "eval_throughput": {"unit": "samples/s", "mean": statistics.fmean(len(data["test"]) / r.test_time_s for r in results),
                            "per_seed": [len(data["test"]) / r.test_time_s for r in results],
                            "batch_size": ctx.config.batch_size},
        "per_seed": [r.to_dict() for r in results],
    })
    assert first_embedding is not None
    measurements["lookup"] = compare_lookup(first_embedding, nn.Embedding(v, d), num_embeddings=v, device=ctx.device,
                                            iters=ctx.config.lookup_iters, seed=seeds[0])
    measurements["memory"] = _memory(ctx, rss_before, lifetime_peak, results, resettable)
    dense_score, dense_key = _dense_score(ctx, d)
    if dense_key:
        measurements["dense_reference_key"] = dense_key
    retention = main / dense_score if dense_score else None
    return Record(status="ok", metrics=Metrics(main=main, scores=scores, seeds=list(seeds), dense_score=dense_score,
                                               retention=retention),
                  measurements=measurements, **base(params))


__all__ = ["TrainSettings", "cell_seeds", "evaluate_accuracy", "resolve_settings", "run_train", "train_key", "train_seed"]
