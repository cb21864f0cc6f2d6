"""Composition ``A+B``: a reducer ``A`` (``svd``, ``pca``) whose stored coefficients are quantized by ``B``.

``A`` factors the table as ``E ~= C W (+ mu)`` with coefficients ``C`` (``V x r``), a basis ``W`` (``r x d``)
and, for ``pca``, the mean ``mu`` (``d``). ``B`` (any posthoc method: ``quant-int8``, ``quant-fp8``, ``quant``,
``pq``, ``rabitq``, ...) compresses ``C`` as if it were a ``V x r`` table; ``W`` and ``mu`` are kept in
``factor_dtype`` (float32 by default, float16 on request). ``forward(ids) = B(ids) @ W (+ mu)``.

The module's ``state_dict`` holds exactly the final tensors -- ``B``'s (under ``codes.``), ``basis`` and
``mean`` -- so the harness counts what is stored: ``bytes = bytes_B(V, r) + s (r d [+ d])``.

Budget split. ``A``'s kept parts (basis and mean) and ``B``'s codes share the budget:

- ``split`` = s in (0, 1]: ``A``'s kept parts may use at most ``s x budget``; ``B`` gets the rest of the budget.
- default (``split`` unset, or 0): automatic -- the largest rank ``r`` for which ``B`` can code the ``V x r``
  coefficients in what the kept parts leave. For a fixed-width ``B`` (int8, fp8, int4, binary) that is the
  best split; for a ``B`` whose width adapts to its budget (``quant``, ``pq``, ``rabitq``, ``rq``) it favours
  rank over bits, and ``split`` trades one for the other (a tuning protocol picks it on validation data).

In both cases the rank is the largest ``r <= min(V, d)`` that satisfies the constraints, and ``B`` is then
configured by its own rule on ``(V, r)`` with the remaining budget. Examples on MiniLM at 40x:
``pca+quant-int8`` r = 28 (8-bit coefficients + fp32 offset/step per row, fp32 basis and mean),
``svd+quant-fp8`` r = 32 (fp8 coefficients + an fp32 scale per row). With an adaptive ``B`` the automatic
split can be poor: ``svd+pq`` at 100x takes r = 283 with 1-bit PQ codes; set ``split`` there.

Options: ``split``, ``factor_dtype``, and ``a.<option>`` / ``b.<option>`` passed to ``A`` / ``B``
(e.g. ``-o b.group_size=8``). ``A``'s ``rank`` and ``dtype`` are set by the composition (the rank from the
split; fp32 coefficients go to ``B``).

The card is derived from the parts: name ``A+B``, family ``<family A>+<family B>``, both references, the
modes they share (posthoc). Compositions are not registered; the harness resolves ``A+B`` with
:func:`compose` (see :func:`composed_method`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compbench.errors import UnattainableBudgetError, UsageError
from compbench.methods import get_method
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, OptionRange, opt, option_help
from compbench.methods.pca import PCAEmbedding
from compbench.methods.svd import LowRankEmbedding

REDUCERS = ("svd", "pca")
SPLITS = (0.02, 0.05, 0.1, 0.2, 0.3)  # the tuning space's budget splits
FACTOR_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_REDUCER_OWN = ("rank", "dtype")  # set by the composition: the rank from the split, fp32 coefficients for B
_ALIASES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16"}


class ComposedEmbedding(CompressedEmbedding):
    """``B``'s module over the coefficients (``codes``) + the kept ``basis`` ``[r, d]`` (+ ``mean`` ``[d]``)."""

    def __init__(self, codes: CompressedEmbedding, basis: torch.Tensor, mean: torch.Tensor | None):
        super().__init__(codes.num_embeddings, basis.shape[1])
        self.rank = int(basis.shape[0])
        self.codes = codes
        self.register_buffer("basis", basis.contiguous())
        self.has_mean = mean is not None
        if mean is not None:
            self.register_buffer("mean", mean.contiguous())

    def _lift(self, coeffs: torch.Tensor) -> torch.Tensor:
        out = coeffs.float() @ self.basis.float()
        return out + self.mean.float() if self.has_mean else out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._lift(self.codes(ids))

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        return self._lift(self.codes.materialize(chunk))


def reducer_factors(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(coefficients [V, r], basis [r, d], mean [d] or None)`` of a reducer's module (svd or pca)."""
    if isinstance(module, PCAEmbedding):
        return module.coeffs.detach().float(), module.axes.detach().float(), module.mean.detach().float()
    if isinstance(module, LowRankEmbedding):
        return module.a.detach().float(), module.b.detach().float(), None
    raise UsageError(f"cannot take the factors of a {type(module).__name__}; reducers: {', '.join(REDUCERS)}")


def _check_parts(reducer: Method, quantizer: Method) -> None:
    if reducer.card.name not in REDUCERS:
        raise UsageError(f"'{reducer.card.name}' cannot be the first part of a composition A+B; A must be one of "
                         f"{', '.join(REDUCERS)}")
    if "posthoc" not in quantizer.card.modes:
        raise UsageError(f"'{quantizer.card.name}' cannot be the second part of a composition: it has no posthoc mode")
    if isinstance(quantizer, ComposedMethod):
        raise UsageError("a composition takes two methods, not a composition")


def composed_card(reducer: Method, quantizer: Method, options: Mapping[str, str]) -> MethodCard:
    """The card of ``A+B``, derived from its parts."""
    a, b = reducer.card, quantizer.card
    return MethodCard(
        name=f"{a.name}+{b.name}",
        version=1,
        family=f"{a.family}+{b.family}",
        reference=f"{a.reference} | {b.reference}",
        modes=tuple(m for m in a.modes if m in b.modes and m == "posthoc"),
        description=f"{a.name} (v{a.version}) coefficients quantized by {b.name} (v{b.version}); basis"
                    f"{' and mean' if a.name == 'pca' else ''} kept; rank from the budget split",
        options=dict(options),
    )


class _ComposedOptions(MethodOptions):
    split: float | None = opt(None, "fraction of the budget A's kept parts (basis, mean) may use; B gets the rest "
                              "(unset or 0: automatic, the largest rank B can code)",
                              OptionRange(float, 0, 1, min_open=True, auto=0))
    factor_dtype: str = opt("float32", "dtype of the kept basis and mean: float32 | float16 (also fp32, fp16)")


class ComposedMethod(Method):
    """``A+B``: fit the reducer ``A``, then code its ``V x r`` coefficients with ``B``; the card from the parts.

    Args:
        reducer: the ``A`` method instance (``svd`` or ``pca``; its own options already applied).
        quantizer: the ``B`` method instance (any posthoc method; its own options already applied).
        **options: ``split`` (fraction of the budget for ``A``'s kept parts, 0/unset = automatic) and
            ``factor_dtype`` (``float32`` | ``float16``, the kept basis and mean).
    """

    Options = _ComposedOptions

    def __init__(self, reducer: Method, quantizer: Method, **options: Any):
        _check_parts(reducer, quantizer)
        self.reducer, self.quantizer = reducer, quantizer
        own = option_help(_ComposedOptions)
        part_opts = {**{f"a.{k}": f"{reducer.card.name}: {v}" for k, v in reducer.card.options.items()
                        if k not in _REDUCER_OWN},
                     **{f"b.{k}": f"{quantizer.card.name}: {v}" for k, v in quantizer.card.options.items()}}
        self.card = composed_card(reducer, quantizer, {**own, **part_opts})  # type: ignore[misc]
        options = {k: v for k, v in options.items() if v is not None}
        super().__init__(**options)

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """For the harness' tuning on validation data: the budget split (automatic by default, then A's kept parts
        capped at 2%, 5%, 10%, 20% or 30% of the budget) and fp16 kept factors."""
        return [{}, *({"split": s} for s in SPLITS), {"factor_dtype": "float16"}]

    # -- budget -----------------------------------------------------------------------------------
    def _dtype(self) -> str:
        raw = str(self.option("factor_dtype")).lower()
        if raw not in _ALIASES:
            raise UsageError(f"option factor_dtype={raw!r} of method '{self.card.name}' must be float32 or float16")
        return _ALIASES[raw]

    def kept_bytes(self, embedding_dim: int, rank: int) -> int:
        """Bytes of ``A``'s kept parts at rank ``r``: the basis ``r x d`` (+ the mean ``d`` for pca)."""
        s = FACTOR_DTYPES[self._dtype()].itemsize
        mean = int(embedding_dim) if self.reducer.card.name == "pca" else 0
        return s * (int(rank) * int(embedding_dim) + mean)

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        split = self.option("split") or None
        cap = min(int(num_embeddings), int(embedding_dim))
        for r in range(cap, 0, -1):
            kept = self.kept_bytes(embedding_dim, r)
            if split is not None and kept > split * budget_bytes:
                continue
            try:
                cfg_b = self.quantizer.configure(num_embeddings, r, budget_bytes - kept)
            except UnattainableBudgetError:
                continue
            return {"rank": r, "split": "auto" if split is None else split, "factor_dtype": self._dtype(),
                    "kept_bytes": kept, "split_used": round(kept / budget_bytes, 6),
                    "a": {"name": self.reducer.card.name, "config": self._reducer_config(r)},
                    "b": {"name": self.quantizer.card.name, "config": cfg_b}}
        kept1 = self.kept_bytes(embedding_dim, 1)
        try:
            self.quantizer.configure(num_embeddings, 1, 1)
            b_min = 1
        except UnattainableBudgetError as exc:
            b_min = exc.min_bytes
        need = kept1 + b_min
        if split is not None:
            need = max(need, int(-(-kept1 // split)))
        raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, need)

    def _reducer_config(self, rank: int) -> dict[str, Any]:
        cfg: dict[str, Any] = {"rank": rank}
        if self.reducer.card.name == "pca":
            cfg["dtype"] = "float32"  # the coefficients go to B; the kept parts are cast to factor_dtype
            cfg["centered"] = True
        return cfg

    # -- fit ----------------------------------------------------------------------------------------
    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        reduced = self.reducer.compress(table, config["a"]["config"], seed=seed)
        coeffs, basis, mean = reducer_factors(reduced)
        del reduced
        codes = self.quantizer.compress(coeffs.contiguous(), config["b"]["config"], seed=seed)
        dt = FACTOR_DTYPES[str(config["factor_dtype"])]
        return ComposedEmbedding(codes, basis.to(dt), None if mean is None else mean.to(dt))


def compose(name_a: str, name_b: str, split: float | None = None, **options: Any) -> ComposedMethod:
    """The method ``A+B``: ``options`` are the composition's own (``split``, ``factor_dtype``) and
    ``a.<key>`` / ``b.<key>`` for the parts (e.g. ``compose("pca", "quant", **{"b.bits": 4})``)."""
    a_opts = {k[2:]: v for k, v in options.items() if k.startswith("a.")}
    b_opts = {k[2:]: v for k, v in options.items() if k.startswith("b.")}
    own = {k: v for k, v in options.items() if not k.startswith(("a.", "b."))}
    for key in _REDUCER_OWN:
        a_opts.pop(key, None)  # the composition picks the rank; B receives fp32 coefficients
    if "+" in name_a or "+" in name_b:
        raise UsageError("a composition takes two methods, not a composition")
    return ComposedMethod(get_method(name_a, **a_opts), get_method(name_b, **b_opts), split=split, **own)


def composed_method(name: str, **options: Any) -> ComposedMethod:
    """``get_method`` for a name ``A+B`` (the hook the harness' registry lookup needs)."""
    if name.count("+") != 1:
        raise UsageError(f"a composition is named A+B with exactly one '+', got {name!r}")
    a, b = name.split("+")
    return compose(a.strip(), b.strip(), **options)


__all__ = ["REDUCERS", "ComposedEmbedding", "ComposedMethod", "compose", "composed_method", "reducer_factors"]
