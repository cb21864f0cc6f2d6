"""Sweeps: suites (YAML grids), expanding and running many cells, and the executors that run them."""
