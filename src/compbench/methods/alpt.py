"""ALPT: adaptive low-precision training of the embedding table (train track).

Li, Jiang, Hu, Fu, Zhao, Li, Wu (and others), "Adaptive Low-Precision Training for Embeddings in Click-Through
Rate Prediction", AAAI 2023 (arXiv 2212.05735); the VLDB benchmark's trainer is Hetu's
``methods/scheduler/alpt.py``. The table itself is low-precision *during* training: every row is ``b``-bit
signed integers ``q`` (symmetric, ``-2^(b-1) <= q <= 2^(b-1) - 1``) times a learned per-row step size ``s``.
Each update is applied to the dequantized row ``s q`` and the result is rounded back onto the grid with
*stochastic* rounding (``floor(x / s + u)``, ``u ~ U[0, 1)``), so no full-precision master copy survives a
step. The step size is learned with the LSQ gradient (``d(s q)/ds = q - x/s`` inside the range, the clip bound
outside), as in Hetu's ``alpt_rounding_op``.

**Stored**: the codes, packed at ``b`` bits (``q + 2^(b-1)`` unsigned, rows byte-aligned), and the fp32 step
of every row: ``V ceil(d b / 8) + 4 V`` bytes. ``b`` is the largest width in 2..8 that fits (``-o bits=`` forces
one, up to 16: the VLDB configuration's ``digit: 16``). At d = 128 that is 8 bits (3.9x) or lower: 10x gets
2 bits (14.2x); 40x and 100x cannot be met (even 2 bits with a per-row step is 14.2x), and the harness
records why.

**One pass instead of two** (deviation, documented). Hetu runs two passes per step: the optimizer's update of
the looked-up rows, then a second forward on the stochastically rounded update that gives the step size its
gradient. Here the harness' optimizer updates an fp32 working copy of the table (a
:class:`~compbench.methods.vldb_common.TrainScaffold`, 0 bytes, like the optimizer's moments), and the next
forward that looks a row up rounds it stochastically onto the grid (giving the step its LSQ gradient in the
same pass) and writes the rounded row back into the working copy and into the stored codes. Rows that the
optimizer moved without a lookup (AdamW's momentum and weight decay touch every row; Hetu's sparse updates do
not) are rounded when the module next evaluates. Evaluation reads codes and steps only.

**Step-size learning rate.** Hetu trains the step with its own optimizer at ``scale_lr = 2e-5``. The harness
has one optimizer (AdamW, lr 1e-3 in every task recipe), so the step is reparametrised ``s = kappa * theta``
with ``kappa = scale_lr / 1e-3 = 0.02`` and ``theta`` stored: an Adam step of ~lr on ``theta`` moves ``s`` by
~``scale_lr``. (Adam is invariant to LSQ's gradient scale ``1 / sqrt(n Q_p)``, so it is not applied.)

Init (deviation): the working table ``N(0, init_std^2)`` (``init_std = d**-0.5``), rounded stochastically onto
the grid; the step starts at LSQ's ``2 E|w| / sqrt(Q_p)`` with ``Q_p = 2^(b-1) - 1`` (Hetu: a constant 0.01 with
16-bit codes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt, positive
from compbench.methods.vldb_common import (
    ScaffoldedEmbedding,
    pack_rows,
    row_stride,
    step_generator,
    stochastic_round,
    unpack_rows,
)

SCALE_LR = 2e-5  # Hetu's scale_lr for the step size
RECIPE_LR = 1e-3  # the train track's AdamW learning rate (every task recipe)


def alpt_bytes(num_embeddings: int, embedding_dim: int, bits: int) -> int:
    """Stored bytes: ``b``-bit codes (rows byte-aligned) + one fp32 step per row."""
    return int(num_embeddings) * (row_stride(embedding_dim, bits) + 4)


class ALPTEmbedding(ScaffoldedEmbedding):
    """``b``-bit codes + per-row learned step; trained through an fp32 working copy kept on the grid."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, weight: torch.Tensor, step: float,
                 kappa: float, seed: int):
        super().__init__(num_embeddings, embedding_dim)
        if not 2 <= int(bits) <= 16:
            raise UsageError(f"alpt bits must be in 2..16, got {bits}")
        self.bits = int(bits)
        self.qmin, self.qmax = -(2 ** (self.bits - 1)), 2 ** (self.bits - 1) - 1
        self.kappa = float(kappa)
        self.seed = int(seed)
        self.theta = nn.Parameter(torch.full((num_embeddings,), float(step) / self.kappa))
        self.register_buffer("codes", torch.zeros(num_embeddings, row_stride(embedding_dim, self.bits),
                                                  dtype=torch.uint8))
        self.scaffold.weight = nn.Parameter(weight.float().contiguous())
        with torch.no_grad():
            self._round_rows(torch.arange(num_embeddings), step_generator(self.seed, -1, torch.device("cpu")))

    def step_size(self, ids: torch.Tensor) -> torch.Tensor:
        """The step ``s = kappa theta`` of rows ``ids``: ``[n, 1]``."""
        return (self.kappa * self.theta[ids]).unsqueeze(-1)

    @torch.no_grad()
    def _round_rows(self, rows: torch.Tensor, g: torch.Generator) -> None:
        """Round rows of the working copy stochastically onto the grid and store their codes."""
        w = self.scaffold.weight
        s = self.step_size(rows)
        q = stochastic_round(w[rows] / s, g).clamp_(self.qmin, self.qmax)
        w[rows] = s * q
        self.codes[rows] = pack_rows((q - self.qmin).long(), self.bits)

    def train_forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        w = self.scaffold.weight[uniq]
        s = self.step_size(uniq)
        v = w / s
        g = step_generator(self.seed, self.training_steps, w.device)
        r = stochastic_round(v.detach(), g)
        q = torch.clamp(v + (r - v).detach(), self.qmin, self.qmax)  # STE inside the range; LSQ for s
        out = s * q
        with torch.no_grad():
            qd = q.detach()
            self.scaffold.weight[uniq] = s.detach() * qd
            self.codes[uniq] = pack_rows((qd - self.qmin).long(), self.bits)
        return out[inverse].reshape(*ids.shape, self.embedding_dim)

    def sync(self) -> None:
        """Round every row the optimizer moved since its last lookup (all rows: AdamW touches every row)."""
        g = step_generator(self.seed ^ 0x5EED, self.training_steps, self.scaffold.weight.device)
        self._round_rows(torch.arange(self.num_embeddings, device=self.scaffold.weight.device), g)

    def stored_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Signed integer codes ``[n, d]`` of rows ``ids``."""
        return unpack_rows(self.codes[ids], self.bits, self.embedding_dim) + self.qmin

    def stored_forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        out = self.step_size(uniq) * self.stored_codes(uniq).to(self.theta.dtype)
        return out[inverse].reshape(*ids.shape, self.embedding_dim)


@METHODS.register("alpt")
class ALPT(Method):
    """ALPT: a b-bit table (b from the budget, <= 8) with learned per-row steps and stochastic rounding."""

    card = MethodCard(
        name="alpt",
        version=1,
        family="quantization",
        reference="Li et al. 2023, Adaptive Low-Precision Training for Embeddings in Click-Through Rate "
                  "Prediction (AAAI, arXiv 2212.05735)",
        modes=("train",),
        description="b-bit signed codes (largest b in 2..8 that fits) x a learned fp32 step per row (LSQ); "
                    "updates rounded stochastically back onto the grid; stored at b bits",
    )

    class Options(MethodOptions):
        bits: int | None = opt(None, "force the code width b (16 is the VLDB configuration)", at_least(2, high=16))
        scale_lr: float = opt(SCALE_LR, "effective learning rate of the step size (Hetu's)", positive())
        init_std: float | None = opt(None, "std of the table at init, before rounding (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        v, d = int(num_embeddings), int(embedding_dim)
        forced = self.option("bits")
        widths = [forced] if forced is not None else list(range(8, 1, -1))
        for b in widths:
            if alpt_bytes(v, d, b) <= budget_bytes:
                return {"bits": int(b), "scale_lr": self.option("scale_lr")}
        raise self.unattainable(v, d, budget_bytes, alpt_bytes(v, d, min(widths)))

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        v, d, b = int(num_embeddings), int(embedding_dim), int(config["bits"])
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(d)
        g = generator(seed)
        weight = torch.randn(v, d, generator=g) * std
        qp = 2 ** (b - 1) - 1
        step = 2.0 * std * math.sqrt(2.0 / math.pi) / math.sqrt(qp)  # LSQ: 2 E|w| / sqrt(Q_p)
        kappa = float(config.get("scale_lr", SCALE_LR)) / RECIPE_LR
        return ALPTEmbedding(v, d, b, weight, step, kappa, seed)
