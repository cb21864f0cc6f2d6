"""Budget parsing, canonical forms and resolution."""

from __future__ import annotations

import pytest

from compbench.bench.cell.budget import Budget, reference_bytes
from compbench.errors import BudgetError

MINILM_REF = 30522 * 384 * 4  # 46,881,792


@pytest.mark.parametrize(
    ("text", "canonical", "allowed"),
    [
        ("40x", "40x", 1_172_044),
        ("10x", "10x", 4_688_179),
        ("1.5x", "1.5x", 31_254_528),
        ("1x", "1x", MINILM_REF),
        ("1.5MiB", "1572864B", 1_572_864),
        ("800KB", "800000B", 800_000),
        ("1172044B", "1172044B", 1_172_044),
        (" 40x ", "40x", 1_172_044),
    ],
)
def test_parse_and_resolve(text: str, canonical: str, allowed: int) -> None:
    b = Budget.parse(text)
    assert str(b) == canonical
    assert b.resolve(MINILM_REF) == allowed
    assert Budget.parse(str(b)) == b  # canonical form round-trips


@pytest.mark.parametrize("bad", ["40", "x40", "0x", "-3x", "0.5x", "abc", "", "40X", "1.5 x", "10xx", "0B", "nanx", "infx"])
def test_rejects_malformed(bad: str) -> None:
    with pytest.raises(BudgetError) as exc:
        Budget.parse(bad)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "40x" in msg and "MiB" in msg  # the message shows the valid forms


def test_absolute_budget_up_to_the_dense_size() -> None:
    """An absolute budget may be anything from 1 byte to the dense table's size (1x); above it is refused,
    as a ratio below 1x is (``999GB`` used to be accepted while ``0.5x`` was refused)."""
    big = reference_bytes(128_100, 768)  # DeBERTa-v3-base: 393,523,200 B
    assert Budget.parse("2GiB").max_bytes == 2_147_483_648  # parsing alone knows no table
    assert Budget.parse("300MB").resolve(big) == 300_000_000
    assert Budget.parse(f"{MINILM_REF}B").resolve(MINILM_REF) == MINILM_REF  # exactly 1x
    for text in ("2GiB", "999GB", f"{MINILM_REF + 1}B"):
        with pytest.raises(BudgetError, match="is larger than the dense table") as exc:
            Budget.parse(text).resolve(MINILM_REF)
        msg = str(exc.value)
        assert "\n" not in msg and "46,881,792 B" in msg and f"{Budget.parse(text).max_bytes:,} B" in msg


def test_reference_bytes_is_fp32_table() -> None:
    assert reference_bytes(30522, 384) == MINILM_REF
    assert Budget.parse("40x").resolve(reference_bytes(128_100, 768)) == 128_100 * 768 * 4 // 40


def test_ratio_budget_monotone() -> None:
    allowed = [Budget.parse(f"{r}x").resolve(MINILM_REF) for r in (1, 2, 4, 10, 40, 100)]
    assert allowed == sorted(allowed, reverse=True)
