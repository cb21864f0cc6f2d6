"""Method contracts.

A *method* is a registry entry (key = its card's kebab-case name) that turns a
memory budget into a :class:`CompressedEmbedding`:

- ``posthoc`` mode: :meth:`Method.compress` compresses a pretrained ``[V, d]`` table;
- ``train`` mode: :meth:`Method.build` creates a trainable module trained end to end.

:meth:`Method.configure` picks the largest hyperparameters whose stored size fits
``budget_bytes`` and raises :class:`~compbench.errors.UnattainableBudgetError`
(naming the smallest budget it can meet) otherwise. Methods never report their
own bytes: the harness measures the returned module (``bench.cell.accounting``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import nn

from compbench.errors import TrackError, UnattainableBudgetError, UsageError, quoted
from compbench.methods.options import (
    BOOL_WORDS,
    MethodOptions,
    OptionRange,
    canonical_options,
    option_help,
    option_ranges,
    validate_options,
)

MODES = ("posthoc", "train")


@dataclass(frozen=True)
class MethodCard:
    """Static description of a method: shown by ``compbench list methods`` and stored in records."""

    name: str
    version: int
    family: str
    reference: str
    modes: tuple[str, ...]
    description: str = ""
    # option name -> help with default and valid values: derived from the method's ``Options`` model (never
    # written by hand for a method that declares one; see compbench.methods.options)
    options: Mapping[str, str] = field(default_factory=dict)
    # train track: "random" (build() initialises from scratch) or "pretrained" (build() receives the
    # pretrained MiniLM token table as init_table, e.g. ADE's stage-1 distillation)
    train_init: str = "random"
    # train track: "shared" (the task's backbone classifies) or "own:<name>" (the method brings its own
    # classifier through ``Method.custom_classifier``, e.g. ADE's SAT); part of the cell identity
    train_head: str = "shared"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return {
            "name": self.name,
            "version": self.version,
            "family": self.family,
            "reference": self.reference,
            "modes": list(self.modes),
            "description": self.description,
        }


@dataclass(frozen=True)
class CodeSearch:
    """Nearest-neighbour search that runs on a module's stored codes (the store track's ``search`` task).

    ``search(queries, k)`` takes float32 queries ``[q, d]`` (numpy) and returns the ids ``[q, k]`` of the rows
    ranked best by the index's own (asymmetric, unless ``kind`` says otherwise) score; ``kind`` names the index
    and its scoring, and is recorded.
    """

    kind: str
    search: Callable[..., Any]


class CompressedEmbedding(nn.Module):
    """An embedding module ``ids[...] -> [..., d]`` whose state_dict is exactly what it stores."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def code_search(self) -> CodeSearch | None:
        """A search over the stored codes (a faiss index built from this module's buffers, never retrained), or
        None (default) when no library index reads these codes: the store track then searches the decoded rows."""
        return None

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores of hidden states ``h [..., d]`` against every row, ``h @ table^T`` (an output head that shares the
        table: tied LMs). The default decodes the table on each call (no cached copy outside the counted bytes)."""
        return h @ self.materialize().to(h.dtype).T

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        """The full ``[V, d]`` float32 table this module represents (used for fast quality evaluation)."""
        dev = next((t.device for t in self.state_dict().values()), torch.device("cpu"))
        out = []
        for start in range(0, self.num_embeddings, chunk):
            ids = torch.arange(start, min(start + chunk, self.num_embeddings), device=dev)
            out.append(self.forward(ids).float())
        return torch.cat(out, 0)


class DenseEmbedding(CompressedEmbedding):
    """A plain fp32 table (the reference), usable in both modes."""

    def __init__(self, weight: torch.Tensor, trainable: bool = False):
        super().__init__(weight.shape[0], weight.shape[1])
        self.weight = nn.Parameter(weight.detach().clone().float(), requires_grad=trainable)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.weight)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Scores of hidden states ``h [..., d]`` against every row, ``h @ table^T`` (an output head that shares the
        table: tied LMs). The default decodes the table on each call (no cached copy outside the counted bytes)."""
        return h @ self.materialize().to(h.dtype).T

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        return self.weight.detach().float().clone()


class Method:
    """Base class for registry methods. Subclasses set ``card`` and ``Options`` and implement configure +
    compress/build (and, when they have one, ``tuning_space``).

    Args:
        **options: user overrides of hyperparameters (``--option key=value`` on the CLI); they are
            validated by the method's ``Options`` model and recorded in the config.
    """

    card: ClassVar[MethodCard]
    #: the method's options, declared once: one typed field per option with its default, help and valid values
    #: (:class:`compbench.methods.options.MethodOptions`). ``card.options`` and ``option_ranges`` derive from it.
    Options: ClassVar[type[MethodOptions] | None] = None
    # the valid values of every numeric option (option name -> range), derived from ``Options``; checked at
    # construction, so an out-of-range value (``-o rank=-5``) fails before any work (see compbench.methods.options)
    option_ranges: ClassVar[Mapping[str, OptionRange]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Derive the card's option help and the option ranges from ``Options`` (the one declaration)."""
        super().__init_subclass__(**kwargs)
        model = cls.__dict__.get("Options") or getattr(cls, "Options", None)
        if model is None:
            return  # a method written against the older contract: card.options + option_ranges by hand
        card = cls.__dict__.get("card")
        if card is not None and card.options and dict(card.options) != option_help(model):  # a parent's card reused
            raise TypeError(f"method '{card.name}' declares its options in an Options model: its card must not "
                            "list them again")
        cls.option_ranges = option_ranges(model)
        if hasattr(cls, "card"):
            cls.card = replace(cls.card, options=option_help(model))

    def __init__(self, **options: Any):
        options = canonical_options(self.card.name, options, self.option_ranges)
        unknown = sorted(set(options) - set(self.card.options))  # card.options: derived from Options when declared
        if unknown:
            known = ", ".join(sorted(self.card.options)) or "none"
            raise UsageError(f"method '{self.card.name}' has no option(s) {', '.join(quoted(u) for u in unknown)} "
                             f"(options: {known})")
        if self.Options is not None:
            self.opts = validate_options(self.card.name, self.Options, options)  # typed values, defaults filled
        self.options = options  # canonical: one spelling per value, only what the user gave

    # -- budget -> hyperparameters -----------------------------------------
    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        """Largest hyperparameters that fit ``budget_bytes``; raise UnattainableBudgetError otherwise."""
        raise NotImplementedError

    def unattainable(self, num_embeddings: int, embedding_dim: int, budget_bytes: int, min_bytes: int) -> UnattainableBudgetError:
        """Build the standard error naming the smallest budget this method can meet."""
        return UnattainableBudgetError(self.card.name, budget_bytes, min_bytes, num_embeddings * embedding_dim * 4)

    # -- modes -----------------------------------------------------------------
    #: peak resident memory of ``compress`` as a multiple of the table's fp32 bytes, the table included (see
    #: ``peak_memory_bytes``); 3.0 is the streaming rule of issue 23, which the block-wise encoders and the Gram
    #: route of ``methods/streaming.py`` keep. A method that cannot stream says so with a larger factor or
    #: its own ``peak_memory_bytes``, and its docstring explains why.
    memory_factor: ClassVar[float] = 3.0

    def peak_memory_bytes(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any]) -> int:
        """Estimated peak resident bytes of ``compress`` on a ``V x d`` table at ``config``, the fp32 table itself
        included; the harness refuses a cell whose estimate exceeds the memory available (bench/cell/memory_guard.py).
        The default is ``memory_factor`` times the table's fp32 bytes plus 256 MiB of interpreter and libraries."""
        return int(self.memory_factor * num_embeddings * embedding_dim * 4) + (256 << 20)

    def supports(self, mode: str) -> bool:
        """Whether the method supports ``mode`` ('posthoc' or 'train')."""
        return mode in self.card.modes

    def require(self, mode: str) -> None:
        """Raise TrackError naming the supported tracks when ``mode`` is unsupported."""
        if not self.supports(mode):
            raise TrackError(
                f"method '{self.card.name}' does not support the '{mode}' track; it supports: {', '.join(self.card.modes)}"
            )

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        """Posthoc mode: compress a pretrained ``[V, d]`` float table."""
        self.require("posthoc")
        raise NotImplementedError

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        """Train mode: a freshly initialised trainable module (``init_table`` only for methods that distil one)."""
        self.require("train")
        raise NotImplementedError

    def custom_classifier(self, embedding: CompressedEmbedding, num_classes: int, config: Mapping[str, Any], *,
                          seed: int) -> nn.Module | None:
        """Train track hook: a full classifier ``(ids [B, L], mask [B, L] bool) -> logits [B, C]`` built around
        ``embedding`` (e.g. ADE's anchor-level SAT + GPE pipeline), or None (default) to use the task's backbone."""
        return None

    def lookup_variants(self, module: CompressedEmbedding) -> dict[str, nn.Module]:
        """Other lookup paths of the same compressed embedding, timed by the harness in the same rotation as the
        module itself and the dense table (e.g. ADE's naive two-stage lookup); none by default."""
        return {}

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """Candidate option sets for tuning at this budget on validation data (``--tune``; at most 12, the default
        first, see ``bench/cell/tuning.py``); empty (the default) when the method declares no tuning space."""
        return []

    def has_tuning_space(self) -> bool:
        """Whether the method declares a tuning space (overrides :meth:`tuning_space`)."""
        return type(self).tuning_space is not Method.tuning_space

    def resolved_options(self) -> dict[str, Any]:
        """Every option's value for this instance, the user's or the declared default (what ``run --dry-run``
        shows); only the user's options for a method that declares no ``Options`` model."""
        if self.Options is None:
            return dict(self.options)
        return self.opts.model_dump()

    def option(self, key: str, default: Any = None) -> Any:
        """The value of option ``key``: the user's, else the default declared in ``Options`` (typed by the model).

        ``default`` is only for methods that declare no ``Options`` model (the older contract): the user value is
        then cast to the type of ``default``."""
        if self.Options is not None:
            if key not in self.Options.model_fields:
                raise KeyError(f"method '{self.card.name}' declares no option '{key}' in its Options")
            return getattr(self.opts, key)
        if key not in self.options:
            return default
        value = self.options[key]
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            word = BOOL_WORDS.get(str(value).strip().lower())
            if word is None:
                raise UsageError(f"option {key}={quoted(value)} of method '{self.card.name}' must be true or false")
            return word
        if default is None:
            return value
        try:
            return type(default)(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"option {key}={value!r} of method '{self.card.name}' must be {type(default).__name__}") from exc


def generator(seed: int) -> torch.Generator:
    """A CPU torch.Generator seeded with ``seed`` (methods take all randomness from explicit generators)."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g
