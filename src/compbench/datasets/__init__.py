"""Dataset registry and loaders.

Every dataset is an offline snapshot shipped as package data
(``compbench/datasets/data/<name>/<split>.parquet``, provenance in
``data/PROVENANCE.md``) and loaded through Hugging Face ``datasets`` from those
local files. Each card keeps the Hugging Face hub id (and config) so users who
are online can run the original hub copy with ``source="hub"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from compbench.checksums import sha256_file
from compbench.errors import DataError, UnknownNameError, first_line, quoted
from compbench.registry import Registry


@dataclass(frozen=True)
class DatasetCard:
    """A dataset: where its offline snapshot lives, its hub id, splits, columns and provenance."""

    name: str
    description: str
    hf_id: str
    splits: tuple[str, ...]
    columns: tuple[str, ...]
    kind: str  # "single" (text, label) | "pair-score" | "pair-label"
    hf_config: str | None = None
    hf_revision: str | None = None
    citation: str = ""
    notes: str = ""
    hub_columns: dict[str, str] = field(default_factory=dict)  # hub column -> our column

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view."""
        return {
            "name": self.name,
            "hf_id": self.hf_id,
            "hf_config": self.hf_config,
            "splits": list(self.splits),
            "kind": self.kind,
        }


DATASETS: Registry[DatasetCard] = Registry("dataset")


def _add(card: DatasetCard) -> None:
    DATASETS.register(card.name)(card)


_add(DatasetCard("stsb", "STS Benchmark (Cer et al. 2017), gold scores 0-5", "sentence-transformers/stsb",
                 ("train", "validation", "test"), ("sentence1", "sentence2", "score"), "pair-score",
                 citation="Cer et al., SemEval-2017 Task 1", hub_columns={}))
_add(DatasetCard("sst2", "SST-2 binary sentiment; train = GLUE phrases, test = Kim (2014) labelled test", "stanfordnlp/sst2",
                 ("train", "validation", "test"), ("text", "label"), "single", citation="Socher et al. 2013",
                 notes="hub test split is unlabelled; the shipped test is Kim (2014)'s labelled 1,821 sentences",
                 hub_columns={"sentence": "text"}))
_add(DatasetCard("trec", "TREC-6 question classification (coarse labels)", "CogComp/trec", ("train", "test"),
                 ("text", "label"), "single", citation="Li & Roth 2002", hub_columns={"coarse_label": "label"}))
for _n, _desc, _hf, _cit in (
    ("mr", "Movie-review sentence polarity v1.0", "rotten_tomatoes", "Pang & Lee 2005"),
    ("cr", "Customer-review polarity", "SetFit/SentEval-CR", "Hu & Liu 2004"),
    ("subj", "Subjectivity v1.0", "SetFit/subj", "Pang & Lee 2004"),
    ("mpqa", "MPQA phrase-level opinion polarity", "jxm/mpqa", "Wiebe et al. 2005"),
):
    _add(DatasetCard(_n, _desc, _hf, ("all",), ("text", "label"), "single", citation=_cit,
                     notes="no official split: 10-fold cross-validation as in SentEval"))
_add(DatasetCard("mrpc", "Microsoft Research Paraphrase Corpus", "nyu-mll/glue", ("train", "validation", "test"),
                 ("sentence1", "sentence2", "label"), "pair-label", hf_config="mrpc", citation="Dolan & Brockett 2005"))
_add(DatasetCard("imdb", "IMDB large movie reviews", "stanfordnlp/imdb", ("train", "test"), ("text", "label"), "single",
                 citation="Maas et al. 2011"))
_add(DatasetCard("20newsgroups", "20 Newsgroups bydate (headers/quotes included)", "SetFit/20_newsgroups",
                 ("train", "test"), ("text", "label"), "single", citation="Lang 1995; Rennie bydate split"))
_add(DatasetCard("ag_news", "AG News: only the 7.6k TEST split is shipped offline", "fancyzhx/ag_news", ("test",),
                 ("text", "label"), "single", citation="Zhang, Zhao & LeCun 2015",
                 notes="the 120k train split is not shipped; offline tasks carve a fixed 80/20 split of test"))


def get_dataset_card(name: str) -> DatasetCard:
    """The card registered as ``name`` (unknown names suggest the closest)."""
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    """All registered dataset names."""
    return DATASETS.names()


def data_root() -> Path:
    """Folder holding the shipped snapshots."""
    return Path(str(resources.files("compbench.datasets") / "data"))


def split_path(name: str, split: str, root: Path | None = None) -> Path:
    """Path of one shipped split file; raises DataError when it is missing."""
    card = get_dataset_card(name)
    if split not in card.splits:
        raise UnknownNameError(f"dataset '{name}' has no split '{split}' (splits: {', '.join(card.splits)})")
    path = (root or data_root()) / name / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"missing data file {path} for dataset '{name}' split '{split}'; reinstall compbench")
    return path


@lru_cache(maxsize=64)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def file_sha256(path: Path) -> str:
    """sha256 of a file (cached per path, mtime and size)."""
    st = path.stat()
    return _sha256_cached(str(path), st.st_mtime_ns, st.st_size)


def load_split(name: str, split: str, *, root: Path | None = None, source: str = "local"):  # -> datasets.Dataset
    """Load one split as a Hugging Face ``datasets.Dataset``.

    Args:
        name: dataset registry name.
        split: split name (see the card).
        root: alternative folder of snapshots (tests).
        source: ``"local"`` (default, offline snapshot) or ``"hub"`` (the card's hub id; needs network).
    """
    import datasets

    card = get_dataset_card(name)
    if source == "hub":
        return load_from_hub(card, split)
    path = split_path(name, split, root)
    import pyarrow.parquet as pq

    try:  # the footer first: a damaged or empty file gets a precise one-line message
        n_rows = pq.read_metadata(path).num_rows
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data error
        raise DataError(f"cannot read data file {path}: {first_line(exc)}") from exc
    if n_rows == 0:
        raise DataError(f"data file {path} is empty")
    try:
        ds = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data error
        raise DataError(f"cannot read data file {path}: {first_line(exc)}") from exc
    missing = [c for c in card.columns if c not in ds.column_names]
    if missing:
        has = ", ".join(quoted(c) for c in ds.column_names)
        raise DataError(f"data file {path} lacks column(s) {', '.join(missing)} (has {has})")
    if len(ds) == 0:
        raise DataError(f"data file {path} is empty")
    return ds


def load_from_hub(card: DatasetCard, split: str, *, path_override: str | None = None):  # -> datasets.Dataset
    """Load ``split`` of the card's Hugging Face hub dataset (online users), renaming hub columns to ours.

    ``path_override`` lets tests point ``datasets.load_dataset`` at a local folder laid out like the hub repo.
    """
    import datasets

    try:
        ds = datasets.load_dataset(path_override or card.hf_id, card.hf_config, split=split, revision=card.hf_revision)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot load hub dataset '{card.hf_id}' ({first_line(exc)}); "
                        "offline? use the shipped snapshot (source='local')") from exc
    renames = {k: v for k, v in card.hub_columns.items() if k in ds.column_names and k != v}
    return ds.rename_columns(renames) if renames else ds


def labels(name: str, root: Path | None = None) -> list[str]:
    """Label names in id order (from the snapshot's labels.json)."""
    path = (root or data_root()) / name / "labels.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    value = (data.get("label") or data.get("coarse") or next(iter(data.values()))) if isinstance(data, dict) and data else None
    if not isinstance(value, list):
        raise DataError(f"cannot read {path}: expected a JSON object mapping a label column to a list of names")
    return list(value)


__all__ = ["DATASETS", "DatasetCard", "file_sha256", "get_dataset_card", "labels", "list_datasets", "load_split", "split_path"]
