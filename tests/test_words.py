"""Words track: GloVe loading, the word-similarity / analogy protocols against gensim, dense references, a run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compbench.tasks.words import (
    analogy_accuracy,
    gensim_test_file,
    load_glove,
    read_analogies,
    read_word_pairs,
    word_pair_spearman,
)

# Dense GloVe 6B 50d, measured with this code and with gensim 4.4 (KeyedVectors.evaluate_word_pairs /
# evaluate_word_analogies on the same table). Tolerance 1e-4: the computation is deterministic; the slack
# covers float32 summation order across BLAS builds.
DENSE = {"wordsim353": 0.503320, "simlex999": 0.263060, "analogy30k": 0.496942}
TOL = 1e-4


@pytest.fixture(scope="module")
def glove():
    return load_glove()


def test_glove_table(glove):
    assert glove.vectors.shape == (400_000, 50) and glove.vectors.dtype == torch.float32
    assert glove.words[:3] == ["the", ",", "."]
    assert glove.index["king"] < glove.index["monarch"]  # rows in frequency order
    assert glove.info["revision"] and glove.info["vocab_size"] == 400_000


def test_dense_word_similarity_references(glove):
    ws = word_pair_spearman(glove.vectors, glove.words, read_word_pairs(gensim_test_file("wordsim353.tsv")))
    sl = word_pair_spearman(glove.vectors, glove.words, read_word_pairs(gensim_test_file("simlex999.txt")))
    assert ws["spearman"] == pytest.approx(DENSE["wordsim353"], abs=TOL)
    assert sl["spearman"] == pytest.approx(DENSE["simlex999"], abs=TOL)
    # the reference figures (~0.50, ~0.26)
    assert abs(ws["spearman"] - 0.50) < 0.01 and abs(sl["spearman"] - 0.26) < 0.01
    assert ws["n_pairs"] == 353 and sl["n_pairs"] == 998  # one SimLex pair is OOV in the top 300k


def test_word_pairs_match_gensim_on_a_compressed_table(glove):
    from gensim.models import KeyedVectors

    g = torch.Generator().manual_seed(0)
    noisy = glove.vectors[:50_000] + 0.3 * torch.randn(50_000, 50, generator=g)  # a perturbed table
    words = glove.words[:50_000]
    kv = KeyedVectors(50)
    kv.add_vectors(words, noisy.numpy())
    for f in ("wordsim353.tsv", "simlex999.txt"):
        ours = word_pair_spearman(noisy, words, read_word_pairs(gensim_test_file(f)))
        ref = kv.evaluate_word_pairs(str(gensim_test_file(f)))
        assert ours["spearman"] == pytest.approx(ref[1].statistic, abs=1e-6)
        assert ours["pearson"] == pytest.approx(ref[0].statistic, abs=1e-6)
        assert 100 * ours["oov_ratio"] == pytest.approx(ref[2], abs=1e-9)


def test_analogy_matches_gensim_on_a_small_vocabulary(glove, tmp_path):
    """Same questions, same predictions as gensim's 3CosAdd at restrict_vocab=3000 (gensim is slow: keep it small)."""
    from gensim.models import KeyedVectors

    qs = read_analogies(gensim_test_file("questions-words.txt"))
    keep = [q for i, q in enumerate(qs) if i % 4 == 0]
    path = tmp_path / "q.txt"
    section = None
    with open(path, "w") as f:
        for s, a, b, c, d in keep:
            if s != section:
                f.write(f": {s}\n")
                section = s
            f.write(f"{a} {b} {c} {d}\n")
    v = glove.vectors[:3000].clone()
    v[:, :10] = torch.round(v[:, :10])  # some damage so the check is not only on the dense table
    kv = KeyedVectors(50)
    kv.add_vectors(glove.words[:3000], v.numpy())
    ref_acc, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=3000)
    total = next(s for s in sections if s["section"] == "Total accuracy")
    ours = analogy_accuracy(v, glove.words[:3000], read_analogies(path), restrict_vocab=3000)
    assert ours["n_questions"] == len(total["correct"]) + len(total["incorrect"])
    assert round(ours["accuracy"] * ours["n_questions"]) == len(total["correct"])  # same number right
    assert ours["accuracy"] == pytest.approx(ref_acc, abs=1e-6)


def test_dense_analogy_reference(glove):
    qs = read_analogies(gensim_test_file("questions-words.txt"))
    out = analogy_accuracy(glove.vectors, glove.words, qs)
    assert out["accuracy"] == pytest.approx(DENSE["analogy30k"], abs=TOL)
    assert out["n_questions"] == 14_877 and out["n_oov"] == 19_544 - 14_877


def test_words_run_cell_svd_and_dense(tmp_path):
    from compbench.bench.cell.runner import run_cell
    from compbench.bench.results.record_store import ResultStore
    from compbench.config import RunConfig

    store = ResultStore(tmp_path)
    rec = run_cell(RunConfig(method="quant-binary", budget="18x", track="words", task="simlex999", threads=2,
                             lookup_iters=3), store)
    assert rec.status == "ok" and rec.key == "words/simlex999/quant-binary/18x/cpu-2t-s0"
    assert rec.budget.reference_bytes == 400_000 * 50 * 4
    assert rec.budget.stored_bytes <= rec.budget.allowed_bytes
    from compbench.tasks.words import SimLex999, load_glove

    glove = load_glove()
    dense_test_half = word_pair_spearman(glove.vectors, glove.words, SimLex999().items())["spearman"]
    assert rec.metrics.dense_score == pytest.approx(dense_test_half, abs=1e-6)
    assert 0.3 < rec.metrics.retention < 1.05
    assert rec.model["name"] == "glove-6B-50d"
    assert list(rec.task.data_sha256) == ["gensim:test_data/simlex999.txt", "test half"]
    assert rec.task.version == 2
    # the dense reference cell was written first
    assert store.exists("words/simlex999/dense/1x/cpu-2t-s0")


def test_words_rejects_other_models():
    from compbench.bench.cell.runner import run_cell
    from compbench.config import RunConfig
    from compbench.errors import UsageError

    with pytest.raises(UsageError, match="glove-6B-50d"):
        run_cell(RunConfig(method="dense", budget="1x", track="words", model="all-mpnet-base-v2", threads=1), None)


def test_words_fidelity_task():
    from compbench.tasks.words import WordsContext, WordsFidelity

    t = torch.randn(500, 50, generator=torch.Generator().manual_seed(0))
    out = WordsFidelity().evaluate(WordsContext(t, t, [str(i) for i in range(500)]))
    assert out["mean_row_cosine"] == pytest.approx(1.0) and out["knn10_overlap"] == pytest.approx(1.0)
    assert np.isclose(out["rel_frobenius_error"], 0.0)


def test_word_sets_split_into_disjoint_halves_by_a_fixed_rule():
    import random

    from compbench.tasks.words import Analogy, SimLex999, WordSim353, split_half

    for task, n in ((WordSim353(), 353), (SimLex999(), 999)):
        test, val = task.items(), task.validation().items()
        assert len(test) + len(val) == n and abs(len(test) - len(val)) <= 1
        assert not {tuple(p[:2]) for p in test} & {tuple(p[:2]) for p in val}
        assert task.validation().card.name == f"{task.card.name}-validation"
    test, val = Analogy().items(), Analogy().validation().items()
    assert len(test) + len(val) == 19_544 and not set(test) & set(val)
    assert {q[0] for q in test} == {q[0] for q in val}  # every section on both sides
    # the rule depends only on each item's text: a shuffled file keeps every item's side
    pairs = read_word_pairs(gensim_test_file("wordsim353.tsv"))
    shuffled = list(pairs)
    random.Random(0).shuffle(shuffled)

    def key(p):
        return f"{p[0]}\t{p[1]}"

    assert set(split_half(shuffled, key, "test")) == set(split_half(pairs, key, "test"))


def test_words_tuning_reads_only_the_validation_half_and_a_poisoned_test_half_changes_nothing(monkeypatch):
    from compbench.bench.cell.runner import run_cell
    from compbench.config import RunConfig
    from compbench.tasks import words as words_mod

    calls: list[set] = []
    real = words_mod.word_pair_spearman

    def spy(table, words, pairs, **kw):
        calls.append({(a, b) for a, b, _ in pairs})
        return real(table, words, pairs, **kw)

    monkeypatch.setattr(words_mod, "word_pair_spearman", spy)
    cfg = RunConfig(method="svd", budget="10x", track="words", task="simlex999", threads=1, lookup_iters=2, tune=True)
    clean = run_cell(cfg, None)
    assert len(calls) == 3  # two candidates on the validation half, then the test half once
    assert not (calls[0] | calls[1]) & calls[2]
    tuning = clean.measurements["tuning"]
    assert tuning["validation"]["task"] == "simlex999-validation"
    test_keys = calls[2]
    real_read = words_mod.read_word_pairs

    def poisoned(path, delimiter="\t"):  # reverse the gold scores of every test-half pair
        return [(a, b, -s if (a, b) in test_keys else s) for a, b, s in real_read(path, delimiter)]

    monkeypatch.setattr(words_mod, "read_word_pairs", poisoned)
    bad = run_cell(cfg, None)
    assert bad.measurements["tuning"]["chosen_options"] == tuning["chosen_options"]
    assert [r.get("validation_score") for r in bad.measurements["tuning"]["candidates"]] == \
        [r.get("validation_score") for r in tuning["candidates"]]
    assert bad.metrics.main == pytest.approx(-clean.metrics.main, abs=1e-9)
