"""Property-based tests (hypothesis): budget parsing, byte accounting, record round trip."""

from __future__ import annotations

import json
import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compbench.bench.accounting import stored_bytes
from compbench.bench.budget import Budget
from compbench.bench.record import to_json
from compbench.bench.store import ResultStore
from compbench.errors import BudgetError, UnattainableBudgetError
from compbench.methods import get_method

REF = 30522 * 384 * 4


@given(st.text(max_size=12))
def test_parse_never_crashes_unexpectedly(text: str) -> None:
    try:
        b = Budget.parse(text)
    except BudgetError as exc:
        assert "\n" not in str(exc) and "valid forms" in str(exc)
        return
    assert Budget.parse(str(b)) == b
    assert 1 <= b.resolve(REF) or b.max_bytes is not None


@given(st.floats(min_value=1, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_ratio_round_trip_and_resolve(r: float) -> None:
    text = f"{r:.3f}".rstrip("0").rstrip(".") + "x"
    b = Budget.parse(text)
    assert Budget.parse(str(b)) == b
    assert b.resolve(REF) == math.floor(REF / b.ratio)


@given(st.integers(min_value=1, max_value=10**12), st.sampled_from(["B", "KB", "MB", "KiB", "MiB"]))
def test_size_forms(n: int, unit: str) -> None:
    b = Budget.parse(f"{n}{unit}")
    assert b.max_bytes >= n
    assert str(b) == f"{b.max_bytes}B"


_TABLE = torch.randn(120, 32, generator=torch.Generator().manual_seed(0))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["svd", "quant-int2", "quant-int4", "quant-binary", "quant-fp8"]),
       st.integers(min_value=1, max_value=120 * 32 * 4))
def test_bytes_never_exceed_budget_and_monotone(name: str, budget: int) -> None:
    m = get_method(name)
    try:
        cfg = m.configure(120, 32, budget)
    except UnattainableBudgetError as exc:
        assert exc.min_bytes > budget
        return
    nbytes = stored_bytes(m.compress(_TABLE, cfg, seed=0))
    assert nbytes <= budget
    # a larger budget never yields a smaller (worse-fitting) configuration
    cfg2 = m.configure(120, 32, budget * 2)
    assert stored_bytes(m.compress(_TABLE, cfg2, seed=0)) >= nbytes


@settings(max_examples=30, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.text(max_size=20),
       st.dictionaries(st.text(min_size=1, max_size=8), st.integers(-1000, 1000), max_size=3))
def test_record_round_trip(score: float, text: str, config: dict) -> None:
    import tempfile

    from tests_support import make_record  # noqa: PLC0415

    rec = make_record(main=score)
    rec.method.config = config
    rec.error = text or None
    with tempfile.TemporaryDirectory() as d:
        store = ResultStore(d)
        store.write(rec)
        back = store.read(rec.key)
    assert to_json(back) == to_json(rec)
    assert json.loads(to_json(back))["method"]["config"] == config
