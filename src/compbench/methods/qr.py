"""Quotient-remainder (compositional) embeddings, trained from scratch (train track).

Shi, Mudigere, Naumov, Yang, "Compositional Embeddings Using Complementary
Partitions for Memory-Efficient Recommendation Systems", KDD 2020 (arXiv
1909.02107). The QR trick gives every id ``i`` a unique pair (remainder, quotient)
``(i mod c, i // c)`` and combines one row of a ``c x d`` table with one row of a
``ceil(V/c) x d`` table by element-wise multiplication (the paper's default and best
operation), addition, or concatenation (each table then holds part of the d
dimensions). ``c`` is the number of ids sharing a quotient row ("num_collisions" in
``facebookresearch/dlrm`` ``tricks/qr_embedding_bag.py``).

Generalised QR (the paper's section on complementary partitions): with ``k``
partitions the id is written in mixed radix ``(m_1, ..., m_k)`` with
``m_1 = ... = m_{k-1} = c`` and ``m_k = ceil(V / c^(k-1))``; table ``j`` has ``m_j`` rows
and is indexed by digit ``j``, ``(i // prod_{l<j} m_l) mod m_j``. ``k = 2`` is exactly
the QR trick (remainder table first, quotient table second). Every id keeps a unique
digit tuple, so no two ids share their full embedding.

Budget -> hyperparameters: stored bytes are ``4 * sum_j m_j * d_j`` (``d_j = d`` for
mult/add; the d columns split as evenly as possible for concat). ``c`` is the
*smallest* collision count whose tables fit, i.e. the largest tables (most
parameters) that fit; as in the paper this is the number of collisions you tune.
Option ``partitions`` (default 0 = auto) uses ``k = 2`` when the two-table QR fits
and otherwise the smallest ``k`` that fits: two tables need at least about
``2 sqrt(V)`` rows, which is ~87x for V=30522, so 100x needs three partitions.

Init (deviation): DLRM's QR layer calls ``uniform_(w, sqrt(1/|S|))``, which sets only
the lower bound. Here every table is N(0, s^2) with ``s`` chosen so each output entry
has std ``init_std`` (default ``d**-0.5``, the ``dense`` train init): ``s =
init_std^(1/k)`` for mult, ``init_std / sqrt(k)`` for add, ``init_std`` for concat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt, positive

OPS = ("mult", "add", "concat")


def split_dims(embedding_dim: int, parts: int, op: str) -> list[int]:
    """Columns held by each table: ``d`` each for mult/add, an even split of ``d`` for concat."""
    if op != "concat":
        return [int(embedding_dim)] * parts
    base, extra = divmod(int(embedding_dim), parts)
    return [base + (1 if j < extra else 0) for j in range(parts)]


def qr_radices(num_embeddings: int, collisions: int, parts: int) -> list[int]:
    """Mixed radix ``[c] * (k-1) + [ceil(V / c^(k-1))]``: the row count of each table."""
    head = [int(collisions)] * (parts - 1)
    return head + [-(-int(num_embeddings) // (int(collisions) ** (parts - 1)))]


def qr_bytes(radices: Sequence[int], dims: Sequence[int]) -> int:
    """Stored bytes of the fp32 tables: ``4 * sum_j m_j d_j``."""
    return 4 * sum(int(m) * int(dd) for m, dd in zip(radices, dims))


def smallest_collisions(num_embeddings: int, embedding_dim: int, budget_bytes: int, parts: int,
                        op: str) -> tuple[int | None, int]:
    """The smallest ``c`` whose ``parts`` tables fit (None if none fits), and the fewest bytes any ``c`` needs.

    Scans ``c = 1, 2, ...`` until the last (quotient) table is down to one row; the row total
    first falls then rises with ``c``, so the first fit is the largest configuration that fits.
    """
    dims = split_dims(embedding_dim, parts, op)
    min_bytes: int | None = None
    c = 1
    while True:
        radices = qr_radices(num_embeddings, c, parts)
        nbytes = qr_bytes(radices, dims)
        if nbytes <= budget_bytes:
            return c, nbytes
        min_bytes = nbytes if min_bytes is None else min(min_bytes, nbytes)
        if radices[-1] == 1:
            return None, int(min_bytes)
        c += 1


class QREmbedding(CompressedEmbedding):
    """Compositional embedding over mixed-radix digits of the id: ``op_j T_j[digit_j(id)]``."""

    def __init__(self, num_embeddings: int, tables: Sequence[torch.Tensor], radices: Sequence[int], op: str):
        super().__init__(num_embeddings, sum(t.shape[1] for t in tables) if op == "concat" else tables[0].shape[1])
        if op not in OPS:
            raise UsageError(f"qr op must be one of {', '.join(OPS)}, got {op!r}")
        self.op = op
        self.radices = [int(m) for m in radices]
        self.tables = nn.ParameterList([nn.Parameter(t.float().contiguous()) for t in tables])

    def digits(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Mixed-radix digits of the ids, one tensor per table (the QR pair for two tables)."""
        out = []
        rest = ids.long()
        for j, m in enumerate(self.radices):
            if j == len(self.radices) - 1:
                out.append(rest)
            else:
                out.append(torch.remainder(rest, m))
                rest = torch.div(rest, m, rounding_mode="floor")
        return out

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = [nn.functional.embedding(dig, t) for dig, t in zip(self.digits(ids), self.tables)]
        if self.op == "concat":
            return torch.cat(rows, dim=-1)
        out = rows[0]
        for r in rows[1:]:
            out = out * r if self.op == "mult" else out + r
        return out


@METHODS.register("qr")
class QR(Method):
    """Quotient-remainder trick: tables of ``c`` and ``ceil(V/c)`` rows, combined by mult / add / concat."""

    card = MethodCard(
        name="qr",
        version=1,
        family="compositional",
        reference="Shi et al. 2020, Compositional Embeddings Using Complementary Partitions (KDD, arXiv 1909.02107)",
        modes=("train",),
        description="remainder (c x d) and quotient (ceil(V/c) x d) fp32 tables, op mult|add|concat; "
                    "smallest c that fits; 3+ partitions only when two cannot fit",
    )

    class Options(MethodOptions):
        op: Literal["mult", "add", "concat"] = opt("mult", "how rows combine (mult: the paper's)")
        partitions: int = opt(0, "number k of complementary partitions (automatic: 2, or the smallest that fits)",
                              at_least(2, auto=0))
        collisions: int | None = opt(None, "force the collision count c (must fit the budget)", at_least(1))
        init_std: float | None = opt(None, "std of every output entry at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        op = self.option("op")
        forced_k = self.option("partitions")
        max_k = max(2, math.ceil(math.log2(max(num_embeddings, 2))))
        candidates = [forced_k] if forced_k else list(range(2, max_k + 1))
        if op == "concat":
            if embedding_dim < min(candidates):
                raise UsageError(f"qr op=concat needs d >= {min(candidates)} partitions, got d={embedding_dim}")
            candidates = [k for k in candidates if k <= embedding_dim]
        forced_c = self.option("collisions")
        smallest = None
        for k in candidates:
            dims = split_dims(embedding_dim, k, op)
            if forced_c is not None:
                nbytes = qr_bytes(qr_radices(num_embeddings, forced_c, k), dims)
                c = forced_c if nbytes <= budget_bytes else None
            else:
                c, nbytes = smallest_collisions(num_embeddings, embedding_dim, budget_bytes, k, op)
            if c is not None:
                return {"op": op, "partitions": int(k), "collisions": int(c),
                        "radices": qr_radices(num_embeddings, c, k), "dims": dims}
            smallest = nbytes if smallest is None else min(smallest, nbytes)
        raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, int(smallest))

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        op = str(config["op"])
        radices = [int(m) for m in config["radices"]]
        dims = [int(x) for x in config.get("dims") or split_dims(embedding_dim, len(radices), op)]
        k = len(radices)
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(embedding_dim)
        s = {"mult": std ** (1.0 / k), "add": std / math.sqrt(k), "concat": std}[op]
        g = generator(seed)
        tables = [torch.randn(m, dd, generator=g) * s for m, dd in zip(radices, dims)]
        return QREmbedding(num_embeddings, tables, radices, op)
