"""A generic string-keyed registry.

Entries are registered with a decorator at their definition (timm style) or as
lazy ``"module:attr"`` strings that are imported on first use (lm-eval style), so
heavy dependencies are only imported when a method is actually used. Duplicate
names raise; unknown names raise :class:`~compbench.errors.UnknownNameError`
with a did-you-mean suggestion (difflib, as mteb does).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from compbench.errors import UnknownNameError, UsageError

T = TypeVar("T")


class Registry(Generic[T]):
    """Map kebab-case names to objects (classes, factories), eagerly or lazily."""

    def __init__(self, kind: str):
        self.kind = kind
        self._objects: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    # -- registration -------------------------------------------------
    def _check_new(self, name: str) -> None:
        if name in self._objects or name in self._lazy:
            raise ValueError(f"duplicate {self.kind} name '{name}'")

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (duplicate names raise ValueError)."""

        def deco(obj: T) -> T:
            if name in self._lazy:
                # the lazy entry pointing at this very definition is being imported: resolve it
                del self._lazy[name]
            self._check_new(name)
            self._objects[name] = obj
            return obj

        return deco

    def add_lazy(self, name: str, target: str) -> None:
        """Register ``name`` as a lazy ``"package.module:attr"`` import target."""
        if ":" not in target:
            raise ValueError(f"lazy target must look like 'module:attr', got {target!r}")
        self._check_new(name)
        self._lazy[name] = target

    # -- lookup ---------------------------------------------------------
    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(set(self._objects) | set(self._lazy))

    def __contains__(self, name: object) -> bool:
        return name in self._objects or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def suggest(self, name: str) -> str | None:
        """The closest registered name to ``name``, if any is close enough."""
        close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
        return close[0] if close else None

    def get(self, name: str) -> T:
        """Return the object for ``name``; unknown names raise UnknownNameError with a suggestion."""
        if name in self._objects:
            return self._objects[name]
        if name in self._lazy:
            module_name, attr = self._lazy[name].split(":", 1)
            try:
                module = importlib.import_module(module_name)
                obj = getattr(module, attr)
            except (ImportError, AttributeError) as exc:  # e.g. a broken entry point of an installed plugin
                raise UsageError(f"{self.kind} '{name}' is registered as {self._lazy[name]}, which cannot be loaded: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
            # importing the module may have registered it via the decorator
            self._lazy.pop(name, None)
            self._objects.setdefault(name, obj)
            return self._objects[name]
        hint = self.suggest(name)
        msg = f"unknown {self.kind} '{name}'"
        msg += f"; did you mean '{hint}'?" if hint else ""
        msg += f" (known: {', '.join(self.names())})"
        raise UnknownNameError(msg)
