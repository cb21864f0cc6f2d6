"""Leaderboard: frame/aggregation, ranks, Pareto flags, deterministic and safe rendering, `compbench report`.

All records are synthetic (built here); nothing runs a benchmark.
"""

from __future__ import annotations

import random
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from compbench.bench.cell.identity import cell_key
from compbench.bench.results.record import (
    BudgetInfo,
    DeviceInfo,
    MethodInfo,
    Metrics,
    Params,
    Record,
    TaskInfo,
)
from compbench.bench.results.record_store import ResultStore
from compbench.cli import main
from compbench.leaderboard.frame import aggregate, combine_seed_groups, to_frame
from compbench.leaderboard.ranking import build_leaderboard, build_leaderboards, build_overview, pareto_flags
from compbench.leaderboard.report import MANIFEST, render_report, write_report

V, D = 1000, 64
REF = V * D * 4
XSS = "<script>alert(1)</script>"


def make_record(method: str, budget: float, main: float | None, *, status: str = "ok", seed: int = 0,
                options: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
                stored: int | None = None, throughput: float | None = 0.8, track: str = "posthoc",
                task: str = "stsb", task_version: int = 1, method_version: int = 1, seeds: list[int] | None = None,
                main_std: float | None = None, threads: int = 1, error: str | None = None,
                retention: float | None = None, sha: str = "a" * 40, created_at: str = "2026-01-01T00:00:00Z",
                higher_is_better: bool = True, rss: int = 500 * 2**20) -> Record:
    """A synthetic but fully valid record of one cell."""
    spec = f"{budget:g}x"
    allowed = int(REF // budget)
    if stored is None and status != "failed":
        stored = int(allowed * 0.9)
    scores = {"spearman": main} if main is not None else {}
    if main_std is not None:
        scores["main_std"] = main_std
    measurements: dict[str, Any] = {"memory": {"peak_rss_bytes": rss}}
    if throughput is not None and status == "ok":
        measurements["lookup"] = {"ratio": throughput, "candidate": {"median": 1e6 * throughput, "n": 5}}
    return Record(
        key=cell_key(track, task, method, spec, "cpu", threads, seed, options),
        status=status, error=error, track=track, seed=seed,
        method=MethodInfo(name=method, version=method_version, family="test", reference="synthetic",
                          options=options or {}, config=config or {"rank": 3}),
        task=TaskInfo(name=task, version=task_version, track=track, metric="spearman",
                      higher_is_better=higher_is_better, tolerance=0.005, dataset=task),
        budget=BudgetInfo(spec=spec, reference_bytes=REF, allowed_bytes=allowed, stored_bytes=stored,
                          achieved_ratio=(REF / stored) if stored else None),
        device=DeviceInfo(kind="cpu", name="Test CPU", threads=threads),
        params=Params(total=10, trainable=0, embedding=10),
        metrics=Metrics(main=main if status == "ok" else None, scores=scores if status == "ok" else {},
                        retention=retention, seeds=seeds),
        measurements=measurements,
        provenance={"git_sha": sha, "git_dirty": False, "created_at": created_at, "compbench_version": "0.1.0"},
    )


def synthetic_records() -> list[Record]:
    """A small realistic record set: dense, svd (3 seeds at 10x), quant at 10x/40x, an over-budget cell,
    a failed cell, a second task, an escaped option, two git shas."""
    recs = [make_record("dense", 1, 0.82, stored=REF, throughput=1.0, retention=1.0)]
    for s, v in enumerate((0.70, 0.72, 0.71)):
        recs.append(make_record("svd", 10, v, seed=s, throughput=0.5, retention=v / 0.82))
    recs += [
        make_record("svd", 40, 0.55, throughput=0.6, retention=0.55 / 0.82),
        make_record("quant-int2", 10, 0.80, throughput=0.15, retention=0.80 / 0.82, sha="b" * 40,
                    created_at="2026-01-02T00:00:00Z"),
        make_record("quant-binary", 40, 0.75, throughput=0.2, retention=0.75 / 0.82),
        make_record("quant-int4", 10, None, status="over_budget", stored=int(REF / 10) + 100,
                    error=f"stored {int(REF / 10) + 100:,} B > allowed {int(REF / 10):,} B"),
        make_record("hashing", 40, None, status="failed", error="CUDA out of memory <b>boom</b>"),
        make_record("svd", 10, 0.69, options={"note": XSS}, config={"rank": 4, "tag": XSS}, throughput=0.45),
        make_record("dense", 1, 0.91, task="sst2", stored=REF, throughput=1.0, retention=1.0),
        make_record("svd", 10, 0.85, task="sst2", throughput=0.5),
    ]
    return recs


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    """The synthetic report, rendered once for the read-only tests."""
    return render_report(synthetic_records())


def _board(records: list[Record], task: str = "stsb"):
    return build_leaderboard(aggregate(to_frame(records)), "posthoc", task, "cpu-1t")


# ----------------------------------------------------------------------------- frame and aggregation

def test_frame_has_one_row_per_record_and_python_values() -> None:
    recs = synthetic_records()
    df = to_frame(recs)
    assert len(df) == len(recs)
    row = df[df["key"] == recs[0].key].iloc[0]
    assert row["device"] == "cpu-1t" and row["stored_bytes"] == REF and isinstance(row["stored_bytes"], int)
    assert row["throughput_ratio"] == 1.0 and row["peak_rss_bytes"] == 500 * 2**20


def test_seed_records_are_aggregated_mean_std_n() -> None:
    board = _board(synthetic_records())
    c = board.cell("svd", "10x")
    assert c["n"] == 3 and c["seeds"] == (0, 1, 2)
    assert c["main"] == pytest.approx(statistics.mean([0.70, 0.72, 0.71]))
    assert c["main_std"] == pytest.approx(statistics.stdev([0.70, 0.72, 0.71]))


def test_multi_seed_record_combines_with_separate_seed_records_without_double_counting() -> None:
    values = [0.60, 0.64, 0.62, 0.70]
    multi = make_record("svd", 10, statistics.mean(values[:3]), seeds=[0, 1, 2], main_std=statistics.stdev(values[:3]))
    extra = make_record("svd", 10, values[3], seed=3)
    dup = make_record("svd", 10, 0.99, seed=1)  # seed 1 is already inside the multi-seed record
    dup_train = make_record("svd", 10, 0.98, seed=0, seeds=[0])  # a train-track single-seed record names its seed
    c = _board([multi, extra, dup, dup_train]).cell("svd", "10x")
    assert c["n"] == 4 and c["seeds"] == (0, 1, 2, 3)
    assert c["main"] == pytest.approx(statistics.mean(values))
    assert c["main_std"] == pytest.approx(statistics.stdev(values))


def test_combine_seed_groups_matches_pooled_statistics() -> None:
    rng = random.Random(0)
    data = [[rng.random() for _ in range(n)] for n in (1, 3, 2, 5)]
    groups = [(len(g), statistics.mean(g), statistics.stdev(g) if len(g) > 1 else None) for g in data]
    mean, std, n = combine_seed_groups(groups)
    flat = [x for g in data for x in g]
    assert n == len(flat) and mean == pytest.approx(statistics.mean(flat))
    assert std == pytest.approx(statistics.stdev(flat))
    assert combine_seed_groups([(1, 0.5, None)]) == (0.5, None, 1)


def test_partially_failed_seeds_keep_the_ok_mean_and_say_so() -> None:
    recs = [make_record("svd", 10, 0.7, seed=0), make_record("svd", 10, None, seed=1, status="failed", error="x")]
    c = _board(recs).cell("svd", "10x")
    assert c["status"] == "ok" and c["n"] == 1 and c["n_bad"] == 1 and "seed 1: failed" in c["error"]


def test_stale_method_versions_are_left_out_and_counted() -> None:
    recs = [make_record("svd", 10, 0.5, method_version=1), make_record("svd", 10, 0.7, method_version=2),
            make_record("dense", 1, 0.8, stored=REF)]
    board = _board(recs)
    assert board.cell("svd", "10x")["main"] == 0.7
    assert board.versions()["stale_records"] == 1
    page = render_report(recs)["posthoc/stsb/cpu-1t.md"].decode()
    assert "1 record(s) of older method or task versions not shown" in page


# ----------------------------------------------------------------------------- ranks and Pareto flags

def test_over_budget_and_failed_cells_render_and_are_not_ranked(files: dict[str, bytes]) -> None:
    recs = synthetic_records()
    board = _board(recs)
    over, failed = board.cell("quant-int4", "10x"), board.cell("hashing", "40x")
    assert over["status"] == "over_budget" and over["rank"] is None and not over["pareto_bytes"]
    assert failed["status"] == "failed" and failed["rank"] is None and not failed["pareto_speed"]
    ranks10 = sorted(c["rank"] for c in board.cells.to_dict("records") if c["budget"] == "10x" and c["rank"])
    assert ranks10 == [1, 2, 3]  # quant-int2 0.80, svd 0.71, svd+opts 0.69; quant-int4 not ranked
    assert board.cell("quant-int2", "10x")["rank"] == 1
    text = files["posthoc/stsb/cpu-1t.md"].decode()
    row = next(line for line in text.splitlines() if line.startswith("| quant-int4 |"))
    assert "*over budget*" in row and "#" not in row
    row = next(line for line in text.splitlines() if line.startswith("| hashing |"))
    assert "*failed*" in row and "#" not in row
    page = files["posthoc/stsb/cpu-1t.html"].decode()
    assert 'class="st-over_budget"' in page and 'class="st-failed"' in page
    assert "CUDA out of memory &lt;b&gt;boom&lt;/b&gt;" in page


def test_ok_record_over_its_allowed_bytes_is_treated_as_over_budget() -> None:
    rec = make_record("svd", 10, 0.9, stored=REF // 10 + 1)
    c = _board([rec, make_record("dense", 1, 0.8, stored=REF)]).cell("svd", "10x")
    assert c["status"] == "over_budget" and c["rank"] is None and "allowed" in c["error"]


def test_ties_share_a_rank_and_lower_is_better_metrics_rank_ascending() -> None:
    recs = [make_record("a", 10, 0.5), make_record("b", 10, 0.5), make_record("c", 10, 0.4)]
    board = _board(recs)
    assert [board.cell(m, "10x")["rank"] for m in "abc"] == [1, 1, 3]
    recs = [make_record(m, 10, v, higher_is_better=False) for m, v in (("a", 0.3), ("b", 0.1), ("c", 0.2))]
    board = _board(recs)
    assert [board.cell(m, "10x")["rank"] for m in "abc"] == [3, 1, 2]


def test_pareto_flags_on_a_known_set() -> None:
    # (bytes, score): A and B are the front; C is dominated by A (more bytes, lower score); D ties A exactly (kept);
    # E has the fewest bytes and the lowest score (kept); F is dominated by B.
    xs = [100, 400, 200, 100, 50, 500]
    ys = [0.7, 0.9, 0.6, 0.7, 0.2, 0.85]
    assert pareto_flags(xs, ys, maximize_x=False, maximize_y=True) == [True, True, False, True, True, False]
    # throughput (higher better) vs score
    assert pareto_flags([1.0, 0.5, 0.2, 0.5], [0.8, 0.9, 0.95, 0.85], maximize_x=True, maximize_y=True) == \
        [True, True, True, False]


def test_pareto_flags_on_a_leaderboard() -> None:
    board = _board(synthetic_records())
    front = {(c["variant"], c["budget"]) for c in board.cells.to_dict("records") if c["pareto_bytes"]}
    # bytes: dense 1x (best score), quant-int2 10x (0.80 at 10x), quant-binary 40x (0.75 at 40x); svd 40x (0.55) is
    # dominated by quant-binary 40x (same allowed bytes * 0.9 stored, higher score)
    assert front == {("dense", "1x"), ("quant-int2", "10x"), ("quant-binary", "40x")}
    speed = {(c["variant"], c["budget"]) for c in board.cells.to_dict("records") if c["pareto_speed"]}
    assert speed == {("dense", "1x")}  # dense is both the fastest and the best


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.integers(0, 20)), min_size=1, max_size=12))
def test_pareto_flags_property(points: list[tuple[int, int]]) -> None:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    flags = pareto_flags(xs, ys, maximize_x=False, maximize_y=True)

    def dominates(j: int, i: int) -> bool:
        return xs[j] <= xs[i] and ys[j] >= ys[i] and (xs[j] < xs[i] or ys[j] > ys[i])

    for i, f in enumerate(flags):
        assert f == (not any(dominates(j, i) for j in range(len(points)) if j != i))
    assert any(flags)


# ----------------------------------------------------------------------------- rendering

def test_render_is_deterministic_including_png_and_record_order(tmp_path: Path, files: dict[str, bytes]) -> None:
    recs = synthetic_records()
    shuffled = list(recs)
    random.Random(7).shuffle(shuffled)
    assert render_report(shuffled) == files  # a second render, from records in another order
    assert set(files) >= {"index.md", "index.html", "posthoc/stsb/cpu-1t.md", "posthoc/stsb/cpu-1t.html",
                          "posthoc/stsb/cpu-1t.bytes.png", "posthoc/stsb/cpu-1t.speed.png", "posthoc/sst2/cpu-1t.html"}
    assert files["posthoc/stsb/cpu-1t.bytes.png"].startswith(b"\x89PNG")
    # through the store and the files on disk: byte-identical to the in-memory render
    store = ResultStore(tmp_path / "results")
    for r in recs:
        store.write(r)
    write_report(tmp_path / "results", tmp_path / "r1")
    on_disk = {p.relative_to(tmp_path / "r1").as_posix(): p.read_bytes() for p in (tmp_path / "r1").rglob("*")
               if p.is_file() and p.name != MANIFEST}
    assert on_disk == files


def test_png_has_no_software_or_time_metadata(files: dict[str, bytes]) -> None:
    png = files["posthoc/stsb/cpu-1t.bytes.png"]
    assert b"Software" not in png and b"tIME" not in png and b"matplotlib" not in png.lower()


def test_no_timestamps_in_the_body(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        if name.endswith((".md", ".html")):
            text = data.decode()
            assert "2026-01-0" not in text and not re.search(r"\d{4}-\d\d-\d\dT\d\d:", text), name


def test_every_record_string_is_escaped(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        if name.endswith(".png"):
            continue
        text = data.decode()
        assert XSS not in text, name
        assert "<b>boom" not in text, name
    page = files["posthoc/stsb/cpu-1t.html"].decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the option and the config, shown as text
    assert page.count("&lt;script&gt;") >= 2
    md = files["posthoc/stsb/cpu-1t.md"].decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_html_is_self_contained(files: dict[str, bytes]) -> None:
    for name, data in files.items():
        if not name.endswith(".html"):
            continue
        text = data.decode()
        assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I), name
        assert not re.search(r"<link[^>]+stylesheet", text, re.I), name
        assert "<script" not in text.lower() and "@import" not in text, name
        # url() only points inside the page (an inline SVG's clip paths), never at a file or a host
        assert all(u.startswith("#") for u in re.findall(r"url\(([^)]*)\)", text)), name
        assert not re.findall(r"""\ssrc\s*=""", text), name  # plots are inline SVG: nothing to load
        for href in re.findall(r"""href\s*=\s*["']([^"']*)""", text):
            assert (href == "data:," or href.startswith("#") or (href.endswith(".html") and "://" not in href)), \
                (name, href)
        assert "<foreignObject" not in text and not re.search(r"<[^>]*\son[a-z]+\s*=", text, re.I), name  # no handlers
        assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_task_page_shows_every_column_and_footer(files: dict[str, bytes]) -> None:
    md = files["posthoc/stsb/cpu-1t.md"].decode()
    for header in ("score (mean ± std)", "retention", "stored", "achieved", "throughput", "peak RSS"):
        assert header in md
    assert "0.7100 ± 0.0100 no interval (n=3)" in md  # svd 10x over three seeds
    assert "| 10x | 1 | quant-int2 | ok | 0.8000 | no interval | 1 | 97.6% |" in md
    assert "git aaaaaaaaaa..bbbbbbbbbb (2 commits)" in md
    assert "dense v1" in md and "posthoc/stsb v1" in md
    assert "![stsb: quality vs stored bytes](cpu-1t.bytes.png)" in md
    index = files["index.md"].decode()
    assert "[posthoc/stsb/cpu-1t](posthoc/stsb/cpu-1t.md)" in index
    row = next(line for line in index.splitlines() if line.startswith("| quant-int2 |"))
    assert "**0.8000**" in row  # best at stsb 10x
    html = files["index.html"].decode()
    assert 'href="posthoc/stsb/cpu-1t.html"' in html and 'href="posthoc/sst2/cpu-1t.html"' in html


def test_retention_falls_back_to_the_dense_cell() -> None:
    recs = [make_record("dense", 1, 0.8, stored=REF), make_record("svd", 10, 0.6)]  # no retention in records
    assert _board(recs).cell("svd", "10x")["retention"] == pytest.approx(0.75)


def test_unsafe_names_cannot_escape_the_report_folder(tmp_path: Path) -> None:
    rec = make_record("svd", 10, 0.5, task="../../evil")
    files = render_report([rec])
    assert all(".." not in Path(p).parts for p in files)
    write_report_dir = tmp_path / "out"
    from compbench.leaderboard.report import write_files

    write_files(write_report_dir, files)
    assert not (tmp_path / "evil").exists()
    assert all(write_report_dir.resolve() in p.resolve().parents for p in write_report_dir.rglob("*"))


# ----------------------------------------------------------------------------- command line

def _store(tmp_path: Path, recs: list[Record]) -> Path:
    store = ResultStore(tmp_path / "results")
    for r in recs:
        store.write(r)
    return store.root


def test_cli_report_writes_pages_and_reports_malformed_records(tmp_path: Path) -> None:
    root = _store(tmp_path, synthetic_records())
    bad = root / "posthoc" / "stsb" / "broken.json"
    bad.write_text("{not json", encoding="utf-8")
    out = tmp_path / "reports"
    res = CliRunner().invoke(main, ["report", "--results", str(root), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "broken.json" in res.stderr and "malformed" in res.stderr
    assert "wrote 2 page(s)" in res.stdout
    assert (out / "index.html").is_file() and (out / "posthoc/stsb/cpu-1t.html").is_file()
    manifest = (out / MANIFEST).read_text().split()
    assert "posthoc/sst2/cpu-1t.md" in manifest

    # a narrower report removes the pages it no longer generates, and only those
    (out / "mine.txt").write_text("keep me")
    res = CliRunner().invoke(main, ["report", "--results", str(root), "--out", str(out), "--task", "posthoc/stsb",
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert not (out / "posthoc/sst2").exists() and (out / "posthoc/stsb/cpu-1t.md").is_file()
    assert (out / "mine.txt").read_text() == "keep me"


def test_cli_report_errors_are_one_line(tmp_path: Path) -> None:
    root = _store(tmp_path, synthetic_records())
    res = CliRunner().invoke(main, ["report", "--results", str(root), "--out", str(tmp_path / "o"), "--task", "nope"])
    assert res.exit_code == 2 and "no records for task 'nope'" in res.stderr and "stsb" in res.stderr
    res = CliRunner().invoke(main, ["report", "--results", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "does not exist" in res.stderr
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["report", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no valid records" in res.stderr


def test_train_style_multi_seed_record_renders_mean_std() -> None:
    rec = make_record("hashing", 10, 0.81, track="train", task="sst2", seeds=[0, 1, 2], main_std=0.012,
                      throughput=None)
    files = render_report([rec])
    md = files["train/sst2/cpu-1t.md"].decode()
    assert "0.8100 ± 0.0120 no interval (n=3)" in md
    assert "train/sst2/cpu-1t.speed.png" not in files  # no throughput measured: no speed plot


def test_train_settings_tag_in_the_key_gets_its_own_page() -> None:
    full = make_record("hashing", 10, 0.80, track="train", task="trec", seeds=[0, 1], main_std=0.01)
    smoke = make_record("hashing", 10, 0.40, track="train", task="trec", seeds=[0, 1], main_std=0.02)
    smoke = smoke.model_copy(update={"key": smoke.key.replace("/trec/", "/trec+bag+steps20/")})
    files = render_report([full, smoke])
    assert "0.8000 ± 0.0100 no interval (n=2)" in files["train/trec/cpu-1t.md"].decode()
    assert "0.4000 ± 0.0200 no interval (n=2)" in files["train/trec+bag+steps20/cpu-1t.md"].decode()
    assert set(render_report([full, smoke], tasks=["train/trec+bag+steps20"])) == {
        "index.md", "index.html", "summary.md", "train/trec+bag+steps20/cpu-1t.md",
        "train/trec+bag+steps20/cpu-1t.html",
        "train/trec+bag+steps20/cpu-1t.bytes.png", "train/trec+bag+steps20/cpu-1t.speed.png"}


def test_number_formats_keep_small_ratios_and_spreads_readable() -> None:
    from compbench.leaderboard.render import fmt_mean_std, fmt_ratio

    assert fmt_ratio(10.0) == "10.00x"
    assert fmt_ratio(0.0042) == "0.0042x"   # a slow method must not read as 0.00x
    assert fmt_ratio(0.018) == "0.018x"
    assert fmt_ratio(3e-5) == "3.0e-05x"
    assert fmt_mean_std(0.8453, 0.007572) == "0.8453 ± 0.0076"
    assert fmt_mean_std(0.002, 0.0001) == "2.000e-03 ± 1.000e-04"
    assert fmt_mean_std(0.8, None) == "0.8000"


def _train(method: str, budget: float, main: float, *, init: str = "random", head: str = "shared",
           width: int = 384) -> Record:
    rec = make_record(method, budget, main, track="train", task="trec+d384", stored=REF if budget == 1 else None)
    rec.identity = {"track": "train", "model": "all-MiniLM-L6-v2", "width": width, "init": init, "head": head,
                    "backbone": "transformer(L1,H4,ffn1536,learned,mean,drop0.1)", "recipe": "task"}
    rec.params = Params(total=900, trainable=900, embedding=100)
    rec.measurements["eval_throughput"] = {"mean": 1000.0 if head == "shared" else 250.0}
    return rec


def test_systems_are_shown_next_to_the_dense_model_and_never_ranked() -> None:
    """A method with its own classifier head and a pretrained init (ADE) is a system: it scores above dense here,
    yet it gets no rank, no Pareto flag and no place in the overview; its table states the head's size and cost."""
    from compbench.leaderboard.render import page_markdown

    recs = [_train("dense", 1, 0.85), _train("hashing", 10, 0.80),
            _train("ade", 10, 0.88, init="pretrained", head="own:SAT")]
    (board,) = build_leaderboards(aggregate(to_frame(recs)))
    assert board.methods == ("dense", "hashing") and board.systems == ("ade",)
    ade = next(c for c in board.cells.to_dict("records") if c["method"] == "ade")
    assert ade["rank"] is None and not ade["pareto_bytes"] and ade["retention"] is None
    assert board.cell("hashing", "10x")["rank"] == 1
    page = page_markdown(board, {}, "../../index.md")
    assert "## Systems (not ranked)" in page and "Identity: all-MiniLM-L6-v2, d=384" in page
    row = next(ln for ln in page.splitlines() if ln.startswith("| ade |"))
    assert "0.8500" in row and "+0.0300" in row and "800" in row and "0.25x" in row  # dense, Δ, head params, speed
    (ov,) = build_overview([board])
    assert "ade" not in ov.methods


def test_a_page_never_mixes_identities_and_names_what_it_left_off() -> None:
    """Records whose identity differs from the page's (hand-edited, damaged) are left off it and listed, never
    ranked together, and never fatal to the report (issue 34; found by tests/test_store_fuzz.py)."""
    recs = [_train("dense", 1, 0.85), _train("pq", 10, 0.82), _train("hashing", 10, 0.80, width=128)]
    (board,) = build_leaderboards(aggregate(to_frame(recs)))
    assert set(board.methods) == {"dense", "pq"} and len(board.excluded) == 1 and "hashing" in board.excluded[0]
    from compbench.leaderboard.render import page_markdown

    assert "excluded" in page_markdown(board, {}, "../../index.md")


def test_a_failed_cell_without_a_reference_size_does_not_break_the_plots() -> None:
    """A failed record that never reached the table has 0 reference and allowed bytes; the page still renders."""
    recs = synthetic_records() + [make_record("quant-int4", 2, None, status="failed", error="worker died")]
    recs[-1].budget.reference_bytes = recs[-1].budget.allowed_bytes = 0
    files = render_report(recs)
    assert files["posthoc/stsb/cpu-1t.bytes.png"].startswith(b"\x89PNG")


def test_report_progress_sees_every_page_in_order(tmp_path: Path) -> None:
    """``compbench report`` shows its pages as it draws them (issue 35): the callback gets each page once."""
    from compbench.bench.results.record_store import ResultStore
    from compbench.leaderboard.report import write_report

    store = ResultStore(tmp_path / "r")
    for r in synthetic_records():
        store.write(r)
    seen: list[tuple[int, int, str]] = []
    res = write_report(tmp_path / "r", tmp_path / "out", progress=lambda d, t, p: seen.append((d, t, p)))
    assert [d for d, _, _ in seen] == list(range(res.pages)) and all(t == res.pages for _, t, _ in seen)
    assert all((tmp_path / "out" / f"{p}.html").is_file() for _, _, p in seen)


# ----------------------------------------------------------------------------- the README's results block

def test_summary_is_the_headline_of_stsb_top_rows_with_links_under_the_report() -> None:
    from compbench.leaderboard import render

    recs = synthetic_records() + [make_record(f"extra{i}", 40, 0.3 + 0.01 * i) for i in range(10)]
    summary = render_report(recs)["summary.md"].decode()
    assert "*posthoc*: **stsb**" in summary and "sst2" not in summary  # only the summary tasks
    assert "[page](posthoc/stsb/cpu-1t.md)" in summary and "[index.md](index.md)" in summary
    table = [line for line in summary.splitlines() if line.startswith("| ") and "method" not in line and "---" not in line]
    assert len(table) == render.SUMMARY_ROWS  # the top rows only ...
    assert "… and 6 more method(s)" in summary  # ... and how many are left out (14 ranked variants)
    block = render.readme_block(summary)
    assert block.startswith(render.SUMMARY_BEGIN) and block.endswith(render.SUMMARY_END)
    assert "[page](reports/posthoc/stsb/cpu-1t.md)" in block and "(reports/index.md)" in block


def test_report_readme_refreshes_only_the_block(tmp_path: Path) -> None:
    from compbench.leaderboard import render

    results = tmp_path / "results"
    store = ResultStore(results)
    for r in synthetic_records():
        store.write(r)
    readme = tmp_path / "README.md"
    readme.write_text(f"# mine\n\nbefore\n\n{render.SUMMARY_BEGIN}\nold stuff\n{render.SUMMARY_END}\n\nafter\n")
    runner = CliRunner()
    res = runner.invoke(main, ["report", "--results", str(results), "--out", str(tmp_path / "reports"),
                               "--readme", str(readme)])
    assert res.exit_code == 0, res.output
    assert "results block of" in res.output and "updated" in res.output
    text = readme.read_text()
    assert text.startswith("# mine\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "old stuff" not in text
    summary = (tmp_path / "reports" / "summary.md").read_text()
    assert render.readme_block(summary, "reports/") in text
    res = runner.invoke(main, ["report", "--results", str(results), "--out", str(tmp_path / "reports"),
                               "--readme", str(readme)])
    assert res.exit_code == 0 and "already current" in res.output


def test_report_readme_without_a_block_is_refused_before_writing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    store = ResultStore(results)
    for r in synthetic_records():
        store.write(r)
    readme = tmp_path / "README.md"
    readme.write_text("# no block here\n")
    res = CliRunner().invoke(main, ["report", "--results", str(results), "--out", str(tmp_path / "reports"),
                                    "--readme", str(readme)])
    assert res.exit_code == 2 and "has no results block" in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "reports").exists() and readme.read_text() == "# no block here\n"
