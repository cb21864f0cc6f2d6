"""The ``lm`` track's settings (``RunConfig.extra``): mode, healing steps, smoke windows; their validation and the
key's tag. Kept apart from the hooks (:mod:`compbench.bench.tracks.lm_track`) so the cell's identity
(:mod:`compbench.bench.cell.identity`) can read them without importing the lifecycle.
"""

from __future__ import annotations

from typing import Any

from compbench.errors import UsageError

LM_MODES = ("input", "tied")


def lm_mode(config: Any) -> str:
    """The cell's mode (``input`` unless ``--lm-mode tied``)."""
    return str((config.extra or {}).get("lm_mode") or "input")


def check_lm_extra(extra: dict[str, Any]) -> None:
    """Validate the lm track's settings (``lm_mode``, ``heal``)."""
    mode = extra.get("lm_mode", "input")
    if mode not in LM_MODES:
        raise UsageError(f"--lm-mode must be one of {', '.join(LM_MODES)}, got {str(mode)[:40]!r}")
    heal = extra.get("heal", 0)
    if not isinstance(heal, int) or isinstance(heal, bool) or not 0 <= heal <= 100_000:
        raise UsageError(f"--heal must be an integer number of steps in 0..100000, got {str(heal)[:40]!r}")
    cap = extra.get("max_windows", 0)
    if not isinstance(cap, int) or isinstance(cap, bool) or not 0 <= cap <= 10_000:
        raise UsageError(f"--max-windows must be an integer in 0..10000, got {str(cap)[:40]!r}")
    unknown = set(extra) - {"lm_mode", "heal", "max_windows"}
    if unknown:
        raise UsageError(f"unknown lm-track setting(s): {', '.join(sorted(map(str, unknown)))} "
                         "(lm_mode, heal, max_windows)")


def lm_tag(extra: dict[str, Any]) -> str:
    """The key's settings tag: ``+tied`` for the tied mode, ``+heal<N>`` for a healed cell, ``+w<N>`` for a smoke
    run on the first N windows."""
    tag = "+tied" if extra.get("lm_mode") == "tied" else ""
    if int(extra.get("max_windows") or 0) > 0:
        tag += f"+w{int(extra['max_windows'])}"
    if int(extra.get("heal") or 0) > 0:
        tag += f"+heal{int(extra['heal'])}"
    return tag


__all__ = ["LM_MODES", "check_lm_extra", "lm_mode", "lm_tag"]
