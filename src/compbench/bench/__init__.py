"""The harness: budgets, byte accounting, measurement, records, the result store and the runner."""
