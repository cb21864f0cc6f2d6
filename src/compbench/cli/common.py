"""What every ``compbench`` subcommand shares: the consoles, one-line error handling, ``-o key=value`` parsing and
quiet libraries.

Errors: a bad input prints one line on stderr (``error: ...``) and exits 2 (usage) or 1 (run failure);
``--debug`` re-raises with the traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from compbench.errors import CompbenchError, UsageError, first_line, quoted

console = Console()
err_console = Console(stderr=True)


def quiet_libraries() -> None:
    """Silence library progress bars and warnings that would drown the summary."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("mteb").setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    except (ImportError, AttributeError):  # pragma: no cover
        pass


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn CompbenchError into one line + exit code; other exceptions too unless --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(click.get_current_context().find_root().params.get("debug"))
        try:
            return fn(*args, **kwargs)
        except CompbenchError as exc:
            if debug:
                raise
            one_line = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())  # library text may wrap
            err_console.print(f"[bold red]error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]: finished records were kept", highlight=False)
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # noqa: BLE001
            if debug:
                raise
            err_console.print(f"[bold red]error:[/] {escape(first_line(exc))} (rerun with --debug for the traceback)",
                              highlight=False, soft_wrap=True)
            sys.exit(1)

    return wrapper


def parse_options(pairs: tuple[str, ...], method: str | None = None) -> dict[str, Any]:
    """``-o key=value`` pairs as a dict; a pair without ``=`` or without a name, and a repeated key, are usage
    errors. With ``method``, the values are put in their canonical form (one spelling per value, so one cell key;
    see :func:`compbench.methods.options.canonical_value`)."""
    out: dict[str, Any] = {}
    for p in pairs:
        if "=" not in p:
            raise UsageError(f"--option expects key=value, got {quoted(p)!r}")
        k, v = p.split("=", 1)
        k = k.strip()
        if not k:
            raise UsageError(f"--option {quoted(p)!r} names no option; give key=value")
        if k in out:
            raise UsageError(f"--option {quoted(k)} is given twice ({quoted(out[k])} and {quoted(v.strip())}); "
                             "give it once")
        out[k] = v.strip()
    if method is None:
        return out
    from compbench.methods import canonical_method_options  # heavy: torch

    return canonical_method_options(method, out)


