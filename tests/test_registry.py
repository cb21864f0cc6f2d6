"""The generic registry and the method/task/dataset registries built on it."""

from __future__ import annotations

import pytest

from compbench.datasets import get_dataset_card, list_datasets
from compbench.errors import UnknownNameError
from compbench.methods import METHODS, get_method_class, list_methods
from compbench.registry import Registry
from compbench.tasks import TASKS, get_task


def test_register_lookup_duplicate_and_suggest() -> None:
    r: Registry[int] = Registry("thing")
    r.register("alpha")(1)
    r.add_lazy("beta", "math:pi")
    assert r.get("alpha") == 1
    assert abs(r.get("beta") - 3.14159) < 1e-4
    with pytest.raises(ValueError, match="duplicate"):
        r.register("alpha")(2)
    with pytest.raises(ValueError, match="duplicate"):
        r.add_lazy("beta", "math:e")
    with pytest.raises(UnknownNameError, match="did you mean 'alpha'"):
        r.get("alpah")


def test_method_registry_key_equals_card_name() -> None:
    for name in list_methods():
        assert get_method_class(name).card.name == name


def test_task_registry_key_equals_card() -> None:
    for key in TASKS.names():
        track, name = key.split("/", 1)
        card = get_task(track, name).card
        assert (card.track, card.name) == (track, name)


def test_dataset_cards_have_hub_ids() -> None:
    for name in list_datasets():
        assert get_dataset_card(name).hf_id


def test_unknown_method_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'svd'"):
        METHODS.get("svdd")


def test_unknown_task_suggests() -> None:
    with pytest.raises(UnknownNameError, match="did you mean 'stsb'"):
        get_task("posthoc", "stsbb")
    with pytest.raises(UnknownNameError, match="did you mean 'posthoc'"):
        get_task("posthok", "stsb")


# Options of the built-in methods that take a word or a flag, not a number; every other card option must
# declare its range in ``option_ranges`` (so a new numeric option cannot skip the check).
NON_NUMERIC_OPTIONS = {
    "ade": {"anchor_dtype"},
    "ade-merged": {"anchor_dtype"},
    "dhe": {"distribution", "activation"},
    "direction-ae": {"init", "select"},
    "dpq": {"mode"},
    "fourier-mlp": {"mlp"},
    "lowrank": {"init"},
    "mde-posthoc": {"frequencies"},
    "opq": {"codebook_dtype"},
    "pca": {"dtype"},
    "pep": {"threshold_type"},
    "pq": {"codebook_dtype"},
    "qr": {"op"},
    "quant": {"scale_dtype"},
    "quant-fp8": {"scale"},
    "rabitq": {"decode", "rotation", "project"},
    "svd": {"dtype"},
    "tiered": {"base", "frequencies", "unseen"},
}


@pytest.mark.parametrize("name", list_methods())
def test_every_numeric_option_declares_its_range(name: str) -> None:
    cls = get_method_class(name)
    assert set(cls.card.options) - set(cls.option_ranges) == NON_NUMERIC_OPTIONS.get(name, set())
    assert set(cls.option_ranges) <= set(cls.card.options)


@pytest.mark.parametrize(("name", "options", "needle"), [
    ("svd", {"rank": -5}, "option rank=-5 of method 'svd' must be an integer >= 1"),
    ("svd", {"rank": "0"}, "option rank=0 of method 'svd' must be an integer >= 1"),
    ("svd", {"rank": True}, "option rank=True of method 'svd' must be an integer >= 1"),
    ("kmeans", {"K": 2.5}, "option K=2.5 of method 'kmeans' must be an integer >= 1"),
    ("pq", {"nbits": 17}, "option nbits=17 of method 'pq' must be an integer in 1..16"),
    ("opq", {"niter_opq": 0}, "option niter_opq=0 of method 'opq' must be an integer >= 1"),
    ("quant-int4", {"group_size": 0}, "option group_size=0 of method 'quant-int4' must be an integer >= 1"),
    ("direction-ae", {"lr": "inf"}, "option lr=inf of method 'direction-ae' must be a number > 0"),
    ("direction-ae", {"additional_epochs": -1}, "must be an integer >= 0"),
    ("qr", {"partitions": 1}, "option partitions=1 of method 'qr' must be an integer >= 2 (or 0 = automatic)"),
    ("dhe", {"buckets": 1}, "option buckets=1 of method 'dhe' must be an integer >= 2"),
    ("fourier-mlp", {"norm_len": 1}, "option norm_len=1 of method 'fourier-mlp' must be an integer >= 2"),
    ("ade", {"tau": -0.1}, "option tau=-0.1 of method 'ade' must be a number >= 0"),
    ("ade", {"kmeans_iters": 0}, "option kmeans_iters=0 of method 'ade' must be an integer >= 1"),
    ("dense", {"init_std": "-1"}, "option init_std=-1 of method 'dense' must be a number > 0"),
])
def test_out_of_range_options_fail_at_construction(name: str, options: dict, needle: str) -> None:
    """A bad value fails when the method is constructed (before configure, before any work; also in sweeps)."""
    from compbench.errors import UsageError
    from compbench.methods import get_method

    with pytest.raises(UsageError) as exc:
        get_method(name, **options)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(("name", "options", "canonical"), [
    ("svd", {"rank": "8"}, {"rank": 8}), ("qr", {"partitions": 0}, {"partitions": 0}),
    ("qr", {"partitions": "3"}, {"partitions": 3}), ("pq", {"nbits": 16}, {"nbits": 16}),
    ("ade", {"mod_iters": 0, "epochs": 0, "tau": 0}, {"mod_iters": 0, "epochs": 0, "tau": 0.0}),
    ("direction-ae", {"lr": "1e-3", "additional_epochs": 0}, {"lr": 0.001, "additional_epochs": 0}),
    ("fourier-mlp", {"max_expansion": 0.5}, {"max_expansion": 0.5}), ("kmeans", {"K": 4.0}, {"K": 4}),
    ("hashing", {"signed": "Yes"}, {"signed": True}), ("robe", {"signed": 0}, {"signed": False}),
])
def test_in_range_options_are_accepted(name: str, options: dict, canonical: dict) -> None:
    """Accepted values are stored in their one canonical form (compbench.methods.options.canonical_options)."""
    from compbench.methods import get_method

    stored = get_method(name, **options).options
    assert stored == canonical and {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in canonical.items()}
