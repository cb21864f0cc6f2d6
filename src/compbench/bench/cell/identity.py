"""Cell identity and cell key: one function derives both from a resolved configuration.

Two cells share a ranking only when their **identity** is the same: everything that changes the
reference or the comparison.

======== ====================================================================================
field    meaning
======== ====================================================================================
model    the encoder / tokenizer (posthoc, store, train) or the table (words): its name
width    the embedding width ``d`` (None when it is only known after loading a ``--model``)
backbone what turns embeddings into predictions: ``frozen-encoder`` (posthoc), ``none`` (words,
         store), or the train backbone (``transformer(L1,H4,ffn512,learned,mean,drop0.1)``, ``bag(mean)``)
init     how the embedding starts: ``pretrained`` (posthoc, words, store; ADE in train) or ``random``
head     who classifies: ``shared`` (the task's protocol or backbone) or ``own:<name>`` (a method's own
         classifier, e.g. ADE's SAT)
recipe   the training recipe: ``task`` (the task's own) or the overrides (``lr=0.003``); ``-`` outside train
======== ====================================================================================

The **key** (also the record's path without ``.json``) is
``<track>/<task><tag>/<method>[+<options hash>]/<budget>/<device>-<threads>t-s<seed(s)>``.
``<tag>`` names every identity or settings field that differs from the track's defaults
(``+d384`` for a 384-wide train cell, ``+bag``, ``+lr=0.003``, ``+model=all-mpnet-base-v2``), so two
cells of different identity never share a key, and a smoke run never overwrites a default cell.
``<seed(s)>`` is the seed, or every seed of a train cell that aggregates several (``s0-1-2``).

The **comparison frame** of a cell is its identity without ``init`` and ``head``: the leaderboard
puts one frame on one page, ranks the cells whose identity equals the dense reference's, and shows
the others (a method's own classifier, a pretrained initialisation in the train track) as *systems*
next to the dense model of that frame, unranked, with their head's size and cost.

Records written before identities existed are given theirs on load (:func:`identity_of_record`,
used by the schema migration in :mod:`compbench.bench.results.record`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compbench.bench.tracks.lm_settings import check_lm_extra, lm_mode, lm_tag
from compbench.errors import CompbenchError, UsageError
from compbench.models.model_registry import default_model_dir
from compbench.tasks.train import TrainRecipe

#: the bundled encoder (and tokenizer); a cell on it carries no model tag in its key
DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: the words track's only table
WORDS_MODEL = "glove-6B-50d"
_SLUG = re.compile(r"[^A-Za-z0-9_.\-]+")


@dataclass(frozen=True)
class CellIdentity:
    """What must be equal for two cells to share a ranking (see the module docstring)."""

    track: str
    model: str
    width: int | None
    backbone: str
    init: str
    head: str
    recipe: str

    def __post_init__(self) -> None:
        # a recipe is a set of overrides: one order, whatever order a record (or an older compbench) wrote them in
        if isinstance(self.recipe, str) and "+" in self.recipe:
            object.__setattr__(self, "recipe", "+".join(sorted(self.recipe.split("+"))))

    def to_dict(self) -> dict[str, Any]:
        """JSON view (stored in every record as ``identity``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CellIdentity:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @property
    def frame(self) -> tuple[Any, ...]:
        """The comparison frame: the identity without ``init`` and ``head``."""
        return (self.track, self.model, self.width, self.backbone, self.recipe)

    def is_system(self, reference: CellIdentity) -> bool:
        """Whether this cell differs from the dense reference of its frame (own head or other init)."""
        return (self.init, self.head) != (reference.init, reference.head)

    def describe(self) -> str:
        """One line for pages and dry runs: ``all-MiniLM-L6-v2, d=384, transformer(...), random init, shared head``."""
        parts = [self.model, f"d={self.width}" if self.width else "d=?", self.backbone, f"{self.init} init",
                 "shared head" if self.head == "shared" else f"own head ({self.head.split(':', 1)[-1]})"]
        if self.recipe not in ("-", "task"):
            parts.append(f"recipe {self.recipe}")
        return ", ".join(parts)


def model_slug(model: str | None) -> str:
    """A key-safe short name of an encoder given as a path or hub id (``all-mpnet-base-v2``)."""
    if model is None:
        return DEFAULT_MODEL
    name = Path(str(model).rstrip("/")).name or str(model)
    return _SLUG.sub("-", name).strip("-") or "model"


def is_default_model(model: str | None) -> bool:
    """Whether ``--model`` names the bundled encoder."""
    return model in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}")


def backbone_text(backbone: Any) -> str:
    """``transformer(L1,H4,ffn512,learned,mean,drop0.1)`` / ``bag(mean,drop0.1)`` for a BackboneConfig."""
    b = backbone
    if b.kind == "bag":
        return f"bag({b.pooling},drop{b.dropout:g})"
    ffn = b.ffn or 4 * b.d_model
    return f"{b.kind}(L{b.layers},H{b.heads},ffn{ffn},{b.positions},{b.pooling},drop{b.dropout:g})"


def seeds_segment(seed: int, seeds: tuple[int, ...] | None) -> str:
    """``s0`` or ``s0-1-2``."""
    return "s" + "-".join(str(s) for s in (seeds or (seed,)))


def resolve_identity(config: Any, method: Any, task: Any, *, budget: str, threads: int,
                     device_kind: str) -> tuple[CellIdentity, str]:
    """The identity and key of a cell from its resolved configuration (``config.task`` set).

    ``method`` and ``task`` are the registry objects; the train track resolves its settings
    (:func:`compbench.bench.tracks.train_settings.resolve_settings`), which validates them (UsageError).
    """
    track, model = config.track, config.model
    tag = "" if is_default_model(model) or track == "words" else f"+model={model_slug(model)}"
    seeds: tuple[int, ...] | None = None
    if track == "train":
        from compbench.bench.tracks.train_settings import cell_seeds, resolve_settings  # heavy: torch

        settings = resolve_settings(task, method, config.extra, model)
        card = method.card
        identity = CellIdentity(track=track, model=model_slug(model), width=settings.backbone.d_model,
                                backbone=backbone_text(settings.backbone), init=card.train_init,
                                head=card.train_head, recipe=settings.recipe_tag or "task")
        tag = settings.tag + tag
        seeds = cell_seeds(config)
    elif track == "words":
        identity = CellIdentity(track=track, model=WORDS_MODEL, width=50, backbone="none", init="pretrained",
                                head="shared", recipe="-")
    elif track == "lm":  # the model, its table's width and the mode; a healed cell is its own recipe (frame)
        from compbench.models.causal_lm import DEFAULT_LM, lm_spec, table_shape  # heavy: torch

        extra = dict(config.extra or {})
        check_lm_extra(extra)
        spec = lm_spec(model)
        name = spec.name if spec is not None else model_slug(model)
        shape = table_shape(model)
        heal = int(extra.get("heal") or 0)
        identity = CellIdentity(track=track, model=name, width=shape[1] if shape else None,
                                backbone=f"causal-lm({lm_mode(config)})", init="pretrained", head="shared",
                                recipe=",".join(([f"heal={heal}"] if heal else []) + (
                                    [f"windows={extra['max_windows']}"] if extra.get("max_windows") else [])) or "-")
        tag = lm_tag(extra) + ("" if name == DEFAULT_LM else f"+model={name}")
    elif track == "table":  # the user's table: its file names the identity
        from compbench.datasets.user_table import table_shape as user_shape  # heavy: torch

        extra = dict(config.extra or {})
        unknown = set(extra) - {"tensor"}
        if unknown:
            raise UsageError(f"unknown table-track setting(s): {', '.join(sorted(map(str, unknown)))} (tensor)")
        shape = user_shape(str(model), extra.get("tensor")) if model else None
        stem = Path(str(model).rstrip("/")).stem if model else "table"
        name = stem + (f"-{extra['tensor']}" if extra.get("tensor") else "")
        identity = CellIdentity(track=track, model=_SLUG.sub("-", name).strip("-"), width=shape[1] if shape else None,
                                backbone="none", init="pretrained", head="shared", recipe="-")
        tag = f"+table={identity.model}"
    elif track == "scale":  # the task is the table: its name and width are the identity
        tag = ""
        identity = CellIdentity(track=track, model=task.card.name, width=int(task.shape[1]), backbone="none",
                                init="pretrained", head="shared", recipe="-")
    else:
        width = _bundled_width() if is_default_model(model) else None
        identity = CellIdentity(track=track, model=model_slug(model), width=width,
                                backbone="frozen-encoder" if track == "posthoc" else "none", init="pretrained",
                                head="shared", recipe="-")
    tuned = "+tuned" if getattr(config, "tune", False) else ""
    key = (f"{track}/{task.card.name}{tag}/{method.card.name}{options_suffix(dict(config.options))}{tuned}/"
           f"{budget}/{device_kind}-{threads}t-{seeds_segment(config.seed, seeds)}")
    return identity, key


def options_suffix(options: dict[str, Any]) -> str:
    """``""`` without options, else ``"+<8 hex>"``: a stable hash of the sorted options."""
    if not options:
        return ""
    blob = json.dumps(options, sort_keys=True, default=str).encode()
    return "+" + hashlib.sha256(blob).hexdigest()[:8]


def cell_key(track: str, task: str, method: str, budget: str, device_kind: str, threads: int, seed: int,
             options: dict[str, Any] | None = None) -> str:
    """The plain key ``track/task/method[+opts]/budget/<device>-<threads>t-s<seed>`` of a cell whose settings do
    not resolve (a ``failed`` or ``skipped`` record); every resolvable cell's key comes from
    :func:`resolve_identity`."""
    return f"{track}/{task}/{method}{options_suffix(options or {})}/{budget}/{device_kind}-{threads}t-s{seed}"


@functools.lru_cache(maxsize=1)
def bundled_table_shape() -> tuple[int, int] | None:
    """``(V, d)`` of the bundled encoder's token table, from its config.json (None when unreadable)."""
    try:

        cfg = json.loads((default_model_dir() / "config.json").read_text(encoding="utf-8"))
        return int(cfg["vocab_size"]), int(cfg["hidden_size"])
    except (CompbenchError, OSError, KeyError, TypeError, ValueError):
        return None


def _bundled_width() -> int | None:
    shape = bundled_table_shape()
    return shape[1] if shape else None


def identity_of_record(doc: dict[str, Any]) -> dict[str, Any]:
    """The identity of a record document written before identities were recorded (schema 1).

    Derived from what the record holds: the model section, the budget's reference bytes
    (``V x d x 4``, so ``d``), the train backbone and initialisation, and the key's settings tag.
    """
    track = doc.get("track")
    model = doc.get("model") or {}
    budget = doc.get("budget") or {}
    if track == "train":
        tok = model.get("tokenizer") or {}
        vocab = int(tok.get("vocab_size") or 0)
        ref = int(budget.get("reference_bytes") or 0)
        width: int | None = ref // (4 * vocab) if vocab and ref else None
        bb = dict(model.get("backbone") or {})
        custom = bb.get("kind") == "custom"
        if custom:
            backbone = "custom"
        else:
            from compbench.models.classifier import BackboneConfig  # heavy: torch

            fields = {k: v for k, v in bb.items() if k in BackboneConfig.__dataclass_fields__}
            try:
                backbone = backbone_text(BackboneConfig(**fields))
            except Exception:  # noqa: BLE001 - an unreadable backbone keeps a neutral label
                backbone = str(bb.get("kind") or "?")
        overrides = dict((doc.get("measurements") or {}).get("overrides") or {})
        recipe = _recipe_tag(overrides)
        head = "own:" + ("SAT" if str(bb.get("class", "")).startswith("ADE") else str(bb.get("class") or "custom")) \
            if custom else "shared"
        ident = CellIdentity(track="train", model=model_slug(tok.get("name")), width=width, backbone=backbone,
                             init=str(model.get("init") or "random"), head=head, recipe=recipe or "task")
        if custom:  # the task's backbone is not used; take the default one of that width for the frame
            from compbench.models.classifier import BackboneConfig  # heavy: torch

            max_len = ((doc.get("measurements") or {}).get("recipe") or {}).get("max_len", 128)
            ident = CellIdentity(**{**ident.to_dict(),
                                    "backbone": backbone_text(BackboneConfig(d_model=width or 128, max_len=max_len))})
        return ident.to_dict()
    if track == "words":
        return CellIdentity(track="words", model=WORDS_MODEL, width=50, backbone="none", init="pretrained",
                            head="shared", recipe="-").to_dict()
    run_config = (doc.get("provenance") or {}).get("run_config") or {}
    name = model.get("name") or (run_config.get("model") if isinstance(run_config, dict) else None)
    width = model.get("dim") or model.get("hidden_size")
    if width is None and track == "posthoc":
        ref = int(budget.get("reference_bytes") or 0)
        n_rows = model.get("vocab_size")
        width = ref // (4 * int(n_rows)) if n_rows and ref else None
    if width is None and track in ("posthoc", "store") and is_default_model(name):
        width = _bundled_width()
    return CellIdentity(track=str(track), model=model_slug(name), width=int(width) if width else None,
                        backbone="frozen-encoder" if track == "posthoc" else "none", init="pretrained",
                        head="shared", recipe="-").to_dict()


def _recipe_tag(overrides: dict[str, Any]) -> str:
    from compbench.bench.tracks.train_settings import TrainSettings  # heavy: torch
    from compbench.models.classifier import BackboneConfig  # heavy: torch

    recipe = TrainRecipe(max_len=128, batch_size=1, epochs=1, max_steps=0, eval_every=1, patience=1)
    return TrainSettings(recipe=recipe, backbone=BackboneConfig(), overrides=dict(overrides)).recipe_tag


__all__ = ["DEFAULT_MODEL", "CellIdentity", "backbone_text", "bundled_table_shape", "cell_key", "identity_of_record",
           "is_default_model", "model_slug", "options_suffix", "resolve_identity", "seeds_segment"]
