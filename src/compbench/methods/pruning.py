"""Embedding pruning with sparse storage, trained from scratch (train track): ``deeplight`` and ``pep``.

Both train a dense ``V x d`` working table (a :class:`~compbench.methods.vldb_common.TrainScaffold`: memory
while training, 0 stored bytes) and store a **sparse table** in the state_dict: a fixed-capacity CSR store of
``C`` fp32 values, ``C`` column indices (uint8 while ``d <= 255``) and one non-zero count per row (uint8), i.e.
``5 C + V`` bytes; ``C`` is the most that fits the budget, so the target density is ``C / (V d)`` (at d = 128:
7.8% at 10x, 1.8% at 40x, 0.64% at 100x). The store's shapes never change, so the harness counts the same bytes
before and after training and a restored best-validation state always fits: whenever the working table has
more non-zeros than ``C`` (early in the pruning schedule) the store keeps the ``C`` with the highest score
(magnitude for DeepLight, distance above the learned threshold for PEP). Evaluation reads the store only. The
VLDB code's CSR counts a 32-bit value, a 32-bit column and a 32-bit row pointer; here columns are one byte and
row pointers are recomputed from the counts.

**One run instead of several stages** (deviation, documented): the harness trains once, with early stopping,
and cannot tell a method how many steps it will get. Pruning therefore follows a schedule in training steps,
complete after ``prune_steps`` / ``search_steps`` (default 500; the task recipes plan 1,500-2,500 steps,
TREC about 1,530), after which training continues at the target sparsity.

``deeplight`` -- Deng, Jiang, Hong, ... , Chen, "DeepLight: Deep Lightweight Feature Interactions for
Accelerating CTR Predictions in Ad Serving", WSDM 2021 (arXiv 2002.06987); VLDB code
``methods/layers/deeplight.py``. The table is used as is; every 10 steps its smallest-magnitude entries are
set to zero so that the pruned fraction is ``target (1 - 0.99^(t / tau))`` (DeepLight's schedule; the VLDB code
prunes at iterations divisible by 10). Pruned entries may regrow (they keep receiving gradients) and are pruned
again at the next pruning step. Deviation: DeepLight's ``tau`` is 100 iterations (68,700 iterations to come
within 1e-3 of the target, the VLDB ``stop_deviation``); here ``tau`` is compressed so that the same curve comes
within 1e-3 at ``prune_steps``. The VLDB code also warms up a dense model first; here pruning starts at step 0.

``pep`` -- Liu, Zhang, Wang, ... , Tang, "Learnable Embedding Sizes for Recommender Systems" (PEP: Plug-in
Embedding Pruning), ICLR 2021 (arXiv 2101.07577); VLDB code ``methods/layers/pep.py``. Search phase: the
embedding is re-parametrised as ``sign(w) relu(|w| - g(s))`` with ``g`` the sigmoid and ``s`` learnable
thresholds (granularity ``feature_dimension`` by default, one per entry, as in the VLDB configuration; or
``feature``, ``dimension``, ``global``), initialised at ``threshold_init`` (default -15; the VLDB configuration
uses -150). Retrain phase: the mask found by the search is fixed and the table is trained as ``w * mask``.

PEP's mapping onto one run (deviation): PEP's thresholds learn slowly (with AdamW at lr 1e-3 ``s`` moves by
about 1e-3 per step, so ``g(s)`` stays below 1e-6 for thousands of steps, and the VLDB trainer simply waits
until the learned sparsity reaches the target). Within one run, the search adds a *scheduled global offset*
``c_t`` inside the sigmoid, ``g(s + c_t)``, set every 10 steps so that the pruned fraction follows the same
schedule as DeepLight and reaches the target at ``search_steps``. The learned thresholds keep their role:
they decide *which* entries fall below ``g(s + c_t)`` first, and they keep learning from the task loss through
the soft threshold. At ``search_steps`` the mask is the ``C`` entries with the largest ``logit(|w|) - s`` (the
entries furthest above their thresholds), the kept values are set to their soft-thresholded values (so the
function does not jump), and retraining continues *from there* rather than from the original initialisation
(PEP rewinds to the initialisation, lottery-ticket style; within one run the backbone is not re-initialised
either, so rewinding only the embedding would not be PEP's retraining). Weight decay applies to 2-d
thresholds (``feature_dimension``, ``feature``) as to every matrix in the recipe.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from compbench.methods import METHODS
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, OptionRange, at_least, opt, positive
from compbench.methods.vldb_common import (
    ScaffoldedEmbedding,
    csr_bytes,
    csr_capacity,
    csr_dtypes,
    csr_fill,
    csr_lookup,
    ramp_sparsity,
)

PRUNE_EVERY = 10  # DeepLight / the VLDB code prune at iterations divisible by 10


class SparseTableEmbedding(ScaffoldedEmbedding):
    """A dense working table (training only) served from a fixed-capacity CSR store (stored)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, capacity: int, weight: torch.Tensor):
        super().__init__(num_embeddings, embedding_dim)
        col_dtype, cnt_dtype = csr_dtypes(embedding_dim)
        self.capacity = int(capacity)
        self.target = 1.0 - self.capacity / (num_embeddings * embedding_dim)  # pruned fraction at the end
        self.register_buffer("values", torch.zeros(self.capacity))
        self.register_buffer("cols", torch.zeros(self.capacity, dtype=col_dtype))
        self.register_buffer("counts", torch.zeros(num_embeddings, dtype=cnt_dtype))
        self.scaffold.weight = nn.Parameter(weight.float().contiguous())

    @abstractmethod
    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(the table the training forward represents, a keep score: higher is kept first)."""

    def sync(self) -> None:
        table, score = self.effective()
        csr_fill(self.values, self.cols, self.counts, table, score)

    def stored_forward(self, ids: torch.Tensor) -> torch.Tensor:
        return csr_lookup(self.values, self.cols, self.counts, ids, self.embedding_dim)

    def stored_nonzeros(self) -> int:
        """Non-zeros held by the store."""
        return int(self.counts.long().sum())


class DeepLightEmbedding(SparseTableEmbedding):
    """Magnitude pruning every 10 steps along DeepLight's schedule; the table is used as is."""

    def __init__(self, num_embeddings: int, embedding_dim: int, capacity: int, weight: torch.Tensor,
                 prune_steps: int):
        super().__init__(num_embeddings, embedding_dim, capacity, weight)
        self.prune_steps = int(prune_steps)
        self.sync()

    @torch.no_grad()
    def prune(self, fraction: float) -> None:
        """Zero the ``fraction`` of entries with the smallest magnitude."""
        w = self.scaffold.weight
        k = int(round(fraction * w.numel()))
        if k <= 0:
            return
        thr = w.abs().reshape(-1).kthvalue(k).values
        w.masked_fill_(w.abs() <= thr, 0.0)

    def train_forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training_steps % PRUNE_EVERY == 0:
            self.prune(ramp_sparsity(self.training_steps, self.prune_steps, self.target))
        return nn.functional.embedding(ids, self.scaffold.weight)

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.scaffold.weight
        return w, w.abs()


def _logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(1e-30, 1 - 1e-7)
    return torch.log(x) - torch.log1p(-x)


class PEPEmbedding(SparseTableEmbedding):
    """PEP: soft thresholds ``g(s + c_t)`` while searching, then the found mask, retrained."""

    def __init__(self, num_embeddings: int, embedding_dim: int, capacity: int, weight: torch.Tensor,
                 threshold: torch.Tensor, search_steps: int):
        super().__init__(num_embeddings, embedding_dim, capacity, weight)
        self.search_steps = int(search_steps)
        self.offset = -math.inf  # the scheduled global offset c_t inside the sigmoid (none yet)
        self.retraining = False
        self.scaffold.threshold = nn.Parameter(threshold.float().contiguous())
        self.scaffold.register_buffer("mask", torch.ones(num_embeddings, embedding_dim, dtype=torch.bool))
        self.sync()

    def _thresholds(self, ids: torch.Tensor | None) -> torch.Tensor:
        """``s`` broadcastable to the rows ``ids`` (all rows when None)."""
        s = self.scaffold.threshold
        if s.dim() == 2 and ids is not None:  # feature_dimension [V, d] or feature [V, 1]
            return s[ids]
        return s

    def scores(self) -> torch.Tensor:
        """``logit(|w|) - s``: an entry is pruned iff its score is <= the offset ``c``."""
        return _logit(self.scaffold.weight.detach().abs()) - self._thresholds(None).detach()

    @torch.no_grad()
    def set_offset(self, fraction: float) -> None:
        """Choose ``c`` so that the ``fraction`` of entries with the lowest scores is pruned."""
        z = self.scores().reshape(-1)
        k = int(round(fraction * z.numel()))
        self.offset = float(z.kthvalue(k).values) if k > 0 else -math.inf

    @torch.no_grad()
    def start_retraining(self) -> None:
        """Fix the mask (the ``C`` entries with the highest scores) and keep the soft-thresholded values."""
        w = self.scaffold.weight
        soft, _ = self.effective()
        keep = torch.topk(self.scores().reshape(-1), self.capacity, sorted=False).indices
        mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
        mask[keep] = True
        self.scaffold.mask.copy_(mask.reshape(w.shape))
        w.copy_(soft * self.scaffold.mask)
        self.retraining = True

    def train_forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = self.training_steps
        if not self.retraining and t >= self.search_steps:
            self.set_offset(self.target)
            self.start_retraining()
        if self.retraining:
            return nn.functional.embedding(ids, self.scaffold.weight) * self.scaffold.mask[ids]
        if t % PRUNE_EVERY == 0:
            self.set_offset(ramp_sparsity(t, self.search_steps, self.target))
        w = nn.functional.embedding(ids, self.scaffold.weight)
        tau = torch.sigmoid(self._thresholds(ids) + self.offset)
        return torch.sign(w) * torch.relu(w.abs() - tau)

    def effective(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.scaffold.weight
        if self.retraining:
            return w * self.scaffold.mask, self.scores()
        tau = torch.sigmoid(self._thresholds(None) + self.offset)
        return torch.sign(w) * torch.relu(w.abs() - tau), self.scores()


class _Pruning(Method):
    """Shared budget logic: the CSR capacity from the budget."""

    def _capacity(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> int:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        cap = csr_capacity(num_embeddings, embedding_dim, budget_bytes)
        if cap < 1:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                    csr_bytes(num_embeddings, embedding_dim, 1))
        return int(cap)


@METHODS.register("deeplight")
class DeepLight(_Pruning):
    """DeepLight: magnitude pruning along its schedule to the budget's density; sparse CSR storage."""

    card = MethodCard(
        name="deeplight",
        version=1,
        family="pruning",
        reference="Deng et al. 2021, DeepLight: Deep Lightweight Feature Interactions for Accelerating CTR "
                  "Predictions in Ad Serving (WSDM, arXiv 2002.06987)",
        modes=("train",),
        description="dense working table; every 10 steps the smallest |w| are zeroed along DeepLight's "
                    "schedule (target reached at prune_steps=500); stored: fp32 values + uint8 columns + "
                    "uint8 row counts of the C non-zeros that fit",
    )

    class Options(MethodOptions):
        prune_steps: int = opt(500, "training steps until the target sparsity", at_least(0))
        init_std: float | None = opt(None, "std of the table at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        cap = self._capacity(num_embeddings, embedding_dim, budget_bytes)
        return {"capacity": cap, "density": cap / (num_embeddings * embedding_dim),
                "prune_steps": self.option("prune_steps")}

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(embedding_dim)
        w = torch.randn(num_embeddings, embedding_dim, generator=generator(seed)) * std
        return DeepLightEmbedding(num_embeddings, embedding_dim, int(config["capacity"]), w,
                                  int(config["prune_steps"]))


@METHODS.register("pep")
class PEP(_Pruning):
    """PEP: learnable soft thresholds (scheduled offset to the budget's density), then retraining the mask."""

    card = MethodCard(
        name="pep",
        version=1,
        family="pruning",
        reference="Liu et al. 2021, Learnable Embedding Sizes for Recommender Systems (PEP, ICLR, "
                  "arXiv 2101.07577)",
        modes=("train",),
        description="search: sign(w) relu(|w| - sigmoid(s + c_t)), learnable s per entry, scheduled offset c_t "
                    "reaching the budget's density at search_steps=500; then the mask is fixed and retrained; "
                    "stored as a CSR table (fp32 values, uint8 columns and row counts)",
    )

    class Options(MethodOptions):
        threshold_type: Literal["feature_dimension", "feature", "dimension", "global"] = opt(
            "feature_dimension", "granularity of s")
        threshold_init: float = opt(-15.0, "initial s (the VLDB configuration uses -150)",
                                    OptionRange(float, -1000, 1000))
        search_steps: int = opt(500, "training steps of the search phase", at_least(0))
        init_std: float | None = opt(None, "std of the table at init (unset: d**-0.5)", positive())

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        cap = self._capacity(num_embeddings, embedding_dim, budget_bytes)
        return {"capacity": cap, "density": cap / (num_embeddings * embedding_dim),
                "threshold_type": self.option("threshold_type"),
                "threshold_init": self.option("threshold_init"),
                "search_steps": self.option("search_steps")}

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        v, d = int(num_embeddings), int(embedding_dim)
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(d)
        w = torch.randn(v, d, generator=generator(seed)) * std
        shape = {"feature_dimension": (v, d), "feature": (v, 1), "dimension": (d,), "global": (1,)}
        s = torch.full(shape[str(config["threshold_type"])], float(config["threshold_init"]))
        return PEPEmbedding(v, d, int(config["capacity"]), w, s, int(config["search_steps"]))
