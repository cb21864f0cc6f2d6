"""The ``compbench`` command line: thin wrappers that parse, call one library function and print.

One module per subcommand (``run``, ``listing`` for list and show, ``sweep`` for sweep and compare, ``report``,
``export``, ``mteb``, ``scale``, ``ade``), what they share in ``common`` and the click types in ``types``. This
module only builds the group and registers them.
"""

from __future__ import annotations

import click

from compbench.cli.ade_cmd import ade_lookup
from compbench.cli.common import quiet_libraries
from compbench.cli.export_cmd import export_command
from compbench.cli.list_cmd import list_cmd, show
from compbench.cli.mteb_cmd import mteb_command
from compbench.cli.report_cmd import report
from compbench.cli.run_cmd import run
from compbench.cli.scale_cmd import scale_command
from compbench.cli.sweep_cmd import compare, sweep


@click.group()
@click.option("--debug", is_flag=True, help="Show Python tracebacks instead of one-line errors.")
@click.version_option(package_name="compbench")
def main(debug: bool) -> None:
    """compbench: benchmark embedding compression methods at a memory budget."""
    quiet_libraries()


for _command in (run, list_cmd, show, report, sweep, compare, ade_lookup, mteb_command, scale_command, export_command):
    main.add_command(_command)

__all__ = ["main"]
