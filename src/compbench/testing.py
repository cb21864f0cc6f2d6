"""Conformance checks for any method, built in or outside the tree: ``compbench.testing.check_method(name)``.

The same checks run over the whole registry in ``tests/test_conformance.py``; a method written outside the tree
(an entry point in the ``compbench.methods`` group, or a module given to ``--import``) runs them with one call::

    from compbench.testing import check_method
    check_method("toy")          # raises MethodCheckError listing every problem; returns the report otherwise

What is checked, in every mode the card lists, on a seeded 300 x 48 table with low intrinsic dimension:

- **budget**: the configuration for the first attainable of 10x, 4x, 2x, 1x stores no more bytes than allowed, as
  the harness counts them (the state_dict's bytes, :func:`compbench.bench.cell.accounting.stored_bytes`), and an
  impossible budget (1 byte) raises ``UnattainableBudgetError`` naming a smallest budget that is attainable;
- **shape**: ``forward(ids [B, L])`` is ``[B, L, d]`` and finite, ``materialize()`` is ``[V, d]`` and agrees with it;
- **determinism**: the same seed gives the same configuration and a bit-identical table;
- **state_dict round trip**: a module rebuilt *without the data* (compressed from another table of the same shape,
  or built again and its parameters perturbed as training would) and loaded strictly from the original's
  state_dict gives bit-identical outputs, and its non-persistent buffers are the same (derivable state costs
  0 bytes only when it is a function of the configuration and the seed);
- **nothing stored outside the state_dict**: no tensor, array or opaque object in a plain attribute;
- **train mode**: something is trainable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from compbench.bench.cell.accounting import stored_bytes
from compbench.bench.cell.budget import Budget, reference_bytes
from compbench.errors import CompbenchError, UnattainableBudgetError
from compbench.methods import Method, get_method

V, D = 300, 48
RATIOS = ("10x", "4x", "2x", "1x")
_ALLOWED_PLAIN = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device)


class MethodCheckError(CompbenchError):
    """A method failed :func:`check_method`; the message lists every problem, one per line."""


@dataclass
class CheckReport:
    """What :func:`check_method` found: the checks run per mode, and the problems (empty: the method conforms)."""

    name: str
    modes: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stored_bytes: dict[str, int] = field(default_factory=dict)


def tiny_table(v: int = V, d: int = D, seed: int = 1234) -> torch.Tensor:
    """A seeded ``v x d`` table with low intrinsic dimension plus noise (like real embeddings)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(v, 12, generator=g) @ torch.randn(12, d, generator=g)
    return (base + 0.1 * torch.randn(v, d, generator=g)) * 0.05


def other_table(table: torch.Tensor) -> torch.Tensor:
    """A different table of the same shape and scale (a rebuild must not see the original data)."""
    g = torch.Generator().manual_seed(98765)
    base = torch.randn(table.shape[0], 12, generator=g) @ torch.randn(12, table.shape[1], generator=g)
    return ((base + 0.1 * torch.randn(table.shape, generator=g)) * 0.05).to(table.dtype)


def first_attainable(method: Method, v: int, d: int) -> tuple[int, dict[str, Any]]:
    """``(allowed bytes, config)`` for the first of 10x, 4x, 2x, 1x the method can meet on a ``v x d`` table."""
    for r in RATIOS:
        allowed = Budget.parse(r).resolve(reference_bytes(v, d))
        try:
            return allowed, method.configure(v, d, allowed)
        except UnattainableBudgetError:
            continue
    raise MethodCheckError(f"{method.card.name} cannot meet even 1x on a {v}x{d} table")


def make_module(name: str, mode: str, table: torch.Tensor, seed: int,
                table_for_fit: torch.Tensor | None = None) -> tuple[Method, int, dict[str, Any], torch.nn.Module]:
    """``(method, allowed bytes, config, module)``: the method configured for ``table``'s shape at its first
    attainable budget, then compressed (posthoc) or built (train) with ``seed``; ``table_for_fit`` replaces the
    data the module is fitted on (the configuration still comes from the shape)."""
    m = get_method(name)
    v, d = table.shape
    allowed, cfg = first_attainable(m, v, d)
    data = table if table_for_fit is None else table_for_fit
    torch.manual_seed(seed)
    if mode == "posthoc":
        mod = m.compress(data, cfg, seed=seed)
    else:
        init = data if m.card.train_init == "pretrained" else None
        mod = m.build(v, d, cfg, seed=seed, init_table=init)
    return m, allowed, cfg, mod


def perturb_(mod: torch.nn.Module) -> None:
    """Change every floating tensor of the state_dict as a training run would (seeded, deterministic);
    non-persistent buffers are left alone: they are not trained, and must come back from a rebuild."""
    g = torch.Generator().manual_seed(4321)
    with torch.no_grad():
        for t in mod.state_dict(keep_vars=True).values():
            if t.is_floating_point():
                noise = torch.randn(t.shape, generator=g, dtype=torch.float32)
                t.add_((0.01 * noise).to(t.dtype))


def outputs(mod: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(materialize(), forward(every id))`` of a module in eval mode."""
    mod = mod.eval()
    n = int(mod.num_embeddings)
    with torch.no_grad():
        ids = torch.arange(n - n % 3).reshape(-1, 3) if n >= 3 else torch.arange(n).reshape(1, -1)
        return mod.materialize(), mod(ids)


def non_persistent(mod: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every non-persistent buffer of ``mod`` and its submodules, by dotted name."""
    out = {}
    for prefix, sub in mod.named_modules():
        for name in sub._non_persistent_buffers_set:
            buf = sub._buffers.get(name)
            if buf is not None:
                out[f"{prefix}.{name}" if prefix else name] = buf
    return out


def round_trip_mismatches(mod: torch.nn.Module, fresh: torch.nn.Module, want_full: torch.Tensor,
                          want_fwd: torch.Tensor) -> list[str]:
    """What differs between a module and its rebuild after a strict state_dict load (empty: nothing)."""
    out = []
    got_full, got_fwd = outputs(fresh)
    if not torch.equal(got_full, want_full):
        out.append("materialize() differs after a strict state_dict load")
    if not torch.equal(got_fwd, want_fwd):
        out.append("forward() differs after a strict state_dict load")
    mine, theirs = non_persistent(mod), non_persistent(fresh)
    if mine.keys() != theirs.keys():
        out.append(f"non-persistent buffers differ: {sorted(mine)} vs {sorted(theirs)}")
    for key, buf in mine.items():
        if key in theirs and not torch.equal(buf, theirs[key]):
            out.append(f"non-persistent buffer {key} is not derivable from config + seed")
    return out


def plain_attribute_offenders(mod: torch.nn.Module) -> list[str]:
    """Plain attributes (outside ``_parameters`` / ``_buffers`` / ``_modules``) that hold state: tensors, numpy
    arrays, or any object that is not a small Python value (and tuples / lists / dicts of those)."""
    torch_internal = set(vars(torch.nn.Module()))
    bad: list[str] = []

    def check(path: str, value: Any, depth: int = 0) -> None:
        if isinstance(value, torch.Tensor | np.ndarray):
            bad.append(f"{path} ({type(value).__name__})")
        elif isinstance(value, tuple | list | set | frozenset):
            if depth >= 3:
                bad.append(f"{path} (deeply nested {type(value).__name__})")
                return
            for i, item in enumerate(value):
                check(f"{path}[{i}]", item, depth + 1)
        elif isinstance(value, dict):
            if depth >= 3:
                bad.append(f"{path} (deeply nested dict)")
                return
            for k, item in value.items():
                check(f"{path}[{k!r}]", item, depth + 1)
        elif not isinstance(value, _ALLOWED_PLAIN + (np.generic,)):
            bad.append(f"{path} ({type(value).__module__}.{type(value).__name__})")

    for prefix, sub in mod.named_modules():
        for key, value in vars(sub).items():
            if key not in torch_internal:
                check(f"{prefix + '.' if prefix else ''}{key}", value)
    return bad


def _check_mode(name: str, mode: str, table: torch.Tensor, report: CheckReport) -> None:
    p = report.problems
    m, allowed, cfg, mod = make_module(name, mode, table, seed=0)
    v, d = table.shape
    nbytes = stored_bytes(mod)
    report.stored_bytes[mode] = nbytes
    if not 0 <= nbytes <= allowed:
        p.append(f"{mode}: stores {nbytes:,} B, more than the {allowed:,} B allowed")
    ids = torch.tensor([[0, 1, 2], [v - 1, 5 % v, 7 % v]])
    with torch.no_grad():
        out = mod.eval()(ids)
        full = mod.materialize()
    if tuple(out.shape) != (2, 3, d):
        p.append(f"{mode}: forward(ids [2, 3]) has shape {list(out.shape)}, expected [2, 3, {d}]")
    elif not bool(torch.isfinite(out).all()):
        p.append(f"{mode}: forward() gives NaN or Inf")
    if tuple(full.shape) != (v, d):
        p.append(f"{mode}: materialize() has shape {list(full.shape)}, expected [{v}, {d}]")
    elif tuple(out.shape) == (2, 3, d) and not torch.allclose(full[ids].float(), out.float(), rtol=1e-4, atol=1e-5):
        p.append(f"{mode}: materialize() disagrees with forward()")
    _, _, cfg2, mod2 = make_module(name, mode, table, seed=0)
    with torch.no_grad():
        if cfg2 != cfg or not torch.equal(mod2.eval().materialize(), full):
            p.append(f"{mode}: not deterministic under a seed (same seed, different config or table)")
    if mode == "train" and not any(q.requires_grad for q in mod.parameters()):
        p.append("train: nothing is trainable")
    # state_dict round trip, without the data
    if mode == "train":
        perturb_(mod)
    saved = {k: t.clone() for k, t in mod.state_dict().items()}
    want_full, want_fwd = outputs(mod)
    torch.manual_seed(12345)  # the global RNG must not matter either
    *_, fresh = make_module(name, mode, table, seed=0, table_for_fit=other_table(table))
    try:
        fresh.load_state_dict(saved, strict=True)
    except RuntimeError as exc:
        p.append(f"{mode}: a strict state_dict load into a rebuilt module fails: {str(exc).splitlines()[0]}")
    else:
        p.extend(f"{mode}: {x}" for x in round_trip_mismatches(mod, fresh, want_full, want_fwd))
    p.extend(f"{mode}: keeps state outside its state_dict (uncounted bytes): {x}"
             for x in plain_attribute_offenders(mod))
    report.checks.append(f"{mode}: budget, shape, determinism, state_dict round trip, nothing outside the state_dict")


def check_method(name: str, *, table: torch.Tensor | None = None, raise_on_failure: bool = True) -> CheckReport:
    """Run the conformance checks on method ``name`` in every mode its card lists (see the module docstring);
    raises :class:`MethodCheckError` listing every problem (or returns them, ``raise_on_failure=False``)."""
    method = get_method(name)
    table = tiny_table() if table is None else table
    report = CheckReport(name=name, modes=list(method.card.modes))
    v, d = table.shape
    try:
        method.configure(v, d, 1)
        report.problems.append("configure() accepts a 1-byte budget (it must raise UnattainableBudgetError)")
    except UnattainableBudgetError as exc:
        if not exc.min_bytes > 1:
            report.problems.append("UnattainableBudgetError names no smallest budget above 1 byte")
        else:
            try:
                method.configure(v, d, exc.min_bytes)
            except UnattainableBudgetError:
                report.problems.append(f"the smallest budget it names ({exc.min_bytes:,} B) is not attainable")
    for mode in method.card.modes:
        try:
            _check_mode(name, mode, table, report)
        except CompbenchError as exc:
            report.problems.append(f"{mode}: {exc}")
    if report.problems and raise_on_failure:
        raise MethodCheckError(f"method '{name}' fails {len(report.problems)} conformance check(s):\n- "
                               + "\n- ".join(report.problems))
    return report


__all__ = ["CheckReport", "MethodCheckError", "check_method", "first_attainable", "make_module", "non_persistent",
           "other_table", "outputs", "perturb_", "plain_attribute_offenders", "round_trip_mismatches", "tiny_table"]
