"""Bring your own table: read a user's embedding table from a file, validated, with one-line errors.

Formats (``--table FILE``):

- ``.npy``: a 2-D float array (``numpy.load`` with ``allow_pickle=False``; object arrays are refused);
- ``.safetensors``: one 2-D float tensor; ``--tensor NAME`` picks one when the file holds several;
- a local Hugging Face model folder (``config.json`` + weights): its input embeddings
  (``AutoModel.from_pretrained(folder).get_input_embeddings()``).

Validation (:func:`check_table`): two dimensions, a floating-point dtype, at least 2 rows and 2 columns, and
every value finite (the rows holding NaN or Inf are counted and the first is named). The table is returned as
fp32 (the budget's reference) with its facts: the file's sha256, the original dtype and shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from compbench.checksums import sha256_file
from compbench.datasets.table_check import check_table
from compbench.errors import DataError, UsageError

FORMATS = ".npy, .safetensors (with --tensor NAME) or a Hugging Face model folder"


def table_shape(path: str | Path, tensor: str | None = None) -> tuple[int, int] | None:
    """``(V, d)`` read from the file's header without loading it (None when that is not possible)."""
    p = Path(path)
    try:
        if p.suffix == ".npy":
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            return (int(arr.shape[0]), int(arr.shape[1])) if arr.ndim == 2 else None
        if p.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                names = list(f.keys())
                name = tensor or (names[0] if len(names) == 1 else None)
                if name is None or name not in names:
                    return None
                shape = f.get_slice(name).get_shape()
            return (int(shape[0]), int(shape[1])) if len(shape) == 2 else None
    except Exception:  # noqa: BLE001 - the full load says what is wrong, in one line
        return None
    return None


def load_user_table(path: str | Path, tensor: str | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The validated fp32 table and its facts (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"--table {str(path)[:200]}: no such file or folder")
    if p.is_dir():
        if tensor is not None:
            raise UsageError("--tensor applies to a .safetensors file, not to a model folder")
        if not (p / "config.json").is_file():
            raise UsageError(f"--table {p}: a folder must be a Hugging Face model folder (config.json); formats: {FORMATS}")
        try:
            from transformers import AutoModel

            model = AutoModel.from_pretrained(str(p))
        except (OSError, ValueError) as exc:
            raise DataError(f"--table {p}: cannot load the model folder: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}") from None
        raw = model.get_input_embeddings().weight.detach()
        weights = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
        sha = sha256_file(weights[0]) if len(weights) == 1 else None
        source = {"format": "hf-folder", "class": type(model).__name__}
    elif p.suffix == ".npy":
        with open(p, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            raise DataError(f"--table {p}: not a .npy file (no NumPy header); formats: {FORMATS}")
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError:
            raise DataError(f"--table {p}: not a plain numeric .npy array (it holds Python objects; compbench never "
                            "unpickles)") from None
        except (OSError, EOFError) as exc:
            raise DataError(f"--table {p}: not a .npy file ({type(exc).__name__}); formats: {FORMATS}") from None
        if arr.dtype.kind not in "fiu":
            raise DataError(f"--table {p}: the array's dtype {arr.dtype} is not numeric")
        raw = torch.from_numpy(np.ascontiguousarray(arr))
        sha, source = sha256_file(p), {"format": "npy"}
    elif p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"--table {p}: not a readable .safetensors file ({type(exc).__name__})") from None
        if tensor is None:
            two_d = [k for k, t in tensors.items() if t.ndim == 2]
            if len(two_d) != 1:
                raise UsageError(f"--table {p} holds {len(tensors)} tensors ({', '.join(sorted(tensors)[:5])}"
                                 f"{', ...' if len(tensors) > 5 else ''}); pick one with --tensor NAME")
            tensor = two_d[0]
        if tensor not in tensors:
            raise UsageError(f"--tensor {tensor[:80]!r} is not in {p} (tensors: {', '.join(sorted(tensors)[:5])})")
        raw = tensors[tensor]
        sha, source = sha256_file(p), {"format": "safetensors", "tensor": tensor}
    else:
        raise UsageError(f"--table {p}: unknown format '{p.suffix or p.name}'; formats: {FORMATS}")
    check_table(raw, f"--table {p.name}")
    info = {"name": p.stem or p.name, "path": str(p.resolve()), "sha256": sha, "revision": sha,
            "dtype": str(raw.dtype).removeprefix("torch."), "shape": [int(raw.shape[0]), int(raw.shape[1])], **source}
    return raw.float().contiguous(), info


__all__ = ["FORMATS", "check_table", "load_user_table", "table_shape"]
