"""Click parameter types shared by the commands: every path and number a user types has a checked range.

An empty path (``--results ''``) would silently mean the current directory, and ``--max-fit-seconds inf``
would reach the watchdog thread as an infinite wait: both are usage errors (exit 2) here, before any work.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from compbench.config import MAX_FIT_SECONDS as MAX_SECONDS


class NonEmptyPath(click.Path):
    """A :class:`click.Path` (as :class:`pathlib.Path`) that refuses the empty string."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("path_type", Path)
        super().__init__(**kwargs)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a folder or file name", param, ctx)
        return super().convert(value, param, ctx)


class Seconds(click.ParamType):
    """A finite number of seconds in ``0..MAX_SECONDS`` (``0``: no limit, where the option says so)."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{str(value)[:40]!r} is not a number of seconds", param, ctx)
        if not math.isfinite(number) or not 0 <= number <= MAX_SECONDS:
            self.fail(f"{str(value)[:40]!r} is not in 0..{int(MAX_SECONDS)} seconds (30 days; 0: no limit)",
                      param, ctx)
        return number


PATH = NonEmptyPath()
SECONDS = Seconds()
BATCH_SIZE = click.IntRange(1, 1 << 20)

__all__ = ["BATCH_SIZE", "MAX_SECONDS", "PATH", "SECONDS", "NonEmptyPath", "Seconds"]
