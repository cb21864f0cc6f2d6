"""Fourier-MLP token embeddings (PETE), trained from scratch (train track).

Ndubuaku & Talhi, "Parameter-Efficient Transformer Embeddings", arXiv 2505.02266
(2025); official code ``github.com/HMUNACHI/pete``. The token id ``p`` is normalised
to ``x = 2 p / (V - 1) - 1`` in ``[-1, 1]`` and expanded into Fourier features::

    T_i(p) = sin((floor(i/2) + 1) pi x)  for even i,   cos((floor(i/2) + 1) pi x)  for odd i,   i = 0 .. d-1
    E(p)   = MLP(T(p)) + T(p)                                                    (residual)

The Fourier map is deterministic (0 stored bytes; computed on the fly with exact
integer angle reduction, so ``T`` is accurate to float32 even for large ids). The MLP
is the paper's position-wise FFN with GeGLU, ``W_out (GELU(W_g T + b_g) * (W_v T + b_v)) +
b_out`` with intermediate width ``h``: ``3 h d + 2 h + d`` fp32 parameters. The paper uses
``h = 4 d`` (and ``h = d / 4`` for its smallest "PETE" models); here ``h`` is the largest
width that fits the budget, capped at ``max_expansion * d`` (default 4, the paper's
largest), so at loose budgets the method stores less than it may. ``mlp=linear`` is
the single ``Linear(d, d)`` the paper says "only marginally degrades" results
(``d^2 + d`` parameters). Init: PyTorch's default ``nn.Linear`` init, as in the
official code (``E ~= T`` at init, entries of std ~0.7).

Code vs paper: the official CUDA kernel (``polynomial_embeddings/fourier_kernel.cu``)
normalises by ``max_seq_len - 1`` (128 - 1 by default) instead of ``V - 1``, so ids
above 127 fall outside ``[-1, 1]`` and map to high-frequency, well-separated
features; the official ``PETE.forward`` also applies an RMSNorm after the residual.
This module implements the paper's formula (``norm_len`` = V); option
``norm_len=128`` reproduces the kernel's normalisation. With the paper's formula,
adjacent ids differ by ``dx = 2 / (V - 1)``, so their Fourier features are nearly
identical and the MLP must separate them (the paper's own caveat).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.dhe import default_linear_init_
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt, positive

MLPS = ("geglu", "linear")


def fourier_features(ids: torch.Tensor, embedding_dim: int, norm_len: int) -> torch.Tensor:
    """``T(p)`` of the paper for every id: ``[..., d]`` float32, with ``x = 2 p / (norm_len - 1) - 1``.

    The angle ``f pi x = pi (2 f p / q - f)`` (``q = norm_len - 1``) is reduced modulo ``2 pi``
    in exact integer arithmetic (``2 f p mod 2q``) before the float64 sin/cos.
    """
    q = int(norm_len) - 1
    if q < 1:
        raise UsageError(f"fourier-mlp needs norm_len >= 2, got {norm_len}")
    i = torch.arange(embedding_dim, device=ids.device)
    f = torch.div(i, 2, rounding_mode="floor") + 1  # frequency floor(i/2) + 1
    p = ids.long().unsqueeze(-1)
    r = torch.remainder(2 * f * p, 2 * q)  # exact
    angle = math.pi * (r.double() / q - (f % 2).double())
    feats = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return feats.float()


def mlp_bytes(embedding_dim: int, width: int, mlp: str) -> int:
    """Stored bytes of the MLP: GeGLU ``3 h d + 2 h + d`` or linear ``d^2 + d`` fp32 parameters."""
    d, h = int(embedding_dim), int(width)
    return 4 * (d * d + d if mlp == "linear" else 3 * h * d + 2 * h + d)


class GeGLU(nn.Module):
    """``W_out (GELU(gate) * value)`` with ``[gate, value] = W_in x`` (Shazeer 2020)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj_in = nn.Linear(dim, 2 * hidden)
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(nn.functional.gelu(gate) * value)


class FourierMLPEmbedding(CompressedEmbedding):
    """``E(p) = MLP(T(p)) + T(p)`` with the paper's Fourier features ``T`` (0 bytes) and a trainable MLP."""

    def __init__(self, num_embeddings: int, embedding_dim: int, width: int, mlp: str = "geglu",
                 norm_len: int | None = None):
        super().__init__(num_embeddings, embedding_dim)
        if mlp not in MLPS:
            raise UsageError(f"fourier-mlp mlp must be one of {', '.join(MLPS)}, got {mlp!r}")
        self.norm_len = int(norm_len or num_embeddings)
        if self.norm_len < 2:
            raise UsageError(f"fourier-mlp needs norm_len >= 2 (V >= 2), got {self.norm_len}")
        self.mlp_kind = mlp
        self.mlp: nn.Module = GeGLU(embedding_dim, width) if mlp == "geglu" else nn.Linear(embedding_dim, embedding_dim)

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """The deterministic Fourier features ``T(ids)``."""
        return fourier_features(ids, self.embedding_dim, self.norm_len)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        t = self.features(uniq)
        out = self.mlp(t) + t
        return out[inverse].reshape(*ids.shape, self.embedding_dim)


@METHODS.register("fourier-mlp")
class FourierMLP(Method):
    """PETE: Fourier features of the normalised id + a GeGLU MLP with a residual; MLP width from the budget."""

    card = MethodCard(
        name="fourier-mlp",
        version=1,
        family="function",
        reference="Ndubuaku & Talhi 2025, Parameter-Efficient Transformer Embeddings (PETE, arXiv 2505.02266)",
        modes=("train",),
        description="T(p) = sin/cos((floor(i/2)+1) pi x), x = 2p/(V-1) - 1 (0 bytes); E = MLP(T) + T with a GeGLU "
                    "MLP, width the largest that fits up to 4d",
    )

    class Options(MethodOptions):
        width: int | None = opt(None, "force the GeGLU intermediate width h (must fit the budget)", at_least(1))
        max_expansion: float = opt(4.0, "cap on h / d (the default is the paper's FFN expansion)", positive())
        mlp: Literal["geglu", "linear"] = opt("geglu", "geglu (the paper's) or linear (a single d x d layer)")
        norm_len: int | None = opt(None, "normalise by norm_len - 1 instead of V - 1 (128 reproduces the official "
                                   "CUDA kernel)", at_least(2))

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        mlp = self.option("mlp")
        norm_len = self.option("norm_len") or num_embeddings
        if norm_len < 2:
            raise UsageError(f"method '{self.card.name}' needs V >= 2 (or norm_len >= 2), got {norm_len}")
        cfg: dict[str, Any] = {"mlp": mlp, "norm_len": int(norm_len)}
        if mlp == "linear":
            need = mlp_bytes(embedding_dim, 0, mlp)
            if need > budget_bytes:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, need)
            return {**cfg, "width": 0}
        d = embedding_dim
        forced = self.option("width")
        if forced is not None:
            if mlp_bytes(d, forced, mlp) > budget_bytes:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, mlp_bytes(d, forced, mlp))
            return {**cfg, "width": int(forced)}
        if mlp_bytes(d, 1, mlp) > budget_bytes:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, mlp_bytes(d, 1, mlp))
        cap = max(1, int(self.option("max_expansion") * d))
        width = (budget_bytes // 4 - d) // (3 * d + 2)
        width = max(1, min(width, cap))
        while width > 1 and mlp_bytes(d, width, mlp) > budget_bytes:
            width -= 1
        return {**cfg, "width": int(width)}

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG: leave the caller's alone
            module = FourierMLPEmbedding(num_embeddings, embedding_dim, int(config["width"]), str(config["mlp"]),
                                         int(config["norm_len"]))
        g = generator(seed)
        for layer in module.mlp.modules():
            if isinstance(layer, nn.Linear):
                default_linear_init_(layer, g)
        return module
