"""Export every posthoc method at 10x and 40x (MiniLM's token table, 1 thread) and print the export round-trip
table of issue 32: counted bytes, file bytes, whether the loaded module's output equals the harness's decode bit for
bit, and the loaded module's lookup speed against ``nn.Embedding`` in the same process (median of alternating
rounds, Zipf ids: :func:`compbench.export.decode_speed`).

Usage:  .venv/bin/python scripts/decode_speed.py [--methods pq,tiered] [--budgets 10x,40x] [--out FILE.md]
Run it on a quiet machine: the ratios are measured in one process, but a busy machine makes them noisy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    from compbench.artifact import load_embedding
    from compbench.config import RunConfig
    from compbench.errors import UnattainableBudgetError, UsageError
    from compbench.export import decode_speed, export_cell
    from compbench.methods import get_method, list_methods

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=None, help="comma-separated (default: every posthoc method)")
    p.add_argument("--budgets", default="10x,40x")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    methods = args.methods.split(",") if args.methods else [
        n for n in list_methods() if n != "dense" and "posthoc" in get_method(n).card.modes]
    rows = ["| method | budget | achieved | counted B | file B (header) | bitwise equal | decode vs nn.Embedding |",
            "|---|---|---|---|---|---|---|"]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for m in methods:
            for b in args.budgets.split(","):
                cfg = RunConfig(method=m, budget=b, threads=1)
                out = Path(tmp) / f"{m}-{b}"
                try:
                    info = export_cell(cfg, out, speed=False)
                except UnattainableBudgetError as exc:
                    rows.append(f"| {m} | {b} | cannot meet ({str(exc).split('meet is ')[-1]}) | | | | |")
                    continue
                except UsageError as exc:
                    rows.append(f"| {m} | {b} | {exc} | | | | |")
                    continue
                emb = load_embedding(out)
                same = info.get("roundtrip_bitwise_equal")
                speed = decode_speed(emb)
                rows.append(f"| {m} | {b} | {info['achieved_ratio']:.1f}x | {info['stored_bytes']:,} | "
                            f"{info['file_bytes']:,} ({info['header_bytes']:,}) | {same} | {speed['ratio']:.2f}x |")
                print(rows[-1], flush=True)
    text = "\n".join(rows)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
