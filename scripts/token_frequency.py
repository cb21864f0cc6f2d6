"""Generate the shipped token-frequency calibration corpus for the Zipf lookup workload.

Counts the token ids that the bundled all-MiniLM-L6-v2 WordPiece tokenizer produces over the
*train* splits of the shipped text datasets (and the whole file of the SentEval datasets that have
no official split; see SOURCES), and writes

    src/compbench/datasets/data/token-frequency/minilm-wordpiece-counts.parquet   (id int32, count int64; count > 0)
    src/compbench/datasets/data/token-frequency/minilm-wordpiece-counts.json      (what was counted, sha256, totals)

Each text (each sentence of a pair) is tokenised on its own, as the sentence encoder and the train
track do: special tokens added ([CLS] ... [SEP]), no truncation, no padding. The output is
deterministic (sorted by id), so re-running it with the same pyarrow reproduces the sha256 recorded
in datasets/data/PROVENANCE.md (the parquet footer names the pyarrow version); ``--check`` compares
the counts themselves.

Usage:  .venv/bin/python scripts/token_frequency.py [--check]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

# (dataset, split, text columns): every train split, plus "all" where no split exists. Left out:
# 20newsgroups (raw messages: headers, e-mail addresses, signatures and uuencoded attachments are not
# natural text) and ag_news (only its test split is shipped).
SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sst2", "train", ("text",)),
    ("trec", "train", ("text",)),
    ("stsb", "train", ("sentence1", "sentence2")),
    ("mrpc", "train", ("sentence1", "sentence2")),
    ("imdb", "train", ("text",)),
    ("mr", "all", ("text",)),
    ("cr", "all", ("text",)),
    ("subj", "all", ("text",)),
    ("mpqa", "all", ("text",)),
)
NAME = "minilm-wordpiece-counts"


def count(sources=SOURCES) -> tuple[np.ndarray, dict]:
    from compbench.datasets import file_sha256, load_split, split_path
    from compbench.tasks.train import load_tokenizer

    tok, info = load_tokenizer(None)
    counts = np.zeros(info.vocab_size, dtype=np.int64)
    per_source = []
    for name, split, cols in sources:
        ds = load_split(name, split)
        n_tok = n_texts = 0
        for col in cols:
            texts = [str(t) for t in ds[col]]
            for start in range(0, len(texts), 2048):
                enc = tok(texts[start:start + 2048], add_special_tokens=True, truncation=False, verbose=False)
                for row in enc["input_ids"]:
                    arr = np.asarray(row, dtype=np.int64)
                    np.add.at(counts, arr, 1)
                    n_tok += arr.size
            n_texts += len(texts)
        per_source.append({"dataset": name, "split": split, "columns": list(cols), "texts": n_texts,
                           "tokens": int(n_tok), "file_sha256": file_sha256(split_path(name, split))})
        print(f"{name}/{split}: {n_texts} texts, {n_tok} tokens", file=sys.stderr)
    meta = {
        "name": NAME,
        "tokenizer": {"name": info.name, "sha256": info.sha256, "vocab_size": info.vocab_size,
                      "tokenizers_version": info.tokenizers_version},
        "counting": "each text (each sentence of a pair) tokenised on its own; [CLS]/[SEP] added; "
                    "no truncation, no padding",
        "sources": per_source,
        "total_tokens": int(counts.sum()),
        "distinct_ids": int((counts > 0).sum()),
    }
    return counts, meta


def write(counts: np.ndarray, meta: dict, out_dir: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = np.flatnonzero(counts).astype(np.int32)
    table = pa.table({"id": pa.array(ids, pa.int32()), "count": pa.array(counts[ids], pa.int64())})
    path = out_dir / f"{NAME}.parquet"
    pq.write_table(table, path, compression="zstd", compression_level=19, use_dictionary=False,
                   write_statistics=False)
    meta = dict(meta, file=path.name, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                bytes=path.stat().st_size, rows=int(ids.size))
    (out_dir / f"{NAME}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                    / "src/compbench/datasets/data/token-frequency")
    ap.add_argument("--check", action="store_true", help="recount and compare with the shipped file; write nothing")
    args = ap.parse_args()
    counts, meta = count()
    if args.check:
        from compbench.datasets.frequencies import load_token_frequencies

        shipped = load_token_frequencies()
        same = np.array_equal(shipped.counts, counts)
        print("shipped counts reproduced" if same else "MISMATCH with the shipped counts")
        return 0 if same else 1
    meta = write(counts, meta, args.out)
    print(json.dumps({k: meta[k] for k in ("file", "sha256", "bytes", "rows", "total_tokens", "distinct_ids")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
