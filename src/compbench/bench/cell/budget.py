"""Memory budgets.

A budget is either a **ratio** (``"40x"``: stored bytes <= reference_bytes / 40)
or an **absolute size** (``"1.5MiB"``, ``"800KB"``, ``"1172044B"``).
``reference_bytes`` is always ``V * d * 4``: the fp32 size of the dense table,
whatever dtype the checkpoint happens to use, so an fp16 checkpoint never
silently halves a budget.

Units: ``B``; decimal ``KB``/``MB``/``GB`` (10^3, 10^6, 10^9); binary
``KiB``/``MiB``/``GiB`` (2^10, 2^20, 2^30). Ratios must be >= 1 (``1x`` is the
dense reference), and an absolute size must not exceed ``reference_bytes`` (checked by
:meth:`Budget.resolve`, when the table is known). The canonical string (used in record keys and paths) is
``"40x"`` / ``"1.5x"`` for ratios and ``"<int>B"`` for absolute sizes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from compbench.errors import BudgetError

VALID_FORMS = "valid forms: a ratio like '40x', '10x', '1.5x' (>= 1), or a size like '1.5MiB', '800KB', '1172044B'"

_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
}
_RATIO_RE = re.compile(r"^(\d+(?:\.\d+)?)x$")
_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)$")


def _fmt_number(x: float) -> str:
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True)
class Budget:
    """A memory budget: exactly one of ``ratio`` or ``max_bytes`` is set."""

    ratio: float | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if (self.ratio is None) == (self.max_bytes is None):
            raise BudgetError("a budget needs exactly one of ratio or max_bytes")
        if self.ratio is not None and not (math.isfinite(self.ratio) and self.ratio >= 1):
            raise BudgetError(f"budget ratio must be >= 1, got {self.ratio}; {VALID_FORMS}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise BudgetError(f"budget size must be positive, got {self.max_bytes}; {VALID_FORMS}")

    @classmethod
    def parse(cls, text: str) -> Budget:
        """Parse ``"40x"``, ``"1.5MiB"``, ... ; anything else raises BudgetError with the valid forms."""
        if not isinstance(text, str):
            raise BudgetError(f"budget must be a string, got {type(text).__name__}; {VALID_FORMS}")
        s = text.strip()
        m = _RATIO_RE.match(s)
        if m:
            ratio = float(m.group(1))
            if not ratio >= 1:
                raise BudgetError(f"invalid budget {text!r}: a ratio must be >= 1 (1x is the dense table); {VALID_FORMS}")
            return cls(ratio=ratio)
        m = _SIZE_RE.match(s)
        if m:
            n = float(m.group(1)) * _UNITS[m.group(2)]
            if n < 1:
                raise BudgetError(f"invalid budget {text!r}: a size must be at least 1 byte; {VALID_FORMS}")
            return cls(max_bytes=int(math.floor(n)))
        raise BudgetError(f"invalid budget {text!r}; {VALID_FORMS}")

    def resolve(self, reference_bytes: int) -> int:
        """Allowed stored bytes for a table whose fp32 size is ``reference_bytes`` (floor).

        An absolute budget larger than ``reference_bytes`` is refused (BudgetError), as a ratio below 1x is:
        no compressed table may be larger than the dense one it replaces.
        """
        if self.max_bytes is not None:
            if self.max_bytes > reference_bytes:
                raise BudgetError(f"budget {self.max_bytes:,} B is larger than the dense table ({reference_bytes:,} B, "
                                  f"fp32 V x d); an absolute budget must be at most {reference_bytes}B (1x)")
            return int(self.max_bytes)
        assert self.ratio is not None
        return int(math.floor(reference_bytes / self.ratio))

    def __str__(self) -> str:
        if self.ratio is not None:
            return f"{_fmt_number(self.ratio)}x"
        return f"{self.max_bytes}B"

    @property
    def is_dense(self) -> bool:
        """True for the 1x budget (the dense reference)."""
        return self.ratio == 1.0


def reference_bytes(num_embeddings: int, embedding_dim: int) -> int:
    """The fp32 size of a dense V x d table: the denominator of every ratio budget."""
    return int(num_embeddings) * int(embedding_dim) * 4
