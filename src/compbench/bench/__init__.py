"""The harness, grouped by job: ``cell/`` (one cell's plan, lifecycle, budget, accounting and process), ``measure/``
(timing and memory), ``results/`` (records, the record store, comparisons), ``sweeps/`` (suites, sweeps,
executors) and ``tracks/`` (the track runners)."""
