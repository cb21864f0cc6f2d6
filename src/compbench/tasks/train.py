"""Train-track tasks: text classification trained from scratch around a method's embedding layer.

Every task fixes its data split and its training recipe (:class:`TrainRecipe`); the runner
(``bench/tracks/train_track.py``) trains the backbone (``models/classifier.py``) with that recipe and reports
test accuracy of the checkpoint that scored best on the validation split.

Splits (all seeded with :data:`SPLIT_SEED` = 0, independent of the run seed, so every seed and
method sees the same examples; stratified per label, see :func:`stratified_carve`):

- ``sst2``, ``trec``, ``imdb``, ``20newsgroups``: the official train / test splits; validation =
  10% of train (at most 2,000 examples). SST-2's train is the GLUE phrase set (67k) and its test the
  labelled 1,821 sentences of Kim (2014); the GLUE dev split is not used, so that every task carves
  its validation split from train the same way.
- ``mr``, ``subj`` (no official split): 10% test, then 10% of the rest validation, the remainder train.
- ``ag_news_test8020``: only the 7,600-example AG News **test** split is shipped offline, so this task
  is a stratified 80/20 split of it (6,080 train / 1,520 test), validation 10% of that train. It is
  *not* the paper setting (120k train / 7.6k test); online users can load ``fancyzhx/ag_news``.

Inputs are tokenised once with the bundled all-MiniLM-L6-v2 WordPiece tokenizer (``[CLS] ... [SEP]``,
truncated to ``max_len``; another encoder's with ``--model``, e.g. ``all-mpnet-base-v2``) and cached on disk
(:func:`tokenize_source`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compbench.checksums import checksum_problem, record_checksum
from compbench.datasets import file_sha256, labels, load_split, split_path
from compbench.errors import DataError, UsageError
from compbench.models.model_registry import local_model
from compbench.tasks import TASKS
from compbench.tasks.task_base import Task, TaskCard

SPLIT_SEED = 0
CACHE_FORMAT = 1


@dataclass(frozen=True)
class TrainRecipe:
    """How a train-track task is trained (part of the task's definition; recorded in every record).

    Attributes:
        max_len: tokens per example after truncation, ``[CLS]`` and ``[SEP]`` included.
        batch_size: training batch size.
        epochs: passes over the training split.
        max_steps: cap on optimiser steps (0: none); training runs ``min(epochs * steps_per_epoch, max_steps)``.
        eval_every: optimiser steps between validation evaluations (capped at one epoch, so tiny subsets
            are still evaluated; the last step is always evaluated).
        patience: validation evaluations without improvement before training stops early.
        lr: AdamW peak learning rate (linear warm-up, then linear decay to 0 at the last planned step).
        weight_decay: AdamW decoupled weight decay on matrices (>= 2-d parameters); 0 on biases and norms.
        warmup_fraction: share of the planned steps used for linear warm-up.
        clip_norm: gradient-norm clipping (0: off).
        val_fraction: share of train carved out (stratified) as the validation split.
        val_max: cap on the validation split size.
        max_train_samples: smoke runs / tests only: a seeded subset of at most this many training examples (0: all).
        max_eval_samples: smoke runs / tests only: seeded subsets of at most this many validation and test examples.
    """

    max_len: int
    batch_size: int
    epochs: int
    max_steps: int
    eval_every: int
    patience: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    clip_norm: float = 1.0
    val_fraction: float = 0.1
    val_max: int = 2000
    max_train_samples: int = 0
    max_eval_samples: int = 0

    def __post_init__(self) -> None:
        checks = {
            "max_len": self.max_len >= 2, "batch_size": self.batch_size >= 1, "epochs": self.epochs >= 1,
            "max_steps": self.max_steps >= 0, "eval_every": self.eval_every >= 1, "patience": self.patience >= 1,
            "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0, "warmup_fraction": 0 <= self.warmup_fraction < 1,
            "clip_norm": self.clip_norm >= 0, "val_fraction": 0 < self.val_fraction < 1, "val_max": self.val_max >= 1,
            "max_train_samples": self.max_train_samples >= 0, "max_eval_samples": self.max_eval_samples >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise UsageError(f"invalid training recipe value(s): {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return asdict(self)

    def with_(self, **changes: Any) -> TrainRecipe:
        """A copy with ``changes`` applied (validated)."""
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the fields (for override validation)."""
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class SplitPart:
    """One of a task's train / val / test splits: rows ``indices`` of the shipped file ``dataset/source``."""

    source: str
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


def stratified_carve(labels: np.ndarray, fraction: float, seed: int, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split positions ``0..n-1`` into (rest, carved) with ``carved`` ~ ``fraction`` of every label.

    Per label (in sorted label order) the positions are permuted by ``numpy.random.default_rng(seed)``
    and the first ``round(fraction * n_label)`` taken; with ``cap`` the carved share is first scaled
    down so that the total is at most ``cap``. Both outputs are sorted.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if cap is not None and fraction * n > cap:
        fraction = cap / n
    rng = np.random.default_rng(seed)
    carved: list[np.ndarray] = []
    for lab in np.unique(labels):
        pos = np.flatnonzero(labels == lab)
        k = int(round(fraction * len(pos)))
        carved.append(rng.permutation(pos)[:k])
    out = np.sort(np.concatenate(carved)) if carved else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(n), out, assume_unique=True)
    return rest.astype(np.int64), out.astype(np.int64)


def seeded_subset(indices: np.ndarray, limit: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """At most ``limit`` of ``indices`` (a seeded random choice, kept in sorted order); all when ``limit`` is 0."""
    if not limit or limit >= len(indices):
        return indices
    keep = np.random.default_rng(seed).permutation(len(indices))[:limit]
    return np.sort(indices[keep])


class TrainTask(Task):
    """A text-classification task of the train track (subclasses set ``dataset``, ``card`` and ``recipe``)."""

    dataset: ClassVar[str]
    recipe: ClassVar[TrainRecipe]
    split_note: ClassVar[str] = "official train/test; validation = stratified 10% of train (at most 2,000), split seed 0"

    def data_files(self) -> list[str]:
        return [f"{self.dataset}/{s}" for s in self.sources()]

    def sources(self) -> tuple[str, ...]:
        """Shipped split files this task reads."""
        return ("train", "test")

    def labels_of(self, source: str) -> np.ndarray:
        """Integer labels of one shipped split file."""
        return np.asarray(load_split(self.dataset, source)["label"], dtype=np.int64)

    def texts_of(self, source: str) -> list[str]:
        """Texts of one shipped split file."""
        return [str(t) for t in load_split(self.dataset, source)["text"]]

    def num_classes(self) -> int:
        """Number of labels (from the snapshot's labels.json)."""
        return len(labels(self.dataset))

    def base_splits(self, recipe: TrainRecipe) -> dict[str, SplitPart]:
        """train / val / test before any smoke-run limit (see the module docstring)."""
        y = self.labels_of("train")
        rest, val = stratified_carve(y, recipe.val_fraction, SPLIT_SEED, recipe.val_max)
        return {"train": SplitPart("train", rest), "val": SplitPart("train", val),
                "test": SplitPart("test", np.arange(len(self.labels_of("test")), dtype=np.int64))}

    def splits(self, recipe: TrainRecipe) -> dict[str, SplitPart]:
        """The task's train / val / test splits, with the recipe's smoke-run limits applied."""
        parts = self.base_splits(recipe)
        out = {}
        for name, part in parts.items():
            limit = recipe.max_train_samples if name == "train" else recipe.max_eval_samples
            out[name] = SplitPart(part.source, seeded_subset(part.indices, limit))
        if min(len(p) for p in out.values()) == 0:
            raise DataError(f"task '{self.card.name}' has an empty split: " + ", ".join(f"{k}={len(v)}" for k, v in out.items()))
        return out


class _NoOfficialSplit(TrainTask):
    split_note = "no official split: stratified 10% test, 10% of the rest validation, the remainder train; split seed 0"

    def sources(self) -> tuple[str, ...]:
        return ("all",)

    def base_splits(self, recipe: TrainRecipe) -> dict[str, SplitPart]:
        y = self.labels_of("all")
        rest, test = stratified_carve(y, 0.1, SPLIT_SEED)
        tr, val = stratified_carve(y[rest], recipe.val_fraction, SPLIT_SEED + 1, recipe.val_max)
        return {"train": SplitPart("all", rest[tr]), "val": SplitPart("all", rest[val]), "test": SplitPart("all", test)}


def protocol_text(recipe: TrainRecipe, split_note: str) -> str:
    """The human-readable protocol stored in task cards."""
    steps = f", at most {recipe.max_steps:,} steps" if recipe.max_steps else ""
    return (f"train from scratch around the method's embedding (default backbone: 1-layer transformer, d_model 128, "
            f"4 heads, learned positions, mean pooling; MiniLM WordPiece tokens, max_len {recipe.max_len}); "
            f"AdamW lr {recipe.lr:g} (wd {recipe.weight_decay:g}, {recipe.warmup_fraction:.0%} warm-up, linear decay), "
            f"batch {recipe.batch_size}, {recipe.epochs} epochs{steps}, grad clip {recipe.clip_norm:g}; "
            f"validation every {recipe.eval_every} steps, early stopping (patience {recipe.patience}), "
            f"test accuracy of the best-validation checkpoint, mean +- std over seeds; splits: {split_note}")


def _card(name: str, dataset: str, recipe: TrainRecipe, split_note: str, version: int = 1) -> TaskCard:
    return TaskCard(name, version, "train", "accuracy", True, 0.02, dataset, protocol_text(recipe, split_note))


# Recipes: chosen so that one seed of the dense reference trains in minutes on one CPU thread
# (see docs/train-track.md for the measured times). max_len covers >= 99% of the examples of the
# short-text tasks; imdb / 20newsgroups keep the first 256 tokens.


@TASKS.register("train/sst2")
class SST2(TrainTask):
    """SST-2: GLUE phrase train set -> Kim (2014) labelled test sentences."""

    dataset = "sst2"
    recipe = TrainRecipe(max_len=64, batch_size=64, epochs=2, max_steps=1500, eval_every=250, patience=3)
    card = _card("sst2", "sst2", recipe, TrainTask.split_note)


@TASKS.register("train/trec")
class TREC(TrainTask):
    """TREC-6 question classification (coarse labels)."""

    dataset = "trec"
    recipe = TrainRecipe(max_len=48, batch_size=32, epochs=10, max_steps=0, eval_every=150, patience=4)
    card = _card("trec", "trec", recipe, TrainTask.split_note)


@TASKS.register("train/imdb")
class IMDB(TrainTask):
    """IMDB movie reviews, first 256 tokens."""

    dataset = "imdb"
    recipe = TrainRecipe(max_len=256, batch_size=32, epochs=2, max_steps=1500, eval_every=250, patience=3)
    card = _card("imdb", "imdb", recipe, TrainTask.split_note)


@TASKS.register("train/20newsgroups")
class NewsGroups20(TrainTask):
    """20 Newsgroups (bydate), first 256 tokens."""

    dataset = "20newsgroups"
    recipe = TrainRecipe(max_len=256, batch_size=32, epochs=8, max_steps=2500, eval_every=320, patience=3)
    card = _card("20newsgroups", "20newsgroups", recipe, TrainTask.split_note)


@TASKS.register("train/mr")
class MR(_NoOfficialSplit):
    """MR movie-review sentence polarity (fixed 80/10/10 split)."""

    dataset = "mr"
    recipe = TrainRecipe(max_len=64, batch_size=32, epochs=6, max_steps=0, eval_every=270, patience=3)
    card = _card("mr", "mr", recipe, _NoOfficialSplit.split_note)


@TASKS.register("train/subj")
class SUBJ(_NoOfficialSplit):
    """SUBJ subjectivity (fixed 80/10/10 split)."""

    dataset = "subj"
    recipe = TrainRecipe(max_len=80, batch_size=32, epochs=6, max_steps=0, eval_every=250, patience=3)
    card = _card("subj", "subj", recipe, _NoOfficialSplit.split_note)


@TASKS.register("train/ag_news_test8020")
class AGNewsTest8020(TrainTask):
    """AG News, offline: a fixed stratified 80/20 split of the shipped 7.6k TEST split (not the 120k setting)."""

    dataset = "ag_news"
    split_note = ("the shipped 7,600-example AG News TEST split only (NOT the paper's 120k train): stratified 80/20 "
                  "-> 6,080 train / 1,520 test; validation = stratified 10% of that train; split seed 0")
    recipe = TrainRecipe(max_len=128, batch_size=32, epochs=8, max_steps=0, eval_every=170, patience=3)
    card = _card("ag_news_test8020", "ag_news", recipe, split_note)

    def sources(self) -> tuple[str, ...]:
        return ("test",)

    def base_splits(self, recipe: TrainRecipe) -> dict[str, SplitPart]:
        y = self.labels_of("test")
        rest, test = stratified_carve(y, 0.2, SPLIT_SEED)
        tr, val = stratified_carve(y[rest], recipe.val_fraction, SPLIT_SEED + 1, recipe.val_max)
        return {"train": SplitPart("test", rest[tr]), "val": SplitPart("test", rest[val]), "test": SplitPart("test", test)}


# -- tokenisation with an on-disk cache ---------------------------------------------------------


@dataclass(frozen=True)
class TokenizerInfo:
    """Identity of the tokenizer (recorded; part of the token-cache key)."""

    name: str
    path: str
    sha256: str | None
    vocab_size: int
    pad_id: int
    tokenizers_version: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return asdict(self)


def load_tokenizer(model: str | None = None) -> tuple[Any, TokenizerInfo]:
    """The tokenizer of the bundled all-MiniLM-L6-v2, of a named model (``all-mpnet-base-v2``), or of ``model``, a
    path or hub id."""
    import importlib.metadata

    from transformers import AutoTokenizer

    path, name = local_model(model)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot load the tokenizer of '{name}': {type(exc).__name__}: {exc}") from exc
    sha = None
    for fname in ("tokenizer.json", "vocab.txt"):
        p = Path(path) / fname
        if p.is_file():
            sha = hashlib.sha256(p.read_bytes()).hexdigest()
            break
    try:
        tv = importlib.metadata.version("tokenizers")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        tv = None
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return tok, TokenizerInfo(name=name, path=path, sha256=sha, vocab_size=len(tok), pad_id=int(pad), tokenizers_version=tv)


def token_cache_path(cache_dir: Path, dataset: str, source: str, data_sha: str, tok: TokenizerInfo, max_len: int) -> Path:
    """Deterministic cache file of one tokenised split file."""
    blob = json.dumps({"format": CACHE_FORMAT, "data": data_sha, "tok": tok.sha256 or tok.name,
                       "tv": tok.tokenizers_version, "max_len": max_len}, sort_keys=True).encode()
    return cache_dir / f"{dataset}-{source}-L{max_len}-{hashlib.sha256(blob).hexdigest()[:16]}.npz"


def tokenize_texts(tokenizer: Any, texts: list[str], max_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids int32 [n, max_len] padded with pad_id, lengths int32 [n])``; special tokens added, truncated."""
    ids = np.full((len(texts), max_len), pad_id, dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    chunk = 4096
    for start in range(0, len(texts), chunk):
        enc = tokenizer(texts[start:start + chunk], add_special_tokens=True, truncation=True, max_length=max_len)["input_ids"]
        for i, row in enumerate(enc):
            ids[start + i, : len(row)] = row
            lengths[start + i] = len(row)
    return ids, lengths


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` via a temp file + rename; an unwritable folder only costs re-tokenisation."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def tokenize_source(task: TrainTask, source: str, tokenizer: Any, tok: TokenizerInfo, max_len: int,
                    cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and lengths of a whole shipped split file, from the disk cache when present.

    The cache file name is keyed by the file's sha256, the tokenizer's sha256 and version, and
    ``max_len``; it is written atomically (temp file + rename). ``cache_dir=None`` disables it.
    """
    data_sha = file_sha256(split_path(task.dataset, source))
    path = token_cache_path(cache_dir, task.dataset, source, data_sha, tok, max_len) if cache_dir else None
    if path is not None and path.is_file():
        problem = checksum_problem(path)  # a cache is trusted only when it matches the sha256 written with it
        if problem is None:
            try:
                with np.load(path, allow_pickle=False) as z:  # never unpickle
                    return z["ids"], z["lengths"]
            except (OSError, ValueError, KeyError):
                problem = "unreadable"
        print(f"compbench: the token cache {path.name} is not usable ({problem}); tokenising again",
              file=sys.stderr, flush=True)
    ids, lengths = tokenize_texts(tokenizer, task.texts_of(source), max_len, tok.pad_id)
    if path is not None:
        _atomic_savez(path, ids=ids, lengths=lengths)
        if path.is_file():
            record_checksum(path)
    return ids, lengths


__all__ = ["SPLIT_SEED", "SplitPart", "TokenizerInfo", "TrainRecipe", "TrainTask", "load_tokenizer",
           "seeded_subset", "stratified_carve", "tokenize_source", "tokenize_texts"]
