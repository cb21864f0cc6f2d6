"""Registry conformance: every registered method, on a tiny table, in each mode it supports.

Parametrized over the registry, so a newly registered method is covered automatically:
shape, budget respected (harness-computed bytes), determinism under a seed, materialize()
agrees with forward(), and an impossible budget names the smallest one it can meet.
The checks live in :mod:`compbench.testing` (``check_method`` runs them on any method, also outside the tree).
Also checks that "derivable state costs 0 bytes" holds: a module rebuilt without the data and loaded
strictly from the original's state_dict is bit-identical, and no module keeps tensors, arrays or index
objects outside its state_dict (see the section at the end).
"""

from __future__ import annotations

import pytest
import torch

from compbench import testing as T
from compbench.bench.cell.accounting import stored_bytes
from compbench.errors import TrackError, UnattainableBudgetError
from compbench.methods import get_method, list_methods

V, D = T.V, T.D


def _cases():
    out = []
    for name in list_methods():
        card = get_method(name).card
        for mode in card.modes:
            out.append(pytest.param(name, mode, id=f"{name}-{mode}"))
    return out


def _make(name: str, mode: str, table: torch.Tensor, seed: int):
    return T.make_module(name, mode, table, seed)


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


# -- "derivable state costs 0 bytes", checked ------------------------------------------------------
#
# Stored bytes are the bytes of the state_dict (bench/cell/accounting.py). Anything a module keeps outside
# its state_dict -- non-persistent buffers, plain attributes -- is free, which is only honest when it
# is a function of the configuration and the seed. The two tests below check that, for every method and
# mode: a module rebuilt *without the data* (posthoc: compressed from another table of the same shape;
# train: built again, its parameters perturbed as training would) and then loaded strictly from the
# original's state_dict gives bit-identical outputs; and no module hides tensors, arrays or index
# objects in plain attributes.

_other_table, _perturb_, _outputs = T.other_table, T.perturb_, T.outputs
_round_trip_mismatches, _plain_attribute_offenders = T.round_trip_mismatches, T.plain_attribute_offenders


@pytest.mark.parametrize(("name", "mode"), _cases())
def test_state_dict_round_trip_is_bit_identical(name: str, mode: str, tiny_table: torch.Tensor) -> None:
    m, _, cfg, mod = _make(name, mode, tiny_table, seed=0)
    if mode == "train":
        _perturb_(mod)  # the rebuild must recover trained values from the state_dict alone
    saved = {k: v.clone() for k, v in mod.state_dict().items()}
    want_full, want_fwd = _outputs(mod)

    other = _other_table(tiny_table)
    torch.manual_seed(12345)  # the global RNG must not matter either
    if mode == "posthoc":
        fresh = m.compress(other, cfg, seed=0)
    else:
        init = other if m.card.train_init == "pretrained" else None
        fresh = m.build(V, D, cfg, seed=0, init_table=init)
    fresh.load_state_dict(saved, strict=True)
    problems = _round_trip_mismatches(mod, fresh, want_full, want_fwd)
    assert not problems, f"{name}/{mode}: " + "; ".join(problems)


def test_round_trip_check_catches_data_derived_free_state() -> None:
    """The checker itself: a 0-byte (non-persistent) buffer computed from the data is caught."""
    from compbench.methods.method_base import CompressedEmbedding

    class Leaky(CompressedEmbedding):
        def __init__(self, table: torch.Tensor):
            super().__init__(*table.shape)
            self.register_buffer("codes", torch.sign(table))
            self.register_buffer("scale", table.abs().mean(1, keepdim=True), persistent=False)  # data, "free"

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.codes[ids] * self.scale[ids]

    table = torch.randn(30, 4, generator=torch.Generator().manual_seed(0))
    mod = Leaky(table)
    want_full, want_fwd = _outputs(mod)
    fresh = Leaky(_other_table(table))
    fresh.load_state_dict(mod.state_dict(), strict=True)
    problems = " ".join(_round_trip_mismatches(mod, fresh, want_full, want_fwd))
    assert "materialize() differs" in problems and "scale is not derivable" in problems


@pytest.mark.parametrize(("name", "mode"), _cases())
def test_no_state_outside_the_state_dict(name: str, mode: str, tiny_table: torch.Tensor) -> None:
    *_, mod = _make(name, mode, tiny_table, seed=0)
    bad = _plain_attribute_offenders(mod)
    assert not bad, f"{name}/{mode} keeps state outside its state_dict (uncounted bytes): {', '.join(bad)}"


def test_plain_attribute_check_catches_hidden_state() -> None:
    """The checker itself: a tensor, an array or an opaque object in a plain attribute is flagged."""
    import numpy as np

    from compbench.methods.method_base import DenseEmbedding

    mod = DenseEmbedding(torch.zeros(4, 2))
    assert _plain_attribute_offenders(mod) == []
    mod.__dict__["hidden"] = torch.ones(3)
    mod.__dict__["arr"] = np.ones(3)
    mod.__dict__["index"] = object()
    mod.__dict__["nested"] = [1, (2, torch.ones(1))]
    bad = " ".join(_plain_attribute_offenders(mod))
    assert "hidden" in bad and "arr" in bad and "index" in bad and "nested[1][1]" in bad
