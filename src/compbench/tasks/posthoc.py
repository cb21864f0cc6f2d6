"""Posthoc-track tasks: the pretrained encoder with its token table replaced.

- ``stsb``: STS-B test, cosine Spearman, computed by mteb's STS evaluator on a
  local task built from the shipped snapshot (the dense all-MiniLM-L6-v2 gives
  the published MTEB STSBenchmark score 0.8203).
- ``sst2``, ``trec``: logistic regression on frozen, L2-normalised sentence
  embeddings (standardised, ``C=1``, lbfgs), train -> test accuracy.
- ``mr``, ``cr``, ``subj``, ``mpqa``: the same classifier with 10-fold stratified
  cross-validation (shuffle with a fixed seed 0), as in SentEval; mean accuracy.
- ``fidelity``: how closely the compressed table reproduces the dense one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from compbench.tasks import TASKS
from compbench.tasks.base import Task, TaskCard


@dataclass
class PosthocContext:
    """What a posthoc task needs: the encoder, the candidate table and the dense table."""

    encoder: Any  # compbench.models.encoder.SentenceEncoder
    table: torch.Tensor  # [V, d] materialised compressed table (or the dense one)
    dense_table: torch.Tensor
    seed: int = 0
    batch_size: int = 64
    items: Any = None  # set by the task: its per-item outcomes (compbench.bench.stats.Items), for intervals


class PosthocTask(Task):
    """A task evaluated on the pretrained encoder with a swapped token table."""

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


def _local_sts_task(test_path: str) -> Any:
    """An mteb STS task (STSBenchmark metadata) whose data comes from a local parquet file."""
    import datasets
    from mteb.tasks.sts.eng.sts_benchmark_sts import STSBenchmarkSTS

    class LocalSTSBenchmark(STSBenchmarkSTS):
        def load_data(self, **kwargs: Any) -> None:  # noqa: D401 - mteb hook
            if self.data_loaded:
                return
            ds = datasets.Dataset.from_parquet(test_path, keep_in_memory=True)
            self.dataset = {"default": datasets.DatasetDict({"test": ds})}
            self.data_loaded = True

    return LocalSTSBenchmark()


@TASKS.register("posthoc/stsb")
class STSB(PosthocTask):
    """STS-B test cosine Spearman via mteb's STS evaluator."""

    card = TaskCard("stsb", 1, "posthoc", "cosine_spearman", True, 0.005, "stsb",
                    "mteb AbsTaskSTS (STSBenchmark metadata) on the shipped STS-B test split, cosine Spearman")
    split: ClassVar[str] = "test"

    def data_files(self) -> list[str]:
        return [f"stsb/{self.split}"]

    def validation(self) -> PosthocTask:
        """The same protocol on STS-B's validation split (1,500 pairs): what tuning reads, never the test split."""
        return STSBValidation()

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:
        from compbench.bench.stats import Items
        from compbench.datasets import load_split, split_path

        task = _local_sts_task(str(split_path("stsb", self.split)))
        with ctx.encoder.swapped(ctx.table) as enc:
            model = _capturing(enc.mteb_model())
            scores = task.evaluate(model, "test", encode_kwargs={"batch_size": ctx.batch_size})
        s = scores["default"]
        if len(model.captured) == 2:  # mteb encoded sentence1 then sentence2: the per-pair cosines it ranked
            a, b = model.captured
            cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
            gold = np.asarray(load_split("stsb", self.split)["score"], dtype=np.float64)
            if len(gold) == len(cos):
                ctx.items = Items("spearman", cos, gold)
        return {k: float(s[k]) for k in ("cosine_spearman", "cosine_pearson", "spearman", "pearson",
                                          "manhattan_spearman", "euclidean_spearman")}


def _capturing(model: Any) -> Any:
    """``model`` (an mteb encoder wrapper) that also keeps every array its ``encode`` returns, in order."""
    base = type(model)

    class Capturing(base):  # type: ignore[misc, valid-type]
        def encode(self, *args: Any, **kwargs: Any) -> Any:
            out = super().encode(*args, **kwargs)
            self.captured.append(np.asarray(out, dtype=np.float64))
            return out

    model.__class__ = Capturing
    model.captured = []
    return model


class STSBValidation(STSB):
    """STS-B validation split, same protocol (used only by tuning; not a registry task)."""

    card = TaskCard("stsb-validation", 1, "posthoc", "cosine_spearman", True, 0.005, "stsb",
                    "mteb AbsTaskSTS (STSBenchmark metadata) on the shipped STS-B validation split, cosine Spearman")
    split = "validation"

    def validation(self) -> PosthocTask:
        return self


def _logreg(seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


class _TrainTestClassification(PosthocTask):
    dataset: ClassVar[str]

    def data_files(self) -> list[str]:
        return [f"{self.dataset}/train", f"{self.dataset}/test"]

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:
        from compbench.datasets import load_split

        train, test = load_split(self.dataset, "train"), load_split(self.dataset, "test")
        with ctx.encoder.swapped(ctx.table) as enc:
            xtr = enc.encode(train["text"], ctx.batch_size)
            xte = enc.encode(test["text"], ctx.batch_size)
        from compbench.bench.stats import Items

        clf = _logreg(0).fit(xtr, np.asarray(train["label"]))
        correct = clf.predict(xte) == np.asarray(test["label"])
        ctx.items = Items("mean", correct.astype(np.float64))
        return {"accuracy": float(correct.mean()), "n_train": float(len(train)), "n_test": float(len(test))}


class _CVClassification(PosthocTask):
    dataset: ClassVar[str]
    folds: ClassVar[int] = 10

    def data_files(self) -> list[str]:
        return [f"{self.dataset}/all"]

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:
        from sklearn.model_selection import StratifiedKFold

        from compbench.datasets import load_split

        data = load_split(self.dataset, "all")
        with ctx.encoder.swapped(ctx.table) as enc:
            x = enc.encode(data["text"], ctx.batch_size)
        from compbench.bench.stats import Items

        y = np.asarray(data["label"])
        accs = []
        correct = np.zeros(len(y))
        for tr, te in StratifiedKFold(self.folds, shuffle=True, random_state=0).split(x, y):
            clf = _logreg(0).fit(x[tr], y[tr])
            hit = clf.predict(x[te]) == y[te]
            correct[te] = hit
            accs.append(float(hit.mean()))
        # the interval is of the pooled accuracy over every item (each is tested once); the main score is the
        # mean of the fold accuracies, which differs from it by at most the folds' size difference
        ctx.items = Items("mean", correct)
        return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "folds": float(self.folds)}


def _cls_card(name: str, protocol: str) -> TaskCard:
    return TaskCard(name, 1, "posthoc", "accuracy", True, 0.01, name, protocol)


_TT = "logistic regression (StandardScaler, C=1) on frozen normalised sentence embeddings, train -> test accuracy"
_CV = "logistic regression (StandardScaler, C=1) on frozen normalised sentence embeddings, 10-fold stratified CV (seed 0)"


@TASKS.register("posthoc/sst2")
class SST2(_TrainTestClassification):
    """SST-2: train phrases -> Kim (2014) labelled test."""

    dataset = "sst2"
    card = _cls_card("sst2", _TT)


@TASKS.register("posthoc/trec")
class TREC(_TrainTestClassification):
    """TREC-6 coarse: train -> test."""

    dataset = "trec"
    card = _cls_card("trec", _TT)


@TASKS.register("posthoc/mr")
class MR(_CVClassification):
    """MR polarity, 10-fold CV."""

    dataset = "mr"
    card = _cls_card("mr", _CV)


@TASKS.register("posthoc/cr")
class CR(_CVClassification):
    """CR polarity, 10-fold CV."""

    dataset = "cr"
    card = _cls_card("cr", _CV)


@TASKS.register("posthoc/subj")
class SUBJ(_CVClassification):
    """SUBJ subjectivity, 10-fold CV."""

    dataset = "subj"
    card = _cls_card("subj", _CV)


@TASKS.register("posthoc/mpqa")
class MPQA(_CVClassification):
    """MPQA polarity, 10-fold CV."""

    dataset = "mpqa"
    card = _cls_card("mpqa", _CV)


def table_fidelity(dense: torch.Tensor, approx: torch.Tensor, *, n_queries: int = 1000, k: int = 10) -> dict[str, float]:
    """Table-level fidelity: relative Frobenius error, mean row cosine and k-NN overlap of rows.

    k-NN overlap: for ``n_queries`` rows drawn with a fixed seed (0), the fraction of
    their ``k`` nearest rows by cosine (self excluded) that the approximation keeps.
    """
    dense = dense.float()
    approx = approx.float()
    rel = float((dense - approx).norm() / dense.norm().clamp_min(1e-12))
    row_cos = torch.nn.functional.cosine_similarity(dense, approx, dim=1, eps=1e-12)
    g = torch.Generator().manual_seed(0)
    q = torch.randperm(dense.shape[0], generator=g)[: min(n_queries, dense.shape[0])]

    def knn(t: torch.Tensor) -> torch.Tensor:
        tn = torch.nn.functional.normalize(t, dim=1, eps=1e-12)
        sims = tn[q] @ tn.T
        sims[torch.arange(len(q)), q] = -float("inf")
        return sims.topk(k, dim=1).indices

    a, b = knn(dense), knn(approx)
    overlap = (a.unsqueeze(2) == b.unsqueeze(1)).any(dim=2).float().mean()
    return {"rel_frobenius_error": rel, "mean_row_cosine": float(row_cos.mean()), f"knn{k}_overlap": float(overlap)}


@TASKS.register("posthoc/fidelity")
class Fidelity(PosthocTask):
    """Table and sentence-embedding fidelity of the compressed table to the dense one."""

    card = TaskCard("fidelity", 1, "posthoc", "mean_row_cosine", True, 0.002, "stsb",
                    "relative Frobenius error, mean row cosine, 10-NN overlap of 1000 fixed rows, and mean cosine "
                    "between dense and compressed sentence embeddings of the first 1000 STS-B test sentence1")

    def data_files(self) -> list[str]:
        return ["stsb/test"]

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:
        from compbench.bench.stats import Items
        from compbench.datasets import load_split

        out = table_fidelity(ctx.dense_table, ctx.table)
        row_cos = torch.nn.functional.cosine_similarity(ctx.dense_table.float(), ctx.table.float(), dim=1, eps=1e-12)
        ctx.items = Items("mean", row_cos.double().cpu().numpy())  # the main score is their mean
        texts = load_split("stsb", "test")["sentence1"][:1000]
        with ctx.encoder.swapped(ctx.dense_table) as enc:
            ref = enc.encode(texts, ctx.batch_size)
        with ctx.encoder.swapped(ctx.table) as enc:
            got = enc.encode(texts, ctx.batch_size)
        out["sentence_cosine"] = float((ref * got).sum(axis=1).mean())
        return out
