"""Bring-your-own-data tasks: sts:PATH and classification:PATH (happy paths and every bad input)."""

from __future__ import annotations

import pandas as pd
import pytest

from compbench.errors import DataError, UnknownNameError, UsageError
from compbench.tasks import get_task
from compbench.tasks.adhoc import AdhocPosthocClassification, AdhocPosthocSTS, AdhocStoreSTS, make_adhoc_task

STS_ROWS = [
    ("A man is playing a guitar.", "A person plays a guitar.", 4.6),
    ("A woman is slicing an onion.", "Someone is cutting an onion.", 4.2),
    ("A cat sits on the mat.", "The stock market fell today.", 0.1),
    ("Kids are playing football.", "Children play soccer in a park.", 3.9),
    ("The sun is shining.", "It is raining heavily.", 0.8),
    ("A dog runs on the beach.", "A dog is running along the shore.", 4.5),
    ("He is reading a book.", "A man reads a novel.", 3.8),
    ("The car is red.", "A bird sings in a tree.", 0.0),
]
POS = ["great movie, loved it", "wonderful acting and story", "a delight from start to end", "brilliant and moving",
       "I enjoyed every minute", "superb, highly recommended", "charming and funny", "a masterpiece"]
NEG = ["terrible plot, boring", "awful acting, waste of time", "I hated this film", "dull and far too long",
       "the worst movie this year", "a mess, avoid it", "painfully bad dialogue", "tedious and predictable"]


def _sts(tmp_path, name="pairs.csv", rows=STS_ROWS):
    df = pd.DataFrame(rows, columns=["sentence1", "sentence2", "score"])
    path = tmp_path / name
    df.to_parquet(path) if name.endswith(".parquet") else df.to_csv(path, index=False)
    return path


def _cls(tmp_path, name="cls.csv", split=False, labels=None):
    texts = POS + NEG
    df = pd.DataFrame({"text": texts, "label": labels if labels is not None else [1] * 8 + [0] * 8})
    if split:
        df["split"] = (["train"] * 6 + ["test"] * 2) * 2
    path = tmp_path / name
    df.to_parquet(path) if name.endswith(".parquet") else df.to_csv(path, index=False)
    return path


def test_sts_happy_path_record_names_the_file(tmp_path, shared_cache):
    from compbench.bench.cell.runner import run_cell
    from compbench.bench.results.record_store import ResultStore
    from compbench.config import RunConfig
    from compbench.datasets import file_sha256

    path = _sts(tmp_path)
    sha = file_sha256(path)
    task = get_task("posthoc", f"sts:{path}")
    assert isinstance(task, AdhocPosthocSTS) and task.card.name == f"sts-pairs-{sha[:8]}"
    rec = run_cell(RunConfig(method="quant-int8", budget="3.5x", task=f"sts:{path}", threads=2, lookup_iters=3),
                   ResultStore(tmp_path / "res"), cache=shared_cache)
    assert rec.status == "ok" and rec.key == f"posthoc/sts-pairs-{sha[:8]}/quant-int8/3.5x/cpu-2t-s0"
    assert rec.task.dataset == str(path.resolve()) and rec.task.data_sha256 == {str(path.resolve()): sha}
    assert rec.metrics.main > 0.7 and rec.metrics.dense_score > 0.7  # easy pairs
    assert rec.provenance["run_config"]["task"] == f"sts:{path}"


def test_classification_happy_paths(tmp_path, encoder):
    import torch

    from compbench.tasks.posthoc import PosthocContext

    t = get_task("posthoc", f"classification:{_cls(tmp_path, split=True)}")
    assert isinstance(t, AdhocPosthocClassification) and t.is_test.sum() == 4 and "split column" in t.card.protocol
    t2 = get_task("posthoc", f"classification:{_cls(tmp_path, 'cls2.parquet', labels=['pos'] * 8 + ['neg'] * 8)}")
    assert t2.is_test.sum() == 4 and "stratified 80/20" in t2.card.protocol
    assert sorted(t2.y[t2.is_test]) == ["neg", "neg", "pos", "pos"]  # stratified, fixed
    table = encoder.token_table
    out = t.evaluate(PosthocContext(encoder, table, table))
    assert out["accuracy"] >= 0.75 and out["n_test"] == 4
    assert torch.equal(table, encoder.token_table)


def test_store_track_sts(tmp_path):
    import numpy as np
    import torch

    from compbench.tasks.store import StoreContext

    t = get_task("store", f"sts:{_sts(tmp_path, 'p.parquet')}")
    assert isinstance(t, AdhocStoreSTS) and len(t.corpus()) == 16
    v = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    out = t.evaluate(StoreContext(v, v))
    assert np.isfinite(out["cosine_spearman"]) and out["n_pairs"] == 8
    c = get_task("store", f"classification:{_cls(tmp_path)}")
    assert len(c.corpus()) == 16 and c.evaluate(StoreContext(v, v))["n_test"] == 4


def test_no_colon_is_not_adhoc():
    assert make_adhoc_task("posthoc", "stsb") is None


@pytest.mark.parametrize("spec, exc, msg", [
    ("stss:{p}", UsageError, "did you mean 'sts'"),
    ("sts:", UsageError, "names no file"),
    ("sts:{d}/missing.csv", UsageError, "not found"),
    ("sts:{d}/data.json", UsageError, "unsupported data file type"),
])
def test_bad_specs(tmp_path, spec, exc, msg):
    p = _sts(tmp_path)
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(exc, match=msg):
        get_task("posthoc", spec.format(p=p, d=tmp_path))


def test_adhoc_only_in_posthoc_and_store(tmp_path):
    with pytest.raises(UsageError, match="posthoc and store"):
        get_task("words", f"sts:{_sts(tmp_path)}")
    with pytest.raises(UnknownNameError):
        get_task("nope", f"sts:{_sts(tmp_path)}")


def test_empty_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        get_task("posthoc", f"sts:{empty}")
    header = tmp_path / "header.csv"
    header.write_text("sentence1,sentence2,score\n")
    with pytest.raises(DataError, match="no rows"):
        get_task("posthoc", f"sts:{header}")
    pq = tmp_path / "empty.parquet"
    pd.DataFrame({"sentence1": [], "sentence2": [], "score": []}).to_parquet(pq)
    with pytest.raises(DataError, match="no rows"):
        get_task("posthoc", f"sts:{pq}")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file")
    with pytest.raises(DataError, match="cannot read"):
        get_task("posthoc", f"sts:{bad}")


def test_missing_columns(tmp_path):
    p = tmp_path / "cols.csv"
    pd.DataFrame({"sentence1": ["a"] * 3, "text": ["b"] * 3, "score": [1, 2, 3]}).to_csv(p, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) sentence2"):
        get_task("posthoc", f"sts:{p}")
    q = tmp_path / "cols2.csv"
    pd.DataFrame({"text": ["a", "b"], "y": [0, 1]}).to_csv(q, index=False)
    with pytest.raises(DataError, match=r"lacks column\(s\) label"):
        get_task("posthoc", f"classification:{q}")


def test_non_numeric_scores(tmp_path):
    rows = [*STS_ROWS[:3], ("x y", "y z", "high")]
    with pytest.raises(DataError, match=r"'score' must be numeric.*data row 4, 'high'"):
        get_task("posthoc", f"sts:{_sts(tmp_path, rows=rows)}")
    rows = [(a, b, str(s)) for a, b, s in STS_ROWS]
    p = tmp_path / "strscores.parquet"
    pd.DataFrame(rows, columns=["sentence1", "sentence2", "score"]).to_parquet(p)
    assert get_task("posthoc", f"sts:{p}").scores[0] == pytest.approx(4.6)  # numeric strings are fine
    with pytest.raises(DataError, match="varying scores"):
        get_task("posthoc", f"sts:{_sts(tmp_path, 'c.csv', rows=[(a, b, 1.0) for a, b, _ in STS_ROWS])}")
    with pytest.raises(DataError, match="empty or non-text"):
        get_task("posthoc", f"sts:{_sts(tmp_path, 'e.csv', rows=[*STS_ROWS[:3], ('', 'b', 1.0)])}")


@pytest.mark.parametrize("labels, msg", [
    ([0.5, 1.5] * 8, "continuous values"),
    ([1] * 16, "single class"),
    ([[1, 2]] * 16, "unsupported label type"),
    ([None] + [1, 0] * 7 + [1], "missing values"),
    ([float(i) for i in range(16)], r"looks continuous or like an id: 16 distinct values in 16 rows"),
    ([i % 9 for i in range(16)], r"9 distinct values in 16 rows; .* \(at most 8 classes here\)"),
    ([f"user{i}" for i in range(16)], "looks continuous or like an id"),
])
def test_bad_labels(tmp_path, labels, msg):
    p = tmp_path / "l.parquet"
    df = pd.DataFrame({"text": POS + NEG, "label": pd.Series(labels, dtype=object)})
    df.to_parquet(p)
    with pytest.raises(DataError, match=msg):
        get_task("posthoc", f"classification:{p}")


def test_up_to_half_as_many_classes_as_rows_is_fine(tmp_path):
    """The id/score-column rule allows at most one class per 2 rows on average (8 classes in 16 rows)."""
    p = tmp_path / "eight.parquet"
    pd.DataFrame({"text": POS + NEG, "label": [float(i % 8) for i in range(16)]}).to_parquet(p)
    task = get_task("posthoc", f"classification:{p}")
    assert task is not None


def test_mixed_label_types(tmp_path):
    from compbench.tasks.adhoc import _labels

    df = pd.DataFrame({"label": pd.Series([1, "a"] * 4, dtype=object)})  # parquet refuses it; a frame can hold it
    with pytest.raises(DataError, match="unsupported label type"):
        _labels(df, tmp_path / "x.parquet")


def test_bad_split_column(tmp_path):
    p = tmp_path / "s.csv"
    df = pd.DataFrame({"text": POS + NEG, "label": [1] * 8 + [0] * 8, "split": ["train"] * 15 + ["dev"]})
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match="'dev'; allowed: train, test"):
        get_task("posthoc", f"classification:{p}")
    df["split"] = "train"
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match="both train and test"):
        get_task("posthoc", f"classification:{p}")


def test_cli_bad_input_is_one_line(tmp_path):
    from click.testing import CliRunner

    from compbench.cli import main

    p = tmp_path / "x.csv"
    pd.DataFrame({"sentence1": ["a"] * 3, "score": [1, 2, 3]}).to_csv(p, index=False)
    r = CliRunner().invoke(main, ["run", "--method", "dense", "--budget", "1x", "--task", f"sts:{p}",
                                  "--results", str(tmp_path / "r")])
    assert r.exit_code == 1 and "lacks column(s) sentence2" in r.output and "Traceback" not in r.output
