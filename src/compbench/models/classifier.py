"""Small text classifiers for the train track, built around a method's embedding module.

Both backbones take ``(ids [B, L] long, mask [B, L] bool) -> logits [B, C]``; ``mask`` is True on
real tokens and False on padding. The token-embedding layer is the method's
:class:`~compbench.methods.method_base.CompressedEmbedding` (``ids -> [B, L, d]``), trained end to end;
everything else is the *backbone*, whose bytes are not part of the embedding budget.

- ``bag`` (bag of embeddings): masked mean of the token embeddings, dropout, one linear layer
  (fastText-style; no normalisation, so the embedding's scale reaches the classifier unchanged).
- ``transformer``: token embeddings + positions (learned table or fixed sinusoids), a BERT-style
  embedding LayerNorm and dropout, ``layers`` pre-norm ``nn.TransformerEncoderLayer`` blocks
  (``heads`` heads, GELU feed-forward of width ``ffn``), a final LayerNorm, masked mean or
  attention pooling (a learned ``d -> 1`` score, softmax over real tokens), dropout, linear.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
from torch import nn

from compbench.errors import UsageError

BACKBONES = ("transformer", "bag")
POSITIONS = ("learned", "sinusoidal")
POOLINGS = ("mean", "attention")


@dataclass(frozen=True)
class BackboneConfig:
    """Hyperparameters of a train-track backbone (recorded with every train record).

    Attributes:
        kind: ``transformer`` (default) or ``bag``.
        d_model: embedding / model width ``d`` (the method's module produces ``[..., d_model]``).
        layers: transformer encoder layers.
        heads: attention heads (must divide ``d_model``).
        ffn: feed-forward width (0: ``4 * d_model``).
        dropout: dropout in the transformer layers, after the embedding LayerNorm and before the output layer.
        positions: ``learned`` (a ``max_len x d`` table, N(0, 0.02) init) or ``sinusoidal`` (fixed, 0 parameters).
        pooling: ``mean`` (masked mean) or ``attention`` (learned score, masked softmax).
        max_len: longest input in tokens (special tokens included); size of the learned position table.
    """

    kind: str = "transformer"
    d_model: int = 128
    layers: int = 1
    heads: int = 4
    ffn: int = 0
    dropout: float = 0.1
    positions: str = "learned"
    pooling: str = "mean"
    max_len: int = 128

    def __post_init__(self) -> None:
        if self.kind not in BACKBONES:
            raise UsageError(f"unknown backbone '{self.kind}' (backbones: {', '.join(BACKBONES)})")
        if self.d_model < 1:
            raise UsageError(f"d_model must be >= 1, got {self.d_model}")
        if self.positions not in POSITIONS:
            raise UsageError(f"unknown positions '{self.positions}' (valid: {', '.join(POSITIONS)})")
        if self.pooling not in POOLINGS:
            raise UsageError(f"unknown pooling '{self.pooling}' (valid: {', '.join(POOLINGS)})")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.max_len < 2:
            raise UsageError(f"max_len must be >= 2, got {self.max_len}")
        if self.kind == "transformer":
            if self.layers < 1:
                raise UsageError(f"layers must be >= 1, got {self.layers}")
            if self.heads < 1 or self.d_model % self.heads:
                raise UsageError(f"heads ({self.heads}) must be >= 1 and divide d_model ({self.d_model})")
            if self.ffn < 0:
                raise UsageError(f"ffn must be >= 0, got {self.ffn}")

    @property
    def ffn_width(self) -> int:
        """The feed-forward width actually used."""
        return self.ffn or 4 * self.d_model

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view; the bag backbone lists only the fields it uses."""
        d = asdict(self)
        if self.kind == "bag":
            return {k: d[k] for k in ("kind", "d_model", "dropout", "max_len")}
        d["ffn"] = self.ffn_width
        return d

    def with_(self, **changes: Any) -> BackboneConfig:
        """A copy with ``changes`` applied (validated)."""
        return replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of the fields (for override validation)."""
        return tuple(f.name for f in fields(cls))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x [B, L, d]`` over positions where ``mask [B, L]`` is True (rows with no token give 0)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def sinusoidal_positions(max_len: int, d: int) -> torch.Tensor:
    """The fixed sine/cosine position table of Vaswani et al. (2017), ``[max_len, d]``."""
    pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(max_len, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d // 2]
    return pe


def _check_embedding(embedding: nn.Module, d_model: int) -> None:
    dim = getattr(embedding, "embedding_dim", None)
    if dim is not None and int(dim) != d_model:
        raise UsageError(f"the embedding module produces {dim}-d vectors but the backbone expects d_model={d_model}")


class BagOfEmbeddings(nn.Module):
    """Masked mean of the token embeddings -> dropout -> linear."""

    def __init__(self, embedding: nn.Module, num_classes: int, cfg: BackboneConfig):
        super().__init__()
        _check_embedding(embedding, cfg.d_model)
        self.cfg = cfg
        self.embedding = embedding
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.d_model, num_classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids [B, L]``, ``mask [B, L]`` (True = token) -> logits ``[B, C]``."""
        x = self.embedding(ids)
        return self.out(self.dropout(masked_mean(x, mask)))


class TransformerClassifier(nn.Module):
    """A small pre-norm transformer encoder classifier (see the module docstring)."""

    def __init__(self, embedding: nn.Module, num_classes: int, cfg: BackboneConfig):
        super().__init__()
        _check_embedding(embedding, cfg.d_model)
        self.cfg = cfg
        d = cfg.d_model
        self.embedding = embedding
        if cfg.positions == "learned":
            self.positions = nn.Embedding(cfg.max_len, d)
            nn.init.normal_(self.positions.weight, std=0.02)
        else:
            self.positions = None
            self.register_buffer("sinusoids", sinusoidal_positions(cfg.max_len, d), persistent=False)
        self.embed_norm = nn.LayerNorm(d)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, dim_feedforward=cfg.ffn_width, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        self.attn_score = nn.Linear(d, 1) if cfg.pooling == "attention" else None
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(d, num_classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids [B, L]``, ``mask [B, L]`` (True = token) -> logits ``[B, C]``."""
        length = ids.shape[1]
        if length > self.cfg.max_len:
            raise UsageError(f"input of {length} tokens exceeds the backbone's max_len {self.cfg.max_len}")
        x = self.embedding(ids)
        pos = self.positions.weight[:length] if self.positions is not None else self.sinusoids[:length]
        x = self.embed_dropout(self.embed_norm(x + pos.to(x.dtype)))
        h = self.final_norm(self.encoder(x, src_key_padding_mask=~mask))
        if self.attn_score is None:
            pooled = masked_mean(h, mask)
        else:
            score = self.attn_score(h).squeeze(-1).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(score, dim=1).nan_to_num(0.0)  # an all-padding row gets zero weights
            pooled = (weights.unsqueeze(-1) * h).sum(1)
        return self.out(self.dropout(pooled))


def build_classifier(embedding: nn.Module, num_classes: int, cfg: BackboneConfig) -> nn.Module:
    """The backbone ``cfg.kind`` around ``embedding`` (initialised from torch's global RNG: seed it first)."""
    if num_classes < 2:
        raise UsageError(f"a classifier needs >= 2 classes, got {num_classes}")
    if cfg.kind == "bag":
        return BagOfEmbeddings(embedding, num_classes, cfg)
    return TransformerClassifier(embedding, num_classes, cfg)


__all__ = ["BACKBONES", "BackboneConfig", "BagOfEmbeddings", "TransformerClassifier", "build_classifier",
           "masked_mean", "sinusoidal_positions"]
