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
