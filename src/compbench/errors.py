"""Exception types that the CLI turns into one-line messages and exit codes.

Usage errors (bad names, malformed budgets, unattainable budgets, bad flags) exit
with code 2; run failures (missing data, a crashing cell) exit with code 1.
"""

from __future__ import annotations


class CompbenchError(Exception):
    """Base class: a failure that has a clear one-line explanation (exit code 1)."""

    exit_code = 1


class UsageError(CompbenchError):
    """The user asked for something malformed or impossible (exit code 2)."""

    exit_code = 2


class UnknownNameError(UsageError, KeyError):
    """An unknown registry name; the message carries a did-you-mean suggestion."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class BudgetError(UsageError):
    """A malformed budget string."""


class UnattainableBudgetError(UsageError):
    """A method cannot meet the requested budget; names the smallest it can meet."""

    def __init__(self, method: str, allowed_bytes: int, min_bytes: int, reference_bytes: int | None = None):
        self.method = method
        self.allowed_bytes = int(allowed_bytes)
        self.min_bytes = int(min_bytes)
        self.reference_bytes = reference_bytes
        msg = (
            f"method '{method}' cannot meet this budget: it allows {allowed_bytes:,} B but the smallest "
            f"configuration stores {min_bytes:,} B"
        )
        if reference_bytes:
            ratio = reference_bytes / min_bytes
            msg += f"; the smallest budget it can meet is {format_ratio_floor(ratio)} (or {min_bytes}B)"
        super().__init__(msg)


class TrackError(UsageError):
    """A method does not support the requested track/mode."""


class DataError(CompbenchError):
    """Missing, empty or malformed data files."""


class RecordError(CompbenchError):
    """A malformed or unreadable result record."""


class NewerRecordError(RecordError):
    """A record written by a newer compbench: it is reported and kept, never replaced."""


def quoted(value: object) -> str:
    """``value`` as text fit for a one-line message: as is when printable, else its ``repr``.

    Column names, record field names and cell values come from users' files; a newline or control
    character in one must not break (or forge) the one-line error the CLI prints.
    """
    text = str(value)
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def first_line(exc: BaseException) -> str:
    """``"TypeName: first non-blank line of the message"`` (just the type name when the message is blank).

    Library exceptions (pandas, pyarrow, PyYAML, sentence-transformers) often carry multi-line messages;
    error messages and failed records keep only their first line.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def format_ratio_floor(ratio: float) -> str:
    """Format a compression ratio rounded *down* to 2 decimals, as a budget string (e.g. '29.49x')."""
    import math

    r = math.floor(ratio * 100) / 100
    text = f"{r:.2f}".rstrip("0").rstrip(".")
    return f"{text}x"


class MemoryRefusal(CompbenchError):
    """A cell would need more memory than this machine has available: refused before it starts (exit code 1)."""

    def __init__(self, message: str, needed_bytes: int, available_bytes: int):
        self.needed_bytes = int(needed_bytes)
        self.available_bytes = int(available_bytes)
        super().__init__(message)
