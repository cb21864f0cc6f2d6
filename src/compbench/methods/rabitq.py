"""``rabitq``: RaBitQ codes of a pretrained table, via faiss (1-bit and multi-bit "extended RaBitQ").

Gao & Long, "RaBitQ: Quantizing High-Dimensional Vectors with a Theoretical Error Bound for Approximate
Nearest Neighbor Search", SIGMOD 2024; multi-bit: Gao, Gou, Xu, Yang, Long & Wong, "Practical and
Asymptotically Optimal Quantization of High-Dimensional Vectors in Euclidean Space for Approximate Nearest
Neighbor Search" (extended RaBitQ), SIGMOD 2025. faiss: ``IndexRaBitQ`` / ``RaBitQuantizer`` (``nb_bits``
1..9 since faiss 1.13.1), behind a seeded ``RandomRotationMatrix`` -- the construction of faiss' own tests
(``IndexPreTransform(RandomRotationMatrix(d, d).init(seed), IndexRaBitQ(d, L2, nb_bits))``).

What is stored (the harness counts it):

- ``codes``: ``V x code_size`` uint8, **faiss' codes byte for byte**. Per row, for ``nb_bits = 1``:
  ``ceil(d/8)`` sign bits + 8 B of factors (``||o - c||^2``, the dot-product multiplier, fp32); for
  ``nb_bits = b > 1``: the sign bits + 12 B (the same two factors and faiss' error bound ``f_error``, used only
  by its two-stage search) + ``ceil(d (b - 1) / 8)`` B of extra-bit codes + 8 B (``f_add_ex``,
  ``f_rescale_ex``). ``code_size = faiss.RaBitQuantizer(d, L2, b).code_size``.
- ``center``: the ``d`` fp32 centroid (the mean of the rotated rows: ``IndexRaBitQ.train``).
- the rotation: 0 bytes. It is ``faiss.RandomRotationMatrix(d, d).init(seed)`` (Gaussian matrix, QR), a
  deterministic function of ``d`` and the seed, rebuilt by the module from them (non-persistent buffer).
  ``-o rotation=none`` skips it.

``bytes = V code_size(d, b) + 4 d``. Budget rule: ``b`` is the largest ``nb_bits`` in 1..9 that fits
(``-o nb_bits=`` forces one). On MiniLM (d = 384) a row costs 56 B at 1 bit, 116 B at 2 bits, 164 B at 3:
10x -> 2 bits (13.2x); 32x, 40x and 100x are below the 1-bit size (27.4x).

Below the 1-bit size (``-o project=auto``, the default) the seeded map becomes a random orthonormal
*projection* onto the largest ``d' < d`` (a multiple of 8) whose 1-bit codes fit --
``faiss.RandomRotationMatrix(d, d')``, still 0 bytes, exactly what faiss' ``index_factory("RR{d'},RaBitQ")``
builds. **Deviation from the RaBitQ papers**, which rotate without reducing: it is how a store reaches
32x with RaBitQ at d = 384 (``d' = 320``: 40 B of signs + 8 B of factors = 48 B = 32.0x). The record's
``dims`` says which; ``-o project=off`` makes such budgets unattainable instead.

Decoding (``forward`` / ``materialize``), in the rotated space then rotated back (``x = y A``):

- ``decode="faiss"`` (default): faiss' estimator. 1 bit: ``y = c + (2 bit - 1) / sqrt(d) * dp_multiplier``,
  exactly ``RaBitQuantizer::decode_core`` (a test checks it against faiss' ``sa_decode``). ``b > 1 bits``: the
  extended-RaBitQ reconstruction ``y = c + o_bar * (-f_rescale_ex / 2)`` with ``o_bar_j = u_j - (2^(b-1) - 1/2)``
  and ``u_j = sign_j 2^(b-1) + ex_j`` -- the vector whose inner products faiss' multi-bit distance uses
  (``compute_full_multibit_distance``; a test checks ``<q - c, y - c>`` against faiss' search distances).
  **Deviation from faiss' decode**: faiss 1.15.1's ``decode`` ignores the extra bits (it decodes every
  ``nb_bits`` from the sign bits only); we use them, as faiss' search does.
  This estimator is unbiased for inner products, so its norm exceeds ``||o - c||`` (by 1 / the cosine
  between ``o - c`` and its code).
- ``decode="least-squares"``: the same direction with the L2-optimal length ``<o - c, o_bar> / ||o_bar||^2``,
  computed from the same stored factors (``||o - c||^2`` and the multiplier); no extra bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch

from compbench.methods import METHODS
from compbench.methods.bitstring import unpack_rows
from compbench.methods.faiss_search import codes_array, copy_into, index_searcher, rotated
from compbench.methods.method_base import CodeSearch, CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, at_least, opt
from compbench.methods.streaming import encode_blocks, rows_per_block

MAX_BITS = 9


def code_size(d: int, nb_bits: int) -> int:
    """faiss' RaBitQ code size in bytes per row (``RaBitQuantizer::compute_code_size``)."""
    d, ex = int(d), int(nb_bits) - 1
    base = (d + 7) // 8 + (8 if ex == 0 else 12)
    return base + ((d * ex + 7) // 8 + 8 if ex > 0 else 0)


def rabitq_bytes(num_embeddings: int, embedding_dim: int, nb_bits: int) -> int:
    """Stored bytes: faiss codes (with their per-row factors) + the fp32 centroid; the rotation is free."""
    return int(num_embeddings) * code_size(embedding_dim, nb_bits) + 4 * int(embedding_dim)


def rotation_matrix(d: int, seed: int, d_out: int | None = None) -> torch.Tensor:
    """``faiss.RandomRotationMatrix(d, d_out).init(seed)``'s ``A`` ``[d_out, d]`` with orthonormal rows
    (``y = x A^T``; ``d_out = d`` by default: a rotation; ``d_out < d``: a random orthonormal projection)."""
    import faiss

    d_out = int(d if d_out is None else d_out)
    rr = faiss.RandomRotationMatrix(int(d), d_out)
    rr.init(int(seed))
    return torch.from_numpy(faiss.vector_to_array(rr.A).reshape(d_out, int(d)).copy())


def projected_dims(num_embeddings: int, embedding_dim: int, budget_bytes: int) -> int | None:
    """The largest multiple of 8 below ``embedding_dim`` whose 1-bit codes fit the budget, or None."""
    for dims in range((int(embedding_dim) - 1) // 8 * 8, 7, -8):
        if rabitq_bytes(num_embeddings, dims, 1) <= budget_bytes:
            return dims
    return None


def _floats(codes: torch.Tensor, offset: int, count: int) -> torch.Tensor:
    """``count`` little-endian fp32 values stored at byte ``offset`` of each code row ``[..., code_size]``."""
    raw = codes[..., offset: offset + 4 * count].clone(memory_format=torch.contiguous_format)
    return raw.view(torch.float32)


class RaBitQEmbedding(CompressedEmbedding):
    """faiss RaBitQ codes ``[V, code_size]`` + centroid ``[d]``; the seeded rotation is recomputed."""

    def __init__(self, codes: torch.Tensor, center: torch.Tensor, nb_bits: int, *, rotation_seed: int | None,
                 decode: str = "faiss", dim: int | None = None):
        d = center.shape[0]  # the coded (rotated or projected) dimension
        super().__init__(codes.shape[0], d if dim is None else int(dim))
        self.code_dim = int(d)
        if self.code_dim != self.embedding_dim and rotation_seed is None:
            raise ValueError("a projected RaBitQ code needs its seeded projection (rotation_seed)")
        self.nb_bits, self.decode_mode = int(nb_bits), str(decode)
        self.rotation_seed = None if rotation_seed is None else int(rotation_seed)
        self.register_buffer("codes", codes.to(torch.uint8).contiguous())
        self.register_buffer("center", center.float().contiguous())
        if self.rotation_seed is not None:
            self.register_buffer("rotation", rotation_matrix(self.embedding_dim, self.rotation_seed, d),
                                 persistent=False)

    def after_load(self) -> None:
        """Recompute the seeded rotation (derived, non-persistent) from the seed (an exported module's load)."""
        if self.rotation_seed is not None:
            self.rotation.copy_(rotation_matrix(self.embedding_dim, self.rotation_seed, self.code_dim))

    def decode_rotated(self, code: torch.Tensor, *, sign_only: bool = False) -> torch.Tensor:
        """Codes ``[..., code_size]`` -> reconstructions in the rotated space ``[..., d]``."""
        d = self.code_dim
        nb1 = (d + 7) // 8
        sign = unpack_rows(code[..., :nb1], 1, d).float()
        ex = self.nb_bits - 1
        if ex == 0 or sign_only:
            fac = _floats(code, nb1, 2)  # or_minus_c_l2sqr, dp_multiplier
            dp = fac[..., 1:2]
            if self.decode_mode == "least-squares" and not sign_only:
                dp = torch.where(dp != 0, fac[..., 0:1] / dp, dp)  # ||r||^2 / dp = <r, s> (s = +-1/sqrt(d))
            inv_sqrt_d = np.float32(1.0) / np.sqrt(np.float32(d))  # as faiss: 1.0f / std::sqrt((float)d)
            return ((sign - 0.5) * dp) * 2 * float(inv_sqrt_d) + self.center
        off = nb1 + 12
        exb = (d * ex + 7) // 8
        total = sign * (1 << ex) + unpack_rows(code[..., off: off + exb], ex, d).float()
        o_bar = total - ((1 << ex) - 0.5)
        f_add, f_rescale = _floats(code, off + exb, 2).unbind(-1)  # ||r||^2, -2 ||r|| / <o_bar, r/||r||>
        scale = -0.5 * f_rescale
        if self.decode_mode == "least-squares":
            norm = f_add.clamp_min(0).sqrt()
            ipnorm = torch.where(f_rescale != 0, -2 * norm / f_rescale, torch.zeros_like(norm))
            scale = norm * ipnorm / o_bar.square().sum(-1)
        return o_bar * scale.unsqueeze(-1) + self.center

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        y = self.decode_rotated(self.codes[ids])
        return y @ self.rotation if self.rotation_seed is not None else y

    def code_search(self) -> CodeSearch:
        """faiss ``IndexRaBitQ`` on the stored codes and centroid (its L2 distance estimator with a float query,
        ``qb = 0``; for unit-norm rows this ranks as inner product does), behind the seeded rotation."""
        import faiss

        d = self.code_dim
        index = faiss.IndexRaBitQ(d, faiss.METRIC_L2, self.nb_bits)
        copy_into(self.center, index.center)
        index.is_trained = True
        index.add_sa_codes(codes_array(self.codes))
        kind = f"faiss.IndexRaBitQ ({self.nb_bits}-bit, L2 estimator, float query)"
        if self.rotation_seed is not None:
            what = "random rotation" if d == self.embedding_dim else f"random projection {self.embedding_dim}->{d}"
            index, kind = rotated(index, self.rotation), f"faiss.IndexPreTransform({what}) + " + kind
        return CodeSearch(kind, index_searcher(index))


@METHODS.register("rabitq")
class RaBitQ(Method):
    """faiss RaBitQ (1-bit, or extended multi-bit) behind a seeded random rotation; bits from the budget."""

    card = MethodCard(
        name="rabitq",
        version=2,
        family="quantization",
        reference="Gao & Long 2024, RaBitQ (SIGMOD); Gao et al. 2025, extended RaBitQ (SIGMOD); "
                  "faiss IndexRaBitQ / RaBitQuantizer",
        modes=("posthoc",),
        description="faiss RaBitQ codes (sign bits + extra bits + per-row factors) + centroid; seeded rotation "
                    "(0 B); nb_bits from the budget",
    )

    class Options(MethodOptions):
        nb_bits: int | None = opt(None, f"force the bits per dimension (1..{MAX_BITS}; must fit the budget)",
                                  at_least(1, high=MAX_BITS))
        decode: Literal["faiss", "least-squares"] = opt("faiss", "faiss: faiss' inner-product estimator | "
                                                                 "least-squares: L2-optimal length")
        rotation: Literal["random", "none"] = opt("random", "random: faiss RandomRotationMatrix seeded with the run "
                                                            "seed, 0 B | none")
        project: Literal["auto", "off"] = opt("auto", "auto: below the 1-bit size, project onto the largest d' < d, "
                                                      "a multiple of 8, that fits (faiss RandomRotationMatrix(d, d'), "
                                                      "0 B) | off")

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """For the harness' tuning on validation data: faiss' inner-product estimator (default) and the
        least-squares length; the codes and bytes are the same, only the decoded norms differ."""
        return [{}, {"decode": "least-squares"}]

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        decode, rotation = self.option("decode"), self.option("rotation")
        forced = self.option("nb_bits")
        widths = [forced] if forced is not None else list(range(MAX_BITS, 0, -1))
        for b in widths:
            if rabitq_bytes(num_embeddings, embedding_dim, b) <= budget_bytes:
                return {"nb_bits": b, "code_size": code_size(embedding_dim, b), "metric": "L2",
                        "decode": decode, "rotation": rotation, "dims": int(embedding_dim)}
        project = self.option("project")
        dims = projected_dims(num_embeddings, embedding_dim, budget_bytes)
        if project == "auto" and rotation == "random" and widths[-1] == 1 and dims is not None:
            return {"nb_bits": 1, "code_size": code_size(dims, 1), "metric": "L2", "decode": decode,
                    "rotation": rotation, "dims": dims}
        raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                min(rabitq_bytes(num_embeddings, embedding_dim, b) for b in widths))

    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        import faiss

        x = np.ascontiguousarray(table.detach().float().cpu().numpy())
        d, nb = x.shape[1], int(config["nb_bits"])
        dims = int(config.get("dims", d))
        inner = faiss.IndexRaBitQ(dims, faiss.METRIC_L2, nb)
        rotated = config.get("rotation", "random") == "random"
        if rotated:
            rr = faiss.RandomRotationMatrix(d, dims)
            rr.init(int(seed))
            index = faiss.IndexPreTransform(rr, inner)
        else:
            index = inner
        index.train(x)  # the rotation is already initialised; IndexRaBitQ.train takes the mean of the rows

        # block by block: sa_encode would rotate all rows at once (a second copy of the table)
        codes = encode_blocks(index.sa_encode, x, int(index.sa_code_size()), rows_per_block(4 * (d + dims) * 2))
        center = faiss.vector_to_array(inner.center).astype(np.float32)
        return RaBitQEmbedding(torch.from_numpy(codes), torch.from_numpy(center), nb,
                               rotation_seed=int(seed) if rotated else None,
                               decode=str(config.get("decode", "faiss")), dim=d)
