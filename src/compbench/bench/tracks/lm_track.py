"""The ``lm`` track's hooks: compress a causal LM's token table and measure perplexity with it.

Two modes (``--lm-mode``, part of the cell's identity and key):

- ``input`` (default): only the input lookup uses the compressed table; the output head stays the dense
  table, untied. The seeds' setting: it isolates the input side. It saves no memory in a tied model (the dense
  table is still needed for the head).
- ``tied``: one compressed table serves the input lookup *and* the output head (``logits = h @ Ê^T``). Only
  this mode saves the memory of a tied model (both shipped models tie their head to the token table).

The model is never modified: the hooks feed ``inputs_embeds`` (the compressed rows, times the model's own
embedding scale, e.g. sqrt(d) for Gemma-3) to the decoder body and multiply its final hidden states by the head
table themselves (Gemma's final logit soft-capping applied when the config sets it). Quality is evaluated with
the compressed module's *materialised* table (identical outputs, one gather); the lifecycle times the module's
own lookup against the dense one.

The dense model's final hidden states on the task's windows are computed once per (model file, windows) and
cached under ``<cache>/compbench/lm/`` with a sha256 sidecar (a mismatch recomputes them, loudly); from them the
dense next-token distribution of any window is one matrix product, which gives ``kl`` and ``top1`` and the
per-window dense NLL (``ppl_ratio`` = exp of the mean NLL difference).

**Budget**: as on every track, against the fp32 table (``V x d x 4`` B). The record also states the ratio
against the table *as shipped* (``measurements.shipped``: Q8_0, 8.5 bits per weight), so 40x against fp32 is
never read as 40x against the download (it is 40 / 3.76 = 10.6x smaller than the shipped Q8_0 table).

**Healing** (``--heal STEPS``, off by default): :mod:`compbench.bench.tracks.lm_heal`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compbench.bench.cell.accounting import stored_bytes
from compbench.bench.cell.lifecycle import CellFailed, Outcome, Subject
from compbench.bench.tracks.lm_calibration import ensure_counts
from compbench.bench.tracks.lm_heal import heal
from compbench.bench.tracks.lm_settings import lm_mode
from compbench.checksums import sha256_file
from compbench.datasets.frequencies import load_token_frequencies
from compbench.models.causal_lm import hidden_states, lm_cache_dir, load_lm, log_probs, softcap
from compbench.stats import Items

POSITION_CHUNK = 128  #: positions per log-softmax block (bounds memory on a 262,144-token vocabulary)


def get_lm(ctx: Any) -> Any:
    """The cell's language model (cached in ``ctx.cache`` across the cells of one process)."""
    key = f"lm:{ctx.config.model}:{ctx.device}"
    if key not in ctx.cache:
        ctx.cache[key] = load_lm(ctx.config.model, device=str(ctx.device))
    return ctx.cache[key]


def window_scores(h: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, dense_h: torch.Tensor,
                  dense_head: torch.Tensor, cap: float | None) -> tuple[float, float, float, float]:
    """For one window's scored positions: (mean NLL, mean KL(dense || candidate), top-1 agreement, dense NLL)."""
    nll = kl = agree = dnll = 0.0
    n = targets.numel()
    for s in range(0, n, POSITION_CHUNK):
        e = min(s + POSITION_CHUNK, n)
        lp = log_probs(h[s:e], head, cap)
        dlp = log_probs(dense_h[s:e], dense_head, cap)
        t = targets[s:e]
        nll -= lp.gather(1, t[:, None]).sum().item()
        dnll -= dlp.gather(1, t[:, None]).sum().item()
        kl += (dlp.exp() * (dlp - lp)).sum().item()
        agree += (lp.argmax(-1) == dlp.argmax(-1)).sum().item()
    return nll / n, kl / n, agree / n, dnll / n


def dense_cache_path(lm: Any, windows_sha: str) -> Path:
    """Where the dense hidden states of (model, windows) are cached."""
    rev = str(lm.info.get("revision") or "norev")[:12]
    return lm_cache_dir() / f"dense-{lm.info['name']}-{rev}-{windows_sha[:12]}.safetensors"


def dense_hidden(lm: Any, windows: torch.Tensor, windows_sha: str, *, log: Any = None) -> torch.Tensor:
    """The dense model's final hidden states ``[n, L, d]`` on ``windows`` (cached; see the module docstring)."""
    from safetensors.torch import load_file, save_file

    path = dense_cache_path(lm, windows_sha)
    side = path.with_suffix(".json")
    if path.is_file() and side.is_file():
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
            if meta.get("sha256") == sha256_file(path):
                h = load_file(str(path))["hidden"]
                if tuple(h.shape[:2]) == tuple(windows.shape):
                    return h
            reason = "its sha256 or shape does not match its sidecar"
        except (OSError, ValueError) as exc:
            reason = f"it cannot be read ({type(exc).__name__})"
        if log is not None:
            log(f"recomputing the dense hidden states: the cache {path.name} is not valid ({reason})")
    table = lm.table
    out = []
    with torch.inference_mode():
        for w in windows:
            out.append(hidden_states(lm, w.to(table.device), table).float().cpu())
    h = torch.stack(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"hidden": h.contiguous()}, str(tmp))
    tmp.replace(path)
    side.write_text(json.dumps({"sha256": sha256_file(path), "model": lm.info.get("name"),
                                "revision": lm.info.get("revision"), "windows_sha256": windows_sha}), encoding="utf-8")
    return h


def evaluate_table(lm: Any, windows: torch.Tensor, table: torch.Tensor, head: torch.Tensor, dense_h: torch.Tensor,
                   dense_head: torch.Tensor, progress: Any = None) -> dict[str, np.ndarray]:
    """Per-window ``nll``, ``kl``, ``top1`` and ``dense_nll`` of the LM with ``table`` as input and ``head`` as output."""
    cap = softcap(lm.model)
    cols: dict[str, list[float]] = {"nll": [], "kl": [], "top1": [], "dense_nll": []}
    dev = table.device
    with torch.inference_mode():
        for i, w in enumerate(windows):
            w = w.to(dev)
            h = hidden_states(lm, w, table)
            nll, kl, top1, dnll = window_scores(h[:-1], head, w[1:], dense_h[i, :-1].to(dev), dense_head, cap)
            for k, v in zip(("nll", "kl", "top1", "dense_nll"), (nll, kl, top1, dnll)):
                cols[k].append(v)
            if progress is not None:
                progress("tick", "evaluate: perplexity windows", 0.0, done=i + 1, total=len(windows))
    return {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}


def shipped_facts(lm: Any, nbytes: int) -> dict[str, Any] | None:
    """The ratio against the table as shipped (Q8_0: 8.5 bits per weight), for named models."""
    bits = lm.info.get("shipped_bits")
    if not bits:
        return None
    v, d = lm.info["vocab_size"], lm.info["dim"]
    shipped = int(math.ceil(v * d * bits / 8))
    return {"format": lm.info.get("shipped_table"), "bits_per_weight": bits, "bytes": shipped,
            "ratio_vs_shipped": shipped / nbytes if nbytes else None,
            "note": "the budget and achieved_ratio are against fp32 (V x d x 4 B), the suite's convention"}


class LMHooks:
    """The lm track's part of the lifecycle (:mod:`compbench.bench.cell.lifecycle`)."""

    def __init__(self, ctx: Any):
        self.ctx = ctx

    def load(self, ctx: Any) -> Subject:
        """The LM's token table, the task's windows and the dense hidden states on them."""
        t0 = time.perf_counter()
        lm = get_lm(ctx)
        load_s = time.perf_counter() - t0

        # the LM tokenizer's calibration counts, for tiered / mde-posthoc / the lookup workload (a model with
        # MiniLM's 30,522-token vocabulary, e.g. the tests' tiny LM built on that tokenizer, uses the shipped counts)
        counts = None if lm.info["vocab_size"] == load_token_frequencies().vocab_size else ensure_counts(lm)
        windows = ctx.task.windows(lm.tokenizer)
        cap = int((ctx.config.extra or {}).get("max_windows") or 0)
        if cap:  # a smoke run on the first windows (its own key, ``+w<N>``; never a leaderboard cell)
            windows = windows[:cap]
        wsha = ctx.task.windows_sha256(windows)
        t1 = time.perf_counter()
        dense_h = dense_hidden(lm, windows, wsha)
        table = lm.table.float().cpu().clone()
        v, d = table.shape
        mode = lm_mode(ctx.config)
        model = {**lm.info, "mode": mode}
        measurements = {"lm": {"mode": mode, "windows": int(windows.shape[0]), "context": int(windows.shape[1]),
                               "scored_tokens": int(windows.shape[0] * (windows.shape[1] - 1)),
                               "windows_sha256": wsha, "load_s": load_s, "calibration_counts": counts.name if counts else None,
                               "dense_hidden_s": time.perf_counter() - t1}}
        return Subject(num_embeddings=v, dim=d, model=model, data_sha256=ctx.task.data_sha256(),
                       backbone_params=int(lm.info["total_params"]) - v * d, measurements=measurements,
                       revision=lm.info.get("revision"),
                       state={"lm": lm, "windows": windows, "table": table, "dense_h": dense_h, "mode": mode})

    def produce(self, ctx: Any, subject: Subject, config: dict[str, Any], seed: int) -> nn.Module:
        """Compress the token table (and heal it when ``--heal`` asks)."""
        module = ctx.method.compress(subject.state["table"].to(ctx.device), config, seed=seed).eval()
        steps = int((ctx.config.extra or {}).get("heal") or 0)
        if steps > 0 and ctx.method.card.name != "dense":
            subject.state["heal"] = heal(ctx, subject, module, steps, seed)  # recorded by evaluate
        return module

    def evaluate(self, ctx: Any, subject: Subject, module: nn.Module, config: dict[str, Any], seed: int) -> Outcome:
        """Perplexity, KL and top-1 agreement with the materialised table (the head per the mode)."""
        st = subject.state
        lm, dense_table = st["lm"], st["table"].to(ctx.device)
        with torch.inference_mode():
            table = module.materialize().float().to(ctx.device)  # type: ignore[operator]
        if not bool(torch.isfinite(table).all()):
            raise CellFailed("the compressed table has non-finite values")
        head = table if st["mode"] == "tied" else dense_table
        t0 = time.perf_counter()
        cols = evaluate_table(lm, st["windows"], table, head, st["dense_h"], dense_table,
                              progress=getattr(ctx, "progress", None))
        nll = float(cols["nll"].mean())
        if not math.isfinite(nll):
            raise CellFailed(f"the mean NLL is not finite ({nll})")
        dense_nll = float(cols["dense_nll"].mean())
        scores = {"nll": nll, "perplexity": math.exp(nll), "kl": float(cols["kl"].mean()),
                  "top1": float(cols["top1"].mean()), "dense_nll": dense_nll,
                  "ppl_ratio": math.exp(nll - dense_nll), "delta_nll": nll - dense_nll}
        measurements: dict[str, Any] = {"lm_eval_s": time.perf_counter() - t0,
                                        "per_window": {k: [round(float(x), 6) for x in v] for k, v in cols.items()}}
        if "heal" in st:
            measurements["heal"] = st["heal"]
        shipped = shipped_facts(lm, stored_bytes(module))
        if shipped is not None:
            measurements["shipped"] = shipped
        return Outcome(scores=scores, measurements=measurements, items=Items("mean", cols["nll"]))

    def dense_module(self, ctx: Any, subject: Subject) -> nn.Module:
        """The dense table as an ``nn.Embedding`` (the lookup baseline)."""
        return nn.Embedding.from_pretrained(subject.state["table"], freeze=True)


__all__ = ["LMHooks", "dense_hidden", "evaluate_table", "get_lm", "window_scores"]

