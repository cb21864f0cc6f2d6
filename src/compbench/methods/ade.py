"""ADE: Adaptive Dictionary Embeddings (Demirci, Aptourachman & Kaya, arXiv 2604.24940), both tracks.

Every token is a sparse non-negative combination of K shared anchors, ``E ~= T A`` with
``A: [K, d]`` and at most S active weights per row of ``T: [V, K]`` (the module and its stored
format are in :mod:`compbench.methods.ade_model`).

**Stage 1 (distillation)** -- :func:`distill` learns A and T from the frozen pretrained table:

1. anchors initialised by spherical k-means (faiss) on the unit-normalised rows;
2. support selection by batched non-negative orthogonal matching pursuit (at most S anchors per
   token, non-negative least-squares weights), alternated ``mod_iters`` times with the closed-form
   least-squares anchor update (MOD; unused anchors are re-seeded with the worst-fit rows);
3. ``epochs`` of Adam on A and the surviving weights with the paper's loss ``1 - mean cos(TA, E)``
   (weights projected to >= 0 after every step);
4. threshold tau: slot j of token i stays active iff ``T_ij >= tau``, measured with unit-norm anchors
   and unit-norm targets so one tau means the same for every token. Every token keeps at least one
   anchor: when all its weights fall below tau (or are 0), its largest-weight slot is kept with weight
   ``max(T_ij, tau)``. The cap S comes from the budget (:meth:`ADE.configure`);
5. calibration: each token's weights are scaled by the least-squares factor
   ``<e_i, Te_i> / ||Te_i||^2`` (computed with the stored fp16 weights and stored-dtype anchors),
   which keeps the cosine and restores the table's row norms (the encoder's LayerNorm sees the sum
   of token and position embeddings, so the norm matters posthoc).

Deviations, documented: the paper computes the loss over token positions of text batches; offline
we use every vocabulary row once per epoch (uniform over the vocabulary). The paper does not say how
T becomes sparse (no L1 / proximal step is stated, "T from A&T"); we select supports greedily
(NN-OMP) instead of thresholding a dense T, and then apply the stated tau. Steps 1-2 and 5 are
initialisation and a zero-cost rescaling around the paper's loss.

**Stage 3 (train track)**: ``ade`` (anchor-level SAT with GPE) and ``ade-merged`` (Algorithm 1)
classifiers from :class:`~compbench.methods.ade_model.ADEClassifier` via ``custom_classifier``. The
paper is inconsistent on whether the anchors are fine-tuned (Section 4.2: trained; Appendix C:
frozen). Default: trained (Section 4.2, and the train track's contract that the embedding layer is
trained end to end), stored in fp32; ``--option train_anchors=false`` freezes them (then fp16, like
posthoc). The weights beta stay fixed (fp16). Because trained anchors are stored in fp32, ``configure``
sizes the dictionary twice: the top-level K / S are the posthoc (fp16 anchors) sizing, ``config["train"]``
the train-track sizing; ``compress`` uses the first and ``build`` the second.

**Bytes** (:func:`~compbench.methods.ade_model.ade_stored_bytes`): ``K d`` anchor floats (fp16, or
fp32 when trained) + ``V S`` slots of (uint8 id when K <= 256 else int16, fp16 weight) + ``V`` uint8
counts. See docs/ade.md for what 40x means for MiniLM's 30522 x 384 table vs the paper's 128,100 x 768.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compbench.errors import UnattainableBudgetError, UsageError
from compbench.methods import METHODS
from compbench.methods.ade_model import (
    VARIANTS,
    ADEClassifier,
    ADEEmbedding,
    ade_stored_bytes,
    index_dtype,
)
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, at_least, non_negative, opt

PAPER = ("Demirci, Aptourachman & Kaya 2026, ADE: Adaptive Dictionary Embeddings (arXiv 2604.24940); "
         "stage 1 after Liang et al. 2021, Anchor & Transform (arXiv 2003.08197)")

# configure(): K in the paper's range (100..700, 500 best), ~8 active anchors per word
K_PREF_MIN, K_MAX, K_ABS_MIN = 100, 700, 8
S_TARGET, S_MAX = 8, 64
DEFAULT_TAU = 0.01

_DTYPES = {"float16": torch.float16, "float32": torch.float32}


# -- stage 1 ---------------------------------------------------------------------------------------


@dataclass
class Distilled:
    """Result of :func:`distill`: anchors, the padded slot table and a history of the fit."""

    anchors: torch.Tensor  # [K, d] float32 (before the storage cast)
    slot_ids: torch.Tensor  # [V, S] long
    slot_weights: torch.Tensor  # [V, S] float32, 0 in unused slots
    counts: torch.Tensor  # [V] long, >= 1
    history: list[dict[str, Any]] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        """Mean active anchors, final cosine, seconds per phase."""
        return {"mean_active": float(self.counts.float().mean()), "history": self.history}


def spherical_kmeans(x: torch.Tensor, k: int, *, iters: int, seed: int) -> torch.Tensor:
    """Unit-norm k-means centroids of the unit-norm rows ``x`` (faiss, on CPU), ``[k, d]`` float32."""
    import faiss

    data = np.ascontiguousarray(x.detach().float().cpu().numpy())
    km = faiss.Kmeans(data.shape[1], k, niter=max(1, iters), seed=(int(seed) + 1) % 2**31,  # faiss: a C int
                      spherical=True, verbose=False, max_points_per_centroid=256)
    km.train(data)
    return F.normalize(torch.from_numpy(np.array(km.centroids)).to(x.device), dim=1)


def nn_omp(x: torch.Tensor, anchors: torch.Tensor, slots: int, *, chunk: int = 8192,
           pg_steps: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched non-negative orthogonal matching pursuit: ``x [N, d] ~= w A[idx]`` with ``w >= 0``.

    Each of ``slots`` steps adds the unused anchor most positively correlated with the residual and
    refits the weights on the support (least squares, clamped, then ``pg_steps`` projected-gradient
    steps of non-negative least squares). Returns ``(idx long [N, S], w float [N, S])``.
    """
    n, d = x.shape
    k = anchors.shape[0]
    slots = min(slots, k)
    gram = anchors @ anchors.T
    eye = torch.eye(slots, device=x.device, dtype=x.dtype)
    idx_out = torch.zeros(n, slots, dtype=torch.long, device=x.device)
    w_out = torch.zeros(n, slots, dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        xb = x[start:start + chunk]
        m = xb.shape[0]
        corr0 = xb @ anchors.T  # [m, K]
        idx = torch.zeros(m, slots, dtype=torch.long, device=x.device)
        w = torch.zeros(m, slots, dtype=x.dtype, device=x.device)
        resid = xb
        for s in range(slots):
            c = resid @ anchors.T
            if s:
                c.scatter_(1, idx[:, :s], float("-inf"))
            idx[:, s] = c.argmax(1)
            sub = idx[:, : s + 1]
            gs = gram[sub.unsqueeze(2), sub.unsqueeze(1)]  # [m, s+1, s+1]
            bs = corr0.gather(1, sub)
            ws = torch.linalg.solve(gs + 1e-6 * eye[: s + 1, : s + 1], bs.unsqueeze(-1)).squeeze(-1)
            neg = (ws < 0).any(1).nonzero().squeeze(1)
            ws = ws.clamp_min(0)
            if s and pg_steps and neg.numel():  # refine only rows whose least-squares fit went negative
                gn, bn, wn = gs[neg], bs[neg], ws[neg]
                # step 1 / trace(G) <= 1 / lambda_max(G): a safe projected-gradient step
                step = 1.0 / gn.diagonal(dim1=1, dim2=2).sum(1, keepdim=True).clamp_min(1e-12)
                for _ in range(pg_steps):
                    wn = (wn - step * (torch.bmm(gn, wn.unsqueeze(-1)).squeeze(-1) - bn)).clamp_min(0)
                ws[neg] = wn
            w[:, : s + 1] = ws
            resid = xb - F.embedding_bag(sub, anchors, per_sample_weights=ws, mode="sum")
        idx_out[start:start + m] = idx
        w_out[start:start + m] = w
    return idx_out, w_out


def reconstruct(idx: torch.Tensor, w: torch.Tensor, anchors: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """``sum_s w[:, s] A[idx[:, s]]`` for every row (chunked)."""
    return torch.cat([F.embedding_bag(idx[i:i + chunk], anchors, per_sample_weights=w[i:i + chunk], mode="sum")
                      for i in range(0, idx.shape[0], chunk)], 0)


def row_cos(idx: torch.Tensor, w: torch.Tensor, anchors: torch.Tensor, target: torch.Tensor,
            chunk: int = 16384) -> torch.Tensor:
    """Cosine between each reconstructed row and its ``target`` row, block by block (no full reconstruction)."""
    return torch.cat([F.cosine_similarity(F.embedding_bag(idx[i:i + chunk], anchors, per_sample_weights=w[i:i + chunk],
                                                          mode="sum"), target[i:i + chunk], dim=1, eps=1e-12)
                      for i in range(0, idx.shape[0], chunk)], 0)


def mean_cos(idx: torch.Tensor, w: torch.Tensor, anchors: torch.Tensor, target: torch.Tensor) -> float:
    """Mean cosine between the reconstruction and ``target`` rows."""
    return float(row_cos(idx, w, anchors, target).mean())


def mod_update(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, k: int, ridge: float = 1e-4,
               chunk: int = 4096) -> torch.Tensor:
    """Closed-form anchor update ``A = argmin ||T A - X||^2`` for the fixed sparse ``T`` (MOD), unit-normalised.

    ``T^T T`` and ``T^T X`` are accumulated over dense row chunks of T. Anchors no token uses are
    re-seeded with the worst-reconstructed rows.
    """
    n, d = x.shape
    gram = torch.zeros(k, k, dtype=x.dtype, device=x.device)
    rhs = torch.zeros(k, d, dtype=x.dtype, device=x.device)
    for i in range(0, n, chunk):
        t = torch.zeros(min(chunk, n - i), k, dtype=x.dtype, device=x.device)
        t.scatter_add_(1, idx[i:i + chunk], w[i:i + chunk])
        gram += t.T @ t
        rhs += t.T @ x[i:i + chunk]
    eye = torch.eye(k, device=x.device, dtype=x.dtype)
    scale = float(gram.diagonal().mean().clamp_min(1e-12))
    a = torch.linalg.solve(gram + ridge * scale * eye, rhs)
    used = torch.zeros(k, dtype=torch.bool, device=x.device)
    used[idx[w > 0]] = True
    dead = (~used) | (a.norm(dim=1) < 1e-8)
    if bool(dead.any()):
        cos = row_cos(idx, w, F.normalize(a, dim=1), x)
        worst = torch.argsort(cos)[: int(dead.sum())]
        a[dead] = x[worst]
    return F.normalize(a, dim=1)


def refine(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, anchors: torch.Tensor, *, epochs: int, lr: float,
           batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on anchors and support weights with the paper's loss ``1 - mean cos``, weights projected to >= 0."""
    if epochs <= 0:
        return anchors, w
    a = nn.Parameter(anchors.clone())
    wp = nn.Parameter(w.clone())
    opt = torch.optim.Adam([a, wp], lr=lr)
    g = torch.Generator().manual_seed(int(seed))
    n = x.shape[0]
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=g).to(x.device)
            for i in range(0, n, batch_size):
                b = order[i:i + batch_size]
                rec = F.embedding_bag(idx[b], a, per_sample_weights=wp[b], mode="sum")
                loss = 1.0 - F.cosine_similarity(rec, x[b], dim=1, eps=1e-12).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    wp.clamp_(min=0)
    return a.detach(), wp.detach()


def threshold(idx: torch.Tensor, w: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep slots with ``w >= tau`` (at least the largest one per token, weight ``max(w, tau)``).

    Returns ``(idx, w, counts)`` with active slots first in descending weight order; unused slots
    hold anchor id 0 and weight 0.
    """
    w = w.clone()
    active = w >= tau
    none = ~active.any(1)
    if bool(none.any()):
        top = w[none].argmax(1)
        rows = none.nonzero().squeeze(1)
        w[rows, top] = w[rows, top].clamp_min(tau if tau > 0 else 1e-3)
        active[rows, top] = True
    key = torch.where(active, w, torch.full_like(w, -1.0))
    order = torch.argsort(key, dim=1, descending=True, stable=True)
    idx = idx.gather(1, order)
    w = w.gather(1, order)
    active = active.gather(1, order)
    counts = active.sum(1)
    idx = torch.where(active, idx, torch.zeros_like(idx))
    w = torch.where(active, w, torch.zeros_like(w))
    return idx, w, counts


def calibrate(table: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, anchors_stored: torch.Tensor,
              chunk: int = 16384) -> torch.Tensor:
    """Scale each token's weights by the least-squares factor onto its table row (norm-matching if cos <= 0).

    Computed with fp16-rounded weights and the anchors as stored; returns the new float32 weights.
    """
    wq = w.to(torch.float16).float()
    anchors_f = anchors_stored.float()
    out = torch.empty_like(wq)
    for i in range(0, idx.shape[0], chunk):  # block by block: no full reconstruction is held
        rows = slice(i, i + chunk)
        rec = F.embedding_bag(idx[rows], anchors_f, per_sample_weights=wq[rows], mode="sum")
        t = table[rows]
        sq = (rec * rec).sum(1).clamp_min(1e-20)
        scale = (rec * t).sum(1) / sq
        fallback = t.norm(dim=1) / sq.sqrt()
        scale = torch.where(torch.isfinite(scale) & (scale > 0), scale, fallback)
        out[rows] = (wq[rows] * scale.unsqueeze(1)).clamp(max=float(torch.finfo(torch.float16).max))
    return out


def distill(table: torch.Tensor, num_anchors: int, slots: int, *, seed: int, tau: float = DEFAULT_TAU,
            kmeans_iters: int = 10, mod_iters: int = 2, epochs: int = 2, lr: float = 2e-3,
            batch_size: int = 4096, anchor_dtype: torch.dtype = torch.float16) -> Distilled:
    """ADE stage 1 on ``table [V, d]`` (see the module docstring); runs on the table's device."""
    v, d = table.shape
    if not 1 <= num_anchors <= v:
        raise UsageError(f"ADE needs 1 <= K <= V anchors, got K={num_anchors} for V={v}")
    if not 1 <= slots <= num_anchors:
        raise UsageError(f"ADE needs 1 <= S <= K active slots, got S={slots}, K={num_anchors}")
    table = table.detach().float()
    x = F.normalize(table, dim=1, eps=1e-12)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        anchors = spherical_kmeans(x, num_anchors, iters=kmeans_iters, seed=seed)
        history.append({"phase": "kmeans", "seconds": time.perf_counter() - t0})
        for it in range(mod_iters + 1):
            t1 = time.perf_counter()
            idx, w = nn_omp(x, anchors, slots)
            history.append({"phase": f"omp{it}", "cos": mean_cos(idx, w, anchors, x),
                            "seconds": time.perf_counter() - t1})
            if it < mod_iters:
                anchors = mod_update(x, idx, w, num_anchors)
        t1 = time.perf_counter()
        anchors, w = refine(x, idx, w, anchors, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        # unit-norm anchors (norms folded into the weights) so that tau is comparable across tokens
        norms = anchors.norm(dim=1).clamp_min(1e-12)
        anchors = anchors / norms.unsqueeze(1)
        w = w * norms[idx]
        history.append({"phase": "adam", "cos": mean_cos(idx, w, anchors, x), "seconds": time.perf_counter() - t1})
        idx, w, counts = threshold(idx, w, tau)
        stored = anchors.to(anchor_dtype)
        w = calibrate(table, idx, w, stored)
        w = torch.where(torch.arange(w.shape[1], device=w.device) < counts.unsqueeze(1), w, torch.zeros_like(w))
        wq, stored_f = w.to(torch.float16).float(), stored.float()
        err = sum(float(((F.embedding_bag(idx[i:i + 16384], stored_f, per_sample_weights=wq[i:i + 16384], mode="sum")
                          - table[i:i + 16384]) ** 2).sum()) for i in range(0, v, 16384))
        history.append({"phase": "final", "cos": mean_cos(idx, wq, stored_f, table),
                        "rel_mse": err / max(float(torch.linalg.vector_norm(table)) ** 2, 1e-20),
                        "mean_active": float(counts.float().mean()), "seconds": time.perf_counter() - t0})
    finally:
        torch.random.set_rng_state(gen_state)
    return Distilled(anchors=anchors, slot_ids=idx, slot_weights=w, counts=counts, history=history)


# -- budget -> (K, S) -------------------------------------------------------------------------------


def max_slots(v: int, d: int, k: int, budget: int, anchor_dtype: torch.dtype, cap: int = S_MAX) -> int:
    """Largest S <= min(cap, K) with ``ade_stored_bytes(V, d, K, S) <= budget`` (0 when none)."""
    best = 0
    hi = min(cap, k)
    lo = 1
    while lo <= hi:  # bytes grow with S
        mid = (lo + hi) // 2
        if ade_stored_bytes(v, d, k, mid, anchor_dtype) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def max_anchors(v: int, d: int, s: int, budget: int, anchor_dtype: torch.dtype, k_max: int) -> int:
    """Largest K <= k_max (>= S) fitting the budget with S slots, over the id-width regimes (0 when none)."""
    best = 0
    a_bytes = torch.empty((), dtype=anchor_dtype).element_size()
    for lo, hi in ((1, 256), (257, 32768), (32769, 1 << 31)):
        hi = min(hi, k_max)
        if lo > hi:
            continue
        fixed = ade_stored_bytes(v, d, lo, s, anchor_dtype) - lo * d * a_bytes  # slots + counts at this id width
        k = min(hi, (budget - fixed) // (d * a_bytes))
        if k >= max(lo, s):
            best = max(best, int(k))
    return best


def choose(v: int, d: int, budget: int, anchor_dtype: torch.dtype) -> tuple[int, int] | None:
    """The default (K, S) rule (docs/ade.md): S0 = min(8, the most slots K = 100 allows); K = the most
    anchors (<= 700; a multiple of 8 below that) that fit S0 slots; then S = the most slots (<= 64) that K allows.
    None when not even ``K = min(8, V)``, ``S = 1`` fits."""
    k_cap = min(K_MAX, v)
    k_pref = min(K_PREF_MIN, k_cap)
    s0 = min(S_TARGET, max_slots(v, d, k_pref, budget, anchor_dtype))
    if s0 < 1:
        s0 = 1
    k = max_anchors(v, d, s0, budget, anchor_dtype, k_cap)
    if 16 <= k < k_cap:
        k -= k % 8
    if k < min(K_ABS_MIN, v):
        return None
    s = max_slots(v, d, k, budget, anchor_dtype)
    return (k, s) if s >= 1 else None


# -- registry entries -----------------------------------------------------------------------------


class _ADEOptions(MethodOptions):
    anchors: int | None = opt(None, "K, the number of anchors (unset: from the budget, 100..700)", at_least(1))
    max_active: int | None = opt(None, "S, the cap on active anchors per token (unset: from the budget)",
                                 at_least(1))
    anchor_dtype: Literal["float16", "float32"] = opt("float16", "anchor storage without fine-tuning (trained "
                                                                 "anchors: float32)")
    tau: float = opt(DEFAULT_TAU, "stage-1 threshold on the unit-scale weights", non_negative())
    train_anchors: bool = opt(True, "train track: fine-tune the anchors (Section 4.2; false = frozen, Appendix C)")
    kmeans_iters: int = opt(10, "stage-1 k-means iterations", at_least(1))
    mod_iters: int = opt(2, "stage-1 alternations of NN-OMP coding and the MOD anchor update (0 skips them)",
                         at_least(0))
    epochs: int = opt(2, "stage-1 Adam epochs over the vocabulary with the 1 - cos loss (0 skips them)", at_least(0))
    residual: bool = opt(True, "train track: residual connection around SAT")


class _ADEBase(Method):
    """Shared configure / compress / build of ``ade`` and ``ade-merged``.

    Memory (posthoc, issue 23): NN-OMP runs in blocks of 8,192 rows, and stage 1's cosine checks, the
    calibration and the final metrics reconstruct block by block (``row_cos``, ``calibrate``), so the fit holds
    the table, its unit-norm copy and fixed-size blocks. Fit peak on the scale grid's 131,072 x 768 table
    (384 MiB in fp32): 2,370 MB when those steps reconstructed the whole table, 874 MB (2.2x) now, with a
    bit-identical module (fidelity 0.643166 both). The default estimate (3x the table plus 256 MiB) holds.
    """

    variant = "anchor"
    Options = _ADEOptions

    def _anchor_dtype(self) -> torch.dtype:
        """Anchor storage dtype without fine-tuning (posthoc, or train with frozen anchors)."""
        return _DTYPES[self.option("anchor_dtype")]

    def _size(self, v: int, d: int, budget_bytes: int, adt: torch.dtype) -> dict[str, Any]:
        """(K, S) for one anchor dtype: the user's ``anchors`` / ``max_active`` or the default rule."""
        forced_k = self.option("anchors") or 0  # 0: from the budget
        forced_s = self.option("max_active") or 0
        if forced_k > v:
            raise UsageError(f"option anchors={forced_k} exceeds the vocabulary size {v}")
        if forced_k and forced_s > forced_k:
            raise UsageError(f"option max_active={forced_s} exceeds anchors={forced_k}")
        if forced_k or forced_s:
            k = forced_k or max_anchors(v, d, forced_s, budget_bytes, adt, min(K_MAX, v))
            if not k:
                raise self.unattainable(v, d, budget_bytes, ade_stored_bytes(v, d, max(forced_s, 1), forced_s, adt))
            s = forced_s or max_slots(v, d, k, budget_bytes, adt)
            need = ade_stored_bytes(v, d, k, max(s, 1), adt)
            if s < 1 or need > budget_bytes:
                raise self.unattainable(v, d, budget_bytes, need)
        else:
            pick = choose(v, d, budget_bytes, adt)
            if pick is None:
                raise self.unattainable(v, d, budget_bytes, ade_stored_bytes(v, d, min(K_ABS_MIN, v), 1, adt))
            k, s = pick
        return {"anchors": k, "max_active": s, "anchor_dtype": str(adt).replace("torch.", ""),
                "id_dtype": str(index_dtype(k)).replace("torch.", ""), "weight_dtype": "float16",
                "count_dtype": "uint8" if s <= 255 else "int16", "expected_bytes": ade_stored_bytes(v, d, k, s, adt)}

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """For the harness' tuning on validation data (posthoc): the default (K, S) rule; K = 255 (uint8 anchor
        ids: the bytes saved buy active slots) and K = 512 (more anchors, fewer slots); tau halved and doubled; two
        more stage-1 epochs. Unattainable candidates are skipped by the harness."""
        return [{}, {"anchors": 255}, {"anchors": 512}, {"tau": DEFAULT_TAU / 2}, {"tau": DEFAULT_TAU * 2},
                {"epochs": 4}]

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        """Sizing for posthoc / frozen anchors at the top level; ``train`` holds the train-track sizing
        (fp32 anchors when ``train_anchors``, the default, since fine-tuned anchors are stored in fp32)."""
        v, d = num_embeddings, embedding_dim
        tau = self.option("tau")
        train_anchors = self.option("train_anchors")
        sizes: list[dict[str, Any]] = []
        mins: list[int] = []
        for adt in (self._anchor_dtype(), torch.float32) if train_anchors else (self._anchor_dtype(),):
            try:
                sizes.append(self._size(v, d, budget_bytes, adt))
            except UnattainableBudgetError as exc:  # both sizings must fit: name the larger minimum
                mins.append(exc.min_bytes)
        if mins:
            raise self.unattainable(v, d, budget_bytes, max(mins))
        frozen, train = sizes[0], sizes[-1]
        return {
            "variant": self.variant,
            **frozen,
            "layout": "vp-slots",
            "stage1": {"tau": tau, "loss": "1 - mean cos over vocabulary rows", "init": "spherical k-means + NN-OMP",
                       "kmeans_iters": self.option("kmeans_iters"), "mod_iters": self.option("mod_iters"),
                       "epochs": self.option("epochs")},
            "train": {**train, "train_anchors": train_anchors, "weights": "fixed (stage 1)",
                      "positional": "sinusoidal GPE (anchors share their word's position)" if self.variant == "anchor"
                      else "sinusoidal word positions (GPE after merging)",
                      "sat": {"layers": 1, "heads": 8, "ffn": None, "residual": self.option("residual")},
                      "pooling": "attention", "dropout": 0.1},
        }

    def _distill(self, table: torch.Tensor, config: Mapping[str, Any], seed: int, train: bool) -> ADEEmbedding:
        size = config["train"] if train else config
        adt = _DTYPES[str(size["anchor_dtype"])]
        st = config["stage1"]
        res = distill(table, int(size["anchors"]), int(size["max_active"]), seed=seed, tau=float(st["tau"]),
                      kmeans_iters=int(st["kmeans_iters"]), mod_iters=int(st["mod_iters"]), epochs=int(st["epochs"]),
                      anchor_dtype=adt)
        emb = ADEEmbedding(res.anchors.to(adt), res.slot_ids, res.slot_weights, res.counts,
                           train_anchors=train and bool(config["train"]["train_anchors"]))
        emb.fit_history = res.history  # not state: a report of the fit
        return emb

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        self.require("posthoc")
        return self._distill(table, config, seed, train=False)

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        self.require("train")
        if init_table is None:
            raise UsageError(f"method '{self.card.name}' distils a pretrained table in the train track "
                             "(build() needs init_table; the train runner passes the MiniLM table)")
        if tuple(init_table.shape) != (num_embeddings, embedding_dim):
            raise UsageError(f"init_table is {tuple(init_table.shape)}, expected ({num_embeddings}, {embedding_dim})")
        return self._distill(init_table, config, seed, train=True)

    def lookup_variants(self, module: CompressedEmbedding) -> dict[str, nn.Module]:
        """The naive two-stage CSR lookup of the same dictionary (the baseline of the VP slot table)."""
        return {"naive": module.to_csr()} if isinstance(module, ADEEmbedding) else {}

    def custom_classifier(self, embedding: CompressedEmbedding, num_classes: int, config: Mapping[str, Any], *,
                          seed: int) -> nn.Module | None:
        if not isinstance(embedding, ADEEmbedding):
            raise UsageError(f"method '{self.card.name}' needs an ADEEmbedding, got {type(embedding).__name__}")
        head = config.get("train") or {}
        sat = head.get("sat") or {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return ADEClassifier(embedding, num_classes, variant=self.variant, heads=int(sat.get("heads", 8)),
                                 dropout=float(head.get("dropout", 0.1)), residual=bool(sat.get("residual", True)))


@METHODS.register("ade")
class ADE(_ADEBase):
    """ADE with anchor-level attention (Section 3.5): SAT over every anchor, Grouped Positional Encoding."""

    variant = "anchor"
    card = MethodCard(
        name="ade",
        version=1,
        family="dictionary",
        reference=PAPER,
        modes=("posthoc", "train"),
        description="sparse non-negative anchor dictionary (K anchors, <= S per token, VP slot table); "
                    "train: anchor-level SAT + GPE + attention pooling",
        train_init="pretrained",
        train_head="own:SAT",
    )


@METHODS.register("ade-merged")
class ADEMerged(_ADEBase):
    """ADE as in the paper's Algorithm 1: anchors merged into word vectors before SAT (GPE = ordinary PE)."""

    variant = "merged"
    card = MethodCard(
        name="ade-merged",
        version=1,
        family="dictionary",
        reference=PAPER,
        modes=("train",),
        description="ADE, Algorithm 1 ordering: ScatterAdd anchors -> LayerNorm -> PE -> SAT over words -> pooling",
        train_init="pretrained",
        train_head="own:SAT",
    )


__all__ = ["ADE", "ADEMerged", "Distilled", "VARIANTS", "calibrate", "choose", "distill", "max_anchors", "max_slots",
           "mod_update", "nn_omp", "refine", "spherical_kmeans", "threshold"]
