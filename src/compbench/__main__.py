"""``python -m compbench`` runs the CLI."""

from compbench.cli import main

main()
