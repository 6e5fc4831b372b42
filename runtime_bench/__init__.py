"""The latency/throughput harness for the speedup-vs-sparsity tables.

Not built yet: issue #6 fills this package.
"""
