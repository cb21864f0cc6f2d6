"""Reliability, part 1: every bad input a user can type or supply gives one clear line on stderr and the right
exit code (2 usage error, 1 run failure), never a traceback unless ``--debug``.

The table below runs in-process through ``click.testing.CliRunner`` (the errors fire before any real work);
one subprocess pair shows what a user's terminal gets with and without ``--debug``. Corrupted result records
among good ones are reported with their path and skipped by ``report``, ``compare``, ``show`` and a resumed
sweep. The same table is documented in ``docs/reliability.md``.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from compbench.cli import main

RUN = ["run", "--method", "svd", "--budget", "10x"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """User data files, good and bad, for ``--task sts:PATH`` / ``classification:PATH``."""
    d = tmp_path_factory.mktemp("data")
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text("sentence1,sentence2,score\n")
    (d / "wrong_schema.csv").write_text("question,answer\nwhy,because\n")
    (d / "nonnumeric.csv").write_text("sentence1,sentence2,score\na b,c d,high\ne f,g h,1\ni j,k l,2\n")
    (d / "garbage.csv").write_bytes(bytes(range(128, 256)) * 3)
    (d / "notes.txt").write_text("not a table")
    pairs = pd.DataFrame({"sentence1": ["a", "b", "c"], "sentence2": ["d", "e", "f"], "score": [1.0, 2.0, 3.0]})
    pairs.to_parquet(d / "good.parquet")
    blob = (d / "good.parquet").read_bytes()
    (d / "truncated.parquet").write_bytes(blob[: len(blob) // 2])
    pairs.assign(score=1.0).to_parquet(d / "constant.parquet")
    texts = [f"text number {i}" for i in range(8)]
    pd.DataFrame({"text": texts, "label": [0.5, 1.5] * 4}).to_parquet(d / "float_labels.parquet")
    pd.DataFrame({"text": texts, "label": [[1], [2]] * 4}).to_parquet(d / "list_labels.parquet")
    pd.DataFrame({"text": texts, "label": [0, None] * 4}).to_parquet(d / "missing_labels.parquet")
    pd.DataFrame({"text": texts, "label": [1] * 8}).to_parquet(d / "one_class.parquet")
    many = [f"sentence number {i}" for i in range(60)]
    pd.DataFrame({"text": many, "label": [float(i % 50) for i in range(60)]}).to_parquet(d / "score_labels.parquet")
    pd.DataFrame({"text": many, "label": list(range(60))}).to_parquet(d / "id_labels.parquet")
    pd.DataFrame({"text": texts, "label": [0, 1] * 4, "split": ["train", "dev"] * 4}).to_parquet(d / "bad_split.parquet")
    pd.DataFrame({"text": ["a", ""] * 4, "label": [0, 1] * 4}).to_parquet(d / "empty_text.parquet")
    (d / "blocker").write_text("a file where the results folder should be")
    (d / "bad.yaml").write_text("methods: [svd\nbudgets: 10x\n")
    (d / "list.yaml").write_text("- svd\n- 10x\n")
    grid = "methods: [svd]\nbudgets: [10x]\ntasks: [posthoc/fidelity]\n"
    (d / "threads.yaml").write_text("name: many-threads\nthreads: 10000\n" + grid)
    (d / "seeds.yaml").write_text("name: big-seeds\nthreads: 1\nseeds: [0, 4294967296]\n" + grid)
    (d / "rank.yaml").write_text("name: neg-rank\nthreads: 1\noptions: {svd: {rank: -5}}\n" + grid)
    (d / "empty_results").mkdir()
    return d


def _no_gpu() -> bool:
    import torch

    return not torch.cuda.is_available()


# (id, args with {d} for the data folder, exit code, needle in the one stderr line)
CASES = [
    # names: did-you-mean
    ("method-typo", ["run", "--method", "svdd", "--budget", "10x"], 2, "unknown method 'svdd'; did you mean 'svd'"),
    ("method-unknown", ["run", "--method", "zzz", "--budget", "10x"], 2, "unknown method 'zzz' (known: "),
    ("method-rich-markup", ["run", "--method", "[/x]", "--budget", "10x"], 2, "unknown method '[/x]' (known: "),
    ("budget-rich-markup", ["run", "--method", "svd", "--budget", "[bold]40"], 2, "invalid budget '[bold]40'"),
    ("track-typo", [*RUN, "--track", "postoc"], 2, "unknown track 'postoc'; did you mean 'posthoc'"),
    ("task-typo", [*RUN, "--task", "stsbb"], 2, "unknown task 'stsbb' for track 'posthoc'; did you mean 'stsb'"),
    ("words-task-typo", [*RUN, "--track", "words", "--task", "simlexx"], 2, "did you mean 'simlex999'"),
    ("store-task-unknown", [*RUN, "--track", "store", "--task", "nope"], 2, "unknown task 'nope' for track 'store'"),
    ("method-wrong-track", [*RUN, "--track", "train", "--task", "trec"], 2,
     "method 'svd' does not support the 'train' track; it supports: posthoc"),
    # budgets
    ("budget-no-unit", ["run", "--method", "svd", "--budget", "40"], 2, "invalid budget '40'; valid forms"),
    ("budget-prefix", ["run", "--method", "svd", "--budget", "x40"], 2, "invalid budget 'x40'"),
    ("budget-below-1x", ["run", "--method", "svd", "--budget", "0.5x"], 2, "a ratio must be >= 1"),
    ("budget-word", ["run", "--method", "svd", "--budget", "abc"], 2, "invalid budget 'abc'"),
    ("budget-empty", ["run", "--method", "svd", "--budget", ""], 2, "invalid budget ''"),
    ("budget-zero-bytes", ["run", "--method", "svd", "--budget", "0B"], 2, "at least 1 byte"),
    ("budget-negative", ["run", "--method", "svd", "--budget", "-1MiB"], 2, "invalid budget '-1MiB'"),
    ("budget-nan", ["run", "--method", "svd", "--budget", "nanx"], 2, "invalid budget 'nanx'"),
    ("budget-overflow", ["run", "--method", "svd", "--budget", "1e400x"], 2, "invalid budget '1e400x'"),
    ("budget-unattainable-train", ["run", "--method", "lowrank", "--budget", "100000x", "--track", "train",
                                   "--task", "trec"], 2, "the smallest budget it can meet is 127.46x"),
    ("budget-unattainable-dense", ["run", "--method", "dense", "--budget", "10x", "--track", "train", "--task", "trec"],
     2, "the smallest budget it can meet is 1x"),
    # devices, threads, seeds, options
    ("device-unknown", [*RUN, "--device", "tpu"], 2, "unknown device 'tpu' (valid: cpu, cuda, cuda:N, auto)"),
    ("threads-zero", [*RUN, "--threads", "0"], 2, "--threads must be >= 1, got 0"),
    ("threads-negative", [*RUN, "--threads", "-3"], 2, "--threads must be >= 1, got -3"),
    ("seed-negative", [*RUN, "--seed", "-1"], 2, "--seed must be >= 0"),
    ("seeds-not-ints", [*RUN, "--seeds", "a,b"], 2, "--seeds expects comma-separated integers"),
    ("seeds-negative", ["run", "--method", "hashing", "--budget", "10x", "--track", "train", "--task", "trec",
                        "--seeds", "-1,2"], 2, "seeds must be >= 0"),
    ("seeds-duplicate", ["run", "--method", "hashing", "--budget", "10x", "--track", "train", "--task", "trec",
                         "--seeds", "1,1"], 2, "--seeds has duplicates"),
    ("option-unknown", [*RUN, "--option", "nope=1"], 2, "method 'svd' has no option(s) nope (options: dtype, rank)"),
    ("option-no-value", [*RUN, "--option", "rank"], 2, "--option expects key=value, got 'rank'"),
    ("train-flag-on-posthoc", [*RUN, "--max-steps", "3"], 2, "apply to --track train only"),
    # numeric input out of range (issue 18): threads above the cores, option ranges, seeds, budgets above dense
    ("threads-above-cores", [*RUN, "--threads", "10000"], 2, "--threads 10000 is more than the"),
    ("seed-too-large", [*RUN, "--seed", "99999999999999999999"], 2,
     "--seed must be >= 0 and <= 2147483647 (2**31 - 1, the range faiss, numpy and torch all accept), "
     "got 99999999999999999999"),
    ("seed-above-int32", [*RUN, "--seed", "2147483648"], 2, "--seed must be >= 0 and <= 2147483647"),
    ("seeds-too-large", ["run", "--method", "hashing", "--budget", "10x", "--track", "train", "--task", "trec",
                         "--seeds", "0,99999999999999999999"], 2, "--seeds must be >= 0 and <= 2147483647"),
    ("option-negative-rank", [*RUN, "-o", "rank=-5"], 2, "option rank=-5 of method 'svd' must be an integer >= 1"),
    ("option-zero-rank", [*RUN, "-o", "rank=0"], 2, "option rank=0 of method 'svd' must be an integer >= 1"),
    ("option-fractional-rank", [*RUN, "-o", "rank=2.5"], 2, "option rank=2.5 of method 'svd' must be an integer"),
    ("option-wrong-type", [*RUN, "-o", "rank=abc"], 2, "option rank=abc of method 'svd' must be an integer >= 1"),
    ("option-zero-iterations", ["run", "--method", "pq", "--budget", "10x", "-o", "niter=0"], 2,
     "option niter=0 of method 'pq' must be an integer >= 1"),
    ("option-nbits-above-max", ["run", "--method", "pq", "--budget", "10x", "-o", "nbits=17"], 2,
     "option nbits=17 of method 'pq' must be an integer in 1..16"),
    ("option-nan", ["run", "--method", "direction-ae", "--budget", "10x", "-o", "lr=nan"], 2,
     "option lr=nan of method 'direction-ae' must be a number > 0"),
    ("option-train-size", ["run", "--method", "hashing", "--budget", "10x", "--track", "train", "--task", "trec",
                           "-o", "buckets=-1"], 2, "option buckets=-1 of method 'hashing' must be an integer >= 1"),
    ("option-train-std", ["run", "--method", "tt", "--budget", "10x", "--track", "train", "--task", "trec",
                          "-o", "init_std=0"], 2, "option init_std=0 of method 'tt' must be a number > 0"),
    ("budget-above-dense", [*RUN[:-1], "999GB"], 2,
     "budget 999,000,000,000 B is larger than the dense table (46,881,792 B, fp32 V x d); an absolute budget "
     "must be at most 46881792B (1x)"),
    ("budget-above-dense-words", [*RUN[:-1], "81MB", "--track", "words"], 2,
     "is larger than the dense table (80,000,000 B"),
    ("budget-above-dense-train", ["run", "--method", "hashing", "--budget", "1GiB", "--track", "train",
                                  "--task", "trec"], 2, "is larger than the dense table (15,627,264 B"),
    ("sweep-threads-above-cores", ["sweep", "--suite", "smoke", "--threads", "10000", "--results", "{d}/r"], 2,
     "--threads 10000 is more than the"),
    ("sweep-suite-threads-above-cores", ["sweep", "{d}/threads.yaml", "--results", "{d}/r"], 2,
     "suite many-threads: threads 10000 is more than the"),
    ("sweep-seeds-too-large", ["sweep", "--suite", "smoke", "--seeds", "0,4294967296", "--results", "{d}/r"], 2,
     "--seeds must be >= 0 and <= 2147483647"),
    ("sweep-suite-seeds-too-large", ["sweep", "{d}/seeds.yaml", "--results", "{d}/r"], 2,
     "suite big-seeds: seeds must be >= 0 and <= 2147483647"),
    ("sweep-option-out-of-range", ["sweep", "{d}/rank.yaml", "--results", "{d}/r"], 2,
     "option rank=-5 of method 'svd' must be an integer >= 1"),
    ("sweep-budget-above-dense", ["sweep", "--suite", "smoke", "--budgets", "999GB", "--results", "{d}/r"], 2,
     "is larger than the dense table"),
    ("mteb-threads-zero", ["mteb", "--method", "pq", "--budget", "40x", "--tasks", "STSBenchmark", "--threads", "0"],
     2, "--threads must be >= 1, got 0"),
    ("mteb-seed-too-large", ["mteb", "--method", "pq", "--budget", "40x", "--tasks", "STSBenchmark",
                             "--seed", "-1"], 2, "--seed must be >= 0 and <= 2147483647"),
    ("ade-lookup-threads-above-cores", ["ade-lookup", "--threads", "10000"], 2, "--threads 10000 is more than the"),
    ("ade-lookup-seed-too-large", ["ade-lookup", "--seed", "99999999999999999999"], 2,
     "--seed must be >= 0 and <= 2147483647"),
    ("labels-look-continuous", [*RUN, "--task", "classification:{d}/score_labels.parquet"], 1,
     "column 'label' looks continuous or like an id: 50 distinct values in 60 rows"),
    ("labels-look-like-ids", [*RUN, "--task", "classification:{d}/id_labels.parquet"], 1,
     "column 'label' looks continuous or like an id: 60 distinct values in 60 rows"),
    # user data files (bring your own data)
    ("data-missing", [*RUN, "--task", "sts:{d}/nope.csv"], 2, "data file not found: {d}/nope.csv"),
    ("data-directory", [*RUN, "--task", "sts:{d}"], 2, "data path is not a file: {d}"),
    ("data-unsupported-type", [*RUN, "--task", "sts:{d}/notes.txt"], 2, "unsupported data file type '.txt'"),
    ("data-kind-typo", [*RUN, "--task", "stss:{d}/good.parquet"], 2, "unknown ad-hoc task kind 'stss'"),
    ("data-no-path", [*RUN, "--task", "sts:"], 2, "'sts:' names no file"),
    ("data-wrong-track", ["run", "--method", "hashing", "--budget", "10x", "--track", "train",
                          "--task", "sts:{d}/good.parquet"], 2, "ad-hoc tasks (sts:PATH) run in the posthoc and store"),
    ("data-empty", [*RUN, "--task", "sts:{d}/empty.csv"], 1, "data file {d}/empty.csv is empty"),
    ("data-header-only", [*RUN, "--task", "sts:{d}/header.csv"], 1, "has a header but no rows"),
    ("data-truncated-parquet", [*RUN, "--task", "sts:{d}/truncated.parquet"], 1,
     "cannot read data file {d}/truncated.parquet: ArrowInvalid"),
    ("data-binary-garbage", [*RUN, "--task", "sts:{d}/garbage.csv"], 1, "cannot read data file {d}/garbage.csv"),
    ("data-wrong-schema", [*RUN, "--task", "sts:{d}/wrong_schema.csv"], 1,
     "lacks column(s) sentence1, sentence2, score (has question, answer"),
    ("data-non-numeric-score", [*RUN, "--task", "sts:{d}/nonnumeric.csv"], 1,
     "column 'score' must be numeric; 1 value(s) are not (first: data row 1, 'high')"),
    ("data-constant-score", [*RUN, "--task", "sts:{d}/constant.parquet"], 1, "every score is 1.0"),
    ("labels-continuous", [*RUN, "--task", "classification:{d}/float_labels.parquet"], 1,
     "column 'label' has continuous values"),
    ("labels-unsupported-type", [*RUN, "--task", "classification:{d}/list_labels.parquet"], 1,
     "column 'label' has unsupported label type(s) ndarray"),
    ("labels-missing", [*RUN, "--task", "classification:{d}/missing_labels.parquet"], 1,
     "column 'label' has missing values (first: data row 2)"),
    ("labels-one-class", [*RUN, "--task", "classification:{d}/one_class.parquet"], 1, "has a single class"),
    ("split-unknown-value", [*RUN, "--task", "classification:{d}/bad_split.parquet"], 1,
     "column 'split' has value(s) 'dev'; allowed: train, test"),
    ("text-empty", [*RUN, "--task", "classification:{d}/empty_text.parquet"], 1, "4 empty or non-text value(s)"),
    # results folder
    ("results-not-writable", [*RUN, "--task", "fidelity", "--results", "{d}/blocker/sub"], 2,
     "results directory {d}/blocker/sub is not writable"),
    # sweeps
    ("suite-typo", ["sweep", "--suite", "smok", "--results", "{d}/r"], 2, "unknown suite 'smok'; did you mean 'smoke'"),
    ("suite-file-missing", ["sweep", "{d}/nope.yaml", "--results", "{d}/r"], 2, "suite file not found"),
    ("suite-bad-yaml", ["sweep", "{d}/bad.yaml", "--results", "{d}/r"], 2, "invalid YAML at line 2"),
    ("suite-not-mapping", ["sweep", "{d}/list.yaml", "--results", "{d}/r"], 2, "a suite must be a YAML mapping"),
    ("sweep-method-typo", ["sweep", "--suite", "smoke", "--methods", "svdd", "--results", "{d}/r"], 2,
     "did you mean 'svd'"),
    ("sweep-task-typo", ["sweep", "--suite", "smoke", "--tasks", "stsbb", "--results", "{d}/r"], 2,
     "did you mean 'stsb'"),
    ("sweep-budget", ["sweep", "--suite", "smoke", "--budgets", "ten", "--results", "{d}/r"], 2, "invalid budget 'ten'"),
    ("sweep-threads", ["sweep", "--suite", "smoke", "--threads", "0", "--results", "{d}/r"], 2, "--threads must be >= 1"),
    ("sweep-seeds", ["sweep", "--suite", "smoke", "--seeds", "-1", "--results", "{d}/r"], 2, "--seeds must be >= 0"),
    ("sweep-jobs", ["sweep", "--suite", "smoke", "--jobs", "0", "--results", "{d}/r"], 2, "--jobs must be >= 1"),
    ("sweep-cell-timeout", ["sweep", "--suite", "smoke", "--cell-timeout", "0", "--results", "{d}/r"], 2,
     "--cell-timeout must be > 0"),
    ("sweep-import", ["sweep", "--suite", "smoke", "--import", "nosuchmod", "--results", "{d}/r"], 2,
     "--import nosuchmod: cannot import nosuchmod"),
    ("sweep-not-writable", ["sweep", "--suite", "smoke", "--results", "{d}/blocker/sub"], 2,
     "results directory {d}/blocker/sub is not writable"),
    # reading results
    ("compare-missing", ["compare", "{d}/nope", "{d}/empty_results"], 2, "base results folder not found"),
    ("compare-empty", ["compare", "{d}/empty_results", "{d}/empty_results"], 2, "holds no valid record"),
    ("report-missing", ["report", "--results", "{d}/nope", "--out", "{d}/o"], 2, "does not exist"),
    ("report-empty", ["report", "--results", "{d}/empty_results", "--out", "{d}/o"], 2, "no valid records"),
    ("show-missing", ["show", "{d}/nope.json"], 1, "{d}/nope.json: no such record file"),
    ("show-directory", ["show", "{d}"], 1, "cannot read"),
    ("show-not-json", ["show", "{d}/notes.txt"], 1, "{d}/notes.txt: malformed JSON at line 1 column 1"),
]
if _no_gpu():
    CASES += [
        ("device-cuda-no-gpu", [*RUN, "--device", "cuda"], 2, "--device cuda was requested but no CUDA device"),
        ("device-cuda-n-no-gpu", [*RUN, "--device", "cuda:1"], 2, "no CUDA device is available"),
    ]


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    return lines[0]


@pytest.mark.parametrize(("args", "code", "needle"), [pytest.param(a, c, n, id=i) for i, a, c, n in CASES])
def test_bad_input_gives_one_line_and_exit_code(data: Path, args: list[str], code: int, needle: str) -> None:
    res = CliRunner().invoke(main, [a.replace("{d}", str(data)) for a in args])
    assert isinstance(res.exception, SystemExit), res.exception  # never an uncaught exception
    assert res.exit_code == code, res.stderr
    line = _one_line(res.stderr)
    assert line.startswith("error: ") and needle.replace("{d}", str(data)) in line, line
    assert "Traceback" not in res.output


def test_unattainable_posthoc_budget_names_the_smallest(tmp_path: Path) -> None:
    """Found by the method's configure on the real token table (30522 x 384): exit 2, nothing written."""
    res = CliRunner().invoke(main, ["run", "--method", "quant-int8", "--budget", "40x", "--results", str(tmp_path)])
    assert res.exit_code == 2
    line = _one_line(res.stderr)
    assert "cannot meet this budget" in line and "the smallest budget it can meet is 3.91x (or 11964624B)" in line
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("args", [["list", "method"], [*RUN, "--threads", "abc"], ["run", "--method", "svd"]])
def test_click_usage_errors_exit_2(args: list[str]) -> None:
    """Malformed command lines are click's: usage, a hint, and one ``Error:`` line; exit 2."""
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert sum(ln.startswith("Error: ") for ln in res.stderr.splitlines()) == 1


def test_markup_like_text_from_records_and_suites_is_printed_literally(tmp_path: Path) -> None:
    """Record fields and suite names are data, never rich markup (an unmatched ``[/x]`` used to crash)."""
    from compbench.bench.results.record_store import ResultStore
    from tests_support import make_record

    rec = make_record(status="failed", main=None)
    rec.error = "[/x] [bold]boom[/bold] [red]"
    rec.method.config = {"tag": "[/]"}
    path = ResultStore(tmp_path / "r").write(rec)
    res = CliRunner().invoke(main, ["show", str(path)])
    assert res.exit_code == 0, res.output
    assert "[/x] [bold]boom[/bold] [red]" in res.stdout.replace("\n", "") and '"tag": "[/]"' in res.stdout
    res = CliRunner().invoke(main, ["report", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    suite = tmp_path / "s.yaml"
    suite.write_text("name: '[/x]'\nmethods: [svd]\nbudgets: [8x]\ntasks: [posthoc/fidelity]\n")
    res = CliRunner().invoke(main, ["sweep", str(suite), "--results", str(tmp_path / "r2"), "--dry-run"])
    assert res.exit_code == 0 and "suite [/x]" in res.stdout


def test_unexpected_exception_is_one_line_and_debug_reraises(monkeypatch: pytest.MonkeyPatch) -> None:
    import compbench.bench.cell.runner as runner

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("something broke\nsecond line of detail")

    monkeypatch.setattr(runner, "run_cell", boom)
    res = CliRunner().invoke(main, [*RUN, "--task", "fidelity"])
    assert res.exit_code == 1
    assert _one_line(res.stderr) == "error: RuntimeError: something broke (rerun with --debug for the traceback)"
    res = CliRunner().invoke(main, ["--debug", *RUN, "--task", "fidelity"])
    assert isinstance(res.exception, RuntimeError)


def test_terminal_sees_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    """What a user's terminal gets, in a real process: one line on stderr, nothing on stdout, exit 2; with
    ``--debug`` the exception propagates (its traceback printed by Python)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    args = ["run", "--method", "svdd", "--budget", "10x", "--results", str(tmp_path)]
    res = subprocess.run([sys.executable, "-m", "compbench", *args], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert "Traceback" not in res.stderr and "did you mean 'svd'" in _one_line(res.stderr)
    from compbench.errors import UnknownNameError

    debug = CliRunner().invoke(main, ["--debug", *args])
    assert isinstance(debug.exception, UnknownNameError) and debug.exc_info is not None


def test_shipped_dataset_files_missing_truncated_or_wrong_schema(tmp_path: Path) -> None:
    """The loaders of shipped snapshots turn every damaged file into a one-line DataError naming it."""
    from compbench.datasets import labels, load_split, split_path
    from compbench.errors import DataError, UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'sst2'"):
        load_split("sst22", "train")
    with pytest.raises(UnknownNameError, match="has no split 'dev'"):
        load_split("sst2", "dev")
    root = tmp_path / "snapshots"
    (root / "sst2").mkdir(parents=True)
    with pytest.raises(DataError, match="missing data file .*reinstall"):
        load_split("sst2", "train", root=root)
    good = split_path("sst2", "train").read_bytes()
    target = root / "sst2" / "train.parquet"
    for content, match in ((b"", "cannot read data file"), (good[: len(good) // 3], "cannot read data file")):
        target.write_bytes(content)
        with pytest.raises(DataError, match=match) as exc:
            load_split("sst2", "train", root=root)
        assert "\n" not in str(exc.value) and str(target) in str(exc.value)
    pd.DataFrame({"sentence": ["x"], "other\nlabel": [1]}).to_parquet(target)  # a column name holding a newline
    with pytest.raises(DataError, match=r"lacks column\(s\) text, label \(has sentence, 'other\\nlabel'\)") as exc:
        load_split("sst2", "train", root=root)
    assert "\n" not in str(exc.value)
    pd.DataFrame({"sentence": pd.Series([], dtype=str), "label": pd.Series([], dtype=int)}).to_parquet(target)
    with pytest.raises(DataError, match="is empty"):
        load_split("sst2", "train", root=root)
    for text in ("{", "[1, 2]", "{}", '"label"'):
        (root / "sst2" / "labels.json").write_text(text)
        with pytest.raises(DataError, match="labels.json"):
            labels("sst2", root=root)


def test_error_text_helpers_keep_user_text_on_one_line() -> None:
    """``quoted`` shows unprintable user text as its repr; ``first_line`` never fails on a blank message."""
    from compbench.errors import first_line, quoted

    assert quoted("label") == "label" and quoted(3) == "3"
    assert quoted("a\nb") == "'a\\nb'" and quoted("tab\there") == "'tab\\there'"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(ValueError("\n  \n  the cause  \nmore detail")) == "ValueError: the cause"
    assert first_line(OSError(2, "No such file")) == "FileNotFoundError: [Errno 2] No such file"


# ------------------------------------------------------------------------------------------------------------------
# corrupted records among good ones
# ------------------------------------------------------------------------------------------------------------------
def _corruptions(good_text: str) -> dict[str, bytes]:
    """Ways a record file can be damaged: by a non-atomic writer, a disk, a hand edit, or a hostile file."""
    import json

    doc = json.loads(good_text)
    return {
        "truncated": good_text[: len(good_text) // 2].encode(),
        "empty": b"",
        "binary": bytes(range(256)),
        "pickle": pickle.dumps(doc),
        "array": b"[1, 2, 3]\n",
        "wrong-schema": json.dumps({"schema_version": 1, "key": doc["key"], "status": "ok"}).encode(),
        "newer-schema": json.dumps({**doc, "schema_version": 999}).encode(),
        "zero-schema": json.dumps({**doc, "schema_version": 0}).encode(),
        "huge-number": b'{"schema_version": ' + b"1" * 5000 + b"}",
        "deep-nesting": b"[" * 100_000,
        "bad-status": json.dumps({**doc, "status": "great"}).encode(),
    }


@pytest.fixture()
def corrupted(tmp_path: Path) -> tuple[Path, list[Path], int]:
    """A results folder with 4 good records and one corrupted file of each kind (paths returned)."""
    from compbench.bench.results.record_store import ResultStore
    from tests_support import make_record

    store = ResultStore(tmp_path / "results")
    good = [make_record("dense", "1x", main=0.82)] + [make_record("svd", b, main=m) for b, m in (("10x", 0.7), ("40x", 0.6))]
    good.append(make_record("quant-int2", "10x", main=0.75))
    for r in good:
        store.write(r)
    bad = []
    for i, (kind, blob) in enumerate(_corruptions(store.path_for(good[1].key).read_text()).items()):
        p = store.root / "posthoc" / "stsb" / "broken" / "10x" / f"cpu-1t-s{i}-{kind}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob)
        bad.append(p)
    return store.root, bad, len(good)


def test_store_reports_each_corrupted_record_with_its_path(corrupted: tuple[Path, list[Path], int]) -> None:
    from compbench.bench.results.record_store import ResultStore

    root, bad, n_good = corrupted
    good, problems = ResultStore(root).load_all()
    assert len(good) == n_good
    assert sorted(p.path for p in problems) == sorted(bad)
    for p in problems:
        assert str(p.path) in p.reason and "\n" not in p.reason


def test_report_and_compare_skip_corrupted_records(corrupted: tuple[Path, list[Path], int], tmp_path: Path) -> None:
    root, bad, n_good = corrupted
    res = CliRunner().invoke(main, ["report", "--results", str(root), "--out", str(tmp_path / "reports")])
    assert res.exit_code == 0, res.output
    assert f"from {n_good} record(s)" in res.stdout
    warnings = [ln for ln in res.stderr.splitlines() if ln.startswith("skipped malformed record")]
    assert len(warnings) == len(bad) and all(any(str(p) in w for w in warnings) for p in bad)
    assert (tmp_path / "reports" / "index.html").is_file()
    res = CliRunner().invoke(main, ["compare", str(root), str(root)])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.stderr.splitlines() if "skipped malformed record" in ln]
    assert len(warnings) == 2 * len(bad)  # base and new
    assert "OK: 0 regression(s), 0 missing" in res.stdout


def test_show_refuses_each_corrupted_record_in_one_line(corrupted: tuple[Path, list[Path], int]) -> None:
    _, bad, _ = corrupted
    expect = {"truncated": "malformed JSON", "empty": "malformed JSON", "binary": "not UTF-8 JSON text",
              "pickle": "looks like a Python pickle; records are JSON only", "array": "a record must be a JSON object", "wrong-schema": "invalid record",
              "newer-schema": "upgrade compbench", "bad-status": "invalid record: status",
              "zero-schema": "schema_version 0 is unknown", "huge-number": "malformed JSON: ValueError",
              "deep-nesting": "malformed JSON: RecursionError"}
    for p in bad:
        res = CliRunner().invoke(main, ["show", str(p)])
        assert res.exit_code == 1, p
        line = _one_line(res.stderr)
        kind = p.stem.split("-", 3)[-1]
        assert line.startswith(f"error: {p}: ") and expect[kind] in line, line


def test_resumed_sweep_replaces_a_corrupted_record_and_keeps_the_rest(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import test_sweep_fakes
    from compbench.bench.cell.context import TRACK_RUNNERS
    from compbench.bench.results.record_store import ResultStore

    monkeypatch.setitem(TRACK_RUNNERS, "posthoc", test_sweep_fakes.FAKE_RUNNER)
    for var in [v for v in os.environ if v.startswith("COMPBENCH_FAKE_")]:
        monkeypatch.delenv(var)
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nthreads: 1\nmethods: [svd, quant-int2]\nbudgets: [8x]\ntasks: [posthoc/fidelity]\n")
    results = tmp_path / "r"
    args = ["sweep", str(suite), "--results", str(results), "--executor", "inline", "--no-progress"]
    assert CliRunner().invoke(main, args).exit_code == 0
    store = ResultStore(results)
    keys = {r.key: r for r in store.load_all()[0]}
    assert len(keys) == 3
    victim = "posthoc/fidelity/svd/8x/cpu-1t-s0"
    text = store.path_for(victim).read_text()
    store.path_for(victim).write_text(text[: len(text) // 2])
    stray = results / "posthoc" / "fidelity" / "stray.json"
    stray.write_bytes(pickle.dumps({"key": "x"}))
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    assert '"ran": 1' in res.stdout and '"cached": 2' in res.stdout
    good, problems = store.load_all()
    assert {r.key for r in good} == set(keys) and [p.path for p in problems] == [stray]
    for r in good:  # the others were not touched
        if r.key != victim:
            assert r.provenance["created_at"] == keys[r.key].provenance["created_at"]
