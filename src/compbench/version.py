"""The package version (one place; ``compbench.__version__`` re-exports it, records carry it)."""

__version__ = "0.1.0"
