"""Running and timing artifacts: the engines (one way to run each exported format), the timing discipline
(`harness`) and the interleaved latency comparison (`latency`). The speedup-vs-sparsity sweep is issue #6."""
