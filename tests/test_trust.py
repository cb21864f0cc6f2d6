"""Issue 34 (trust every number): options with one meaning, bounded numbers and YAML, the one data gate, and the
checksummed store-vector cache. Each case here is a row of docs/reliability.md ("Round 3" section)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from compbench.bench.cell.identity import options_suffix
from compbench.cli import main
from compbench.datasets.table_check import check_table
from compbench.errors import DataError, UsageError
from compbench.methods import canonical_method_options, get_method
from compbench.methods.options import canonical_value

RUN = ["run", "--method", "svd", "--budget", "10x", "--dry-run"]


def _key(args: list[str]) -> str:
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["key"]


# -- one option, one meaning ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["true", "TRUE", "yes", "On", "1"])
def test_every_spelling_of_a_flag_is_one_cell(spelling: str) -> None:
    base = ["run", "--method", "hashing", "--track", "train", "--budget", "10x", "--dry-run"]
    assert _key([*base, "-o", f"signed={spelling}"]) == _key([*base, "-o", "signed=true"])
    assert _key([*base, "-o", "signed=no"]) == _key([*base, "-o", "signed=0"]) != _key([*base, "-o", "signed=1"])


def test_a_full_width_digit_is_the_ascii_one_and_cli_text_matches_a_suite_number() -> None:
    assert _key([*RUN, "-o", "rank=\uff13"]) == _key([*RUN, "-o", "rank=3"])
    assert canonical_method_options("svd", {"rank": "3"}) == canonical_method_options("svd", {"rank": 3}) == {"rank": 3}
    assert options_suffix(canonical_method_options("pq", {"nbits": " 6 "})) == options_suffix({"nbits": 6})


@pytest.mark.parametrize(("args", "needle"), [
    (["-o", "rank=3", "-o", "rank=4"], "is given twice"),
    (["-o", "=5"], "names no option"),
    (["-o", "rank="], "has an empty value"),
    (["-o", "rank=1e400"], "must be an integer >= 1"),
    (["-o", "rank=" + "9" * 5000], "characters long"),
])
def test_bad_options_are_one_line_exit_2(args: list[str], needle: str) -> None:
    res = CliRunner().invoke(main, [*RUN, *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0] and len(lines[0]) < 300, lines


def test_a_misspelt_flag_is_refused_not_false() -> None:
    res = CliRunner().invoke(main, ["run", "--method", "hashing", "--track", "train", "--budget", "10x", "--dry-run",
                                    "-o", "signed=ture"])
    assert res.exit_code == 2 and "must be true or false" in res.stderr
    with pytest.raises(UsageError, match="must be true or false"):
        get_method("robe", signed="maybe")
    assert get_method("robe", signed="No").options == {"signed": False}


def test_canonical_value_keeps_text_and_types() -> None:
    assert canonical_value("m", "k", "float16") == "float16"
    assert canonical_value("m", "k", "0.10") == 0.1 and canonical_value("m", "k", "-2") == -2
    assert canonical_value("m", "k", "file:/tmp/x.npy") == "file:/tmp/x.npy"
    assert canonical_value("m", "k", 3) == 3 and canonical_value("m", "k", True) is True
    with pytest.raises(UsageError, match="must be a finite number"):
        canonical_method_options("quant", {"scale_dtype": "nan"})


# -- bounded numbers and paths on the command line ------------------------------------------------------------

@pytest.mark.parametrize(("args", "needle"), [
    ([*RUN, "--results", ""], "is empty"),
    ([*RUN, "--max-fit-seconds", "inf"], "not in 0.."),
    ([*RUN, "--max-fit-seconds", "nan"], "not in 0.."),
    (["sweep", "--suite", "smoke", "--max-fit-seconds", "1e309", "--dry-run"], "not in 0.."),
    (["report", "--results", ""], "is empty"),
    (["mteb", "--method", "svd", "--budget", "10x", "--tasks", "STSBenchmark", "--batch-size", "0"], "--batch-size"),
])
def test_out_of_range_flags_are_click_usage_errors(args: list[str], needle: str) -> None:
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and needle in res.stderr and "Traceback" not in res.output, res.output


@pytest.mark.parametrize(("args", "needle"), [
    (["list", "tasks", "--track", "nope"], "is not a track"),
    (["mteb", "--method", "svd", "--budget", "10x", "--tasks", "STSBenchmark", "--device", "tpu"], "unknown device"),
    (["mteb", "--method", "svd", "--budget", "10x", "--tasks", " , "], "names no task"),
    (["sweep", "--suite", "smoke", "--budgets", ",", "--dry-run"], "names nothing"),
    (["sweep", "--suite", "smoke", "--methods", " ", "--dry-run"], "names nothing"),
    (["sweep", "--suite", "smoke", "--jobs", "0", "--dry-run"], "--jobs must be >= 1"),
    (["scale", "--jobs", "0", "--dry-run"], "--jobs must be >= 1"),
    (["scale", "--report-only", "--results", "/nonexistent/compbench"], "no such folder"),
    (["report", "--results", __file__], "is a file, not a folder of records"),
    (["compare", __file__, __file__], "is a file, not a folder of records"),
])
def test_empty_or_unknown_values_are_one_line_exit_2(args: list[str], needle: str) -> None:
    res = CliRunner().invoke(main, args)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and needle in lines[0], res.output


# -- bounded suites --------------------------------------------------------------------------------------------

SUITE = "name: t\n{extra}grids:\n  - tasks: [posthoc/fidelity]\n    methods: [svd]\n    budgets: [10x]\n"


@pytest.mark.parametrize(("extra", "needle"), [
    ("lookup_iters: 100000000000\n", "'lookup_iters' must be an integer in 1..10000"),
    ("batch_size: 0\n", "'batch_size' must be an integer in 1.."),
    ("max_fit_seconds: .inf\n", "'max_fit_seconds' must be a number of seconds in 0.."),
])
def test_suite_numbers_have_ranges(tmp_path: Path, extra: str, needle: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(extra=extra))
    res = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 2 and needle in res.stderr, res.output


def test_a_yaml_alias_bomb_is_refused_before_it_grows(tmp_path: Path) -> None:
    lines = ["name: t", "a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 12)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join([*lines, "description: *a11", ""]))
    res = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert res.exit_code == 2 and "YAML nodes" in res.stderr, res.output
    ok = tmp_path / "ok.yaml"  # a few aliases, as real suites use them, still load
    ok.write_text("name: t\ngrids:\n  - tasks: &t [posthoc/fidelity]\n    methods: [svd]\n    budgets: [10x]\n"
                  "  - tasks: *t\n    methods: [pca]\n    budgets: [10x]\n")
    assert CliRunner().invoke(main, ["sweep", str(ok), "--dry-run"]).exit_code == 0


def test_suite_options_are_canonical_in_the_key(tmp_path: Path) -> None:
    from compbench.bench.sweeps.suite import expand, load_suite

    path = tmp_path / "s.yaml"
    path.write_text("name: t\ngrids:\n  - tasks: [posthoc/fidelity]\n    methods: [svd]\n    budgets: [10x]\n"
                    "    options: {svd: {rank: '4'}}\n")
    (cfg,) = expand(load_suite(path))
    assert cfg.options == {"rank": 4}


# -- the one data gate -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("table", "needle"), [
    (torch.ones(4), "must be 2-D"),
    (torch.ones(4, 3, dtype=torch.int64), "must hold floats"),
    (torch.ones(1, 8), "at least 2 rows and 2 columns"),
    (torch.ones(8, 1), "at least 2 rows and 2 columns"),
])
def test_check_table_refuses_what_no_method_can_compress(table: torch.Tensor, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        check_table(table, "t")


def test_check_table_counts_non_finite_rows_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    from compbench.datasets import table_check

    monkeypatch.setattr(table_check, "CHUNK_ROWS", 3)
    t = torch.zeros(10, 4)
    t[4, 1], t[9, 0] = float("nan"), float("-inf")
    with pytest.raises(DataError, match=r"2 of 10 rows hold NaN or Inf \(first: row 4\)"):
        check_table(t, "t")
    check_table(torch.zeros(10, 4), "t")


def test_the_lifecycle_gate_refuses_a_non_finite_table_from_any_track(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """The words track's GloVe table with one NaN row: one line, exit 1, and no record."""
    from compbench.tasks import words
    from compbench.tasks.words import WordTable

    glove = words.load_glove()
    vectors = glove.vectors.clone()
    vectors[7, 0] = float("nan")
    monkeypatch.setattr(words, "load_glove", lambda: WordTable(words=glove.words, vectors=vectors, info=glove.info))
    res = CliRunner().invoke(main, ["run", "--track", "words", "--method", "svd", "--budget", "10x",
                                    "--results", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "rows hold NaN or Inf (first: row 7)" in res.stderr
    assert not [p for p in tmp_path.rglob("*.json") if "svd" in str(p)]


# -- the checksummed store-vector cache -------------------------------------------------------------------------

class _Info:
    def to_dict(self) -> dict[str, Any]:
        return {"name": "fake", "revision": "r1", "dim": 4}


class _Encoder:
    info = _Info()
    st = None
    calls = 0

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        type(self).calls += 1
        return np.arange(len(texts) * 4, dtype=np.float32).reshape(len(texts), 4) + 1


def test_a_store_cache_that_does_not_match_its_checksum_is_rebuilt_loudly(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from compbench import config
    from compbench.bench.tracks import store_track

    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    texts = ["a", "b", "c"]
    vec, facts = store_track.corpus_vectors(_Encoder(), texts)
    (npy,) = (tmp_path / "store-vectors").glob("*.npy")
    side = npy.with_suffix(".json")
    assert json.loads(side.read_text())["sha256"]
    again, facts = store_track.corpus_vectors(_Encoder(), texts)
    assert facts["vectors_cached"] and np.array_equal(vec, again)
    np.save(npy, np.zeros_like(vec))  # a zeroed file of the right shape: the checksum catches it
    fixed, facts = store_track.corpus_vectors(_Encoder(), texts)
    assert not facts["vectors_cached"] and facts["vectors_cache_rebuilt"].startswith("checksum mismatch")
    assert np.array_equal(fixed, vec) and "not usable (checksum mismatch" in capsys.readouterr().err
    npy.write_bytes(npy.read_bytes()[:40])  # truncated, and its sidecar lost: unreadable, rebuilt loudly
    side.unlink()
    fixed, facts = store_track.corpus_vectors(_Encoder(), texts)
    assert facts["vectors_cache_rebuilt"].startswith("unreadable") and np.array_equal(fixed, vec)


def test_an_old_store_cache_gets_its_checksum_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compbench import config
    from compbench.bench.tracks import store_track

    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    texts = ["a", "b"]
    vec, _ = store_track.corpus_vectors(_Encoder(), texts)
    (npy,) = (tmp_path / "store-vectors").glob("*.npy")
    side = npy.with_suffix(".json")
    meta = json.loads(side.read_text())
    del meta["sha256"]
    side.write_text(json.dumps(meta))
    _, facts = store_track.corpus_vectors(_Encoder(), texts)
    assert facts["vectors_cached"] and "sha256" in json.loads(side.read_text())


# -- sane class counts in a bring-your-own classification file ---------------------------------------------------

@pytest.mark.parametrize(("labels", "needle"), [
    ([i // 2 for i in range(4000)], "has 2,000 classes; at most 1,000"),
    ([0] * 4 + [1] * 4 + [2], "1 class(es) have fewer than 2 rows (smallest: 2 with 1)"),
])
def test_classification_files_need_sane_classes(tmp_path: Path, labels: list[int], needle: str) -> None:
    import pandas as pd

    from compbench.tasks import get_task

    path = tmp_path / "cls.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(len(labels))], "label": labels}).to_csv(path, index=False)
    with pytest.raises(DataError) as exc:
        get_task("posthoc", f"classification:{path}")
    assert needle in str(exc.value)


# -- property: the option parser never crashes and its canonical form is a fixed point ----------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4), st.sampled_from(["svd", "hashing", "pq", "rabitq", "tiered"]))
def test_option_parsing_never_crashes_and_is_idempotent(pairs: list[str], method: str) -> None:
    from compbench.cli.common import parse_options

    try:
        first = parse_options(tuple(pairs), method)
    except UsageError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 600
        return
    again = canonical_method_options(method, first)
    assert again == first and options_suffix(again) == options_suffix(first)


def test_a_token_cache_that_does_not_match_its_checksum_is_rebuilt(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The train track's token cache is trusted only when it matches the sha256 written with it."""
    from compbench.tasks import get_task
    from compbench.tasks.train import load_tokenizer, tokenize_source

    task = get_task("train", "trec")
    tok, info = load_tokenizer()
    ids, lengths = tokenize_source(task, "test", tok, info, 8, tmp_path)
    (cache,) = [p for p in tmp_path.rglob("*.npz")]
    assert cache.with_name(cache.name + ".sha256").is_file()
    np.savez(cache, ids=np.zeros_like(ids), lengths=lengths)  # the right shape, the wrong ids
    again, _ = tokenize_source(task, "test", tok, info, 8, tmp_path)
    assert np.array_equal(again, ids) and "checksum mismatch" in capsys.readouterr().err
    same, _ = tokenize_source(task, "test", tok, info, 8, tmp_path)  # rebuilt and recorded: read quietly
    assert np.array_equal(same, ids) and capsys.readouterr().err == ""


def test_an_lm_fp32_folder_is_trusted_only_while_its_weights_match(tmp_path: Path) -> None:
    """The dequantised fp32 cache of an LM is rebuilt when its marker is old or its weights changed."""
    from compbench.checksums import sha256_file
    from compbench.models.causal_lm import MARKER, _cached

    (tmp_path / "config.json").write_text("{}")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    marker = {"gguf_sha256": "abc", "gguf": "m.gguf", "files": {"model.safetensors": sha256_file(weights)}}
    (tmp_path / MARKER).write_text(json.dumps(marker))
    assert _cached(tmp_path, "abc") and not _cached(tmp_path, "other")
    weights.write_bytes(b"weightz")
    assert not _cached(tmp_path, "abc")
    (tmp_path / MARKER).write_text(json.dumps({"gguf_sha256": "abc", "gguf": "m.gguf"}))  # an older marker
    assert not _cached(tmp_path, "abc")
