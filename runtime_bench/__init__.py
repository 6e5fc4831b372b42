"""Running and timing artifacts: the engines (one way to run each exported format) and the interleaved
latency comparison. The speedup-vs-sparsity sweep is issue #6."""
