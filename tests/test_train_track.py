"""The train track end to end on tiny subsets: records, determinism, seeds, keys, budget, errors, CLI."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from compbench.bench.cell.context import prepare
from compbench.bench.cell.runner import run_cell
from compbench.bench.results.record_store import ResultStore
from compbench.cli import main
from compbench.config import RunConfig
from compbench.errors import TrackError, UnattainableBudgetError, UsageError
from compbench.methods import METHODS
from compbench.methods.method_base import DenseEmbedding, Method, MethodCard
from compbench.tasks import get_task
from compbench.tasks.train import load_tokenizer, tokenize_source

TINY = {"d_model": 16, "max_train_samples": 64, "max_eval_samples": 48, "max_steps": 6}
V = 30522


def tiny(method: str = "dense", budget: str = "1x", **kw) -> RunConfig:
    extra = {**TINY, **kw.pop("extra", {})}
    return RunConfig(method=method, budget=budget, track="train", task=kw.pop("task", "trec"), threads=1,
                     lookup_iters=3, extra=extra, **kw)


@pytest.fixture(scope="module")
def cache() -> dict:
    """Tokenizer and token ids shared by the runs of this module."""
    return {}


def test_dense_tiny_run_record(tmp_path: Path, cache) -> None:
    store = ResultStore(tmp_path)
    rec = run_cell(tiny(), store, cache=cache)
    assert rec.status == "ok", rec.error
    assert rec.key == "train/trec+d16+steps6+n64+neval48/dense/1x/cpu-1t-s0"
    assert store.exists(rec.key)
    assert rec.budget.reference_bytes == rec.budget.stored_bytes == V * 16 * 4
    assert rec.budget.achieved_ratio == 1.0
    assert 0.0 <= rec.metrics.main <= 1.0 and rec.metrics.seeds == [0]
    s = rec.metrics.scores
    assert s["accuracy"] == rec.metrics.main == s["accuracy_s0"] and s["main_std"] == 0.0
    assert (s["n_train"], s["n_val"], s["n_test"]) == (64, 48, 48)
    assert rec.params.embedding == V * 16 and rec.params.total == rec.params.embedding + rec.params.backbone
    assert rec.params.trainable == rec.params.total
    m = rec.measurements
    assert m["train_throughput"]["mean"] > 0 and m["eval_throughput"]["mean"] > 0
    mem = m["memory"]
    assert m["train_peak_rss_bytes"] > 0 and mem["process_peak_rss_bytes"] >= m["train_peak_rss_bytes"]
    assert set(mem["phases"]) == {"load", "fit", "evaluate", "lookup"}  # training is in the evaluate phase
    assert mem["phases"]["evaluate"]["peak_rss_bytes"] >= 0.95 * m["train_peak_rss_bytes"]  # kernel counters lag a little
    assert m["lookup"]["ratio"] > 0 and m["lookup"]["candidate"]["n"] == 3
    assert m["per_seed"][0]["steps"] == 6 and m["recipe"]["max_steps"] == 6
    assert rec.model["backbone"]["kind"] == "transformer" and rec.model["backbone"]["d_model"] == 16
    assert rec.model["tokenizer"]["vocab_size"] == V
    assert rec.task.data_sha256.keys() == {"trec/train", "trec/test"}
    # the token ids were cached on disk under the results folder
    assert list((tmp_path / ".cache" / "tokens").glob("trec-*-L48-*.npz"))


def test_determinism_under_a_seed(cache) -> None:
    a = run_cell(tiny(seed=1), cache=cache)
    b = run_cell(tiny(seed=1), cache=cache)
    assert a.metrics.scores == b.metrics.scores
    assert a.measurements["per_seed"][0]["history"] == b.measurements["per_seed"][0]["history"]
    c = run_cell(tiny(seed=2), cache=cache)
    assert c.measurements["per_seed"][0]["history"] != a.measurements["per_seed"][0]["history"]


def test_multi_seed_aggregation(tmp_path: Path, cache) -> None:
    rec = run_cell(tiny(seeds=(0, 3), extra={"max_steps": 4}), ResultStore(tmp_path), cache=cache)
    assert rec.status == "ok"
    assert rec.key.endswith("/dense/1x/cpu-1t-s0-3") and rec.seed == 0
    accs = [rec.metrics.scores["accuracy_s0"], rec.metrics.scores["accuracy_s3"]]
    assert rec.metrics.seeds == [0, 3]
    assert rec.metrics.main == pytest.approx(statistics.fmean(accs))
    assert rec.metrics.scores["main_std"] == pytest.approx(statistics.stdev(accs))
    assert [p["seed"] for p in rec.measurements["per_seed"]] == [0, 3]
    single = run_cell(tiny(seed=3, extra={"max_steps": 4}), cache=cache)
    assert single.metrics.main == rec.metrics.scores["accuracy_s3"]  # a seed gives the same run alone or in a group


def test_bag_backbone_and_keys(cache) -> None:
    rec = run_cell(tiny(extra={"backbone": "bag", "recipe": {"lr": "0.01"}}), cache=cache)
    assert rec.status == "ok"
    assert rec.key == "train/trec+bag+d16+steps6+lr=0.01+n64+neval48/dense/1x/cpu-1t-s0"
    assert rec.model["backbone"] == {"kind": "bag", "d_model": 16, "dropout": 0.1, "max_len": 48}
    assert rec.params.backbone == 16 * 6 + 6
    # default settings give the plain task segment; explicit defaults do not change the key
    key = prepare(RunConfig(method="dense", budget="1x", track="train", task="trec", threads=1,
                            extra={"backbone": "transformer", "d_model": 128})).key
    assert key == "train/trec/dense/1x/cpu-1t-s0"


@pytest.mark.parametrize("method", ["svd", "quant-int8"])
def test_posthoc_only_methods_refuse_the_train_track(method) -> None:
    with pytest.raises(TrackError, match="does not support the 'train' track; it supports: posthoc"):
        run_cell(tiny(method, "10x"))


@pytest.mark.parametrize("extra,match", [
    ({"recipe": {"optimizer": "sgd"}}, "unknown train setting 'optimizer'"),
    ({"recipe": {"lr": "fast"}}, "must be float"),
    ({"backbone": "cnn"}, "unknown backbone"),
    ({"recipe": {"heads": 3}}, "divide d_model"),
    ({"max_steps": -1}, "max_steps"),
])
def test_bad_settings_are_usage_errors(extra, match) -> None:
    with pytest.raises(UsageError, match=match):
        prepare(tiny(extra=extra))


def test_bad_seeds_and_budget() -> None:
    with pytest.raises(UsageError, match="duplicates"):
        prepare(tiny(seeds=(1, 1)))
    with pytest.raises(UnattainableBudgetError, match="smallest budget"):
        run_cell(tiny(budget="10x"))


# -- test methods exercising the hooks -----------------------------------------------------------


class _Liar(Method):
    """Claims any budget but builds a dense table: the harness must refuse it before training."""

    card = MethodCard(name="test-train-liar", version=1, family="test", reference="-", modes=("train",))

    def configure(self, num_embeddings, embedding_dim, budget_bytes):
        return {}

    def build(self, num_embeddings, embedding_dim, config, *, seed, init_table=None):
        return DenseEmbedding(torch.zeros(num_embeddings, embedding_dim), trainable=True)


class _Pretrained(Method):
    """Records the init table it receives (like ADE's distillation) and uses a custom classifier."""

    card = MethodCard(name="test-train-pretrained", version=1, family="test", reference="-", modes=("train",),
                      train_init="pretrained")
    seen: list = []

    def configure(self, num_embeddings, embedding_dim, budget_bytes):
        return {"rank": 2}

    def build(self, num_embeddings, embedding_dim, config, *, seed, init_table=None):
        _Pretrained.seen.append(tuple(init_table.shape))
        return DenseEmbedding(init_table[:, :embedding_dim] * 1.0, trainable=False)

    def custom_classifier(self, embedding, num_classes, config, *, seed):
        return _MeanHead(embedding, num_classes)


class _MeanHead(nn.Module):
    def __init__(self, embedding, num_classes):
        super().__init__()
        self.embedding = embedding
        self.out = nn.Linear(embedding.embedding_dim, num_classes)

    def forward(self, ids, mask):
        m = mask.unsqueeze(-1).float()
        return self.out((self.embedding(ids) * m).sum(1) / m.sum(1))


class _Diverges(_Liar):
    card = MethodCard(name="test-train-nan", version=1, family="test", reference="-", modes=("train",))

    def build(self, num_embeddings, embedding_dim, config, *, seed, init_table=None):
        return DenseEmbedding(torch.full((num_embeddings, embedding_dim), math.nan), trainable=True)


@pytest.fixture()
def registered():
    names = []

    def add(cls):
        METHODS.register(cls.card.name)(cls)
        names.append(cls.card.name)

    yield add
    for n in names:
        METHODS._objects.pop(n)


def test_over_budget_is_refused_before_training(tmp_path: Path, registered, cache) -> None:
    registered(_Liar)
    rec = run_cell(tiny("test-train-liar", "10x"), ResultStore(tmp_path), cache=cache)
    assert rec.status == "over_budget" and rec.metrics.main is None
    assert rec.budget.stored_bytes == V * 16 * 4 > rec.budget.allowed_bytes
    assert "per_seed" not in rec.measurements  # nothing was trained
    assert (tmp_path / f"{rec.key}.json").is_file()


def test_diverging_training_is_a_failed_record(registered, cache) -> None:
    registered(_Diverges)
    rec = run_cell(tiny("test-train-nan", "1x"), cache=cache)
    assert rec.status == "failed" and "non-finite training loss" in rec.error


def test_pretrained_init_and_custom_classifier(registered, shared_cache, cache) -> None:
    registered(_Pretrained)
    _Pretrained.seen.clear()
    both = {**cache, **shared_cache}
    cfg = tiny("test-train-pretrained", "1x", extra={"d_model": None, "max_steps": 2})
    rec = run_cell(cfg, cache=both)
    assert rec.status == "ok", rec.error
    assert _Pretrained.seen == [(V, 384)]
    assert rec.model["backbone"]["kind"] == "custom" and rec.model["init"] == "pretrained"
    assert rec.budget.reference_bytes == V * 384 * 4 and rec.method.config == {"rank": 2}
    assert rec.params.trainable == 384 * 6 + 6  # the frozen table + a linear head
    with pytest.raises(UsageError, match="d_model must be 384"):
        prepare(tiny("test-train-pretrained", "1x", extra={"d_model": 128}))


def test_token_cache_roundtrip(tmp_path: Path) -> None:
    task = get_task("train", "trec")
    tok, info = load_tokenizer()
    ids, lengths = tokenize_source(task, "test", tok, info, 16, tmp_path)
    assert ids.shape == (500, 16) and ids.dtype == np.int32
    assert (ids[:, 0] == tok.cls_token_id).all() and lengths.max() <= 16
    row = tok(task.texts_of("test")[0], truncation=True, max_length=16)["input_ids"]
    assert ids[0, : len(row)].tolist() == row and lengths[0] == len(row)

    class Broken:
        def __call__(self, *a, **k):
            raise AssertionError("re-tokenised despite the cache")

    ids2, lengths2 = tokenize_source(task, "test", Broken(), info, 16, tmp_path)
    assert np.array_equal(ids, ids2) and np.array_equal(lengths, lengths2)


# -- CLI -------------------------------------------------------------------------------------------


def test_cli_train_run(tmp_path: Path) -> None:
    args = ["run", "--track", "train", "--method", "dense", "--budget", "1x", "--task", "trec", "--threads", "1",
            "--d-model", "16", "--max-train-samples", "32", "--max-eval-samples", "32", "--max-steps", "3",
            "--seeds", "0,1", "--results", str(tmp_path), "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["status"] == "ok" and doc["metrics"]["seeds"] == [0, 1]
    assert doc["key"] == "train/trec+d16+steps3+n32+neval32/dense/1x/cpu-1t-s0-1"
    assert (tmp_path / f"{doc['key']}.json").is_file()


@pytest.mark.parametrize("args,needle", [
    (["--method", "svd", "--budget", "10x", "--track", "train", "--task", "trec"], "does not support the 'train' track"),
    (["--method", "dense", "--budget", "1x", "--backbone", "bag"], "apply to --track train only"),
    (["--method", "dense", "--budget", "1x", "--track", "train", "--task", "trec", "--recipe", "lr"], "key=value"),
    (["--method", "dense", "--budget", "1x", "--track", "train", "--task", "agnews"], "did you mean"),
])
def test_cli_train_usage_errors(tmp_path: Path, args, needle) -> None:
    res = CliRunner().invoke(main, ["run", *args, "--results", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert needle in res.output


def test_recorded_settings_replay(cache) -> None:
    """A record's run_config reproduces its key (so a cell can be re-run from its record)."""
    rec = run_cell(tiny(extra={"max_steps": 2}), cache=cache)
    cfg = RunConfig(**{**rec.provenance["run_config"], "seeds": None})
    assert prepare(replace(cfg, threads=1)).key == rec.key


def test_tuning_chooses_lr_and_patience_on_validation_only(cache, monkeypatch: pytest.MonkeyPatch) -> None:
    """--tune on, train track: 6 lr x patience candidates trained with seed 0 and scored on validation only (the
    test split is never evaluated while tuning); the seeds then train and test once with the choice."""
    import compbench.bench.tracks.train_track as train_mod
    from compbench.bench.tracks.train_track import recipe_space

    calls: list[str] = []
    real = train_mod.evaluate_accuracy

    def spy(model, split, *a, **kw):
        calls.append("test" if kw.get("per_item") is not None else "val")
        return real(model, split, *a, **kw)

    monkeypatch.setattr(train_mod, "evaluate_accuracy", spy)
    rec = run_cell(tiny(seeds=(0, 1), tune=True, extra={"max_steps": 3}), cache=cache)
    assert rec.status == "ok", rec.error
    assert "+tuned" in rec.key.split("/")[2]
    t = rec.measurements["tuning"]
    base_lr = get_task("train", "trec").recipe.lr
    assert len(t["space"]) == 6 and t["space"][0]["lr"] == pytest.approx(base_lr)
    assert sorted({c["lr"] for c in t["space"]}) == pytest.approx(sorted([base_lr / 3, base_lr, base_lr * 3]))
    assert sorted({c["patience"] for c in t["space"]}) == [get_task("train", "trec").recipe.patience,
                                                           2 * get_task("train", "trec").recipe.patience]
    assert all(r["status"] == "ok" and 0 <= r["validation_score"] <= 1 for r in t["candidates"])
    assert rec.measurements["recipe"]["lr"] == pytest.approx(t["space"][t["chosen"]]["lr"])
    assert calls.count("test") == 2  # one test evaluation per seed, none while tuning
    assert recipe_space(get_task("train", "trec").recipe)[0] == t["space"][0]
