"""mteb interop: the compressed encoder as an mteb model on a local task, records from mteb results, offline errors."""

from __future__ import annotations

import os

import pytest

N = 60  # STS-B test pairs in the local task


@pytest.fixture(scope="module")
def local_sts(tmp_path_factory):
    """An mteb STSBenchmark task whose load_data reads the first N shipped STS-B test pairs."""
    import datasets
    from mteb.tasks.sts.eng.sts_benchmark_sts import STSBenchmarkSTS

    from compbench.datasets import split_path

    path = tmp_path_factory.mktemp("mteb") / "stsb_head.parquet"
    datasets.Dataset.from_parquet(str(split_path("stsb", "test"))).select(range(N)).to_parquet(str(path))

    class LocalSTSBenchmark(STSBenchmarkSTS):
        def load_data(self, **kwargs):  # noqa: ANN003, ANN201 - mteb hook
            if self.data_loaded:
                return
            ds = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
            self.dataset = {"default": datasets.DatasetDict({"test": ds})}
            self.data_loaded = True

    return LocalSTSBenchmark


def test_compressed_model_is_an_mteb_encoder(encoder):
    from mteb.models.models_protocols import EncoderProtocol

    from compbench.tasks.mteb_tasks import compressed_mteb_model

    model = compressed_mteb_model(encoder, encoder.token_table * 0.5, method="svd", budget="10x")
    assert isinstance(model, EncoderProtocol)
    meta = model.mteb_model_meta
    assert meta.name == "sentence-transformers/all-MiniLM-L6-v2" and meta.revision == encoder.info.revision
    assert meta.experiment_kwargs == {"compbench_method": "svd", "budget": "10x"}
    # the copy is swapped, the session encoder is untouched
    assert model.model[0].auto_model.embeddings.word_embeddings.weight.data_ptr() != \
        encoder.st[0].auto_model.embeddings.word_embeddings.weight.data_ptr()


def test_run_mteb_on_a_local_task_writes_records(local_sts, shared_cache, tmp_path):
    from compbench.bench.results.record_store import ResultStore
    from compbench.bench.tracks.mteb_interop import run_mteb

    recs = run_mteb("quant-int4", "7x", [local_sts()], threads=2, results=tmp_path, cache=shared_cache)
    (rec,) = recs
    assert rec.status == "ok" and rec.key == "posthoc/mteb-STSBenchmark/quant-int4/7x/cpu-2t-s0"
    assert rec.task.metric == "cosine_spearman" and rec.task.dataset == "mteb/stsbenchmark-sts"
    assert rec.budget.stored_bytes <= rec.budget.allowed_bytes
    assert 0.7 < rec.metrics.main <= 1.0 and rec.metrics.scores["cosine_spearman"] == rec.metrics.main
    assert rec.metrics.dense_score is not None and 0.9 < rec.metrics.retention < 1.05
    assert ResultStore(tmp_path).read(rec.key).metrics.main == pytest.approx(rec.metrics.main, abs=1e-6)
    # the dense score equals compbench's own STS evaluation of the same pairs
    import numpy as np
    from scipy import stats

    from compbench.datasets import load_split

    enc = shared_cache["encoder:None:cpu"]
    df = load_split("stsb", "test").select(range(N))
    a, b = enc.encode(df["sentence1"]), enc.encode(df["sentence2"])
    ours = stats.spearmanr(df["score"], (a * b).sum(1)).statistic
    assert rec.metrics.dense_score == pytest.approx(float(ours), abs=1e-6)
    assert np.isfinite(rec.measurements["lookup"]["ratio"])


def test_offline_fails_fast_naming_the_dataset(monkeypatch):
    from compbench.bench.tracks.mteb_interop import run_mteb
    from compbench.errors import DataError

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(DataError, match=r"STSBenchmark needs the dataset mteb/stsbenchmark-sts@"):
        run_mteb("quant-int8", "3.9x", ["STSBenchmark"], threads=1)


def test_unknown_mteb_task_and_cli_one_line(tmp_path):
    from click.testing import CliRunner

    from compbench.cli import main
    from compbench.errors import UnknownNameError
    from compbench.tasks.mteb_tasks import resolve_tasks

    with pytest.raises(UnknownNameError, match="did you mean 'STSBenchmark'"):
        resolve_tasks(["STSBenchmarkk"])
    r = CliRunner().invoke(main, ["mteb", "--method", "quant-int8", "--budget", "3.9x", "--tasks",
                                  "Banking77Classification", "--results", str(tmp_path)])
    assert r.exit_code == 1 and "mteb/banking77" in r.output and "Traceback" not in r.output


def test_mteb_task_card_comes_from_mteb_metadata():
    """Version, direction and tolerance are read off mteb's metadata, not hard-coded; ``mteb-<Name>`` is a
    posthoc task of the registry (so ``compbench run --task mteb-STSBenchmark`` and sweeps name it)."""
    import mteb

    from compbench.tasks import get_task
    from compbench.tasks.mteb_tasks import MtebTask

    sts = get_task("posthoc", "mteb-STSBenchmark")
    md = mteb.get_task("STSBenchmark").metadata
    assert isinstance(sts, MtebTask) and sts.card.name == "mteb-STSBenchmark" and sts.card.metric == md.main_score
    assert sts.card.higher_is_better and sts.card.dataset == md.dataset["path"]
    assert md.dataset["revision"] in sts.card.protocol and sts.data_sha256() == {
        f"hf-revision:{md.dataset['path']}": md.dataset["revision"]}
    assert sts.card.version == MtebTask(mteb.get_task("STSBenchmark")).card.version  # a stable fingerprint
    other = get_task("posthoc", "mteb-Banking77Classification")
    assert other.card.version != sts.card.version and other.card.metric == "accuracy"
