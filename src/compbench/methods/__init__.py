"""The method registry.

Methods register at their definition with ``@METHODS.register("name")``; the
map below adds every built-in as a lazy ``module:attr`` entry so heavy imports
(faiss, ml_dtypes) happen only when the method is used. To add a method: write
``methods/<name>.py`` with a :class:`~compbench.methods.method_base.Method` subclass,
decorate it, and add a line here. The conformance tests pick it up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compbench.methods.method_base import CompressedEmbedding, Method, MethodCard
from compbench.methods.options import canonical_options
from compbench.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")

_BUILTIN = {
    "dense": "compbench.methods.dense:Dense",
    "svd": "compbench.methods.svd:SVD",
    "quant-int8": "compbench.methods.quant:QuantInt8",
    "quant-int4": "compbench.methods.quant:QuantInt4",
    "quant-int2": "compbench.methods.quant:QuantInt2",
    "quant-binary": "compbench.methods.quant:QuantBinary",
    "quant-fp16": "compbench.methods.quant:QuantFP16",
    "quant-fp8": "compbench.methods.quant:QuantFP8",
    "quant": "compbench.methods.quant_budget:Quant",
    "pca": "compbench.methods.pca:PCA",
    "rabitq": "compbench.methods.rabitq:RaBitQ",
    "rq": "compbench.methods.additive:RQ",
    "lsq": "compbench.methods.additive:LSQ",
    "tiered": "compbench.methods.tiered:Tiered",
    "pq": "compbench.methods.pq:PQ",
    "opq": "compbench.methods.pq:OPQ",
    "kmeans": "compbench.methods.kmeans:KMeans",
    "direction-ae": "compbench.methods.direction_ae:DirectionAE",
    "st-int8": "compbench.methods.st_quant:STInt8",
    "st-binary": "compbench.methods.st_quant:STBinary",
    "lowrank": "compbench.methods.lowrank:LowRank",
    "hashing": "compbench.methods.hashing:Hashing",
    "qr": "compbench.methods.qr:QR",
    "tt": "compbench.methods.tt:TT",
    "dhe": "compbench.methods.dhe:DHE",
    "fourier-mlp": "compbench.methods.fourier_mlp:FourierMLP",
    "ade": "compbench.methods.ade:ADE",
    "ade-merged": "compbench.methods.ade:ADEMerged",
    "robe": "compbench.methods.robe:ROBE",
    "mde": "compbench.methods.mde:MDE",
    "mde-posthoc": "compbench.methods.mde_posthoc:MDEPosthoc",
    "dpq": "compbench.methods.dpq:DPQ",
    "mgqe": "compbench.methods.mgqe:MGQE",
    "pep": "compbench.methods.pruning:PEP",
    "deeplight": "compbench.methods.pruning:DeepLight",
    "alpt": "compbench.methods.alpt:ALPT",
    "optembed": "compbench.methods.optembed:OptEmbed",
    "dedup": "compbench.methods.dedup:Dedup",
}
for _name, _target in _BUILTIN.items():
    METHODS.add_lazy(_name, _target)

#: the entry-point group through which an installed package adds methods (``[project.entry-points."compbench.methods"]
#: toy = "toy_method:ToyMethod"``); see docs/extending.md
ENTRY_POINT_GROUP = "compbench.methods"


def _add_entry_points() -> None:
    """Register every installed ``compbench.methods`` entry point as a lazy method (imported on first use); a
    name that is already taken (a built-in) is never replaced."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in METHODS and ":" in ep.value:
            METHODS.add_lazy(ep.name, ep.value)


_add_entry_points()


#: ``A+B`` names resolve through the composer, a lazy registry entry like the built-in methods: the module
#: (:mod:`compbench.methods.compose`) is imported on the first composition, and it imports this package's registry
COMPOSERS: Registry[Any] = Registry("composition")
COMPOSERS.add_lazy("A+B", "compbench.methods.compose:composed_method")


def _composer() -> Any:
    """The function that builds the method ``A+B`` from its name and options."""
    return COMPOSERS.get("A+B")


def get_method(name: str, **options: Any) -> Method:
    """Instantiate the method registered as ``name`` (unknown names suggest the closest); ``A+B`` is the
    composition of a reducer A and a quantizer B (:mod:`compbench.methods.compose`)."""
    if "+" in name:
        return _composer()(name, **options)
    return METHODS.get(name)(**options)


def get_method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (for ``A+B``, a factory class whose card is the composition's)."""
    if "+" in name:
        return _composed_class(name)
    return METHODS.get(name)


def _composed_class(name: str) -> type[Method]:
    composed_method = _composer()
    proto = composed_method(name)  # validates both names now

    class Composed(Method):
        card = proto.card
        option_ranges = getattr(proto, "option_ranges", {})

        def __new__(cls, **options: Any) -> Any:  # type: ignore[misc]
            return composed_method(name, **options)

    Composed.__name__ = Composed.__qualname__ = f"Composed[{name}]"
    return Composed


def canonical_method_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of method ``name`` in their one canonical form (:func:`compbench.methods.options.canonical_options`):
    what a cell's key hashes and its record stores, whoever spelled them (``-o``, a suite file, the library)."""
    cls = get_method_class(name)
    return canonical_options(cls.card.name, options, getattr(cls, "option_ranges", {}))


def list_methods() -> list[str]:
    """All registered method names, sorted."""
    return METHODS.names()


__all__ = ["ENTRY_POINT_GROUP", "METHODS", "CompressedEmbedding", "Method", "MethodCard", "canonical_method_options", "get_method",
           "get_method_class", "list_methods"]
