"""Registry conformance: every registered method, on a tiny table, in each mode it supports.

Parametrized over the registry, so a newly registered method is covered automatically:
shape, budget respected (harness-computed bytes), determinism under a seed, materialize()
agrees with forward(), and an impossible budget names the smallest one it can meet.
"""

from __future__ import annotations

import pytest
import torch

from compbench.bench.accounting import stored_bytes
from compbench.bench.budget import Budget, reference_bytes
from compbench.errors import TrackError, UnattainableBudgetError
from compbench.methods import get_method, list_methods

V, D = 300, 48
RATIOS = ("10x", "4x", "2x", "1x")


def _first_attainable(method, v: int, d: int):
    for r in RATIOS:
        allowed = Budget.parse(r).resolve(reference_bytes(v, d))
        try:
            return allowed, method.configure(v, d, allowed)
        except UnattainableBudgetError:
            continue
    pytest.fail(f"{method.card.name} cannot meet even 1x on a {v}x{d} table")


def _cases():
    out = []
    for name in list_methods():
        card = get_method(name).card
        for mode in card.modes:
            out.append(pytest.param(name, mode, id=f"{name}-{mode}"))
    return out


def _make(name: str, mode: str, table: torch.Tensor, seed: int):
    m = get_method(name)
    allowed, cfg = _first_attainable(m, V, D)
    torch.manual_seed(seed)
    if mode == "posthoc":
        mod = m.compress(table, cfg, seed=seed)
    else:
        init = table if m.card.train_init == "pretrained" else None
        mod = m.build(V, D, cfg, seed=seed, init_table=init)
    return m, allowed, cfg, mod


@pytest.mark.parametrize(("name", "mode"), _cases())
def test_method_conformance(name: str, mode: str, tiny_table: torch.Tensor) -> None:
    m, allowed, cfg, mod = _make(name, mode, tiny_table, seed=0)
    assert isinstance(cfg, dict)
    # budget respected, as the harness computes it
    nbytes = stored_bytes(mod)
    assert 0 <= nbytes <= allowed, f"{name}: {nbytes} > {allowed}"
    # shape contract
    ids = torch.tensor([[0, 1, 2], [V - 1, 5, 7]])
    with torch.no_grad():
        out = mod.eval()(ids)
    assert out.shape == (2, 3, D)
    assert torch.isfinite(out).all()
    # materialize agrees with forward
    with torch.no_grad():
        full = mod.materialize()
    assert full.shape == (V, D)
    torch.testing.assert_close(full[ids].float(), out.float(), rtol=1e-4, atol=1e-5)
    # determinism under a seed
    _, _, cfg2, mod2 = _make(name, mode, tiny_table, seed=0)
    assert cfg2 == cfg
    with torch.no_grad():
        torch.testing.assert_close(mod2.eval().materialize(), full, rtol=0, atol=0)
    if mode == "train":
        assert any(p.requires_grad for p in mod.parameters()), f"{name}: nothing trainable in train mode"


@pytest.mark.parametrize("name", list_methods())
def test_impossible_budget_names_smallest(name: str) -> None:
    m = get_method(name)
    with pytest.raises(UnattainableBudgetError) as exc:
        m.configure(V, D, 1)
    assert exc.value.min_bytes > 1
    assert "smallest budget it can meet" in str(exc.value)
    # and the named smallest budget is attainable
    m.configure(V, D, exc.value.min_bytes)


@pytest.mark.parametrize("name", list_methods())
def test_unsupported_mode_is_a_clear_error(name: str) -> None:
    m = get_method(name)
    for mode in ("posthoc", "train"):
        if mode not in m.card.modes:
            with pytest.raises(TrackError, match="supports"):
                m.require(mode)
