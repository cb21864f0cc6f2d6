"""Bring your own data: ad-hoc tasks from a user's parquet or csv file.

``--task sts:PATH`` and ``--task classification:PATH`` (tracks ``posthoc`` and ``store``):

- ``sts``: columns ``sentence1``, ``sentence2``, ``score`` (numeric, any scale); main
  metric cosine Spearman between the gold scores and the cosine of the two sentence
  embeddings (posthoc: encoder with the compressed token table; store: vectors of the
  unique sentences, compressed).
- ``classification``: columns ``text``, ``label`` (integer, boolean or string classes) and
  optionally ``split`` (``train`` / ``test``). Labels that look continuous are refused: floats that
  are not whole numbers, and more distinct labels than half the rows (a score or id column, e.g.
  50 distinct values in 60 rows). Without ``split`` a fixed split is drawn: 80 / 20,
  stratified when every class has at least two rows, ``random_state=0``. Main metric:
  accuracy of the posthoc track's logistic regression (StandardScaler, C=1) on the
  (compressed) sentence embeddings.

Files are validated when the task is created (before any work) and every problem is a
one-line :class:`~compbench.errors.DataError` (bad content) or
:class:`~compbench.errors.UsageError` (bad spec, missing file, unsupported format). The
task's name is ``<kind>-<file stem>-<first 8 hex of the file's sha256>`` (so cells of
different files never collide) and the record names the file and its full sha256
(``task.dataset``, ``task.data_sha256``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from compbench.datasets import file_sha256
from compbench.errors import DataError, UsageError, first_line, quoted
from compbench.tasks.posthoc import _logreg
from compbench.tasks.store import pair_cosine_spearman, unique_in_order
from compbench.tasks.task_base import Task, TaskCard

KINDS = ("sts", "classification")
ADHOC_TRACKS = ("posthoc", "store")
SPLIT_VALUES = ("train", "test")
TEST_FRACTION = 0.2
MAX_CLASS_FRACTION = 0.5  # more distinct labels than half the rows: a score or id column, not classes
MAX_CLASSES = 1000  # bounded work: more classes than this is not a sentence-classification probe
MIN_CLASS_ROWS = 2  # every class needs one train and one test row


def read_frame(path: Path) -> Any:  # -> pandas.DataFrame
    """Read a parquet or csv/tsv file into a DataFrame (csv cells are read as strings)."""
    import pandas as pd

    if not path.exists():
        raise UsageError(f"data file not found: {path}")
    if not path.is_file():
        raise UsageError(f"data path is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".tsv"):
        raise UsageError(f"unsupported data file type '{suffix or path.name}' for {path} (use .parquet or .csv)")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"data file {path} is empty") from exc
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data error
        raise DataError(f"cannot read data file {path}: {first_line(exc)}") from exc
    if len(df) == 0:
        raise DataError(f"data file {path} has a header but no rows")
    return df


def _require_columns(df: Any, path: Path, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"data file {path} lacks column(s) {', '.join(missing)} "
                        f"(has {', '.join(quoted(c) for c in df.columns)}; needs {', '.join(columns)})")


def _texts(df: Any, path: Path, column: str) -> list[str]:
    bad = [i for i, v in enumerate(df[column]) if not isinstance(v, str) or not v.strip()]
    if bad:
        rows = ", ".join(str(i + 1) for i in bad[:5])
        raise DataError(f"data file {path}: column '{column}' has {len(bad)} empty or non-text value(s) "
                        f"(data rows {rows}{', ...' if len(bad) > 5 else ''})")
    return [str(v) for v in df[column]]


def load_sts(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Validated ``(sentence1, sentence2, score)`` of an STS file."""
    import pandas as pd

    df = read_frame(path)
    _require_columns(df, path, ("sentence1", "sentence2", "score"))
    s1, s2 = _texts(df, path, "sentence1"), _texts(df, path, "sentence2")
    raw = df["score"]
    num = pd.to_numeric(raw, errors="coerce")
    bad = np.flatnonzero(num.isna().to_numpy() | ~np.isfinite(num.to_numpy(dtype=float, na_value=np.nan)))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"data file {path}: column 'score' must be numeric; {len(bad)} value(s) are not "
                        f"(first: data row {i + 1}, {raw.iloc[i]!r})")
    scores = num.to_numpy(dtype=float)
    if len(scores) < 3:
        raise DataError(f"data file {path} has {len(scores)} pair(s); an STS task needs at least 3")
    if np.all(scores == scores[0]):
        raise DataError(f"data file {path}: every score is {scores[0]}; a correlation needs varying scores")
    return s1, s2, scores


def _labels(df: Any, path: Path) -> np.ndarray:
    import pandas as pd
    from sklearn.utils.multiclass import type_of_target

    col = df["label"]
    if col.isna().any():
        i = int(np.flatnonzero(col.isna().to_numpy())[0])
        raise DataError(f"data file {path}: column 'label' has missing values (first: data row {i + 1})")
    if col.dtype == object and all(isinstance(v, str) for v in col):
        num = pd.to_numeric(col, errors="coerce")  # csv cells are strings: "1" / "0" are numbers
        y = num.to_numpy() if not num.isna().any() else col.to_numpy(dtype=str)
    else:
        y = col.to_numpy()
    if y.dtype == object:
        kinds = sorted({type(v).__name__ for v in y})
        if len(kinds) > 1 or kinds[0] not in ("str", "int", "bool"):
            raise DataError(f"data file {path}: column 'label' has unsupported label type(s) {', '.join(kinds)} "
                            "(need integer, boolean or string class labels, one type)")
        y = y.astype(str) if kinds[0] == "str" else y.astype(kinds[0])
    try:
        kind = type_of_target(y)
    except ValueError as exc:
        raise DataError(f"data file {path}: column 'label': {first_line(exc)}") from exc
    if kind not in ("binary", "multiclass"):
        example = ", ".join(repr(v) for v in list(dict.fromkeys(y.tolist()))[:3])
        raise DataError(f"data file {path}: column 'label' has {kind} values (e.g. {example}); "
                        "need integer, boolean or string class labels")
    n_classes = len(np.unique(y))
    if n_classes < 2:
        raise DataError(f"data file {path}: column 'label' has a single class; classification needs at least 2")
    if n_classes > len(y) * MAX_CLASS_FRACTION:
        raise DataError(f"data file {path}: column 'label' looks continuous or like an id: {n_classes} distinct "
                        f"values in {len(y)} rows; class labels need at least 2 rows per class on average "
                        f"(at most {int(len(y) * MAX_CLASS_FRACTION)} classes here)")
    values, counts = np.unique(y, return_counts=True)
    if n_classes > MAX_CLASSES:
        raise DataError(f"data file {path}: column 'label' has {n_classes:,} classes; at most {MAX_CLASSES:,} are "
                        "supported (a linear probe per class on a few rows each measures nothing)")
    small = counts < MIN_CLASS_ROWS
    if small.any():
        worst = int(np.argmin(counts))
        raise DataError(f"data file {path}: {int(small.sum()):,} class(es) have fewer than {MIN_CLASS_ROWS} rows "
                        f"(smallest: {quoted(values[worst])} with {int(counts[worst])}); every class needs a train "
                        "and a test row")
    if y.dtype.kind == "f":
        y = y.astype(np.int64)  # integral floats (1.0, 2.0) from parquet
    return y


def load_classification(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, str]:
    """Validated ``(texts, labels, is_test mask, split description)`` of a classification file."""
    df = read_frame(path)
    _require_columns(df, path, ("text", "label"))
    texts = _texts(df, path, "text")
    y = _labels(df, path)
    if "split" in df.columns:
        split = df["split"].astype(str).str.strip().str.lower().to_numpy()
        unknown = sorted(set(split) - set(SPLIT_VALUES))
        if unknown:
            raise DataError(f"data file {path}: column 'split' has value(s) {', '.join(map(repr, unknown[:5]))}; "
                            f"allowed: {', '.join(SPLIT_VALUES)}")
        is_test = split == "test"
        how = "the file's split column"
    else:
        from sklearn.model_selection import train_test_split

        if len(y) < 5:
            raise DataError(f"data file {path} has {len(y)} row(s); a classification task needs at least 5")
        _, counts = np.unique(y, return_counts=True)
        stratify = y if counts.min() >= 2 and len(counts) <= len(y) * TEST_FRACTION else None
        _, test_idx = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, random_state=0, stratify=stratify)
        is_test = np.zeros(len(y), dtype=bool)
        is_test[test_idx] = True
        how = f"a fixed {'stratified ' if stratify is not None else ''}80/20 split (random_state=0)"
    if is_test.all() or not is_test.any():
        raise DataError(f"data file {path}: need both train and test rows (got {int((~is_test).sum())} train, "
                        f"{int(is_test.sum())} test)")
    if len(np.unique(y[~is_test])) < 2:
        raise DataError(f"data file {path}: the train rows have a single class; classification needs at least 2")
    return texts, y, is_test, how


def _slug(path: Path) -> str:
    return (re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-") or "data")[:40]


class _AdhocMixin:
    """Common parts: the file, its sha256, the card."""

    kind: str
    path: Path
    sha256: str

    def _init_file(self, path: Path) -> None:
        self.path = path.resolve()
        self.sha256 = file_sha256(self.path)

    def _card(self, track: str, metric: str, tolerance: float, protocol: str) -> TaskCard:
        name = f"{self.kind}-{_slug(self.path)}-{self.sha256[:8]}"
        return TaskCard(name, 1, track, metric, True, tolerance, str(self.path),
                        f"ad-hoc {self.kind} task from {self.path} (sha256 {self.sha256}): {protocol}")

    def data_files(self) -> list[str]:
        return []

    def data_sha256(self) -> dict[str, str]:
        """The user's file and its sha256 (recorded in ``task.data_sha256``)."""
        return {str(self.path): self.sha256}


_STS_PROTOCOL = "cosine Spearman between gold scores and the cosine of the two sentence embeddings"
_CLS_PROTOCOL = "logistic regression (StandardScaler, C=1) on the sentence embeddings, train -> test accuracy"


class AdhocPosthocSTS(_AdhocMixin, Task):
    """``sts:PATH`` in the posthoc track: the encoder with the compressed token table."""

    kind = "sts"

    def __init__(self, path: Path):
        self.s1, self.s2, self.scores = load_sts(path)
        self._init_file(path)
        self.card = self._card("posthoc", "cosine_spearman", 0.005, _STS_PROTOCOL)  # type: ignore[misc]

    def evaluate(self, ctx: Any) -> dict[str, float]:
        texts, index = _unique(self.s1 + self.s2)
        with ctx.encoder.swapped(ctx.table) as enc:
            vec = enc.encode(texts, ctx.batch_size)
        import torch

        out = pair_cosine_spearman(torch.from_numpy(vec), np.array([index[s] for s in self.s1]),
                                   np.array([index[s] for s in self.s2]), self.scores)
        out["n_pairs"] = float(len(self.scores))
        return out


class AdhocPosthocClassification(_AdhocMixin, Task):
    """``classification:PATH`` in the posthoc track."""

    kind = "classification"

    def __init__(self, path: Path):
        self.texts, self.y, self.is_test, how = load_classification(path)
        self._init_file(path)
        self.card = self._card("posthoc", "accuracy", 0.01, f"{_CLS_PROTOCOL}; split: {how}")  # type: ignore[misc]

    def evaluate(self, ctx: Any) -> dict[str, float]:
        with ctx.encoder.swapped(ctx.table) as enc:
            x = enc.encode(self.texts, ctx.batch_size)
        return _classify(x, self.y, self.is_test)


class AdhocStoreSTS(_AdhocMixin, Task):
    """``sts:PATH`` in the store track: the unique sentences are the store."""

    kind = "sts"

    def __init__(self, path: Path):
        self.s1, self.s2, self.scores = load_sts(path)
        self._init_file(path)
        self.card = self._card("store", "cosine_spearman", 0.005, "store = unique sentences; " + _STS_PROTOCOL)  # type: ignore[misc]

    def corpus(self) -> list[str]:
        return _unique(self.s1 + self.s2)[0]

    def evaluate(self, ctx: Any) -> dict[str, float]:
        _, index = _unique(self.s1 + self.s2)
        out = pair_cosine_spearman(ctx.table, np.array([index[s] for s in self.s1]),
                                   np.array([index[s] for s in self.s2]), self.scores)
        out["n_pairs"] = float(len(self.scores))
        return out


class AdhocStoreClassification(_AdhocMixin, Task):
    """``classification:PATH`` in the store track: the unique texts are the store."""

    kind = "classification"

    def __init__(self, path: Path):
        self.texts, self.y, self.is_test, how = load_classification(path)
        self._init_file(path)
        self.card = self._card("store", "accuracy", 0.01,  # type: ignore[misc]
                               f"store = unique texts; {_CLS_PROTOCOL}; split: {how}")

    def corpus(self) -> list[str]:
        return _unique(self.texts)[0]

    def evaluate(self, ctx: Any) -> dict[str, float]:
        _, index = _unique(self.texts)
        x = ctx.table[np.array([index[t] for t in self.texts])]
        x = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy()
        return _classify(x, self.y, self.is_test)


def _unique(texts: list[str]) -> tuple[list[str], dict[str, int]]:
    return unique_in_order(texts)


def _classify(x: np.ndarray, y: np.ndarray, is_test: np.ndarray) -> dict[str, float]:
    clf = _logreg(0).fit(x[~is_test], y[~is_test])
    acc = float((clf.predict(x[is_test]) == y[is_test]).mean())
    return {"accuracy": acc, "n_train": float((~is_test).sum()), "n_test": float(is_test.sum()),
            "n_classes": float(len(np.unique(y)))}


_CLASSES = {
    ("posthoc", "sts"): AdhocPosthocSTS,
    ("posthoc", "classification"): AdhocPosthocClassification,
    ("store", "sts"): AdhocStoreSTS,
    ("store", "classification"): AdhocStoreClassification,
}


def make_adhoc_task(track: str, spec: str) -> Task | None:
    """The ad-hoc task for ``spec`` = ``KIND:PATH`` in ``track``, or None when ``spec`` has no ``:``.

    Raises UsageError for an unknown kind, a track without ad-hoc tasks, a missing or unsupported
    file; DataError for bad content (missing columns, empty file, non-numeric scores, bad labels).
    """
    if ":" not in spec:
        return None
    kind, _, raw = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        import difflib

        hint = difflib.get_close_matches(kind, KINDS, n=1)
        raise UsageError(f"unknown ad-hoc task kind '{kind}' in '{spec}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
                         + f" (use {' or '.join(k + ':PATH' for k in KINDS)})")
    if track not in ADHOC_TRACKS:
        raise UsageError(f"ad-hoc tasks ({kind}:PATH) run in the {' and '.join(ADHOC_TRACKS)} tracks, not '{track}'")
    if not raw.strip():
        raise UsageError(f"'{spec}' names no file (use {kind}:PATH)")
    return _CLASSES[(track, kind)](Path(raw.strip()).expanduser())


__all__ = ["KINDS", "AdhocPosthocClassification", "AdhocPosthocSTS", "AdhocStoreClassification", "AdhocStoreSTS",
           "load_classification", "load_sts", "make_adhoc_task", "read_frame"]
