"""Posthoc-track tasks: the pretrained encoder with its token table replaced.

- ``stsb``: STS-B test, cosine Spearman, computed by mteb's STS evaluator on a
  local task built from the shipped snapshot (the dense all-MiniLM-L6-v2 gives
  the published MTEB STSBenchmark score 0.8203).
- ``sst2``, ``trec``: logistic regression on frozen, L2-normalised sentence
  embeddings (standardised, ``C=1``, lbfgs), train -> test accuracy.
- ``mr``, ``cr``, ``subj``, ``mpqa``: the same classifier with 10-fold stratified
  cross-validation (shuffle with a fixed seed 0), as in SentEval; mean accuracy.
- ``fidelity``: how closely the compressed table reproduces the dense one.

Validation data for ``--tune on`` (never a test item): STS-B's validation split for ``stsb``; for the
classification tasks the train track's carve (stratified 10%, at most 2,000 items, split seed 0) -- of the train
split for ``sst2``/``trec`` (the probe is fitted on the rest of train), of all items for the CV tasks, whose
reported CV then runs over the other items (task version 2 of ``mr``/``cr``/``subj``/``mpqa``). ``fidelity``
has no validation split (``--tune on`` refuses it with one line).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from compbench.datasets import load_split, split_path
from compbench.stats import Items
from compbench.tasks import TASKS
from compbench.tasks.task_base import Task, TaskCard
from compbench.tasks.train import SPLIT_SEED, stratified_carve


@dataclass
class PosthocContext:
    """What a posthoc task needs: the encoder, the candidate table and the dense table."""

    encoder: Any  # compbench.models.encoder.SentenceEncoder
    table: torch.Tensor  # [V, d] materialised compressed table (or the dense one)
    dense_table: torch.Tensor
    seed: int = 0
    batch_size: int = 64
    items: Any = None  # set by the task: its per-item outcomes (compbench.stats.Items), for intervals


class PosthocTask(Task):
    """A task evaluated on the pretrained encoder with a swapped token table."""

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def sentences(self) -> int | None:
        """How many sentences :meth:`evaluate` encodes, when known in advance (the progress bar's size; None
        shows a count without a bar). Never affects a score."""
        return None


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

    def sentences(self) -> int | None:
        """Both sentences of every pair of the split."""
        return 2 * len(load_split("stsb", self.split))

    def data_files(self) -> list[str]:
        return [f"stsb/{self.split}"]

    def validation(self) -> PosthocTask:
        """The same protocol on STS-B's validation split (1,500 pairs): what tuning reads, never the test split."""
        return STSBValidation()

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:
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


def validation_carve(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, validation)`` positions: the train track's carve (stratified 10% of the split, at most 2,000 items,
    split seed 0; ``tasks/train.py``), so both tracks hold out the same validation items of a task."""
    return stratified_carve(np.asarray(labels), VAL_FRACTION, SPLIT_SEED, VAL_MAX)


#: the train track's default carve (``TrainRecipe.val_fraction`` / ``val_max``)
VAL_FRACTION, VAL_MAX = 0.1, 2000


class _ClassificationTask(PosthocTask):
    dataset: ClassVar[str]
    split: str = "test"

    def validation(self) -> PosthocTask:
        """The same probe scored on the validation carve only (``<name>-validation``): what tuning reads."""
        val = copy.copy(self)
        val.split = "validation"
        val.card = dataclasses.replace(self.card, name=f"{self.card.name}-validation")
        return val


class _TrainTestClassification(_ClassificationTask):
    """Train -> test. Validation (tuning only): the probe is fitted on train minus the carve and scored on the
    carve (:func:`validation_carve`); the test split is never read."""

    def data_files(self) -> list[str]:
        return [f"{self.dataset}/train"] if self.split == "validation" else [f"{self.dataset}/train",
                                                                             f"{self.dataset}/test"]

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:
        train = load_split(self.dataset, "train")
        ytr_all = np.asarray(train["label"])
        if self.split == "validation":
            rest, val = validation_carve(ytr_all)
            texts = list(train["text"])
            fit_texts, fit_y = [texts[i] for i in rest], ytr_all[rest]
            test_texts, test_y = [texts[i] for i in val], ytr_all[val]
        else:
            test = load_split(self.dataset, "test")
            fit_texts, fit_y = train["text"], ytr_all
            test_texts, test_y = test["text"], np.asarray(test["label"])
        with ctx.encoder.swapped(ctx.table) as enc:
            xtr = enc.encode(fit_texts, ctx.batch_size)
            xte = enc.encode(test_texts, ctx.batch_size)

        clf = _logreg(0).fit(xtr, fit_y)
        correct = clf.predict(xte) == test_y
        ctx.items = Items("mean", correct.astype(np.float64))
        return {"accuracy": float(correct.mean()), "n_train": float(len(fit_y)), "n_test": float(len(test_y))}


class _CVClassification(_ClassificationTask):
    """k-fold CV (task version 2). The validation carve (:func:`validation_carve` of all items) is held out of the
    reported CV, which runs over the other items; tuning scores a 5-fold CV over the carve alone, so it never
    reads an item the reported score is computed on."""

    folds: ClassVar[int] = 10
    validation_folds: ClassVar[int] = 5

    def data_files(self) -> list[str]:
        return [f"{self.dataset}/all"]

    def evaluate(self, ctx: PosthocContext) -> dict[str, float]:
        from sklearn.model_selection import StratifiedKFold

        data = load_split(self.dataset, "all")
        y_all = np.asarray(data["label"])
        rest, val = validation_carve(y_all)
        keep = val if self.split == "validation" else rest
        folds = self.validation_folds if self.split == "validation" else self.folds
        texts = list(data["text"])
        with ctx.encoder.swapped(ctx.table) as enc:
            x = enc.encode([texts[i] for i in keep], ctx.batch_size)

        y = y_all[keep]
        accs = []
        correct = np.zeros(len(y))
        for tr, te in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, y):
            clf = _logreg(0).fit(x[tr], y[tr])
            hit = clf.predict(x[te]) == y[te]
            correct[te] = hit
            accs.append(float(hit.mean()))
        # the interval is of the pooled accuracy over every item (each is tested once); the main score is the
        # mean of the fold accuracies, which differs from it by at most the folds' size difference
        ctx.items = Items("mean", correct)
        return {"accuracy": float(np.mean(accs)), "accuracy_std": float(np.std(accs)), "folds": float(folds),
                "n_items": float(len(y))}


def _cls_card(name: str, protocol: str, version: int = 1) -> TaskCard:
    return TaskCard(name, version, "posthoc", "accuracy", True, 0.01, name, protocol)


_TT = "logistic regression (StandardScaler, C=1) on frozen normalised sentence embeddings, train -> test accuracy"
_CV = ("logistic regression (StandardScaler, C=1) on frozen normalised sentence embeddings, 10-fold stratified CV "
       "(seed 0) over the items outside the validation carve (stratified 10%, at most 2,000, split seed 0)")


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
    card = _cls_card("mr", _CV, version=2)


@TASKS.register("posthoc/cr")
class CR(_CVClassification):
    """CR polarity, 10-fold CV."""

    dataset = "cr"
    card = _cls_card("cr", _CV, version=2)


@TASKS.register("posthoc/subj")
class SUBJ(_CVClassification):
    """SUBJ subjectivity, 10-fold CV."""

    dataset = "subj"
    card = _cls_card("subj", _CV, version=2)


@TASKS.register("posthoc/mpqa")
class MPQA(_CVClassification):
    """MPQA polarity, 10-fold CV."""

    dataset = "mpqa"
    card = _cls_card("mpqa", _CV, version=2)


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
