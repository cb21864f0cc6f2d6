"""Every ``compbench`` command the README and the docs show is checked (issue 18, part 5; issue 33), so an example
that cannot run fails CI.

Commands are taken from the fenced code blocks of ``README.md`` and of every ``docs/*.md`` file (lines starting with
``compbench`` or ``$ compbench``, a trailing ``# comment`` removed, ``\\``-continued lines joined) and from inline
code spans that start with ``compbench``; the Makefile's ``make demo`` command is checked too. A command shown in
several files is checked once. For each one:

- ``run`` and ``sweep``: dry-run through click's CliRunner (``--dry-run`` appended): names, options, budget,
  task, device, threads, key and, where the table's shape is known without a model, attainability are
  resolved exactly as the real command would; exit code 0 required. Nothing is run or written.
- ``list`` and ``show``: run for real (cheap, read-only).
- any other subcommand (``report``, ``compare``, ``mteb``, ``ade-lookup``): ``--help`` must succeed and the
  command line must parse (click's ``make_context``: unknown options, missing required options and bad
  values fail), without running it.

Usage lines are not examples and are skipped: lines with ``[``-bracketed optional syntax, ``a|b``
alternatives, ``...``, or an upper-case placeholder such as ``PATH``, ``FILE``, ``DIR``, ``BASE_DIR``,
``M``, ``B`` (as in ``compbench run --method M --budget B [--track T] ...``). A bare subcommand in prose
(``compbench run``, ``compbench report``) names the command; only its existence and ``--help`` are checked.

``docs/reliability.md`` is not read: its tables list bad input on purpose (every command there must *fail* with the
message shown; the tests each table names, such as ``tests/test_bad_input.py``, run them), and its GPU check needs
CUDA.
``docs/extending.md``'s commands use the example method ``toy`` of ``docs/examples/toy_method``, which that page
installs first; here it is made known as its entry point would make it, for that page's commands only.

The README's thread counts are for its 2-core development machine; the check of ``--threads`` against the
cores this process may use is relaxed here, so the test also passes on a 1-core runner.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from compbench.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")
#: docs whose commands are not examples to copy (see the module docstring)
NOT_EXAMPLES = {"reliability.md"}
DOCS = [README] + [p for p in sorted((REPO / "docs").glob("*.md")) if p.name not in NOT_EXAMPLES]
#: out-of-tree methods a doc installs before its commands: name -> (folder put on sys.path, entry point target)
DOC_PLUGINS = {"extending.md": {"toy": ("docs/examples/toy_method", "toy_method:ToyProjection")}}


def _strip_comment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line).strip()


def _is_usage(line: str) -> bool:
    if "[" in line or "|" in line or "..." in line or "<" in line:
        return True
    tokens = [t for tok in line.split() for t in re.split(r"[:=,]", tok)]
    return any(PLACEHOLDER.match(t) for t in tokens if t)


def readme_commands(text: str) -> list[str]:
    """``compbench ...`` command lines of a Markdown text: fenced code blocks and inline code spans, in order,
    duplicates and usage lines removed."""
    out: list[str] = []
    fenced = False
    continued = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            fenced, continued = not fenced, ""
            continue
        if fenced:
            if stripped.endswith("\\"):  # a command continued on the next line
                continued += stripped[:-1]
                continue
            stripped, continued = continued + stripped, ""
            cmd = _strip_comment(stripped.removeprefix("$ "))
            if cmd.startswith("compbench "):
                out.append(cmd)
        else:
            out.extend(m.group(1).strip() for m in re.finditer(r"`(compbench [^`]+)`", line))
    return [c for c in dict.fromkeys(out) if not _is_usage(c)]


def makefile_commands() -> list[str]:
    """``compbench`` commands of the Makefile's recipes (``$(VENV)/bin/compbench run ...``)."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(r"\$\(VENV\)/bin/(compbench [^\n]+)", text)]


def doc_commands() -> list[tuple[str, str]]:
    """(file name, command) of every checked doc and the Makefile; a command shown in several files is checked
    once, under the first file that shows it (README first)."""
    pairs = [(doc.name, c) for doc in DOCS for c in readme_commands(doc.read_text(encoding="utf-8"))]
    pairs += [("Makefile", c) for c in makefile_commands()]
    first: dict[str, tuple[str, str]] = {}
    for name, c in pairs:
        first.setdefault(c, (name, c))
    return list(first.values())


DOC_COMMANDS = doc_commands()
COMMANDS = [c for _, c in DOC_COMMANDS]
README_COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def _args(cmd: str) -> list[str]:
    args = shlex.split(cmd)
    assert args[0] == "compbench"
    return args[1:]


def _subcommand(args: list[str]) -> tuple[str, list[str]]:
    i = 0
    while i < len(args) and args[i].startswith("-"):  # group options (--debug)
        i += 1
    return args[i], args[i + 1:]


@pytest.fixture(autouse=True)
def _from_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative paths in the README and the docs (suite files, records) are relative to the checkout."""
    import compbench.bench.cell.input_checks as validate

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(validate, "available_cpus", lambda: 64)


def _with_plugins(doc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the out-of-tree methods ``doc`` installs known, as their entry points would, for this test only."""
    from compbench.methods import METHODS

    plugins = DOC_PLUGINS.get(doc, {})
    if not plugins:
        return
    monkeypatch.setattr(METHODS, "_objects", dict(METHODS._objects))
    monkeypatch.setattr(METHODS, "_lazy", dict(METHODS._lazy))
    for name, (folder, target) in plugins.items():
        monkeypatch.syspath_prepend(str(REPO / folder))
        METHODS.add_lazy(name, target)


def test_the_readme_and_docs_have_commands_of_every_kind() -> None:
    subs = [_subcommand(_args(c))[0] for c in COMMANDS]
    assert subs.count("run") >= 8 and subs.count("sweep") >= 4, COMMANDS
    assert {"list", "show", "report", "mteb", "ade-lookup"} <= set(subs), subs
    tracks = {a.split()[1] for c in COMMANDS if c.startswith("compbench run") for a in re.findall(r"--track \S+", c)}
    assert {"train", "words", "store"} <= tracks, COMMANDS


def test_the_readme_quick_start_covers_the_main_commands() -> None:
    subs = {_subcommand(_args(c))[0] for c in README_COMMANDS}
    assert {"run", "sweep", "report", "export"} <= subs, README_COMMANDS
    assert any("--track lm" in c for c in README_COMMANDS), README_COMMANDS


def test_usage_lines_are_not_taken_for_examples() -> None:
    text = "\n".join([
        "```", "compbench run --method M --budget B [--track T]", "compbench compare BASE_DIR NEW_DIR",
        "$ compbench run --method svd --budget 10x   # a comment", "compbench list methods | tasks", "```",
        "Use `compbench --debug ...` or `compbench run --task sts:PATH` or `compbench sweep --suite smoke`.",
        "```bash", "compbench run --method pq \\", "    --budget 40x --threads 1   # continued", "```",
    ])
    assert readme_commands(text) == ["compbench run --method svd --budget 10x", "compbench sweep --suite smoke",
                                     "compbench run --method pq --budget 40x --threads 1"]


def _kind(cmd: str) -> str:
    name, rest = _subcommand(_args(cmd))
    if not rest:
        return "name"  # prose naming the command ("`compbench run` is a fresh process per cell")
    return {"run": "dry-run", "sweep": "dry-run", "list": "real", "show": "real"}.get(name, "parse")


def _cases(*kinds: str) -> list[object]:
    return [pytest.param(doc, c, id=f"{doc}: {c}") for doc, c in DOC_COMMANDS if _kind(c) in kinds]


@pytest.mark.parametrize(("doc", "cmd"), _cases("dry-run"))
def test_run_and_sweep_examples_dry_run(doc: str, cmd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_plugins(doc, monkeypatch)
    res = CliRunner().invoke(main, [*_args(cmd), "--dry-run"])
    assert res.exit_code == 0, f"{doc}: {cmd}\n{res.output}"


@pytest.mark.parametrize(("doc", "cmd"), _cases("real"))
def test_list_and_show_examples_run(doc: str, cmd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _with_plugins(doc, monkeypatch)
    res = CliRunner().invoke(main, _args(cmd))
    assert res.exit_code == 0, f"{doc}: {cmd}\n{res.output}"
    assert res.stdout.strip()


@pytest.mark.parametrize(("doc", "cmd"), _cases("parse", "name"))
def test_other_examples_parse(doc: str, cmd: str) -> None:
    name, rest = _subcommand(_args(cmd))
    assert name in main.commands, f"{cmd}: no subcommand '{name}'"
    res = CliRunner().invoke(main, [name, "--help"])
    assert res.exit_code == 0, res.output
    if _kind(cmd) == "name":
        return
    command = main.commands[name]
    with command.make_context(name, list(rest)) as ctx:  # raises click.UsageError on a bad command line
        assert ctx.params is not None


def test_a_broken_example_would_fail() -> None:
    """The checks above do catch what they are for: an unattainable budget, an unknown option."""
    res = CliRunner().invoke(main, ["run", "--track", "store", "--method", "quant-binary", "--budget", "32x",
                                    "--dry-run"])
    assert res.exit_code == 2 and "the smallest budget it can meet is 29.53x" in res.stderr
    import click

    with pytest.raises(click.UsageError):
        main.commands["report"].make_context("report", ["--no-such-option"])
