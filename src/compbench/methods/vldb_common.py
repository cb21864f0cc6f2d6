"""Shared pieces of the VLDB'24 benchmark's train-track families (``robe``, ``mde``, ``dpq``, ``mgqe``, ``pep``,
``deeplight``, ``alpt``, ``optembed``; Zhang et al., "Experimental Analysis of Large-scale Learnable Vector
Storage Compression", PVLDB 17(4), 2024; code: Hsword/Hetu ``tools/EmbeddingMemoryCompression``).

What is here:

- :class:`TrainScaffold`: a holder for *training-only* tensors that never enter the ``state_dict``. Several of
  these methods train a full-precision working copy and store something else: DPQ/MGQE train a query table
  and store discrete codes; PEP/DeepLight train a dense table and store a sparse one; ALPT keeps an fp32
  working copy that is re-projected onto its integer grid after every update. Such a working copy is like the
  optimizer's moments: memory while training, discarded after. It costs 0 stored bytes, and the module's
  eval-mode forward never reads it (tests check that).
- :class:`ScaffoldedEmbedding`: the "train on the scaffold, serve from the stored form" pattern. A training
  forward (train mode with grad enabled) marks the stored form stale; the next eval-mode forward rebuilds it
  from the scaffold (:meth:`ScaffoldedEmbedding.sync`); loading a state_dict makes the loaded stored form
  authoritative (the harness restores the best-validation state that way).
- frequency helpers over the shipped token-frequency table (``compbench.datasets.frequencies.load_token_frequencies``).
- bit packing of small integer codes per row, a fixed-capacity CSR store, stochastic rounding, a pruning
  schedule and :func:`add_loss` (an auxiliary loss term added through autograd, since the harness computes the
  task loss only).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from compbench.datasets.frequencies import load_token_frequencies
from compbench.methods.method_base import CompressedEmbedding

# -- training-only tensors ---------------------------------------------------------------------------


class TrainScaffold(nn.Module):
    """Training-only parameters and buffers: never saved to, nor expected in, a ``state_dict`` (0 bytes).

    It must stay a leaf module (no children): ``load_state_dict`` visits children on its own, and a child's
    tensors would be reported missing.
    """

    def add_module(self, name: str, module: nn.Module | None) -> None:  # pragma: no cover - guard
        raise TypeError("a TrainScaffold holds tensors only, no submodules")

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        return  # nothing of the scaffold is stored

    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        return  # and nothing is expected back


class ScaffoldedEmbedding(CompressedEmbedding, ABC):
    """A compressed embedding trained through a :class:`TrainScaffold` and served from its stored form.

    Subclasses implement :meth:`train_forward` (train mode, grad enabled; may read the scaffold),
    :meth:`stored_forward` (reads the state_dict only) and :meth:`sync` (rebuild the stored form from the
    scaffold). ``training_steps`` counts training forwards (one per optimizer step in the harness).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__(num_embeddings, embedding_dim)
        self.scaffold = TrainScaffold()
        self.stale = False  # the stored form lags the scaffold (a training step happened since the last sync)
        self.training_steps = 0

    @abstractmethod
    def train_forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The training-time lookup (through the scaffold)."""

    @abstractmethod
    def stored_forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The lookup from the stored form only."""

    @abstractmethod
    def sync(self) -> None:
        """Rebuild the stored form (state_dict tensors) from the scaffold."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.stale = True
            out = self.train_forward(ids)
            self.training_steps += 1
            return out
        if self.stale:
            with torch.no_grad():
                self.sync()
            self.stale = False
        return self.stored_forward(ids)

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        if self.stale:
            self.sync()
            self.stale = False
        dev = next((t.device for t in self.state_dict().values()), torch.device("cpu"))
        parts = [self.stored_forward(torch.arange(s, min(s + chunk, self.num_embeddings), device=dev)).float()
                 for s in range(0, self.num_embeddings, chunk)]
        return torch.cat(parts, 0)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.stale = False  # the loaded stored form is authoritative
        self.after_load()

    def after_load(self) -> None:
        """Recompute caches derived from the stored form (none by default)."""


class AddLoss(torch.autograd.Function):
    """``out`` unchanged in the forward; in the backward, ``loss`` receives gradient 1.

    Adds ``loss`` to whatever loss ``out`` flows into (the harness' task loss), so an auxiliary term (DPQ-VQ's
    codebook loss, OptEmbed's threshold regulariser) is trained without a harness hook.
    """

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        ctx.loss_shape = loss.shape
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, torch.ones(ctx.loss_shape, dtype=grad.dtype, device=grad.device)


def add_loss(out: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """``out``, with ``loss`` added to the training objective (see :class:`AddLoss`)."""
    return AddLoss.apply(out, loss)


# -- token frequencies -------------------------------------------------------------------------------


def token_counts(num_embeddings: int) -> np.ndarray:
    """Counts of ids ``0..V-1`` in the shipped calibration corpus (train splits of the shipped datasets).

    The table was counted for MiniLM's 30,522-token WordPiece vocabulary; for another ``V`` the counts of
    ids below ``V`` are used and missing ids count 0 (deterministic, so derivable state stays derivable).
    """
    counts = load_token_frequencies().counts
    out = np.zeros(int(num_embeddings), dtype=np.int64)
    n = min(len(counts), int(num_embeddings))
    out[:n] = counts[:n]
    return out


def frequency_order(counts: np.ndarray) -> np.ndarray:
    """Ids by decreasing count, ties by increasing id (a stable, deterministic ranking)."""
    return np.lexsort((np.arange(len(counts)), -counts)).astype(np.int64)


def geometric_block_sizes(num_embeddings: int, blocks: int) -> list[int]:
    """Sizes of ``blocks`` frequency blocks over ranks: halving towards the head (``V/2^(k-1), V/2^(k-1),
    V/2^(k-2), ..., V/2``), at least one id each; fewer blocks when ``V`` is too small."""
    v = int(num_embeddings)
    k = max(1, min(int(blocks), v))
    bounds = [max(1, round(v / 2 ** (k - i))) for i in range(1, k)] + [v]
    out, prev = [], 0
    for b in bounds:
        b = max(b, prev + 1)
        if b > v:
            break
        out.append(b - prev)
        prev = b
    if prev < v:
        out[-1] += v - prev
    return out


def blocks_by_frequency(counts: np.ndarray, blocks: int) -> tuple[np.ndarray, list[int]]:
    """``(block id of every id, block sizes)``: ids ranked by ``counts`` (most frequent first), cut geometrically."""
    order = frequency_order(counts)
    sizes = geometric_block_sizes(len(counts), blocks)
    block_of = np.empty(len(counts), dtype=np.int64)
    start = 0
    for b, n in enumerate(sizes):
        block_of[order[start:start + n]] = b
        start += n
    return block_of, sizes


def frequency_blocks(num_embeddings: int, blocks: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """``(block id of every id, counts, block sizes)``: ids ranked by shipped frequency, cut geometrically."""
    counts = token_counts(num_embeddings)
    block_of, sizes = blocks_by_frequency(counts, blocks)
    return block_of, counts, sizes


def rows_within(groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """For every id, its row among the ids of its group in id order (``groups`` long ``[V]``)."""
    onehot = nn.functional.one_hot(groups.long(), num_groups)  # [V, G]
    ranks = onehot.cumsum(0) - 1
    return ranks.gather(1, groups.long().unsqueeze(1)).squeeze(1)


# -- bit packing of small codes, row by row ---------------------------------------------------------


def bits_for(k: int) -> int:
    """Bits per code for ``k`` choices: ``max(1, ceil(log2 k))``."""
    return max(1, (int(k) - 1).bit_length())


def row_stride(width: int, bits: int) -> int:
    """Bytes per packed row of ``width`` codes of ``bits`` bits (rows are byte-aligned)."""
    return (int(width) * int(bits) + 7) // 8


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer ``codes [n, m]`` (``0 <= c < 2^bits``, ``bits <= 16``) little-endian into ``uint8 [n, stride]``."""
    n, m = codes.shape
    c = codes.long()
    if 8 % bits == 0:  # fast path: whole codes per byte (the same little-endian layout)
        per = 8 // bits
        pad = (-m) % per
        cc = nn.functional.pad(c, (0, pad)).reshape(n, -1, per)
        sh = torch.arange(per, device=c.device) * bits
        return (cc << sh).sum(-1).to(torch.uint8)
    shifts = torch.arange(bits, device=c.device)
    bitv = ((c.unsqueeze(-1) >> shifts) & 1).to(torch.uint8).reshape(n, m * bits)
    stride = row_stride(m, bits)
    pad = stride * 8 - m * bits
    if pad:
        bitv = nn.functional.pad(bitv, (0, pad))
    weights = (1 << torch.arange(8, device=c.device)).to(torch.int32)
    return (bitv.reshape(n, stride, 8).to(torch.int32) * weights).sum(-1).to(torch.uint8)


def unpack_rows(packed: torch.Tensor, bits: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_rows`: ``uint8 [n, stride]`` -> long ``[n, width]``."""
    n = packed.shape[0]
    if 8 % bits == 0:  # fast path: whole codes per byte
        per = 8 // bits
        sh = torch.arange(per, device=packed.device) * bits
        return ((packed.long().unsqueeze(-1) >> sh) & ((1 << bits) - 1)).reshape(n, -1)[:, :width]
    shifts = torch.arange(8, device=packed.device)
    bitv = ((packed.long().unsqueeze(-1) >> shifts) & 1).reshape(n, -1)[:, : width * bits]
    weights = 1 << torch.arange(bits, device=packed.device)
    return (bitv.reshape(n, width, bits) * weights).sum(-1)


def pack_vector(values: torch.Tensor, bits: int) -> torch.Tensor:
    """A long vector ``[V]`` of ``bits``-bit values as one packed bitstring ``uint8 [ceil(V bits / 8)]``."""
    return pack_rows(values.reshape(1, -1), bits).reshape(-1)


def unpack_vector(packed: torch.Tensor, bits: int, length: int) -> torch.Tensor:
    """Inverse of :func:`pack_vector`."""
    return unpack_rows(packed.reshape(1, -1), bits, length).reshape(-1)


# -- a fixed-capacity CSR store (values + column indices + per-row counts) ---------------------------


def csr_dtypes(embedding_dim: int) -> tuple[torch.dtype, torch.dtype]:
    """(column index dtype, per-row count dtype): uint8 while ``d <= 255`` (counts reach ``d``), else int16."""
    small = int(embedding_dim) <= 255
    return (torch.uint8 if small else torch.int16), (torch.uint8 if small else torch.int16)


def csr_bytes(num_embeddings: int, embedding_dim: int, capacity: int) -> int:
    """Stored bytes of a CSR store: fp32 value + column index per slot, one count per row."""
    col, cnt = csr_dtypes(embedding_dim)
    col_b = torch.empty((), dtype=col).element_size()
    cnt_b = torch.empty((), dtype=cnt).element_size()
    return int(capacity) * (4 + col_b) + int(num_embeddings) * cnt_b


def csr_capacity(num_embeddings: int, embedding_dim: int, budget_bytes: int) -> int:
    """The most non-zeros a CSR store can hold in ``budget_bytes`` (capped at ``V d``; may be <= 0)."""
    per = csr_bytes(0, embedding_dim, 1)
    room = int(budget_bytes) - csr_bytes(num_embeddings, embedding_dim, 0)
    return min(room // per, int(num_embeddings) * int(embedding_dim))


@torch.no_grad()
def csr_fill(values: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor, table: torch.Tensor,
             score: torch.Tensor) -> int:
    """Write the non-zeros of ``table [V, d]`` into the store in place, keeping at most ``capacity`` of them
    (those with the largest ``score``; a zero entry is never kept). Returns how many were kept."""
    v, d = table.shape
    cap = values.numel()
    flat = table.reshape(-1)
    sc = torch.where(flat != 0, score.reshape(-1).float(), torch.full_like(flat, -math.inf, dtype=torch.float32))
    nnz = int((flat != 0).sum())
    keep_n = min(cap, nnz)
    if keep_n < nnz:
        idx = torch.topk(sc, keep_n, sorted=False).indices
    else:
        idx = (flat != 0).nonzero().reshape(-1)
    idx, _ = torch.sort(idx)
    values.zero_()
    cols.zero_()
    values[:keep_n] = flat[idx].to(values.dtype)
    cols[:keep_n] = (idx % d).to(cols.dtype)
    counts.copy_(torch.bincount(idx // d, minlength=v).to(counts.dtype))
    return keep_n


def csr_lookup(values: torch.Tensor, cols: torch.Tensor, counts: torch.Tensor, ids: torch.Tensor,
               embedding_dim: int) -> torch.Tensor:
    """Rows ``ids`` of the CSR store, densified: ``[..., d]``."""
    flat = ids.reshape(-1)
    uniq, inverse = torch.unique(flat, return_inverse=True)
    cnt_all = counts.long()
    starts = cnt_all.cumsum(0) - cnt_all
    c = cnt_all[uniq]
    s = starts[uniq]
    total = int(c.sum())
    out = torch.zeros(uniq.numel(), embedding_dim, dtype=values.dtype, device=values.device)
    if total:
        n = uniq.numel()
        row = torch.repeat_interleave(torch.arange(n, device=flat.device), c)
        first = c.cumsum(0) - c  # where each row's slots start in the gathered list
        pos = torch.repeat_interleave(s - first, c) + torch.arange(total, device=flat.device)
        out[row, cols[pos].long()] = values[pos]
    return out[inverse].reshape(*ids.shape, embedding_dim)


# -- rounding, schedules ------------------------------------------------------------------------------


def stochastic_round(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``floor(x + u)``, ``u ~ U[0, 1)`` drawn from ``generator``: unbiased rounding (E = x)."""
    u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return torch.floor(x + u.to(x.device))


def step_generator(seed: int, step: int, device: torch.device) -> torch.Generator:
    """A generator for one training step: seeded from (seed, step), so no generator object is kept as state."""
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(step)) % (2**63 - 1))
    return g


DEVIATION = 1e-3  # DeepLight's stop_deviation in the VLDB benchmark


def ramp_sparsity(step: int, ramp_steps: int, target: float) -> float:
    """DeepLight's sparsity schedule ``target (1 - 0.99^(t / tau))``, with ``tau`` compressed so that the
    deviation from ``target`` is 1e-3 at ``ramp_steps`` (DeepLight: tau = 100 iterations, i.e. 68,700 iterations
    to that deviation); exactly ``target`` from ``ramp_steps`` on."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return float(target)
    tau = ramp_steps / (math.log(DEVIATION) / math.log(0.99))
    return float(target) * (1.0 - 0.99 ** (step / tau))


def divisors(n: int) -> list[int]:
    """Positive divisors of ``n``, ascending."""
    return [k for k in range(1, int(n) + 1) if n % k == 0]


def as_int_list(values: Sequence[Any]) -> list[int]:
    """``[int(v) for v in values]`` (config lists come back from JSON as lists)."""
    return [int(v) for v in values]


__all__ = [
    "AddLoss", "ScaffoldedEmbedding", "TrainScaffold", "add_loss", "as_int_list", "bits_for", "csr_bytes",
    "csr_capacity", "csr_dtypes", "csr_fill", "csr_lookup", "divisors", "frequency_blocks", "frequency_order",
    "geometric_block_sizes", "pack_rows", "pack_vector", "ramp_sparsity", "row_stride", "rows_within",
    "step_generator", "stochastic_round", "token_counts", "unpack_rows", "unpack_vector",
]
