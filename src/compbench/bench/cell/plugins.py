"""Out-of-tree plugins: user modules that register methods, tasks or track hooks, imported by ``run``, ``export``,
``mteb``, the sweep and every worker process (``--import MODULE[:FUNC]``, ``--import path/to/file.py[:FUNC]``, or a
suite file's ``imports:`` list). Installed packages with a ``compbench.methods`` entry point need none of this:
the registry finds them (see docs/extending.md)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from compbench.errors import UsageError


def _split(spec: str) -> tuple[str, str]:
    """``module[:func]`` or ``path.py[:func]`` -> (target, func); a Windows drive letter is not a separator."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isidentifier() and not (len(head) == 1 and head.isalpha()):
        return head, tail
    return spec, ""


def resolve_plugin(spec: str, base: Path | None = None) -> str:
    """``spec`` with a relative ``.py`` path made absolute against ``base`` (a suite file's folder), so workers
    started elsewhere import the same file."""
    target, fn = _split(spec)
    if target.endswith(".py") and base is not None and not Path(target).is_absolute():
        target = str((base / target).resolve())
    return f"{target}:{fn}" if fn else target


def import_plugins(modules: Sequence[str]) -> None:
    """Import user modules (``module``, ``module:function`` or ``path/to/file.py[:function]``; the function is then
    called with no arguments) that register out-of-tree methods, tasks or track runners; done in the command, the
    sweep and every worker. A ``.py`` path is imported as the module named by its file (its folder goes on
    ``sys.path``, so it may import its neighbours)."""
    for spec in modules:
        target, fn = _split(spec)
        name = target
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.is_file():
                raise UsageError(f"--import {spec}: no such file {path}")
            if str(path.parent) not in sys.path:
                sys.path.insert(0, str(path.parent))
            name = path.stem
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(f"--import {spec}: cannot import {name}: {exc}") from exc
        if fn:
            target_fn = getattr(module, fn, None)
            if not callable(target_fn):
                raise UsageError(f"--import {spec}: {name} has no function '{fn}'")
            target_fn()


__all__ = ["import_plugins", "resolve_plugin"]
