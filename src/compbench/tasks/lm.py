"""The ``lm`` track's task: perplexity of a causal LM whose token table is compressed (WikiText-2 raw test).

**Protocol** (task version 1; the same for every model and mode):

- *Text*: ``datasets/data/wikitext2/wiki.test.raw`` (the non-empty rows of the ``wikitext-2-raw-v1`` test split
  joined with CRLF; provenance and licence in ``datasets/data/PROVENANCE.md``). Line endings are normalised to
  ``\\n`` (rows joined with one newline); nothing else is changed.
- *Tokens*: the whole text is tokenised once with the model's own tokenizer, without special tokens.
- *Windows*: :data:`N_WINDOWS` non-overlapping windows of :data:`CONTEXT` positions from the start of the text
  (stride = context: no token is scored twice, no window sees the previous one). A window starts with the
  tokenizer's own prefix when it adds one to every text (``<bos>`` for Gemma-3, which expects it; nothing for
  SmolLM2) and is filled with text tokens. Every position but the first is scored: ``CONTEXT - 1`` = 511
  predicted tokens per window, 32,704 in all.
- *Per-item outcome*: each window's mean negative log-likelihood (nats per token). All windows score the same
  number of tokens, so their mean is the per-token mean. The main metric is that mean, ``nll`` (lower is
  better); ``perplexity`` = exp(nll). Intervals and paired ties bootstrap the windows (the NLL scale, as the
  issue asks; a perplexity interval is exp of the NLL interval).
- *Against the dense model* (llama.cpp's quantisation figures): ``kl``, the mean over scored tokens of
  KL(dense || candidate) of the next-token distributions (nats), and ``top1``, how often the candidate's most
  likely next token is the dense model's. The dense distributions come from the dense model's final hidden
  states, computed once per model and cached (:mod:`compbench.bench.tracks.lm_track`).

The token count (64 x 512) keeps a SmolLM2 cell under about 10 minutes on 2 CPU threads: a 512-token forward
pass takes about 1.6 s there, so an evaluation is about 2 minutes.

**Validation** (``--tune``): never the test text. WikiText-2's validation split is not available offline with
provenance here, so the validation text is the shipped AG News test split (news articles; ``ag_news/test``),
its texts joined with newlines, cut into :data:`N_VALIDATION_WINDOWS` windows by the same protocol.

**Calibration** (token frequencies for ``tiered`` / ``mde-posthoc``, healing text): the train splits of the
shipped datasets, exactly the sources of the shipped MiniLM counts (``token-frequency/*.json``), tokenised with
the LM's tokenizer; never the test or validation text.
"""

from __future__ import annotations

import functools
import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from compbench.datasets import data_root, file_sha256, split_path
from compbench.errors import DataError
from compbench.tasks.task_base import Task, TaskCard

CONTEXT = 512
N_WINDOWS = 64
N_VALIDATION_WINDOWS = 16
TEXT_FILE = "wikitext2/wiki.test.raw"
VALIDATION_SOURCE = ("ag_news", "test", "text")


def _data_file(rel: str) -> Path:
    return data_root() / rel


@functools.lru_cache(maxsize=4)
def read_text(rel: str = TEXT_FILE) -> str:
    """The shipped text with CRLF normalised to LF."""
    raw = _data_file(rel).read_bytes().decode("utf-8")
    return raw.replace("\r\n", "\n")


def tokenizer_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts in front of every text (``[bos]`` for Gemma-3; ``[]`` for SmolLM2)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    n = len(full) - len(plain)
    return list(full[:n]) if n > 0 and full[n:n + len(plain)] == plain else []


def make_windows(ids: list[int], prefix: list[int], n_windows: int, context: int = CONTEXT) -> torch.Tensor:
    """``[n_windows, context]`` int64: each window is ``prefix`` + the next ``context - len(prefix)`` text tokens."""
    per = context - len(prefix)
    if per <= 0:
        raise ValueError(f"context {context} leaves no room after a {len(prefix)}-token prefix")
    available = len(ids) // per
    if available < n_windows:
        raise DataError(f"the text has {len(ids):,} tokens: {available} windows of {per}, {n_windows} needed")
    rows = [prefix + ids[i * per:(i + 1) * per] for i in range(n_windows)]
    return torch.tensor(rows, dtype=torch.int64)


class LMPerplexity(Task, ABC):
    """Base of the lm track's tasks: a text, cut into windows by the module's protocol. A subclass names its text
    (:meth:`text`) and the files it reads (:meth:`data_sha256`); the windows and their checksum are shared."""

    n_windows: ClassVar[int] = N_WINDOWS

    @abstractmethod
    def text(self) -> str:
        """The evaluated text (normalised)."""

    @abstractmethod
    def data_sha256(self) -> dict[str, str]:
        """sha256 of the files read."""

    def windows(self, tokenizer: Any) -> torch.Tensor:
        """The evaluated windows ``[n, CONTEXT]`` for ``tokenizer``."""
        ids = tokenizer(self.text(), add_special_tokens=False)["input_ids"]
        return make_windows(list(ids), tokenizer_prefix(tokenizer), self.n_windows)

    def windows_sha256(self, windows: torch.Tensor) -> str:
        """sha256 of the window ids (recorded; part of the dense cache's key)."""
        return hashlib.sha256(windows.numpy().astype("<i8").tobytes()).hexdigest()


class WikiText2(LMPerplexity):
    """Perplexity on the WikiText-2 raw test split (see the module docstring)."""

    card = TaskCard(
        name="wikitext2", version=1, track="lm", metric="nll", higher_is_better=False, tolerance=0.01,
        dataset="wikitext2",
        protocol=(f"causal-LM perplexity on WikiText-2 raw test (CRLF->LF), {N_WINDOWS} non-overlapping windows of "
                  f"{CONTEXT} positions from the start (tokenizer's own prefix, e.g. <bos>, then text), "
                  f"{CONTEXT - 1} scored tokens each; main = mean NLL (nats/token); also perplexity, KL(dense||cand) "
                  "and top-1 agreement with the dense model"))

    def text(self) -> str:
        return read_text(TEXT_FILE)

    def data_sha256(self) -> dict[str, str]:
        return {TEXT_FILE: file_sha256(_data_file(TEXT_FILE))}

    def validation(self) -> LMPerplexity:
        """The tuning text: AG News test (never WikiText-2's test text)."""
        return AGNewsValidation()


class AGNewsValidation(LMPerplexity):
    """Validation text for tuning on the lm track: the shipped AG News test split, texts joined with newlines."""

    n_windows = N_VALIDATION_WINDOWS
    card = TaskCard(name="wikitext2-validation", version=1, track="lm", metric="nll", higher_is_better=False,
                    tolerance=0.01, dataset="ag_news",
                    protocol=f"validation: AG News test texts joined with newlines, {N_VALIDATION_WINDOWS} windows "
                             f"of {CONTEXT} (same protocol as wikitext2)")

    def text(self) -> str:
        import pandas as pd

        name, split, column = VALIDATION_SOURCE
        return "\n".join(pd.read_parquet(split_path(name, split), columns=[column])[column].astype(str))

    def data_sha256(self) -> dict[str, str]:
        name, split, _ = VALIDATION_SOURCE
        return {f"{name}/{split}": file_sha256(split_path(name, split))}


__all__ = ["CONTEXT", "N_WINDOWS", "AGNewsValidation", "LMPerplexity", "WikiText2", "make_windows", "read_text",
           "tokenizer_prefix"]
