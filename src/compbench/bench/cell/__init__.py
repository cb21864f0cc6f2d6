"""One benchmark cell: its plan, context, lifecycle, budget and byte accounting, the worker process, guards (watchdog, memory) and dense references."""
