"""Deep Hash Embedding (DHE), trained from scratch (train track).

Kang, Cheng, Yao, Yi, Chen, Hong, Chi, "Learning to Embed Categorical Features
without Embedding Tables for Recommendation", KDD 2021 (arXiv 2010.10784).
There is no table: an id is encoded by ``k`` universal hash functions into ``m``
buckets (paper: ``k = 1024``, ``m = 10^6``), each bucket index is normalised to a
real number (the paper's "uniform" transform ``2 h / (m - 1) - 1`` in ``[-1, 1]``, or
its "gaussian" Box-Muller transform), and a DNN maps the dense ``k``-vector to the
``d``-dim embedding. The hash parameters are deterministic functions of the seed
held in non-persistent buffers (0 bytes); the stored bytes are the MLP's
parameters and its BatchNorm running statistics (``num_batches_tracked`` int64 = 8
bytes per BatchNorm), i.e. exactly the module's ``state_dict``.

Network: ``Linear(k, h) -> [BatchNorm] -> Mish`` then ``layers - 1`` times
``Linear(h, h) -> [BatchNorm] -> Mish``, then ``Linear(h, d)``. The paper's network
is deeper and wider (several hidden layers of width ~1800 with Mish and
BatchNorm; Hetu's benchmark uses 5); at 10x-100x of a 30522-row table such a
network does not fit, so compbench scales it down: ``layers`` hidden layers (default
2) of the largest width ``h`` that fits the budget.

Deviations, all documented: (1) the embedding of each *distinct* id in a batch is
computed once (so BatchNorm batch statistics are over distinct ids, not token
occurrences; in eval mode outputs do not depend on the batch); (2) the last layer's
weights are rescaled at build time so that the output std over a fixed probe of ids
(train-mode BatchNorm) is ``init_std`` (default ``d**-0.5``, the ``dense`` train
init) -- a deterministic, data-independent calibration; (3) ``materialize`` always
uses eval mode (running statistics).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from compbench.errors import UsageError
from compbench.methods import METHODS
from compbench.methods.hashing import MERSENNE_PRIME, draw_universal, universal_hash
from compbench.methods.lowrank import check_shape
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard, generator
from compbench.methods.options import MethodOptions, at_least, opt, positive

DISTRIBUTIONS = ("uniform", "gaussian")
ACTIVATIONS = {"mish": nn.Mish, "relu": nn.ReLU}
PROBE_IDS = 1024  # ids used to calibrate the output scale at build time


def dhe_bytes(num_hashes: int, width: int, layers: int, embedding_dim: int, batchnorm: bool) -> int:
    """Stored bytes of the DHE network (fp32 weights/biases, BN affine + running stats + int64 counter)."""
    k, h, d = int(num_hashes), int(width), int(embedding_dim)
    floats = (k * h + h) + (layers - 1) * (h * h + h) + (h * d + d)
    nbytes = 4 * floats
    if batchnorm:
        nbytes += layers * (4 * 4 * h + 8)  # weight, bias, running_mean, running_var (fp32) + num_batches_tracked
    return nbytes


class DHEEmbedding(CompressedEmbedding):
    """Dense hash encoding of the id (0 bytes) followed by a trainable MLP."""

    def __init__(self, num_embeddings: int, embedding_dim: int, a: torch.Tensor, b: torch.Tensor, buckets: int,
                 width: int, layers: int, distribution: str = "uniform", activation: str = "mish",
                 batchnorm: bool = True):
        super().__init__(num_embeddings, embedding_dim)
        if distribution not in DISTRIBUTIONS:
            raise UsageError(f"dhe distribution must be one of {', '.join(DISTRIBUTIONS)}, got {distribution!r}")
        if activation not in ACTIVATIONS:
            raise UsageError(f"dhe activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        if distribution == "gaussian" and a.numel() % 2:
            raise UsageError("dhe distribution=gaussian needs an even number of hash functions")
        if num_embeddings >= MERSENNE_PRIME or buckets >= MERSENNE_PRIME:
            raise UsageError(f"dhe supports ids and bucket counts below {MERSENNE_PRIME:,}")
        self.num_hashes, self.num_buckets = int(a.numel()), int(buckets)
        self.distribution = distribution
        self.register_buffer("hash_a", a, persistent=False)
        self.register_buffer("hash_b", b, persistent=False)
        mods: list[nn.Module] = []
        fan_in = self.num_hashes
        for _ in range(layers):
            mods.append(nn.Linear(fan_in, width))
            if batchnorm:
                mods.append(nn.BatchNorm1d(width))
            mods.append(ACTIVATIONS[activation]())
            fan_in = width
        mods.append(nn.Linear(fan_in, embedding_dim))
        self.mlp = nn.Sequential(*mods)

    def encode(self, ids: torch.Tensor) -> torch.Tensor:
        """The dense hash encoding ``[..., k]`` (float32): uniform in [-1, 1] or Box-Muller gaussian."""
        h = universal_hash(ids, self.hash_a, self.hash_b, self.num_buckets)
        if self.distribution == "uniform":  # h < 2^24 is exact in float32 for the default m = 10^6
            dtype = torch.float32 if self.num_buckets <= 2**24 else torch.float64
            return (h.to(dtype) * (2.0 / (self.num_buckets - 1)) - 1.0).float()
        # Box-Muller on consecutive pairs of uniforms in (0, 1]: z0 = sqrt(-2 ln u1) cos(2 pi u2), z1 = ... sin(...)
        u = (h.double() + 1.0) / self.num_buckets
        u1, u2 = u[..., 0::2], u[..., 1::2]
        rad = torch.sqrt(-2.0 * torch.log(u1))
        z = torch.stack((rad * torch.cos(2 * math.pi * u2), rad * torch.sin(2 * math.pi * u2)), dim=-1)
        return z.reshape(*u.shape[:-1], self.num_hashes).float()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, return_inverse=True)
        if self.training and uniq.numel() < 2 and any(isinstance(m, nn.BatchNorm1d) for m in self.mlp):
            # train-mode BatchNorm needs two rows: a batch holding a single distinct id uses running statistics
            self.mlp.eval()
            try:
                out = self.mlp(self.encode(uniq))
            finally:
                self.mlp.train()
        else:
            out = self.mlp(self.encode(uniq))
        return out[inverse].reshape(*ids.shape, self.embedding_dim)

    @torch.no_grad()
    def materialize(self, chunk: int = 8192) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            return super().materialize(chunk)
        finally:
            self.train(was_training)


@METHODS.register("dhe")
class DHE(Method):
    """Deep Hash Embedding: k dense hash encodings -> MLP of the widest hidden layers that fit."""

    card = MethodCard(
        name="dhe",
        version=1,
        family="hash-network",
        reference="Kang et al. 2021, Learning to Embed Categorical Features without Embedding Tables (KDD, arXiv 2010.10784)",
        modes=("train",),
        description="1024 universal hashes -> [-1,1] encoding -> MLP (Linear+BN+Mish hidden layers, width from the "
                    "budget); 0 table bytes, the MLP is counted",
    )

    class Options(MethodOptions):
        num_hashes: int = opt(1024, "number k of hash functions (the paper's)", at_least(1))
        buckets: int = opt(1_000_000, "hash range m (the paper's)", at_least(2))
        layers: int = opt(2, "number of hidden layers (the paper uses more, wider ones)", at_least(1))
        width: int | None = opt(None, "force the hidden width h (must fit the budget)", at_least(1))
        distribution: Literal["uniform", "gaussian"] = opt("uniform", "encoding transform")
        activation: Literal["mish", "relu"] = opt("mish", "hidden activation (mish: the paper's "
                                                                            "best)")
        batchnorm: bool = opt(True, "BatchNorm after each hidden Linear")
        init_std: float | None = opt(None, "output std at init (unset: d**-0.5)", positive())

    def _settings(self) -> dict[str, Any]:
        k = self.option("num_hashes")
        dist = self.option("distribution")
        if dist == "gaussian" and k % 2:
            raise UsageError(f"method '{self.card.name}' with distribution=gaussian needs an even num_hashes")
        return {"num_hashes": k, "buckets": self.option("buckets"), "layers": self.option("layers"),
                "distribution": dist, "activation": self.option("activation"),
                "batchnorm": self.option("batchnorm")}

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        check_shape(self.card.name, num_embeddings, embedding_dim)
        s = self._settings()

        def size(h: int) -> int:
            return dhe_bytes(s["num_hashes"], h, s["layers"], embedding_dim, s["batchnorm"])

        forced = self.option("width")
        if forced is not None:
            if size(forced) > budget_bytes:
                raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, size(forced))
            return {**s, "width": int(forced)}
        if size(1) > budget_bytes:
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes, size(1))
        lo, hi = 1, 2
        while size(hi) <= budget_bytes:  # size(h) is increasing in h: exponential then binary search
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if size(mid) <= budget_bytes else (lo, mid)
        return {**s, "width": int(lo)}

    def build(self, num_embeddings: int, embedding_dim: int, config: Mapping[str, Any], *, seed: int,
              init_table: torch.Tensor | None = None) -> CompressedEmbedding:
        g = generator(seed)
        a, b = draw_universal(int(config["num_hashes"]), g)
        with torch.random.fork_rng(devices=[]):  # construction draws from the global RNG: leave the caller's alone
            module = DHEEmbedding(num_embeddings, embedding_dim, a, b, int(config["buckets"]), int(config["width"]),
                                  int(config["layers"]), str(config["distribution"]), str(config["activation"]),
                                  bool(config["batchnorm"]))
        for layer in module.mlp:
            if isinstance(layer, nn.Linear):
                default_linear_init_(layer, g)
        std = self.option("init_std")
        if std is None:
            std = 1.0 / math.sqrt(embedding_dim)
        calibrate_last_layer(module, std)
        return module


@torch.no_grad()
def default_linear_init_(layer: nn.Linear, g: torch.Generator) -> None:
    """PyTorch's default ``nn.Linear`` init (weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))), from ``g``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) * (2 * bound) - bound)
    if layer.bias is not None:
        layer.bias.copy_(torch.rand(layer.bias.shape, generator=g) * (2 * bound) - bound)


@torch.no_grad()
def calibrate_last_layer(module: DHEEmbedding, target_std: float) -> None:
    """Zero the last bias and scale the last weight so the train-mode output std on a fixed id probe is ``target_std``.

    The probe runs on a deep copy so the module's BatchNorm running statistics stay untouched.
    """
    last = module.mlp[-1]
    assert isinstance(last, nn.Linear)
    last.bias.zero_()
    probe = copy.deepcopy(module).train()
    n = module.num_embeddings
    ids = torch.arange(n) if n <= PROBE_IDS else torch.linspace(0, n - 1, PROBE_IDS).round().long().unique()
    std = float(probe(ids).std())
    if std > 0 and math.isfinite(std):
        last.weight.mul_(target_std / std)
