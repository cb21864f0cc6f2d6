#!/usr/bin/env python
"""Print the ADE train-track tables of docs/ade.md from the records (nothing is typed in by hand).

For TREC and SST-2 (CPU, 1 thread): dense at the MiniLM width 384 as the reference, then ``ade`` and
``ade-merged`` (width 384), ``hashing``, ``fourier-mlp`` and ``lowrank`` at the same width 384, and
``hashing`` and ``fourier-mlp`` at the default width 128, at 10x / 40x / 100x.
Accuracy is the leaderboard's cell aggregate (:func:`compbench.leaderboard.frame.aggregate`): separate
single-seed records of a cell are pooled, and a record whose seeds lie inside another record's larger
seed set is not counted twice. Throughputs and peak RSS are taken per seed from the same records
(``measurements.per_seed`` and ``eval_throughput.per_seed``; the record with more seeds wins for a seed both hold): eval and train
samples/s are the mean over seeds, peak RSS the largest per-seed training high-water mark.
A ``†`` marks a cell with an ``ade`` record made before the variable-length SAT (commit dce9480).

    python scripts/ade_table.py --results results             # train track
    python scripts/ade_table.py --results results --posthoc   # posthoc: STS-B, fidelity, CR

``--posthoc`` prints, for STS-B, table fidelity and CR, ADE against SVD and PQ: the main score (with
the achieved ratio), the lookup tokens/s ratio against dense measured in the same run, and the peak RSS;
fidelity adds the relative Frobenius error, the 10-NN overlap and the sentence-embedding cosine.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from compbench.bench.results.record import Record
from compbench.bench.results.record_store import ResultStore
from compbench.leaderboard.frame import aggregate, to_frame

VARLEN_COMMIT = "dce9480"
#: (method, width, task-key suffix): ADE's own width is 384 without a tag (its anchors fix it); the other
#: methods at 384 carry the ``+d384`` settings tag, at the default 128 none.
ROWS = (("ade", 384, ""), ("ade-merged", 384, ""), ("hashing", 384, "+d384"), ("fourier-mlp", 384, "+d384"),
        ("lowrank", 384, "+d384"), ("hashing", 128, ""), ("fourier-mlp", 128, ""))
BUDGETS = ("10x", "40x", "100x")


def _after_varlen(sha: str | None, repo: Path) -> bool:
    if not sha:
        return False
    done = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", VARLEN_COMMIT, sha],
                          capture_output=True)
    return done.returncode == 0


def per_seed(records: list[Record]) -> dict[int, dict[str, Any]]:
    """Seed -> that seed's training summary; a record with more seeds overrides one with fewer."""
    out: dict[int, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (len(r.metrics.seeds or [r.seed]), r.key)):
        evals = r.measurements["eval_throughput"]["per_seed"]
        for s, ev in zip(r.measurements.get("per_seed", []), evals, strict=True):
            out[int(s["seed"])] = {**s, "_eval": ev, "_sha": (r.provenance or {}).get("git_sha")}
    return out


def cell_line(label: str, budget: str, cell: Any, records: list[Record], ref_eval: float, repo: Path) -> str:
    """One Markdown row (``not run`` when the cell has no ok record)."""
    if cell is None or cell["status"] != "ok":
        return f"| {label} | {budget} | not run | | | | | |"
    seeds = per_seed(records)
    ev = sum(s["_eval"] for s in seeds.values()) / len(seeds)
    tr = sum(s["train_samples_per_s"] for s in seeds.values()) / len(seeds)
    peak = max(s["train_peak_rss_bytes"] for s in seeds.values())
    n = cell["n"]
    acc = f"{cell['main']:.3f} ± {cell['main_std']:.3f}" if n > 1 else f"{cell['main']:.3f} (seed {cell['seeds'][0]} only)"
    if n == 2:
        acc += " (2 seeds)"
    if label.startswith("ade (") and not all(_after_varlen(s["_sha"], repo) for s in seeds.values()):
        acc += " †"
    return (f"| {label} | {budget} | {acc} | {cell['achieved_ratio']:.2f}x | {records[-1].params.trainable:,} | "
            f"{ev:.0f} ({ev / ref_eval:.2f}x) | {tr:.0f} | {peak / 2**20:.0f} MiB |")


POSTHOC_METHODS = ("ade", "svd", "pq")
POSTHOC_TASKS = (("stsb", "STS-B, cosine Spearman"), ("fidelity", "table fidelity, mean row cosine"),
                 ("cr", "CR, logistic-regression accuracy (10-fold CV)"))


def posthoc_tables(records: list[Record]) -> None:
    """Print the posthoc tables (one per task) from the records."""
    by_key = {r.key: r for r in records if r.track == "posthoc" and r.status == "ok"}
    for task, title in POSTHOC_TASKS:
        dense = by_key.get(f"posthoc/{task}/dense/1x/cpu-1t-s0")
        if dense is None:
            continue
        print(f"\n**{title}** (dense {dense.metrics.main:.4f}, peak RSS "
              f"{dense.measurements['memory']['peak_rss_bytes'] / 2**30:.2f} GiB)\n")
        extra = task == "fidelity"
        head = "| method | budget | score | achieved | lookup vs dense (same run) | peak RSS |"
        if extra:
            head += " rel. Frobenius error | 10-NN overlap | sentence cosine |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for method in POSTHOC_METHODS:
            for budget in BUDGETS:
                r = by_key.get(f"posthoc/{task}/{method}/{budget}/cpu-1t-s0")
                if r is None:
                    print(f"| {method} | {budget} | not run | | | |" + (" | | |" if extra else ""))
                    continue
                m = r.measurements
                line = (f"| {method} | {budget} | {r.metrics.main:.4f} | {r.budget.achieved_ratio:.2f}x | "
                        f"{m['lookup']['ratio']:.2f}x | {m['memory']['peak_rss_bytes'] / 2**30:.2f} GiB |")
                if extra:
                    sc = r.metrics.scores
                    line += (f" {sc['rel_frobenius_error']:.3f} | {sc['knn10_overlap']:.3f} | "
                             f"{sc['sentence_cosine']:.4f} |")
                print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--repo", default=".", help="git checkout used to date records against the varlen commit")
    ap.add_argument("--posthoc", action="store_true", help="print the posthoc tables instead of the train track")
    args = ap.parse_args()
    if args.posthoc:
        posthoc_tables([r for r in ResultStore(args.results).iter_records()
                        if isinstance(r, Record) and r.device.threads == 1 and r.device.kind == "cpu"])
        return
    records = [r for r in ResultStore(args.results).iter_records()
               if isinstance(r, Record) and r.track == "train" and r.device.threads == 1 and r.device.kind == "cpu"]
    cells = aggregate(to_frame(records))
    by_key = {r.key: r for r in records}
    repo = Path(args.repo)

    def find(task: str, method: str, budget: str) -> tuple[Any, list[Record]]:
        sel = cells[(cells["task"] == task) & (cells["variant"] == method) & (cells["budget"] == budget)]
        if sel.empty:
            return None, []
        cell = sel.iloc[-1]
        return cell, [by_key[k] for k in cell["keys"]]

    for task in ("trec", "sst2"):
        d384, d384_recs = find(task + "+d384", "dense", "1x")
        d128, _ = find(task, "dense", "1x")
        seeds = per_seed(d384_recs)
        ref_eval = sum(s["_eval"] for s in seeds.values()) / len(seeds)
        peak = max(s["train_peak_rss_bytes"] for s in seeds.values())
        print(f"\n**{task.upper()}** (dense at d = 384: {d384['main']:.3f} ± {d384['main_std']:.3f}, "
              f"{d384_recs[-1].params.trainable:,} trainable, eval {ref_eval:.0f} samples/s, peak {peak / 2**20:.0f} MiB; "
              f"dense at d = 128: {d128['main']:.3f} ± {d128['main_std']:.3f})\n")
        print("| method (width) | budget | accuracy | achieved | trainable params | eval samples/s (vs dense-384) "
              "| train samples/s | peak RSS |")
        print("|---|---|---|---|---|---|---|---|")
        for method, width, suffix in ROWS:
            for budget in BUDGETS:
                cell, recs = find(task + suffix, method, budget)
                print(cell_line(f"{method} ({width})", budget, cell, recs, ref_eval, repo))
    print(f"\n† recorded before the variable-length SAT (commit {VARLEN_COMMIT}): the padded L x S layout, so its "
          "throughputs are lower; the accuracy is the same computation.")


if __name__ == "__main__":
    main()
