"""The train track's hooks (:class:`TrainHooks`): train a classifier from scratch around a method's embedding.

The lifecycle (:mod:`compbench.bench.cell.lifecycle`) runs them: it builds, counts bytes, and measures.

One record per cell aggregates every seed of ``--seeds`` (default: just ``--seed``):
``metrics.main`` = mean test accuracy, ``scores.main_std`` = sample standard deviation over the
seeds (ddof=1; 0 for one seed), ``scores.accuracy_s<seed>`` per seed, ``metrics.seeds`` the list.
The record key ends in ``-s<seed>`` for one seed and ``-s0-1-2`` for ``--seeds 0,1,2``; any
setting that differs from the track's defaults is appended to the task segment (``trec+bag+d64+steps20``;
``trec+d384`` for ADE, whose width is fixed by the pretrained table), so a smoke or ablation run never
overwrites the default cell and cells of different identity never share a key
(:func:`compbench.bench.cell.identity.resolve_identity`).

Per seed (all randomness from the seed: python/numpy/torch are re-seeded, the shuffling uses its
own ``torch.Generator``, ``torch.use_deterministic_algorithms(True, warn_only=True)`` is on):

1. ``method.build(V, d, config, seed=seed, init_table=...)`` (``init_table`` = the encoder's token
   table, MiniLM's unless ``--model`` names another, for methods whose card says ``train_init="pretrained"``;
   d_model is then that encoder's width);
   its stored bytes are checked against the budget *before* training (over budget: no training);
2. ``method.custom_classifier(...)`` or the task's backbone (``models/classifier.py``) around it;
3. AdamW with linear warm-up and decay, gradient clipping, ``min(epochs, max_steps)`` steps,
   validation every ``eval_every`` steps, early stopping with ``patience``; the best-validation
   state is restored and evaluated on test.

Measured: train throughput (training samples per second of training-step time, validation
excluded), eval throughput (test samples per second), peak memory by phase (the lifecycle's ``fit``
phase builds the embedding, its ``evaluate`` phase trains and tests; ``train_peak_rss_bytes`` is the
``VmHWM`` high-water mark since that phase began; CUDA: peak allocated / reserved), params
(total / trainable / embedding / backbone), the embedding's stored bytes after training (harness
accounting) and achieved ratio, and the embedding module's lookup throughput against a dense
``nn.Embedding`` of the same shape (``compare_lookup``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compbench.bench.cell import tuning
from compbench.bench.cell.accounting import count_params
from compbench.bench.cell.context import data_sha256, seed_everything
from compbench.bench.cell.lifecycle import CellFailed, Outcome, Subject
from compbench.bench.measure.core import Stopwatch, gpu_peak, reset_gpu_peak, rss_hwm_bytes
from compbench.bench.results.record import Params
from compbench.bench.tracks.posthoc_track import get_encoder
from compbench.bench.tracks.train_settings import (
    TrainSettings,
    resolve_settings,
)
from compbench.errors import CompbenchError, DataError, UsageError
from compbench.models.classifier import build_classifier
from compbench.stats import Items
from compbench.tasks.train import SPLIT_SEED, TrainRecipe, TrainTask, load_tokenizer, tokenize_source

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
    desc: dict[str, Any] = {name: {"source": f"{task.dataset}/{p.source}", "n": len(p)} for name, p in parts.items()}
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


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
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
def evaluate_accuracy(model: nn.Module, split: SplitTensors, batch_size: int, device: torch.device,
                      per_item: list[np.ndarray] | None = None) -> tuple[float, float]:
    """(accuracy, seconds) of ``model`` on ``split`` in order, batches of ``batch_size``; ``per_item``, when given,
    receives the per-example correctness (for intervals)."""
    was_training = model.training
    model.eval()
    hits = []
    order = torch.arange(len(split))
    with Stopwatch(device) as sw:
        for start in range(0, len(split), batch_size):
            ids, mask, y = split.batch(order[start:start + batch_size], device)
            hits.append(model(ids, mask).argmax(-1) == y)
    model.train(was_training)
    correct = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    if per_item is not None:
        per_item.append(correct.cpu().numpy().astype(np.float64))
    return float(correct.sum()) / max(1, len(split)), sw.seconds


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
    test_correct: np.ndarray | None = None  # per test example, 1.0 when right (for intervals)
    optimizer: str = "AdamW"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable view for the record (the per-item correctness goes to the items sidecar)."""
        d = dict(self.__dict__)
        d.pop("test_correct", None)
        d["train_samples_per_s"] = self.train_samples / self.train_time_s if self.train_time_s > 0 else None
        return d


class NonFiniteLoss(CompbenchError):
    """Training diverged (NaN / inf loss)."""


#: learning-rate multipliers and patience multipliers tried by ``--tune on`` on the train track (the task's
#: recipe first): 3 learning rates a factor of 3 apart (the usual coarse grid for AdamW) x the recipe's patience
#: and twice it (slow-converging compressed embeddings can need more evaluations without improvement)
LR_FACTORS = (1.0, 1 / 3, 3.0)
PATIENCE_FACTORS = (1, 2)


def recipe_space(recipe: TrainRecipe) -> list[dict[str, Any]]:
    """The recipe candidates of train-track tuning: ``lr`` x ``patience`` (6; the recipe's own first)."""
    return [{"lr": float(f"{recipe.lr * lf:.6g}"), "patience": int(recipe.patience * pf)}
            for pf in PATIENCE_FACTORS for lf in LR_FACTORS]


def train_seed(model: nn.Module, data: dict[str, SplitTensors], recipe: TrainRecipe, *, seed: int,
               device: torch.device, eval_batch_size: int, test: bool = True,
               progress: Callable[..., None] | None = None) -> SeedResult:
    """Train ``model`` with ``recipe`` (early stopping on ``data["val"]``), restore the best state, test it
    (``test=False``, for tuning: the test split is not read; ``test_accuracy`` is NaN). ``progress`` (a display)
    gets a ``tick`` with the steps done and planned at every validation point."""
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
        if progress is not None:
            progress("tick", f"fit: training steps (seed {seed}, val acc {val_acc:.3f})", 0.0, done=step,
                     total=planned)
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
    test_items: list[np.ndarray] = []
    if test:
        test_acc, test_time = evaluate_accuracy(model, data["test"], eval_batch_size, device, per_item=test_items)
    else:
        test_acc, test_time, test_items = float("nan"), 0.0, [None]  # type: ignore[list-item]
    return SeedResult(seed=seed, test_accuracy=test_acc, val_accuracy=best_acc, best_step=best_step, steps=step,
                      planned_steps=planned, epochs=seen / n, stopped_early=stopped, train_time_s=train_time,
                      train_samples=seen, test_time_s=test_time, train_peak_rss_bytes=train_peak, gpu=gpu,
                      final_train_loss=last_loss, history=history, test_correct=test_items[0],
                      optimizer="AdamW(fused)" if opt.defaults.get("fused") else "AdamW")


# -- the cell ------------------------------------------------------------------------------------


def _init_table(ctx: Any, v: int, d: int) -> torch.Tensor:
    table = get_encoder(ctx).token_table
    if tuple(table.shape) != (v, d):
        raise DataError(f"the pretrained token table is {tuple(table.shape)} but the tokenizer/backbone need ({v}, {d})")
    return table


class TrainHooks:
    """The train track's part of the lifecycle (:mod:`compbench.bench.cell.lifecycle`): per seed, build the
    method's embedding, put the task's backbone (or the method's own classifier) around it, train, test."""

    multi_seed = True

    def __init__(self, ctx: Any):
        task = ctx.task
        if not isinstance(task, TrainTask):  # pragma: no cover - the registry guarantees it
            raise UsageError(f"task '{task.card.name}' is not a train-track task")
        self.results: list[SeedResult] = []

    def context(self, ctx: Any) -> Any:
        """Deterministic algorithms for the whole cell."""
        return deterministic_algorithms(ctx.device)

    def load(self, ctx: Any) -> Subject:
        """Resolve the recipe and backbone, tokenise the splits, load the pretrained table when the method needs it."""
        task: TrainTask = ctx.task
        settings = resolve_settings(task, ctx.method, ctx.config.extra, ctx.config.model)
        recipe, bcfg = settings.recipe, settings.backbone
        _, tok_info = get_tokenizer(ctx)
        v, d = tok_info.vocab_size, bcfg.d_model
        init_table = _init_table(ctx, v, d) if ctx.method.card.train_init == "pretrained" else None
        data, split_desc = load_splits(ctx, task, recipe, ctx.device)
        model_info: dict[str, Any] = {"backbone": bcfg.to_dict(), "tokenizer": tok_info.to_dict(),
                                      "num_classes": task.num_classes(), "init": ctx.method.card.train_init}
        measurements: dict[str, Any] = {"recipe": recipe.to_dict(), "splits": split_desc,
                                        "eval_batch_size": ctx.config.batch_size}
        if settings.overrides:
            measurements["overrides"] = dict(settings.overrides)
        return Subject(num_embeddings=v, dim=d, model=model_info, data_sha256=data_sha256(task),
                       measurements=measurements,
                       state={"settings": settings, "data": data, "init_table": init_table})

    def tune_recipe(self, ctx: Any, subject: Subject, config: dict[str, Any], seed: int) -> dict[str, Any]:
        """``--tune on``: choose the learning rate and the early-stopping patience on the validation split.

        Candidates: :data:`RECIPE_SPACE` around the task's recipe (default first). Each trains the method's
        embedding in the task's classifier once with ``seed`` (the cell's first) and is scored by its best
        validation accuracy; the test split is never read (``train_seed(test=False)``). The best wins (ties: the
        earlier candidate); the cell's seeds then train and test with it. Tuning stops after ``COST_CAP`` x the
        first candidate's time, like posthoc tuning. Returns the facts recorded as ``measurements.tuning``."""
        import time

        settings: TrainSettings = subject.state["settings"]
        base = settings.recipe
        space = recipe_space(base)
        rows: list[dict[str, Any]] = []
        t_start = time.perf_counter()
        cap: float | None = None
        stopped = False
        for i, cand in enumerate(space):
            recipe = base.with_(**cand)
            t0 = time.perf_counter()
            seed_everything(seed)
            module = self.produce(ctx, subject, config, seed).to(ctx.device)
            model = ctx.method.custom_classifier(module, ctx.task.num_classes(), config, seed=seed)
            if model is None:
                model = build_classifier(module, ctx.task.num_classes(), settings.backbone)
            model = model.to(ctx.device)
            row: dict[str, Any] = {"candidate": i, "options": dict(cand)}
            try:
                r = train_seed(model, subject.state["data"], recipe, seed=seed, device=ctx.device,
                               eval_batch_size=ctx.config.batch_size, test=False)
                row.update(status="ok", validation_score=r.val_accuracy, best_step=r.best_step, steps=r.steps,
                           stopped_early=r.stopped_early, fit_time_s=r.train_time_s)
            except NonFiniteLoss as exc:
                row.update(status="failed", error=str(exc))
            rows.append(row)
            spent = time.perf_counter() - t_start
            if cap is None:
                cap = tuning.COST_CAP * (time.perf_counter() - t0)  # read at call time: tests change it on the module
            elif spent > cap and i < len(space) - 1:
                stopped = True
                break
        ok = [r for r in rows if r["status"] == "ok"]
        if not ok:
            raise CompbenchError(f"every learning-rate / patience candidate of '{ctx.method.card.name}' diverged")
        best = max(ok, key=lambda r: (r["validation_score"], -r["candidate"]))
        chosen = base.with_(**best["options"])
        subject.state["settings"] = dataclasses.replace(settings, recipe=chosen)
        subject.measurements["recipe"] = chosen.to_dict()
        return {"space": [dict(c) for c in space], "candidates": rows, "chosen": best["candidate"],
                "chosen_options": best["options"], "seed": seed,
                "validation": {"task": f"{ctx.task.card.name} validation carve",
                               "split": subject.measurements.get("splits", {}).get("val")},
                "time_s": time.perf_counter() - t_start, "cost_cap_s": cap, "stopped_by_cost_cap": stopped,
                "rule": "best validation accuracy (seed 0, early stopping on validation); ties: the earlier "
                        "candidate (the task's recipe first)"}

    def produce(self, ctx: Any, subject: Subject, config: dict[str, Any], seed: int) -> nn.Module:
        """A freshly initialised trainable embedding."""
        return ctx.method.build(subject.num_embeddings, subject.dim, config, seed=seed,
                                init_table=subject.state["init_table"])

    def evaluate(self, ctx: Any, subject: Subject, module: nn.Module, config: dict[str, Any], seed: int) -> Outcome:
        """Train the classifier around ``module`` (early stopping on validation) and test the best state."""
        settings: TrainSettings = subject.state["settings"]
        data = subject.state["data"]
        model = ctx.method.custom_classifier(module, ctx.task.num_classes(), config, seed=seed)
        if model is None:
            model = build_classifier(module, ctx.task.num_classes(), settings.backbone)
        else:
            subject.model["backbone"] = {"kind": "custom", "class": type(model).__qualname__,
                                         "module": type(model).__module__}
        model = model.to(ctx.device)
        pe, pm = count_params(module), count_params(model)
        params = Params(total=pm.total, trainable=pm.trainable, embedding=pe.total, backbone=pm.total - pe.total)
        try:
            r = train_seed(model, data, settings.recipe, seed=seed, device=ctx.device,
                           eval_batch_size=ctx.config.batch_size, progress=getattr(ctx, "progress", None))
        except NonFiniteLoss as exc:
            raise CellFailed(str(exc), {"per_seed": [x.to_dict() for x in self.results]}) from exc
        self.results.append(r)

        items = Items("mean", r.test_correct) if r.test_correct is not None else None
        return Outcome(scores={"accuracy": r.test_accuracy, "val_accuracy": r.val_accuracy},
                       measurements=r.to_dict(), params=params, items=items)

    def aggregate(self, ctx: Any, subject: Subject, outcomes: list[Outcome]) -> tuple[dict[str, float], dict[str, Any]]:
        """Mean and sample std of test accuracy over the seeds, per-seed figures, throughputs."""
        results = self.results
        data = subject.state["data"]
        accs = [r.test_accuracy for r in results]
        scores: dict[str, float] = {"accuracy": statistics.fmean(accs),
                                    "main_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                                    "val_accuracy": statistics.fmean(r.val_accuracy for r in results),
                                    "n_train": float(len(data["train"])), "n_val": float(len(data["val"])),
                                    "n_test": float(len(data["test"]))}
        for r in results:
            scores[f"accuracy_s{r.seed}"] = r.test_accuracy
        batch = subject.state["settings"].recipe.batch_size
        measurements = {
            "train_time_s": sum(r.train_time_s for r in results),
            "eval_time_s": sum(r.test_time_s for r in results),
            "train_throughput": {"unit": "samples/s",
                                 "mean": statistics.fmean(r.train_samples / r.train_time_s for r in results),
                                 "per_seed": [r.train_samples / r.train_time_s for r in results], "batch_size": batch},
            "eval_throughput": {"unit": "samples/s",
                                "mean": statistics.fmean(len(data["test"]) / r.test_time_s for r in results),
                                "per_seed": [len(data["test"]) / r.test_time_s for r in results],
                                "batch_size": ctx.config.batch_size},
            "train_peak_rss_bytes": max(r.train_peak_rss_bytes for r in results),
            "per_seed": [r.to_dict() for r in results],
        }
        return scores, measurements

    def dense_module(self, ctx: Any, subject: Subject) -> nn.Module:
        """A dense ``nn.Embedding`` of the same shape (the lookup baseline)."""
        return nn.Embedding(subject.num_embeddings, subject.dim)


__all__ = ["TrainHooks", "evaluate_accuracy", "train_seed"]
