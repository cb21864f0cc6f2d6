"""ADE modules: the anchor dictionary with its Vocabulary-Projection lookup, GPE, SAT and the classifiers.

Stored format of :class:`ADEEmbedding` (exactly its ``state_dict``, so the harness counts it):

- ``anchors``       ``[K, d]`` float16 or float32 -- the shared anchor vectors A;
- ``slot_ids``      ``[V, S]`` uint8 (K <= 256), int16 (K <= 32768) or int32 -- each token's active anchors;
- ``slot_weights``  ``[V, S]`` float16 -- their non-negative weights beta (0 in unused slots);
- ``counts``        ``[V]`` uint8 (S <= 255) or int16 -- the number of active anchors k_i (>= 1).

This is the paper's *Vocabulary Projection* (VP) table in its compact form: one indexed read of a
token's row returns its anchors and weights at fixed width S (active slots first, the rest padded
with anchor 0 and weight 0), and one fused weighted gather-sum (``F.embedding_bag`` with
``per_sample_weights``) produces ``sum_j beta_ij A_j``. The paper's flattened ``V x (K d)`` table
copies the anchor vectors per word; we keep the anchors shared and store only the slot table (its
Table 2 storage figures count the same thing: anchors plus index/weight pairs).

:class:`CSRAnchors` is the naive two-stage lookup it replaces: first find a token's anchors in a
CSR structure (offsets, then a variable-length slice), then gather and sum them. Both paths feed the
same gather-sum kernel with the same anchors in the same order (zero-weight padding adds exact
zeros), so their outputs are bitwise equal (tested).

Classifiers (the paper's stage 3, both orderings of its inconsistent description):

- ``anchor`` (Section 3.5, registry ``ade``): expand each word into its k_i anchors scaled by beta,
  normalise, add Grouped Positional Encoding (every anchor of word i gets position i), one
  Segment-Aware Transformer layer (8-head self-attention, no feed-forward) over all anchors, sum
  each word's anchors back into a word vector, attention pooling over words, dropout, linear.
- ``merged`` (Algorithm 1, registry ``ade-merged``): ScatterAdd the beta-scaled anchors into word
  vectors, LayerNorm, positional encoding (GPE reduces to the ordinary word position here), SAT over
  words, attention pooling, dropout 0.1, linear.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compbench.errors import UsageError
from compbench.methods.method_base import CompressedEmbedding
from compbench.models.classifier import sinusoidal_positions

VARIANTS = ("anchor", "merged")


def index_dtype(num_anchors: int) -> torch.dtype:
    """Narrowest integer dtype that holds anchor ids ``0..K-1``: uint8, int16 or int32."""
    if num_anchors <= 256:
        return torch.uint8
    if num_anchors <= 32768:
        return torch.int16
    return torch.int32


def count_dtype(slots: int) -> torch.dtype:
    """Dtype of the per-token active-anchor counts: uint8 when ``slots <= 255``, else int16."""
    return torch.uint8 if slots <= 255 else torch.int16


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def ade_stored_bytes(num_embeddings: int, embedding_dim: int, num_anchors: int, slots: int,
                     anchor_dtype: torch.dtype = torch.float16) -> int:
    """Stored bytes of an :class:`ADEEmbedding`: anchors + fixed-width slot ids and fp16 weights + counts.

    ``K d b_anchor + V S (b_id + 2) + V b_count`` with ``b_id`` from :func:`index_dtype` and ``b_count``
    from :func:`count_dtype`.
    """
    per_slot = dtype_bytes(index_dtype(num_anchors)) + 2
    return (num_anchors * embedding_dim * dtype_bytes(anchor_dtype) + num_embeddings * slots * per_slot
            + num_embeddings * dtype_bytes(count_dtype(slots)))


def csr_stored_bytes(num_embeddings: int, embedding_dim: int, num_anchors: int, nnz: int,
                     anchor_dtype: torch.dtype = torch.float16) -> int:
    """Stored bytes of the CSR form: anchors + ``nnz`` (id, fp16 weight) pairs + ``V + 1`` int32 offsets."""
    return (num_anchors * embedding_dim * dtype_bytes(anchor_dtype) + nnz * (dtype_bytes(index_dtype(num_anchors)) + 2)
            + (num_embeddings + 1) * 4)


def grouped_positions(counts: torch.Tensor) -> torch.Tensor:
    """Grouped Positional Encoding indices: word i's k_i anchors all get position i.

    ``counts = [3, 1, 4] -> [0, 0, 0, 1, 2, 2, 2, 2]``.
    """
    counts = counts.reshape(-1).long()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)


class ADEEmbedding(CompressedEmbedding):
    """Sparse non-negative anchor combinations ``E[i] = sum_j beta_ij A_j`` with a VP slot table.

    Args:
        anchors: ``[K, d]`` anchor vectors (stored in their dtype, float16 or float32).
        slot_ids: ``[V, S]`` anchor ids (any integer dtype; stored as :func:`index_dtype` of K).
        slot_weights: ``[V, S]`` non-negative weights (stored as float16); unused slots must be 0.
        counts: ``[V]`` active anchors per token, >= 1; active slots come first.
        train_anchors: whether ``anchors`` receives gradients (train track; the paper's Appendix C freezes them).
    """

    def __init__(self, anchors: torch.Tensor, slot_ids: torch.Tensor, slot_weights: torch.Tensor,
                 counts: torch.Tensor, train_anchors: bool = False):
        v, s = slot_ids.shape
        k, d = anchors.shape
        super().__init__(v, d)
        if slot_weights.shape != slot_ids.shape or counts.shape != (v,):
            raise UsageError("ADEEmbedding: slot_ids, slot_weights [V, S] and counts [V] must agree")
        if v and (int(counts.min()) < 1 or int(counts.max()) > s):
            raise UsageError(f"ADEEmbedding: every token needs 1..{s} active anchors")
        if slot_ids.numel() and (int(slot_ids.min()) < 0 or int(slot_ids.max()) >= k):
            raise UsageError(f"ADEEmbedding: anchor ids must lie in 0..{k - 1}")
        if anchors.dtype not in (torch.float16, torch.float32):
            raise UsageError(f"ADEEmbedding: anchors must be float16 or float32, got {anchors.dtype}")
        if train_anchors and anchors.dtype != torch.float32:
            raise UsageError("ADEEmbedding: trained anchors must be stored in float32")
        self.num_anchors, self.slots = k, s
        self.anchors = nn.Parameter(anchors.detach().clone().contiguous(), requires_grad=train_anchors)
        self.register_buffer("slot_ids", slot_ids.to(index_dtype(k)).contiguous())
        self.register_buffer("slot_weights", slot_weights.to(torch.float16).contiguous())
        self.register_buffer("counts", counts.to(count_dtype(s)).contiguous())

    # -- Vocabulary Projection ------------------------------------------------------------------
    def anchor_matrix(self) -> torch.Tensor:
        """The anchors as float32 ``[K, d]`` (a no-op view when stored in float32)."""
        return self.anchors.float()

    def lookup(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """VP lookup: ``(anchor ids long [..., S], beta float32 [..., S], counts long [...])`` -- one row read."""
        return self.slot_ids[ids].long(), self.slot_weights[ids].float(), self.counts[ids].long()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        a_ids = self.slot_ids[flat].int()
        beta = self.slot_weights[flat].float()
        out = F.embedding_bag(a_ids, self.anchor_matrix(), per_sample_weights=beta, mode="sum")
        return out.reshape(*ids.shape, self.embedding_dim)

    def expand(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor-level view: ``(beta_ij A_j [..., S, d], slot mask [..., S])`` (masked slots are 0)."""
        a_ids, beta, counts = self.lookup(ids)
        valid = torch.arange(self.slots, device=ids.device) < counts.unsqueeze(-1)
        x = F.embedding(a_ids, self.anchor_matrix()) * (beta * valid).unsqueeze(-1)
        return x, valid

    def to_csr(self) -> CSRAnchors:
        """The same dictionary in CSR form (for the naive two-stage lookup and its benchmark)."""
        return CSRAnchors.from_slots(self)

    def active_stats(self) -> dict[str, float]:
        """Mean / min / max active anchors per token and total non-zeros."""
        c = self.counts.long()
        return {"mean_active": float(c.float().mean()), "min_active": int(c.min()), "max_active": int(c.max()),
                "nnz": int(c.sum())}


class CSRAnchors(CompressedEmbedding):
    """The naive two-stage ADE lookup over a CSR dictionary (benchmark baseline of VP).

    Stored: ``anchors``, ``offsets`` int32 ``[V + 1]``, ``ids`` / ``weights`` ``[nnz]`` (same id dtype, fp16).
    ``forward`` first finds each token's anchors (``offsets[i] .. offsets[i + 1]``, a ragged slice
    expanded with ``repeat_interleave``), then gathers and sums them (``embedding_bag`` with offsets).
    """

    def __init__(self, anchors: torch.Tensor, offsets: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor):
        super().__init__(offsets.numel() - 1, anchors.shape[1])
        self.anchors = nn.Parameter(anchors.detach().clone(), requires_grad=False)
        self.register_buffer("offsets", offsets.to(torch.int32).contiguous())
        self.register_buffer("ids", ids.to(index_dtype(anchors.shape[0])).contiguous())
        self.register_buffer("weights", weights.to(torch.float16).contiguous())

    @classmethod
    def from_slots(cls, emb: ADEEmbedding) -> CSRAnchors:
        """Convert a VP slot table into CSR (active slots only, in slot order)."""
        counts = emb.counts.long()
        valid = torch.arange(emb.slots, device=counts.device) < counts.unsqueeze(1)
        offsets = torch.zeros(emb.num_embeddings + 1, dtype=torch.long, device=counts.device)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(emb.anchors.detach(), offsets, emb.slot_ids[valid], emb.slot_weights[valid])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        # stage 1: find the anchors of every token (ragged slices of the CSR arrays)
        starts = self.offsets[flat].long()
        counts = self.offsets[flat + 1].long() - starts
        bag_offsets = torch.cumsum(counts, 0) - counts
        total = int(counts.sum())
        pos = torch.repeat_interleave(starts - bag_offsets, counts, output_size=total)
        pos = pos + torch.arange(total, device=flat.device)
        a_ids = self.ids[pos].int()
        beta = self.weights[pos].float()
        # stage 2: gather the anchor vectors and sum them per token
        out = F.embedding_bag(a_ids, self.anchors.float(), bag_offsets.int(), per_sample_weights=beta, mode="sum")
        return out.reshape(*ids.shape, self.embedding_dim)


class SegmentAwareTransformer(nn.Module):
    """SAT: one multi-head self-attention layer (Q, K, V, O projections; no feed-forward), residual.

    Parameters: ``4 (d^2 + d)`` (591,360 at d = 384; 2,362,368 at the paper's d = 768).
    """

    def __init__(self, d: int, heads: int = 8, residual: bool = True):
        super().__init__()
        if d % heads:
            raise UsageError(f"SAT: {heads} heads must divide d={d}")
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.residual = residual

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x [B, N, d]``, ``mask [B, N]`` (True = real element) -> ``[B, N, d]`` (padding rows are junk)."""
        # a row with no element at all would give NaN attention; give it one dummy key (its output is masked later)
        empty = ~mask.any(1)
        key_pad = ~mask
        if bool(empty.any()):
            key_pad = key_pad.clone()
            key_pad[empty, 0] = False
        h, _ = self.attn(x, x, x, key_padding_mask=key_pad, need_weights=False)
        return x + h if self.residual else h

    def forward_packed(self, x: torch.Tensor, row: torch.Tensor, pos: torch.Tensor, rows: int,
                       group_rows: int = 16) -> torch.Tensor:
        """The same layer on a variable-length batch: ``x [T, d]`` holds the real elements of ``rows``
        sequences, element t being position ``pos[t]`` of sequence ``row[t]`` -> ``[T, d]``.

        The Q/K/V and output projections run on the T real elements only. For the attention itself the
        sequences are sorted by length and cut into groups of ``group_rows``; each group is padded to its
        own longest sequence (padding keys masked). Sequences do not interact, so this equals
        :meth:`forward` on the fully padded batch up to float rounding (tested) at a fraction of the
        cost when lengths vary. The parameters are those of :attr:`attn`.
        """
        t, d = x.shape
        heads = self.attn.num_heads
        qkv = F.linear(x, self.attn.in_proj_weight, self.attn.in_proj_bias)  # [T, 3d]
        lengths = torch.bincount(row, minlength=rows)
        order = torch.argsort(lengths, descending=True, stable=True)
        group = torch.empty_like(order)
        group[order] = torch.div(torch.arange(rows, device=x.device), group_rows, rounding_mode="floor")
        local = torch.empty_like(order)
        local[order] = torch.arange(rows, device=x.device) % group_rows
        outs, picks = [], []
        for g in range(-(-rows // group_rows)):
            pick = (group[row] == g).nonzero(as_tuple=True)[0]
            if pick.numel() == 0:
                continue
            r, p = local[row[pick]], pos[pick]
            n_rows, width = int(r.max()) + 1, int(p.max()) + 1
            padded = qkv.new_zeros(n_rows, width, 3 * d).index_put((r, p), qkv[pick])
            q, k, v = padded.view(n_rows, width, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # [n, h, N, d/h]
            real = torch.zeros(n_rows, width, dtype=torch.bool, device=x.device)
            real = real.index_put((r, p), torch.ones_like(p, dtype=torch.bool))
            real[:, 0] |= ~real.any(1)  # a sequence with no element gets one dummy key (never read back)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=real[:, None, None, :])
            outs.append(att.transpose(1, 2).reshape(n_rows, width, d)[r, p])
            picks.append(pick)
        h = torch.cat(outs) if outs else x.new_zeros(0, d)
        if picks:
            h = h[torch.argsort(torch.cat(picks))]  # back to element order
        h = F.linear(h, self.attn.out_proj.weight, self.attn.out_proj.bias)
        return x + h if self.residual else h


class AttentionPooler(nn.Module):
    """Learned attention pooling: score = linear d -> 1, softmax over real positions, weighted sum."""

    def __init__(self, d: int):
        super().__init__()
        self.score = nn.Linear(d, 1)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``h [B, L, d]``, ``mask [B, L]`` -> ``[B, d]`` (an all-padding row pools to 0)."""
        s = self.score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
        w = torch.softmax(s, dim=1).nan_to_num(0.0)
        return (w.unsqueeze(-1) * h).sum(1)


class ADEClassifier(nn.Module):
    """ADE's stage-3 classifier around an :class:`ADEEmbedding` (see the module docstring for variants).

    ``forward(ids [B, L], mask [B, L] bool) -> logits [B, C]``. Positional encodings are fixed sinusoids
    (0 parameters). In the ``anchor`` variant the LayerNorm statistics are those of the word vector
    ``w_i = sum_j beta_ij A_j`` and are distributed over its anchors, ``x_ij = gamma (beta_ij A_j - mu_i / k_i)
    / sigma_i + b / k_i``, so a word's anchor vectors sum exactly to ``LayerNorm(w_i)`` (the quantity
    Algorithm 1 feeds to SAT); a per-anchor LayerNorm would cancel beta.
    """

    def __init__(self, embedding: ADEEmbedding, num_classes: int, *, variant: str = "anchor", heads: int = 8,
                 dropout: float = 0.1, max_len: int = 512, residual: bool = True):
        super().__init__()
        if variant not in VARIANTS:
            raise UsageError(f"unknown ADE variant '{variant}' (valid: {', '.join(VARIANTS)})")
        if num_classes < 2:
            raise UsageError(f"a classifier needs >= 2 classes, got {num_classes}")
        d = embedding.embedding_dim
        self.variant = variant
        self.embedding = embedding
        self.norm = nn.LayerNorm(d)
        self.register_buffer("positions", sinusoidal_positions(max_len, d), persistent=False)
        self.sat = SegmentAwareTransformer(d, heads, residual=residual)
        self.pooler = AttentionPooler(d)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d, num_classes)

    def _pe(self, length: int) -> torch.Tensor:
        if length > self.positions.shape[0]:
            raise UsageError(f"input of {length} tokens exceeds the ADE classifier's max_len {self.positions.shape[0]}")
        return self.positions[:length]

    def anchor_inputs(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Anchor variant: the real anchors of the real words only, ``x [T, d]`` (beta-scaled anchors with
        the word-level LayerNorm distributed over them, so a word's anchors sum to ``LayerNorm(w_i)``),
        and their ``(batch, word, slot)`` indices (row-major order)."""
        a_ids, beta, counts = self.embedding.lookup(ids)  # [B, L, S] x2, [B, L]
        valid = (torch.arange(self.embedding.slots, device=ids.device) < counts.unsqueeze(-1)) & mask.unsqueeze(-1)
        bi, li, si = valid.nonzero(as_tuple=True)
        word = self.embedding(ids)  # [B, L, d] = sum_j beta_ij A_j (one fused VP gather-sum)
        mu = word.mean(-1, keepdim=True)[bi, li]
        sigma = torch.sqrt(word.var(-1, unbiased=False, keepdim=True) + self.norm.eps)[bi, li]
        k = counts[bi, li].to(word.dtype).unsqueeze(-1)
        x = F.embedding(a_ids[bi, li, si], self.embedding.anchor_matrix()) * beta[bi, li, si].unsqueeze(-1)
        x = self.norm.weight * (x - mu / k) / sigma + self.norm.bias / k
        return x, (bi, li, si)

    def word_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-word states after SAT (``[B, L, d]``, zero on padding words), before pooling."""
        b, length = ids.shape
        pe = self._pe(length)
        if self.variant == "merged":
            x = self.norm(self.embedding(ids)) + pe  # ScatterAdd -> LayerNorm -> PE (= GPE on merged words)
            return self.sat(x, mask)
        x, (bi, li, _) = self.anchor_inputs(ids, mask)
        x = x + pe[li]  # GPE: all anchors of word l share position l
        # SAT over each sentence's real anchors only (inactive slots and padding words are never
        # materialised; attention is permutation-equivariant, so this equals attention over the padded
        # L x S slots with those keys masked, up to float rounding; tested). nonzero() is row-major, so
        # a sentence's anchors are consecutive and their position is the running count.
        n = torch.bincount(bi, minlength=b)
        start = torch.cumsum(n, 0) - n
        pos = torch.arange(bi.numel(), device=ids.device) - start[bi]
        h = self.sat.forward_packed(x, bi, pos, b)
        out = h.new_zeros(b * length, h.shape[1])
        return out.index_add(0, bi * length + li, h).view(b, length, -1)  # aggregate each word's anchors

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        h = self.word_states(ids, mask)
        return self.out(self.dropout(self.pooler(h, mask)))

    def head_params(self) -> dict[str, int]:
        """Trainable parameter counts of the head: SAT, LayerNorm, pooler, classifier."""
        def n(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters() if p.requires_grad)
        return {"sat": n(self.sat), "layernorm": n(self.norm), "pooler": n(self.pooler), "classifier": n(self.out)}


def sat_params(d: int) -> int:
    """SAT parameter count ``4 (d^2 + d)``."""
    return 4 * (d * d + d)


def describe(embedding: ADEEmbedding) -> dict[str, Any]:
    """A small summary of an ADE dictionary (for reports)."""
    def name(t: torch.Tensor) -> str:
        return str(t.dtype).replace("torch.", "")
    return {"K": embedding.num_anchors, "S": embedding.slots, "anchor_dtype": name(embedding.anchors),
            "id_dtype": name(embedding.slot_ids), **embedding.active_stats()}


__all__ = ["VARIANTS", "ADEClassifier", "ADEEmbedding", "AttentionPooler", "CSRAnchors", "SegmentAwareTransformer",
           "ade_stored_bytes", "count_dtype", "csr_stored_bytes", "describe", "grouped_positions", "index_dtype",
           "sat_params"]
