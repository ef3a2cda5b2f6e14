"""Benchmark harness: the same workloads on Loom and on DBOS, each in its own process."""
