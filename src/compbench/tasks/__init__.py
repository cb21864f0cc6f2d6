"""The task registry: keys are ``"<track>/<name>"``; ``get_task(track, name)`` looks one up."""

from __future__ import annotations

from compbench.errors import UnknownNameError
from compbench.registry import Registry
from compbench.tasks.task_base import TRACKS, Task, TaskCard

TASKS: Registry[type[Task]] = Registry("task")

_BUILTIN = {
    "posthoc/stsb": "compbench.tasks.posthoc:STSB",
    "posthoc/sst2": "compbench.tasks.posthoc:SST2",
    "posthoc/trec": "compbench.tasks.posthoc:TREC",
    "posthoc/mr": "compbench.tasks.posthoc:MR",
    "posthoc/cr": "compbench.tasks.posthoc:CR",
    "posthoc/subj": "compbench.tasks.posthoc:SUBJ",
    "posthoc/mpqa": "compbench.tasks.posthoc:MPQA",
    "posthoc/fidelity": "compbench.tasks.posthoc:Fidelity",
    "words/wordsim353": "compbench.tasks.words:WordSim353",
    "words/simlex999": "compbench.tasks.words:SimLex999",
    "words/analogy": "compbench.tasks.words:Analogy",
    "words/fidelity": "compbench.tasks.words:WordsFidelity",
    "store/stsb": "compbench.tasks.store:StoreSTSB",
    "store/neighbors": "compbench.tasks.store:StoreNeighbors",
    "store/mrpc": "compbench.tasks.store:StoreMRPC",
    "store/fidelity": "compbench.tasks.store:StoreFidelity",
    "store/search": "compbench.tasks.store_search:StoreSearch",
    "train/sst2": "compbench.tasks.train:SST2",
    "train/trec": "compbench.tasks.train:TREC",
    "train/imdb": "compbench.tasks.train:IMDB",
    "train/20newsgroups": "compbench.tasks.train:NewsGroups20",
    "train/mr": "compbench.tasks.train:MR",
    "train/subj": "compbench.tasks.train:SUBJ",
    "train/ag_news_test8020": "compbench.tasks.train:AGNewsTest8020",
    "lm/wikitext2": "compbench.tasks.lm:WikiText2",
    "table/fidelity": "compbench.tasks.table_fidelity:TableFidelity",
}
for _name in ("minilm", "mpnet", "glove", *(f"synth-v{v}-d{d}" for v in ("32k", "128k", "256k")
                                             for d in (768, 2048, 4096))):
    _BUILTIN[f"scale/{_name}"] = f"compbench.tasks.scale:Scale_{_name.replace('-', '_')}"
for _k, _v in _BUILTIN.items():
    TASKS.add_lazy(_k, _v)

DEFAULT_TASKS = {"posthoc": "stsb", "train": "sst2", "words": "wordsim353", "store": "search", "scale": "minilm", "lm": "wikitext2", "table": "fidelity"}


def get_task(track: str, name: str) -> Task:
    """Instantiate the task ``name`` of ``track``; unknown names suggest the closest in that track."""
    if track not in TRACKS:
        import difflib

        hint = difflib.get_close_matches(track, TRACKS, n=1)
        raise UnknownNameError(f"unknown track '{track}'" + (f"; did you mean '{hint[0]}'?" if hint else "")
                               + f" (tracks: {', '.join(TRACKS)})")
    if ":" in name:  # bring-your-own data: sts:PATH, classification:PATH
        from compbench.tasks.adhoc import make_adhoc_task  # heavy: torch

        adhoc = make_adhoc_task(track, name)
        if adhoc is not None:
            return adhoc
    if track == "posthoc" and name.startswith("mteb-") and len(name) > 5:  # any mteb task, by its mteb name
        from compbench.tasks.mteb_tasks import get_mteb_task  # heavy: torch

        return get_mteb_task(name)  # type: ignore[return-value]
    key = f"{track}/{name}"
    if key not in TASKS:
        import difflib

        names = list_tasks(track)
        hint = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        other = [t for t in TRACKS if f"{t}/{name}" in TASKS]
        msg = f"unknown task '{name}' for track '{track}'"
        if hint:
            msg += f"; did you mean '{hint[0]}'?"
        elif other:
            msg += f"; '{name}' exists in track(s) {', '.join(other)}"
        msg += f" (tasks: {', '.join(names) or 'none yet'})"
        raise UnknownNameError(msg)
    return TASKS.get(key)()


def list_tasks(track: str | None = None) -> list[str]:
    """Task names of one track (or all keys ``track/name`` when track is None)."""
    keys = TASKS.names()
    if track is None:
        return keys
    return [k.split("/", 1)[1] for k in keys if k.startswith(track + "/")]


__all__ = ["DEFAULT_TASKS", "TASKS", "Task", "TaskCard", "get_task", "list_tasks"]
