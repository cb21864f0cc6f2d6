"""Load an exported compressed embedding anywhere, and drop it into a model.

An artifact is a folder written by ``compbench export`` (:mod:`compbench.export`):

- ``embedding.safetensors``: exactly the module's ``state_dict`` (the bytes the budget counted; a tensor shared
  under two names is stored once, the other name listed in ``config.json``);
- ``config.json``: the facts (method, version, options, shape, source sha256, budget, achieved ratio, record key
  and scores) and the module's structure: for the module and each child, its class (``module:Class``), its
  plain attributes (ints, floats, strings, lists, dicts) and its tensor names;
- ``README.md``: a card generated from the same facts.

:func:`load_embedding` rebuilds the module from those two files. It needs torch and safetensors only: it imports
the decoder's class from ``compbench.methods`` (an allow-list: nothing outside ``compbench.methods`` and
``torch.nn``'s containers is ever imported), never faiss or scikit-learn (no method module imports them at the top;
a test loads every method's artifact with faiss blocked; the one exception is ``rabitq``, whose seeded rotation
is derived state that only faiss' ``RandomRotationMatrix`` reproduces, so loading it needs faiss), never unpickles (safetensors and JSON only), and never
executes anything from the folder. The rebuilt module is the *same class* with the *same tensors* as the one
the harness evaluated, so its output is bitwise equal to the harness's decode. A tampered artifact is refused
with one line: the safetensors file's sha256 or a tensor's shape differs from ``config.json``, an unknown format
or method version, a class outside the allow-list, or any other file than the three.

The module behaves like ``nn.Embedding``: ``forward(ids)`` for any integer tensor shape, ``.to(device)``,
``num_embeddings`` / ``embedding_dim``, ``state_dict`` round trip, and ``logits(h)`` (``h @ table^T``) for an
output head that shares the table (tied LMs).

:func:`apply` puts it into a ``transformers`` model (input embeddings; with ``tied=True`` the output head too)
or a ``sentence-transformers`` model (its transformer's word embeddings), checking vocabulary size and width.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compbench.checksums import sha256_file
from compbench.errors import DataError, UsageError
from compbench.methods import get_method

FORMAT = "compbench-embedding"
FORMAT_VERSION = 1
WEIGHTS = "embedding.safetensors"
CONFIG = "config.json"
CARD = "README.md"
ALLOWED_FILES = {WEIGHTS, CONFIG, CARD}
_ALLOWED_PREFIXES = ("compbench.methods.",)
_ALLOWED_TORCH = {"torch.nn.modules.container:ModuleList", "torch.nn.modules.container:ParameterList",
                  "torch.nn.modules.container:ModuleDict", "torch.nn.modules.container:ParameterDict",
                  "torch.nn.modules.container:Sequential", "torch.nn.modules.linear:Linear"}
_BASE_ATTRS = frozenset(nn.Module().__dict__)


class ArtifactError(DataError):
    """An artifact that cannot be loaded (one line; exit code 1)."""


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def describe_module(module: nn.Module) -> dict[str, Any]:
    """The structure of ``module`` for ``config.json`` (see the module docstring); raises UsageError when a
    module holds state that is neither a tensor nor a plain value (it could not be rebuilt)."""
    cls = type(module)
    if module._non_persistent_buffers_set and not callable(getattr(module, "after_load", None)):
        raise UsageError(f"cannot export {cls.__name__}: it has derived buffers "
                         f"({', '.join(sorted(module._non_persistent_buffers_set))}) and no after_load() to rebuild them")
    attrs: dict[str, Any] = {}
    for k, v in module.__dict__.items():
        if k in _BASE_ATTRS:
            continue
        if not _plain(v):
            raise UsageError(f"cannot export {cls.__name__}: attribute {k!r} is a {type(v).__name__}, neither a "
                             "tensor nor a plain value")
        attrs[k] = [list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "attrs": attrs,
            "tuples": sorted(k for k, v in module.__dict__.items() if k not in _BASE_ATTRS and isinstance(v, tuple)),
            "parameters": list(module._parameters), "buffers": list(module._buffers),
            "persistent": [b for b in module._buffers if b not in module._non_persistent_buffers_set],
            "derived": {b: {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
                        for b, t in module._buffers.items()
                        if b in module._non_persistent_buffers_set and t is not None},
            "children": {n: describe_module(c) for n, c in module._modules.items() if c is not None}}


#: modules renamed since artifacts were first written (issue 33): a file naming the old module still loads
MOVED_MODULES = {"compbench.methods.base": "compbench.methods.method_base"}


def _resolve(spec: str) -> type:
    if not isinstance(spec, str) or ":" not in spec:
        raise ArtifactError(f"artifact names an invalid class {str(spec)[:80]!r}")
    mod, _, name = spec.partition(":")
    mod = MOVED_MODULES.get(mod, mod)
    if spec not in _ALLOWED_TORCH and not mod.startswith(_ALLOWED_PREFIXES):
        raise ArtifactError(f"artifact names the class {spec[:80]!r}, outside compbench.methods: refused")
    try:
        cls = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
        raise ArtifactError(f"artifact names the class {spec[:80]!r}, which this compbench does not have") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ArtifactError(f"artifact names {spec[:80]!r}, which is not a torch module: refused")
    return cls


def _build(tree: dict[str, Any], tensors: dict[str, torch.Tensor], prefix: str = "") -> nn.Module:
    cls = _resolve(tree.get("class", ""))
    module = cls.__new__(cls)
    nn.Module.__init__(module)
    tuples = set(tree.get("tuples") or [])
    for k, v in (tree.get("attrs") or {}).items():
        object.__setattr__(module, k, tuple(tuple(x) if isinstance(x, list) else x for x in v) if k in tuples else v)
    persistent = set(tree.get("persistent") or [])
    for name in tree.get("parameters") or []:
        t = tensors.get(prefix + name)
        if t is None:
            raise ArtifactError(f"artifact lacks the tensor {prefix + name!r}")
        module.register_parameter(name, nn.Parameter(t, requires_grad=False))
    derived = tree.get("derived") or {}
    for name in tree.get("buffers") or []:
        if name in persistent:
            t = tensors.get(prefix + name)
            if t is None:
                raise ArtifactError(f"artifact lacks the tensor {prefix + name!r}")
            module.register_buffer(name, t)
        else:  # derived state (0 bytes): a placeholder that the class's after_load() recomputes
            spec = derived.get(name) or {}
            try:
                dtype = getattr(torch, str(spec.get("dtype")))
                placeholder = torch.zeros([int(x) for x in spec.get("shape", [])], dtype=dtype)
            except (AttributeError, TypeError, ValueError, RuntimeError):
                raise ArtifactError(f"artifact describes the derived buffer {prefix + name!r} badly") from None
            module.register_buffer(name, placeholder, persistent=False)
    for name, child in (tree.get("children") or {}).items():
        module.add_module(name, _build(child, tensors, f"{prefix}{name}."))
    if derived:
        after = getattr(module, "after_load", None)
        if not callable(after):
            raise ArtifactError(f"{tree.get('class')} has derived buffers but no after_load(): cannot rebuild")
        try:
            after()
        except ImportError as exc:  # rabitq's seeded rotation is faiss' RandomRotationMatrix
            raise ArtifactError(f"rebuilding {tree.get('class')}'s derived state needs {exc.name or 'a library'}, "
                                "which is not installed (pip install faiss-cpu)") from None
    return module


def read_config(path: Path | str) -> dict[str, Any]:
    """The artifact's ``config.json`` (ArtifactError on a missing folder or file, or invalid JSON)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ArtifactError(f"no artifact folder at {folder}")
    try:
        cfg = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{folder} has no {CONFIG}: not a compbench artifact") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{folder / CONFIG} cannot be read: {type(exc).__name__}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ArtifactError(f"{folder / CONFIG} is not a compbench embedding artifact")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"artifact format version {cfg.get('format_version')!r} is not supported by this compbench "
                            f"(supported: {FORMAT_VERSION}); upgrade compbench")
    return cfg


def _check_method_version(cfg: dict[str, Any]) -> None:
    name, version = cfg.get("method"), cfg.get("method_version")
    try:
        known = get_method(str(name)).card.version
    except Exception:  # noqa: BLE001 - an unknown name is one line
        raise ArtifactError(f"artifact method {str(name)[:60]!r} is not known to this compbench") from None
    if version != known:
        raise ArtifactError(f"artifact was written by {name} version {version!r}; this compbench has version {known}: "
                            "refused (its decoder may differ)")


def load_embedding(path: Path | str, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the exported module (see the module docstring); ArtifactError (one line) on a tampered artifact."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    cfg = read_config(folder)
    extra = sorted(p.name for p in folder.iterdir() if p.name not in ALLOWED_FILES)
    if extra:
        raise ArtifactError(f"artifact {folder} holds files compbench never writes ({', '.join(extra[:3])}): refused")
    _check_method_version(cfg)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{folder} has no {WEIGHTS}")
    digest = sha256_file(weights)
    if digest != cfg.get("weights_sha256"):
        raise ArtifactError(f"{weights} has sha256 {digest[:16]}..., config.json says "
                            f"{str(cfg.get('weights_sha256'))[:16]}...: the weights were changed; refused")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights} cannot be read: {type(exc).__name__}") from None
    for alias, target in (cfg.get("aliases") or {}).items():
        if target not in tensors:
            raise ArtifactError(f"artifact alias {alias!r} points at a missing tensor")
        tensors[alias] = tensors[target]
    shapes = cfg.get("tensors") or {}
    if set(shapes) != set(tensors):
        raise ArtifactError("the tensors in embedding.safetensors differ from those config.json lists: refused")
    for name, spec in shapes.items():
        t = tensors[name]
        if list(t.shape) != list(spec.get("shape", [])) or str(t.dtype).removeprefix("torch.") != spec.get("dtype"):
            raise ArtifactError(f"tensor {name!r} is {str(t.dtype).removeprefix('torch.')} {list(t.shape)}, "
                                f"config.json says {spec.get('dtype')} {spec.get('shape')}: refused")
    module = _build(cfg.get("module") or {}, tensors)
    shape = cfg.get("shape") or [None, None]
    if [getattr(module, "num_embeddings", None), getattr(module, "embedding_dim", None)] != list(shape):
        raise ArtifactError(f"the rebuilt module's shape differs from config.json's {shape}: refused")
    return module.eval().to(device)


# -- apply -----------------------------------------------------------------------------------------------------
class EmbeddingAdapter(nn.Module):
    """An input-embedding module for a host model: the compressed module's rows, times the host's own scale
    (Gemma multiplies looked-up rows by sqrt(d) inside its embedding module)."""

    def __init__(self, embedding: nn.Module, scale: float = 1.0):
        super().__init__()
        self.embedding = embedding
        self.scale = float(scale)
        self.num_embeddings = int(embedding.num_embeddings)  # type: ignore[arg-type]
        self.embedding_dim = int(embedding.embedding_dim)  # type: ignore[arg-type]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.embedding(ids)
        return rows * self.scale if self.scale != 1.0 else rows


class TiedHead(nn.Module):
    """An output head that scores hidden states against the compressed table: ``h @ table^T``."""

    def __init__(self, embedding: nn.Module):
        super().__init__()
        self.embedding = embedding

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.embedding.logits(h)  # type: ignore[operator]


def _check_shape(what: str, expected: tuple[int, int], module: nn.Module) -> None:
    got = (int(module.num_embeddings), int(module.embedding_dim))  # type: ignore[arg-type]
    if got != expected:
        raise UsageError(f"the artifact is {got[0]:,} x {got[1]} but {what} is {expected[0]:,} x {expected[1]}: "
                         "vocabulary size and width must match")


def apply(model: Any, artifact: Path | str | nn.Module, *, tied: bool = False) -> Any:
    """Put the compressed embedding into ``model`` (in place; also returned).

    - a ``transformers`` model: its input embeddings (``set_input_embeddings``; the host's embedding scale kept);
      with ``tied=True`` also its output head (``h @ table^T``) — the only way the compressed table saves a tied
      model's memory;
    - a ``sentence-transformers`` model: the word embeddings of its transformer module.
    The vocabulary size and width are checked first (UsageError, one line).
    """
    module = artifact if isinstance(artifact, nn.Module) else load_embedding(artifact)
    host = model
    first = None
    if hasattr(model, "_first_module"):  # sentence-transformers
        first = model._first_module()
        host = getattr(first, "auto_model", None)
        if host is None:
            raise UsageError("this sentence-transformers model's first module has no transformer (auto_model)")
        if tied:
            raise UsageError("tied=True applies to causal LMs with an output head, not to sentence-transformers")
    if not hasattr(host, "get_input_embeddings"):
        raise UsageError(f"apply() takes a transformers or sentence-transformers model, got {type(model).__name__}")
    old = host.get_input_embeddings()
    _check_shape("the model's token table", tuple(old.weight.shape), module)  # type: ignore[arg-type]
    scale = getattr(old, "embed_scale", 1.0)
    scale = float(scale.item() if hasattr(scale, "item") else scale)
    device = old.weight.device
    module = module.to(device)
    host.set_input_embeddings(EmbeddingAdapter(module, scale))
    if tied:
        if host.get_output_embeddings() is None:
            raise UsageError("tied=True needs a model with an output head (a causal LM)")
        host.set_output_embeddings(TiedHead(module))
        host.config.tie_word_embeddings = False  # never re-tie the head to the (replaced) input table
    return model


__all__ = ["ArtifactError", "EmbeddingAdapter", "TiedHead", "apply", "describe_module", "load_embedding",
           "read_config"]
