"""``tiered``: frequency-aware allocation -- frequent tokens get more bytes per row than rare ones.

Rows are grouped into tiers by token frequency in a shipped calibration corpus, and each tier is compressed
by a base codec (``-o base=pq`` by default; any posthoc method by name) with a budget of its own, chosen to
maximise a frequency-weighted reconstruction score of the table itself under the total budget. The idea is
old (frequency-dependent widths: mixed-dimension embeddings, Ginart et al. ISIT 2021; frequency-aware
quantisation budgets in recommender tables); here the per-tier codec is unchanged and only its budget moves.

**Frequencies.** For a table of the shipped counts' vocabulary size (MiniLM's WordPiece, 30,522 rows), the
counts of ``compbench.datasets.frequencies.load_token_frequencies()``: the train splits of the shipped datasets
(never a test split; sha256 and source are put in the config). Other tables (GloVe, whose rows are sorted
by frequency; the conformance tests' tiny tables) use the Zipf law over row order, count ~ 1 / (row + 1)
(``-o frequencies=row-order``); ``-o frequencies=corpus`` insists on the shipped counts.

**Tiers.** The seen rows, sorted by decreasing count, are split once: the top tier is the fewest rows that
cover a mass ``m`` of the corpus tokens, the second tier the other seen rows. Rows never seen in the corpus
share one code (``unseen=shared``, default: one fp32 vector, their mean); ``unseen=rest`` puts them in the
second tier instead.

**Stored** (all counted by the harness):

- each tier's base-codec module (``tiers.<t>.*``);
- the tier map: the tier id of every row packed at ``ceil(log2 T)`` bits (``tier_ids``, one row of bytes per
  block of 64 rows), and a rank
  directory (``rank_dir``: for every block of 64 rows and every tier, the rows of that tier before the block;
  int16 when V < 32768, else int32). A row's index in its tier is its block's entry plus the rows of the same
  tier before it in the block, so the row -> (tier, index in tier) map costs ~``V ceil(log2 T) / 8 + 2 T V / 64``
  bytes instead of ``V log2 V / 8``;
- ``shared``: the shared code of unseen rows (``d`` fp32), when any;
- ``plan``: int32 ``[tiers, 3]`` = (rows, budget, nbits override or 0) of each tier -- what the search chose.
  A module loading a state_dict with another plan rebuilds its tier modules to that plan first, so the
  state_dict alone (with the method's options) determines the module.

**Search** (``compress``, on the table itself; never on evaluation data). The score of a candidate is the
weighted mean row cosine between the table and its reconstruction, with weights ``count^alpha`` over the
seen rows (``alpha`` = 0.5 by default; ``alpha = 1`` is the plain frequency weighting). The grid, listed by
``configure`` (only the candidates whose every tier can be configured):

- ``mass`` m in {0.8, 0.85, 0.9}: the top tier (MiniLM: 1,278, 2,201, 3,895 rows);
- ``share`` s in {0.2, 0.3}: the top tier's budget is ``s`` times what the tier map and shared code leave;
  the second tier gets the rest;
- per tier, when the base codec has an ``nbits`` option (pq, opq, rq, lsq): its own rule, and ``nbits`` = 6,
  5 and 4 (PQ's rule takes 8-bit codebooks first, 393 KB at d = 384, a third of the 40x budget, which a
  2,000-row tier does not need; and ``M`` must divide ``d``, so a lower ``nbits`` often packs more code bits
  into a tier's budget). The best variant of each tier is kept (the score is a sum over tiers).

So 3 x 2 x 2 x 4 = 48 fits, each of the final kind (no refit), every one seeded with the run seed: 58 s on
MiniLM at 40x on one thread. There it picks 2,201 head rows (85% of the tokens) at 5-bit PQ, M = 192
(120 B/row), and the other 23,859 seen rows at 4-bit PQ, M = 64 (32 B/row); 4,462 unseen rows share one code
(1,113,389 B, 42.1x).
``alpha`` was chosen on STS-B *validation* pairs: over seven two-tier PQ plans at 40x, the ranking by the
``alpha = 0.5`` score agreed best with the validation Spearman (``alpha = 1`` ranked a plan with 8-bit
codebooks in the head and 4-bit in the tail first, although its validation score was the second worst).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from compbench.checksums import sha256_file
from compbench.datasets.frequencies import load_token_frequencies, token_frequencies_for
from compbench.errors import DataError, UnattainableBudgetError, UsageError
from compbench.methods import METHODS, get_method
from compbench.methods.bitstring import pack_rows, unpack_rows
from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import MethodOptions, non_negative, opt
from compbench.methods.streaming import row_blocks, rows_per_block

BLOCK = 64
MASSES = (0.8, 0.85, 0.9)
SHARES = (0.2, 0.3)
NBITS_VARIANTS = (6, 5, 4)
DEFAULT_ALPHA = 0.5
FREQUENCIES = ("auto", "corpus", "row-order")


# -- frequencies -------------------------------------------------------------------------------------
def row_counts(num_embeddings: int, mode: str = "auto") -> tuple[np.ndarray, dict[str, Any]]:
    """Per-row counts (float64 ``[V]``) and where they come from (recorded in the config)."""
    if mode.startswith("file:"):
        return counts_file(mode[5:], num_embeddings)
    if mode in ("auto", "corpus"):
        freq = token_frequencies_for(num_embeddings) or load_token_frequencies()
        if freq.vocab_size == num_embeddings:
            return freq.counts.astype(np.float64), {
                "kind": "corpus", "source": freq.source, "sha256": freq.sha256,
                "total_tokens": int(freq.total_tokens), "seen_rows": int((freq.counts > 0).sum())}
        if mode == "corpus":
            raise UsageError(f"method 'tiered': the shipped token counts cover {freq.vocab_size} rows, the table has "
                             f"{num_embeddings}; use -o frequencies=row-order")
    counts = 1.0 / np.arange(1, num_embeddings + 1, dtype=np.float64)
    return counts, {"kind": "row-order", "law": "count ~ 1 / (row + 1)", "source": None, "sha256": None}


def is_frequency_mode(mode: str) -> bool:
    """Whether ``mode`` is a ``frequencies`` option value: auto | corpus | row-order | file:PATH."""
    return mode in FREQUENCIES or (mode.startswith("file:") and len(mode) > 5)


def counts_file(path: str, num_embeddings: int) -> tuple[np.ndarray, dict[str, Any]]:
    """The user's token counts (``--frequencies FILE`` = ``-o frequencies=file:PATH``): a 1-D ``.npy`` of ``V``
    non-negative finite counts (row i's count), or a parquet file with columns ``id`` and ``count``."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"--frequencies {path[:200]}: no such file")
    try:
        if file.suffix == ".parquet":
            import pyarrow.parquet as pq

            t = pq.read_table(file, columns=["id", "count"])
            ids = t.column("id").to_numpy().astype(np.int64)
            cnt = t.column("count").to_numpy().astype(np.float64)
            if ids.size and (ids.min() < 0 or ids.max() >= num_embeddings):
                raise DataError(f"--frequencies {file.name}: ids must lie in 0..{num_embeddings - 1}")
            counts = np.zeros(num_embeddings, dtype=np.float64)
            np.add.at(counts, ids, cnt)
        elif file.suffix == ".npy":
            counts = np.load(file, allow_pickle=False).astype(np.float64)
        else:
            raise UsageError(f"--frequencies {file.name}: use a .npy array of counts or a parquet file (id, count)")
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"--frequencies {file.name}: cannot read the counts ({type(exc).__name__})") from None
    if counts.shape != (num_embeddings,):
        raise DataError(f"--frequencies {file.name}: {counts.shape[0] if counts.ndim == 1 else counts.shape} counts "
                        f"for a {num_embeddings:,}-row table")
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise DataError(f"--frequencies {file.name}: counts must be finite and >= 0")
    return counts, {"kind": "file", "source": str(file.resolve()), "sha256": sha256_file(file),
                    "total_tokens": float(counts.sum()), "seen_rows": int((counts > 0).sum())}


def tier_sizes(counts: np.ndarray, masses: tuple[float, ...]) -> list[tuple[float, int]]:
    """(mass, top-tier size) pairs: the fewest seen rows covering each mass (in 1 .. seen - 1, sizes deduplicated)."""
    seen = np.sort(counts[counts > 0])[::-1]
    if seen.size < 2:
        return []
    cum = np.cumsum(seen) / seen.sum()
    out: list[tuple[float, int]] = []
    for m in masses:
        k = int(np.searchsorted(cum, m - 1e-12)) + 1
        k = min(max(k, 1), seen.size - 1)
        if k not in [size for _, size in out]:
            out.append((m, k))
    return out


def bit_planes(tier_ids: torch.Tensor, id_bits: int) -> torch.Tensor:
    """The packed tier ids ``[blocks, 64 * id_bits / 8]`` as bit planes ``int64 [blocks, id_bits]`` (bit j of plane
    b = bit b of row j's tier id): the same bits, transposed, so :meth:`TieredEmbedding.locate` needs no unpack."""
    ids = unpack_rows(tier_ids, id_bits, BLOCK)  # [blocks, 64]
    weights = torch.ones(BLOCK, dtype=torch.long, device=ids.device) << torch.arange(BLOCK, device=ids.device)
    # distinct powers of two: the sum is the bitwise or (bit 63 is int64's sign bit, as intended)
    return torch.stack([(((ids >> b) & 1) * weights).sum(1) for b in range(id_bits)], 1).contiguous()


def popcount64(x: torch.Tensor) -> torch.Tensor:
    """Set bits of every int64 (the SWAR popcount; the masks clear what an arithmetic shift brings in)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    x = x + (x >> 8)
    x = x + (x >> 16)
    x = x + (x >> 32)
    return x & 0x7F


def map_bytes(num_embeddings: int, n_tiers: int) -> int:
    """Bytes of the tier map: packed tier ids + the rank directory."""
    bits = max(1, (n_tiers - 1).bit_length())
    blocks = -(-num_embeddings // BLOCK)
    width = 2 if num_embeddings < 32768 else 4
    return blocks * (BLOCK * bits // 8) + blocks * n_tiers * width


class TieredEmbedding(CompressedEmbedding):
    """Tier modules + packed tier ids + rank directory (+ a shared code for unseen rows) + the plan."""

    def __init__(self, tiers: list[nn.Module], tier_of: torch.Tensor, shared: torch.Tensor | None,
                 plan: torch.Tensor, dim: int, *, base: str, base_options: dict[str, Any], seed: int):
        super().__init__(int(tier_of.shape[0]), int(dim))
        self.base, self.base_options, self.seed = str(base), dict(base_options), int(seed)
        self.n_coded = len(tiers)  # tiers with a module; tier id n_coded = the shared code
        self.n_ids = self.n_coded + (1 if shared is not None else 0)
        self.id_bits = max(1, (self.n_ids - 1).bit_length())
        self.tiers = nn.ModuleList(tiers)
        v = self.num_embeddings
        blocks = -(-v // BLOCK)
        padded = torch.full((blocks * BLOCK,), -1, dtype=torch.long)
        padded[:v] = tier_of.long()
        # tier ids packed per block of 64 rows (the pad of the last block reads as tier 0 and is never counted)
        self.register_buffer("tier_ids", pack_rows(padded.clamp_min(0).reshape(blocks, BLOCK), self.id_bits))
        per_block = torch.stack([(padded.reshape(blocks, BLOCK) == t).sum(1) for t in range(self.n_ids)], 1)
        before = torch.cumsum(per_block, 0) - per_block
        self.register_buffer("rank_dir", before.to(torch.int16 if v < 32768 else torch.int32).contiguous())
        self.has_shared = shared is not None
        if shared is not None:
            self.register_buffer("shared", shared.float().reshape(-1).contiguous())
        self.register_buffer("plan", plan.to(torch.int32).contiguous())
        self.register_buffer("offsets", torch.arange(BLOCK), persistent=False)
        self.register_buffer("planes", bit_planes(self.tier_ids, self.id_bits), persistent=False)

    def after_load(self) -> None:
        """Recompute the derived (non-persistent) buffers (an exported module's load)."""
        self.offsets.copy_(torch.arange(BLOCK, device=self.offsets.device))
        self.planes = bit_planes(self.tier_ids, self.id_bits)

    def locate(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tier id, index in tier) of every id (flat long tensors), in O(1) vectorised work per id: the id's
        tier is its bit in each of the block's bit planes, and its index is the block's rank-directory entry plus
        the same-tier rows before it in the block (a popcount of the planes' match mask below the id)."""
        flat = ids.reshape(-1).long()
        block, offset = flat // BLOCK, flat % BLOCK
        planes = self.planes[block]  # [n, id_bits] int64: bit j of plane b = bit b of row j's tier id
        bits = (planes >> offset.unsqueeze(1)) & 1  # [n, id_bits]: the id's own tier, bit by bit
        tier = (bits << torch.arange(self.id_bits, device=bits.device)).sum(1)
        same = planes[:, 0] ^ (bits[:, 0] - 1)  # rows whose bit 0 equals the id's (x ^ 0 = x, x ^ -1 = ~x)
        for b in range(1, self.id_bits):  # a loop over the (at most 4) bits of a tier id, not over rows
            same = same & (planes[:, b] ^ (bits[:, b] - 1))
        below = ~(torch.full_like(offset, -1) << offset)  # bits 0 .. offset-1
        slot = self.rank_dir.reshape(-1)[block * self.n_ids + tier].long() + popcount64(same & below)
        return tier, slot

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tier, slot = self.locate(ids)
        n = tier.shape[0]
        # rows of the shared code are right from the start; each coded tier overwrites its rows by index (a loop
        # over the few tiers; index_copy_ is several times faster than boolean-mask assignment on CPU)
        out = (self.shared.expand(n, -1).clone() if self.has_shared
               else torch.zeros(n, self.embedding_dim, device=self.tier_ids.device))
        for t, module in enumerate(self.tiers):
            rows = (tier == t).nonzero().squeeze(1)
            if rows.numel():
                out.index_copy_(0, rows, module(slot.index_select(0, rows)).float())
        return out.reshape(*ids.shape, self.embedding_dim)

    # -- a state_dict with another plan rebuilds the tier modules first -------------------------------
    def _load_from_state_dict(self, state_dict: Any, prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        plan = state_dict.get(prefix + "plan")
        if isinstance(plan, torch.Tensor) and (plan.shape != self.plan.shape or not torch.equal(plan.to(self.plan),
                                                                                                self.plan)):
            self.tiers = nn.ModuleList(_shells(self.base, self.base_options, plan, self.embedding_dim, self.seed))
            self.n_coded = len(self.tiers)
            for name in ("tier_ids", "rank_dir", "plan"):
                incoming = state_dict.get(prefix + name)
                if isinstance(incoming, torch.Tensor):
                    self._buffers[name] = torch.empty_like(incoming)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.planes = bit_planes(self.tier_ids, self.id_bits)


def _tier_method(base: str, base_options: Mapping[str, Any], nbits: int) -> Method:
    opts = dict(base_options)
    if nbits:
        opts["nbits"] = nbits
    return get_method(base, **opts)


def _shells(base: str, base_options: Mapping[str, Any], plan: torch.Tensor, d: int, seed: int) -> list[nn.Module]:
    """Tier modules of the right structure for ``plan`` (fitted on a seeded stand-in table; values get loaded)."""
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for rows, budget, nbits in plan.tolist():
        m = _tier_method(base, base_options, int(nbits))
        cfg = m.configure(int(rows), d, int(budget))
        out.append(m.compress(torch.randn(int(rows), d, generator=g) * 0.05, cfg, seed=seed))
    return out


def _weighted_score(module: nn.Module, y: torch.Tensor, w: np.ndarray) -> float:
    """``sum_i w_i cos(decoded_i, y_i)`` over the tier's rows, decoded block by block (no full decoded copy)."""
    n, d = y.shape
    cos = np.empty(n, dtype=np.float64)
    for rows in row_blocks(n, rows_per_block(4 * 4 * d)):  # decoded block + the cosine's temporaries, fp32
        dec = module(torch.arange(rows.start, rows.stop)).float()
        cos[rows] = nn.functional.cosine_similarity(dec, y[rows].float(), dim=1, eps=1e-12).double().numpy()
    return float((cos * w).sum())


@METHODS.register("tiered")
class Tiered(Method):
    """Frequency tiers (shipped calibration corpus), each compressed by a base codec at a searched budget.

    Memory (issue 23): the search scores each fit block by block (``_weighted_score``: no decoded copy of a
    tier) and keeps only the best candidate's tier modules, so the fit holds the table, one tier's rows and the
    base codec's temporaries, whatever the number of candidates. Fit peak on the scale grid's 32,768 x 768
    table (96 MiB in fp32): 1,652 MB when every candidate materialised its tiers and every fitted module was
    kept, 568 MB with block-wise scoring, 348 MB (3.5x the table) with both; the fidelity is unchanged
    (0.700233). Its estimate is 4x the table (the table included) plus the harness' 256 MiB."""

    memory_factor = 4.0

    card = MethodCard(
        name="tiered",
        version=1,
        family="frequency-aware",
        reference="frequency-aware allocation (cf. Ginart et al. 2021, Mixed Dimension Embeddings, ISIT); "
                  "per-tier base codec (default pq: Jegou et al. 2011, faiss)",
        modes=("posthoc",),
        description="rows tiered by calibration-corpus frequency; each tier coded by a base codec at a budget "
                    "searched on the table (weighted row cosine); tier map counted",
    )

    class Options(MethodOptions):
        base: str = opt("pq", "the per-tier codec: any posthoc method")
        alpha: float = opt(DEFAULT_ALPHA, "score weights count^alpha (1 = plain frequency)", non_negative())
        # not a Literal: file:PATH is open-ended (checked by _frequencies)
        frequencies: str = opt("auto", "auto (shipped counts when the vocabulary matches, else row order) | corpus | "
                                       "row-order | file:PATH (your counts: --frequencies FILE)")
        unseen: Literal["shared", "rest"] = opt("shared", "shared: rows never seen share one fp32 code | rest: they "
                                                          "join the second tier")

    def tuning_space(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> list[dict[str, Any]]:
        """For the harness' tuning on validation data: the score's weights (``alpha`` 0.5 by default, 1 = plain
        frequency, 0.25) and unseen rows in the second tier instead of one shared code."""
        return [{}, {"alpha": 1.0}, {"alpha": 0.25}, {"unseen": "rest"}]

    # -- options -----------------------------------------------------------------------------------------
    def _frequencies(self) -> str:
        value = self.option("frequencies")
        if not is_frequency_mode(value):
            raise UsageError(f"option frequencies={value!r} of method 'tiered' must be one of "
                             f"{', '.join(FREQUENCIES)} or file:PATH")
        return value

    def _base(self) -> tuple[str, Method]:
        name = self.option("base")
        if name == "tiered" or "+" in name:
            raise UsageError(f"option base={name!r} of method 'tiered' must be a plain posthoc method")
        method = get_method(name)
        if "posthoc" not in method.card.modes:
            raise UsageError(f"option base={name!r} of method 'tiered': '{name}' has no posthoc mode")
        return name, method

    # -- the candidate grid (table-free) ---------------------------------------------------------------
    def _layout(self, num_embeddings: int) -> tuple[np.ndarray, dict[str, Any], list[int], int]:
        counts, source = row_counts(num_embeddings, self._frequencies())
        unseen = int((counts <= 0).sum())
        shared = unseen > 0 and self.option("unseen") == "shared"
        return counts, source, tier_sizes(counts, MASSES), (unseen if shared else 0)

    def _grid(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        """The candidate plans that fit ``budget_bytes`` (possibly none) and what they were derived from."""
        base_name, base = self._base()
        counts, source, sizes, n_shared = self._layout(num_embeddings)
        coded_rows = num_embeddings - n_shared
        n_ids = 2 + (1 if n_shared else 0)
        overhead = map_bytes(num_embeddings, n_ids) + 3 * 4 * 2 + (4 * embedding_dim if n_shared else 0)
        variants = [0, *NBITS_VARIANTS] if "nbits" in base.card.options else [0]
        avail = budget_bytes - overhead
        candidates: list[dict[str, Any]] = []
        for mass, k in sizes:
            rows = (k, coded_rows - k)
            for share in SHARES:
                budgets = (int(avail * share), avail - int(avail * share)) if avail > 0 else (0, 0)
                tiers = []
                for r, b in zip(rows, budgets, strict=True):
                    ok = [nb for nb in variants if self._fits(base_name, r, embedding_dim, b, nb)]
                    if not ok:
                        break
                    tiers.append({"rows": r, "budget": b, "nbits_variants": ok})
                else:
                    candidates.append({"mass": mass, "top_rows": k, "share": share, "tiers": tiers})
        return {"base": base_name, "variants": variants, "sizes": sizes, "coded_rows": coded_rows,
                "overhead": overhead, "source": source, "seen_rows": int((counts > 0).sum()),
                "shared_rows": n_shared, "n_ids": n_ids, "candidates": candidates}

    def configure(self, num_embeddings: int, embedding_dim: int, budget_bytes: int) -> dict[str, Any]:
        grid = self._grid(num_embeddings, embedding_dim, budget_bytes)
        if not grid["candidates"]:
            if not grid["sizes"]:
                raise UsageError("method 'tiered' needs at least two rows with a non-zero frequency")
            raise self.unattainable(num_embeddings, embedding_dim, budget_bytes,
                                    self._smallest(num_embeddings, embedding_dim, budget_bytes, grid))
        return {"base": grid["base"], "alpha": self.option("alpha"),
                "frequencies": grid["source"], "seen_rows": grid["seen_rows"], "shared_rows": grid["shared_rows"],
                "unseen": self.option("unseen"), "map_bytes": map_bytes(num_embeddings, grid["n_ids"]),
                "block": BLOCK, "candidates": grid["candidates"]}

    def _smallest(self, v: int, d: int, budget_bytes: int, grid: dict[str, Any]) -> int:
        """The smallest budget some candidate meets: a lower bound from each tier's minimum, then upwards."""
        bounds = []
        for _, k in grid["sizes"]:
            top, rest = (self._min_bytes(grid["base"], r, d, grid["variants"]) for r in (k, grid["coded_rows"] - k))
            bounds += [grid["overhead"] + max(math.ceil(top / s), math.ceil(rest / (1 - s))) for s in SHARES]
        need = max(min(bounds), budget_bytes + 1)
        for _ in range(5000):
            if self._grid(v, d, need)["candidates"]:
                return need
            need = max(need + 1, int(need * 1.001))
        return need  # pragma: no cover - the bounds above are tight in practice

    def _fits(self, base: str, rows: int, d: int, budget: int, nbits: int) -> bool:
        if rows < 1 or budget < 1:
            return False
        try:
            _tier_method(base, {}, nbits).configure(rows, d, budget)
            return True
        except (UnattainableBudgetError, UsageError):
            return False

    def _min_bytes(self, base: str, rows: int, d: int, variants: list[int]) -> int:
        best = None
        for nb in variants:
            try:
                _tier_method(base, {}, nb).configure(rows, d, 1)
                need = 1
            except UnattainableBudgetError as exc:
                need = exc.min_bytes
            except UsageError:
                continue
            best = need if best is None else min(best, need)
        return int(best if best is not None else 10**15)

    # -- the search (on the table) -----------------------------------------------------------------------
    def compress(self, table: torch.Tensor, config: Mapping[str, Any], *, seed: int) -> CompressedEmbedding:
        v, d = table.shape
        x = table.detach().float().cpu()
        counts, _, _, n_shared = self._layout(v)
        order = np.argsort(-counts, kind="stable")
        if n_shared:
            seen_order = order[counts[order] > 0]
            shared_rows = np.sort(order[counts[order] <= 0])
        else:
            seen_order, shared_rows = order, np.zeros(0, dtype=np.int64)
        weights = np.where(counts > 0, np.power(np.maximum(counts, 0), float(config["alpha"])), 0.0)
        base = str(config["base"])
        # the search keeps each fit's score, and the fitted modules of the best candidate so far only: the
        # other modules are dropped as soon as they are scored, so the fit's memory does not grow with the
        # number of candidates (48 fits on a 32,768-row table used to keep 48 modules alive)
        scores: dict[tuple[Any, ...], float] = {}
        kept: dict[tuple[Any, ...], nn.Module] = {}

        def fit_module(sub: torch.Tensor, budget: int, nbits: int) -> nn.Module:
            m = _tier_method(base, {}, nbits)
            return m.compress(sub, m.configure(sub.shape[0], d, budget), seed=seed).eval()

        def fit(rows: np.ndarray, budget: int, nbits: int) -> tuple[float, tuple[Any, ...], nn.Module | None]:
            key = (int(rows[0]), rows.size, budget, nbits)
            if key in scores:
                return scores[key], key, kept.get(key)
            sub = x[torch.from_numpy(rows)]
            module = fit_module(sub, budget, nbits)
            with torch.no_grad():
                scores[key] = _weighted_score(module, sub, weights[rows])
            return scores[key], key, module

        best: tuple[float, Any] | None = None
        for cand in config["candidates"]:
            k = int(cand["top_rows"])
            groups = [np.sort(seen_order[:k]), np.sort(seen_order[k:])]
            chosen = []
            for rows, tier in zip(groups, cand["tiers"], strict=True):
                options = [fit(rows, int(tier["budget"]), int(nb)) for nb in tier["nbits_variants"]]
                chosen.append(max(options, key=lambda o: o[0]))
            score = sum(c[0] for c in chosen)
            if best is None or score > best[0] + 1e-12:
                best = (score, (cand, groups, chosen))
                kept = {key: mod for _, key, mod in chosen if mod is not None}  # fit() returns kept modules too
        assert best is not None
        score, (cand, groups, chosen) = best
        # a chosen fit first scored by an earlier, worse candidate was dropped: refit it (compress is seeded)
        modules = [kept[c[1]] if c[1] in kept else fit_module(x[torch.from_numpy(rows)], int(tier["budget"]),
                                                              int(c[1][3]))
                   for rows, tier, c in zip(groups, cand["tiers"], chosen, strict=True)]
        tier_of = torch.full((v,), len(groups), dtype=torch.long)
        for t, rows in enumerate(groups):
            tier_of[torch.from_numpy(rows)] = t
        shared = x[torch.from_numpy(shared_rows)].mean(0) if n_shared else None
        plan = torch.tensor([[rows.size, int(tier["budget"]), c[1][3]] for rows, tier, c in
                             zip(groups, cand["tiers"], chosen, strict=True)], dtype=torch.int32)
        module = TieredEmbedding(modules, tier_of, shared, plan, d, base=base, base_options={}, seed=seed)
        module.fitted = {"top_rows": int(cand["top_rows"]), "share": float(cand["share"]),
                         "score": round(float(score / max(weights.sum(), 1e-300)), 6),
                         "tiers": [[int(r), int(b), int(nb)] for r, b, nb in plan.tolist()],
                         "fits": len(scores)}
        return module
