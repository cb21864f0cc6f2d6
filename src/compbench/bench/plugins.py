"""Out-of-tree plugins: user modules that register methods, tasks or track hooks, imported by the sweep and
by every worker process (``--import module`` or ``module:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from compbench.errors import UsageError


def import_plugins(modules: Sequence[str]) -> None:
    """Import user modules (``--import module`` or ``module:function``, the function is then called with no
    arguments) that register out-of-tree methods, tasks or track runners; done in the sweep and in every worker."""
    for spec in modules:
        name, _, fn = spec.partition(":")
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise UsageError(f"--import {spec}: cannot import {name}: {exc}") from exc
        if fn:
            target = getattr(module, fn, None)
            if not callable(target):
                raise UsageError(f"--import {spec}: {name} has no function '{fn}'")
            target()


__all__ = ["import_plugins"]
