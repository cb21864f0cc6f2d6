#!/usr/bin/env python
"""Time one training step of anchor-level ADE: variable-length SAT (the code) vs the padded L x S grid.

Both paths run in the same process, alternating, on the same model and batch, so the speed-up is a
same-run ratio. The padded reference is what ``ADEClassifier`` computed before the variable-length path:
``nn.MultiheadAttention`` over all L x S slots with the inactive slots and padding words masked.
The dictionaries are random with the slot widths ``configure`` picks at 100x / 40x / 10x for the MiniLM
table (S = 3 / 8 / 29) and active counts drawn near the cap; the batch is TREC-sized (32 sentences,
lengths 5..20 words) unless ``--batch``/``--max-words`` say otherwise.

    python scripts/ade_sat_step.py --threads 1 --reps 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from compbench.methods.ade_model import ADEClassifier, ADEEmbedding

V, D = 30522, 384
CONFIGS = (("100x", 104, 3, 2), ("40x", 256, 8, 6), ("10x", 700, 29, 18))  # budget, K, S, min active


def padded_word_states(model: ADEClassifier, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Word states from SAT over the padded ``L x S`` slot grid (masked slots), the reference layout."""
    x, (bi, li, si) = model.anchor_inputs(ids, mask)
    b, length = ids.shape
    s = model.embedding.slots
    valid = torch.zeros(b, length, s, dtype=torch.bool).index_put((bi, li, si), torch.tensor(True))
    grid = torch.zeros(b, length, s, D).index_put((bi, li, si), x + model._pe(length)[li])
    h = model.sat(grid.reshape(b, length * s, D), valid.reshape(b, length * s))
    return (h.reshape(b, length, s, D) * valid.unsqueeze(-1)).sum(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-words", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch} x <= {args.max_words} words, "
          f"median of {args.reps} steps per path")
    print("| budget | K | S | mean active | padded s/step | variable-length s/step | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for budget, k, s, lo in CONFIGS:
        g = torch.Generator().manual_seed(0)
        counts = torch.randint(lo, s + 1, (V,), generator=g)
        ids = torch.randint(0, k, (V, s), generator=g)
        valid = torch.arange(s) < counts[:, None]
        emb = ADEEmbedding(torch.randn(k, D, generator=g), torch.where(valid, ids, 0),
                           torch.where(valid, torch.rand(V, s, generator=g), 0.0), counts, train_anchors=True)
        model = ADEClassifier(emb, 6, variant="anchor", dropout=0.0)
        x = torch.randint(0, V, (args.batch, args.max_words), generator=g)
        lengths = torch.randint(5, args.max_words + 1, (args.batch,), generator=g)
        lengths[0] = args.max_words
        mask = torch.arange(args.max_words) < lengths[:, None]
        y = torch.randint(0, 6, (args.batch,), generator=g)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

        def step(padded: bool) -> float:
            t0 = time.perf_counter()
            h = padded_word_states(model, x, mask) if padded else model.word_states(x, mask)
            loss = F.cross_entropy(model.out(model.pooler(h, mask)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return time.perf_counter() - t0

        step(True), step(False)  # warm-up
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.reps):
            for padded in (True, False):
                times[padded].append(step(padded))
        a, b = statistics.median(times[True]), statistics.median(times[False])
        print(f"| {budget} | {k} | {s} | {counts.float().mean():.1f} | {a:.3f} | {b:.3f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
