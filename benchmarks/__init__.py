"""`courier bench`: the W1 workload against the services runtime, and its floors.

``benchmarks.bench.run`` is the entry point; ``docs/PERFORMANCE.md`` says how to run it
and keeps the latest figures.
"""
