"""Options declared once (issue 33, item 3): each method's ``Options`` model is the only place an option is written;
the card's help, the ranges, validation, the typed values, ``list methods NAME`` and ``run --dry-run`` derive from it."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from compbench.cli import main
from compbench.errors import UsageError
from compbench.methods import METHODS, Method, MethodCard, get_method, get_method_class, list_methods
from compbench.methods.options import MethodOptions, at_least, opt, option_help, option_ranges, positive

METHODS_DIR = Path(__file__).resolve().parents[1] / "src" / "compbench" / "methods"


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(METHODS_DIR.glob("*.py"))]


def test_no_method_passes_a_default_to_option() -> None:
    """``self.option("key", default)`` would declare a default a second time: the model holds it."""
    offenders = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "option"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "self"
                    and len(node.args) + len(node.keywords) > 1):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_no_method_declares_options_or_ranges_by_hand() -> None:
    offenders = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "MethodCard":
                if any(k.arg == "options" for k in node.keywords) and path.name != "compose.py":
                    offenders.append(f"{path.name}:{node.lineno} MethodCard(options=...)")
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    name = t.id if isinstance(t, ast.Name) else getattr(t, "attr", None)
                    if name == "option_ranges" and isinstance(node.value, ast.Dict) and node.value.keys:  # written out
                        offenders.append(f"{path.name}:{node.lineno} option_ranges =")
    assert offenders == []


@pytest.mark.parametrize("name", list_methods())
def test_card_and_ranges_derive_from_the_model(name: str) -> None:
    cls = get_method_class(name)
    model = cls.Options
    if model is None:  # only a method without any option may go without a model
        assert not cls.card.options, f"{name} lists options but declares no Options model"
        return
    assert dict(cls.card.options) == option_help(model)
    assert dict(cls.option_ranges) == option_ranges(model)
    m = get_method(name)
    assert m.resolved_options() == {k: f.default for k, f in model.model_fields.items()}
    for key, info in model.model_fields.items():
        assert info.description, f"{name}: option {key} has no help"
        assert m.option(key) == info.default


def test_adding_an_option_is_one_line() -> None:
    """A subclass adds ``scale`` to svd's model, and nothing else: help, range, validation and value follow."""
    base = get_method_class("svd")

    class Scaled(base):  # type: ignore[misc, valid-type]
        card = MethodCard(name="svd-scaled", version=1, family="low-rank", reference="test", modes=("posthoc",))

        class Options(base.Options):  # type: ignore[name-defined, misc]
            scale: float = opt(1.0, "multiply the factors", positive())

    assert "scale" in Scaled.card.options and "[default: 1.0; a number > 0]" in Scaled.card.options["scale"]
    assert "rank" in Scaled.card.options  # inherited
    assert Scaled.option_ranges["scale"].describe() == "a number > 0"
    assert Scaled().option("scale") == 1.0
    assert Scaled(scale="2").option("scale") == 2.0
    with pytest.raises(UsageError, match=r"option scale=-1 of method 'svd-scaled' must be a number > 0"):
        Scaled(scale=-1)


def test_a_card_listing_options_next_to_a_model_is_refused() -> None:
    with pytest.raises(TypeError, match="Options model"):
        class Twice(Method):  # noqa: F841 - the class statement is the test
            card = MethodCard(name="twice", version=1, family="x", reference="x", modes=("posthoc",),
                              options={"k": "help"})

            class Options(MethodOptions):
                k: int = opt(1, "help", at_least(1))


def test_validation_is_one_line_per_kind_of_mistake() -> None:
    with pytest.raises(UsageError) as e1:
        get_method("svd", dtype="bfloat16")
    assert str(e1.value) == "option dtype=bfloat16 of method 'svd': input should be 'float32' or 'float16'"
    with pytest.raises(UsageError) as e2:
        get_method("svd", rnak=4)
    assert str(e2.value) == "method 'svd' has no option(s) rnak (options: dtype, rank)"
    with pytest.raises(UsageError, match=r"option rank=0 of method 'svd' must be an integer >= 1"):
        get_method("svd", rank="0")
    with pytest.raises(UsageError, match="must be an integer"):
        get_method("pq", niter="many")
    assert get_method("pq", codebook_dtype="float16").option("codebook_dtype") == "float16"
    assert get_method("svd", dtype=" Float16 ").option("dtype") == "float16"  # a choice in any case


def test_model_values_are_typed_and_user_options_stay_what_was_given() -> None:
    m = get_method("pq", nbits="6", train_size=" 4096 ")
    assert m.option("nbits") == 6 and m.option("train_size") == 4096 and m.option("niter") == 10
    assert m.options == {"nbits": 6, "train_size": 4096}  # what the cell key hashes: only the user's
    with pytest.raises(KeyError):
        m.option("no_such_option")


class _Legacy(Method):
    """The older contract (an outside method written before ``Options``): still runs."""

    card = MethodCard(name="legacy", version=1, family="x", reference="x", modes=("posthoc",),
                      options={"k": "force k"})
    option_ranges = {"k": at_least(1)}


def test_the_older_contract_still_works() -> None:
    m = _Legacy(k="3")
    assert m.option("k", 1) == 3 and _Legacy().option("k", 7) == 7
    with pytest.raises(UsageError, match="has no option"):
        _Legacy(j=1)


def test_tuning_space_is_part_of_the_contract() -> None:
    assert Method.tuning_space(get_method("rq"), 100, 8, 1000) == []
    assert not get_method("rq").has_tuning_space()
    assert get_method("pq").has_tuning_space() and get_method("pq").tuning_space(30522, 384, 10**6)[0] == {}


def test_list_methods_shows_each_option_with_default_and_range() -> None:
    out = CliRunner().invoke(main, ["list", "methods", "pq"], env={"COLUMNS": "160"})
    assert out.exit_code == 0, out.output
    lines = [ln for ln in out.output.splitlines() if "train_size" in ln]
    assert lines and "65536" in lines[0] and "an integer >= 1" in lines[0]
    assert any("codebook_dtype" in ln and "one of float32, float16" in ln for ln in out.output.splitlines())


def test_dry_run_lists_every_resolved_option() -> None:
    out = CliRunner().invoke(main, ["run", "--method", "svd", "--budget", "40x", "-o", "rank=5", "--dry-run",
                                    "--json"])
    assert out.exit_code == 0, out.output
    plan: dict[str, Any] = json.loads(out.output)
    assert plan["options"] == {"rank": 5}
    assert plan["resolved_options"] == {"rank": 5, "dtype": "float32"}


def test_every_registered_method_builds_with_its_defaults() -> None:
    for name in METHODS.names():
        m = get_method(name)
        assert isinstance(m.resolved_options(), dict)

