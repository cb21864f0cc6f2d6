"""The memory check before a post-hoc cell runs (issue 23, memory discipline).

A method estimates its fit's peak resident memory on a ``V x d`` table (``Method.peak_memory_bytes``, the table
included; 3x the table's fp32 bytes for methods that stream, more where a method says it cannot). Before a
cell loads anything, the harness compares that estimate with the memory this machine has available and, when it
does not fit, refuses with one line: ``compbench run`` exits 1 and a sweep records the cell as ``skipped``
(``provenance.sweep.skip = "memory"``), to be run again by a later sweep on a machine where it fits.

Available memory is ``MemAvailable`` from ``/proc/meminfo``, lowered to the cgroup (v2 or v1) limit minus its
usage when one is set. ``COMPBENCH_MEMORY_BYTES`` overrides it (an integer, or with a K/M/G/T suffix), for a
machine shared with other jobs, or to turn the check off (``COMPBENCH_MEMORY_BYTES=inf``). Elsewhere (no
``/proc``) the check is skipped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compbench.bench.cell.context import TRACK_MODE
from compbench.errors import MemoryRefusal, UsageError

ENV = "COMPBENCH_MEMORY_BYTES"
_SUFFIX = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> float:
    """``"24G"`` / ``"1500000"`` / ``"inf"`` -> bytes (float, ``inf`` allowed)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t in ("INF", "INFINITY", "OFF"):
        return math.inf
    mult = _SUFFIX.get(t[-1:], 1) if t else 1
    num = t[:-1] if t[-1:] in _SUFFIX else t
    try:
        value = float(num) * mult
    except ValueError:
        raise UsageError(f"{ENV}={text!r} is not a byte count (e.g. 24G, 1500000000 or inf)") from None
    if not value > 0:
        raise UsageError(f"{ENV}={text!r} must be positive")
    return value


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_headroom() -> int | None:
    """The cgroup's limit minus its usage, when a limit is set (v2, else v1)."""
    for limit, usage in ((Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
                         (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
                          Path("/sys/fs/cgroup/memory/memory.usage_in_bytes"))):
        lim, used = _read_int(limit), _read_int(usage)
        if lim is not None and used is not None and lim < (1 << 60):
            return max(0, lim - used)
    return None


def available_bytes(environ: Mapping[str, str] | None = None) -> float | None:
    """Bytes this process can still use (see the module docstring); None when unknown."""
    env = os.environ if environ is None else environ
    if env.get(ENV):
        return parse_bytes(env[ENV])
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    avail = next((int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:")), None)
    if avail is None:
        return None
    cg = _cgroup_headroom()
    return float(min(avail, cg) if cg is not None else avail)


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def memory_estimate(method: Any, num_embeddings: int, embedding_dim: int,
                    config: Mapping[str, Any]) -> dict[str, Any]:
    """The method's peak estimate and the memory available, as recorded in ``measurements.memory_check``."""
    need = int(method.peak_memory_bytes(int(num_embeddings), int(embedding_dim), config))
    avail = available_bytes()
    return {"estimate_bytes": need, "available_bytes": None if avail is None or math.isinf(avail) else int(avail),
            "table_bytes": int(num_embeddings) * int(embedding_dim) * 4, "source": ENV if os.environ.get(ENV)
            else "/proc/meminfo"}


def check_memory(method: Any, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`memory_estimate`, raising :class:`MemoryRefusal` (one line) when the estimate exceeds what is
    available."""
    facts = memory_estimate(method, num_embeddings, embedding_dim, config)
    avail = facts["available_bytes"]
    if avail is not None and facts["estimate_bytes"] > avail:
        name = method.card.name
        raise MemoryRefusal(
            f"method '{name}' needs about {_gib(facts['estimate_bytes'])} at peak on this {num_embeddings:,} x "
            f"{embedding_dim:,} table ({_gib(facts['table_bytes'])} in fp32) and this machine has "
            f"{_gib(avail)} available; refused before running (set {ENV} to override the check)",
            facts["estimate_bytes"], avail)
    return facts


def check_cell_memory(track: str, method: Any, num_embeddings: int, embedding_dim: int,
                      config: Mapping[str, Any]) -> dict[str, Any] | None:
    """:func:`check_memory` for a cell of ``track``: only tracks that compress a table (posthoc mode) are checked;
    None for the others (the train track builds its embedding, it does not compress one)."""
    if TRACK_MODE.get(track) != "posthoc":
        return None
    return check_memory(method, num_embeddings, embedding_dim, config)


__all__ = ["ENV", "available_bytes", "check_cell_memory", "check_memory", "memory_estimate", "parse_bytes"]
