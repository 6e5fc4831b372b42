"""Published figures our benchmarks are drawn beside (reference data, cited; never used as results).

`TABLE5_DLP`: ``001_0da1aa919c7f675c.txt`` (DLP), Table 5 — end-to-end decoding latency and throughput of
LLaMA2-7B-chat-hf pruned with Wanda + DLP, DeepSparse, Intel Xeon Gold 6248R, 24 cores.
Sparsity → (latency ms, throughput tokens/s, speedup).
"""

from __future__ import annotations

TABLE5_DLP_SOURCE = "DLP (001) Table 5: LLaMA2-7B-chat, Wanda+DLP, DeepSparse, Xeon Gold 6248R 24 cores"
TABLE5_DLP: dict[float, tuple[float, float, float]] = {
    0.0: (353.42, 2.83, 1.0),
    0.1: (352.40, 2.84, 1.0),
    0.2: (338.37, 2.96, 1.1),
    0.3: (323.49, 3.09, 1.1),
    0.4: (273.43, 3.66, 1.3),
    0.5: (200.17, 4.99, 1.8),
    0.6: (164.31, 6.08, 2.2),
    0.7: (124.76, 8.01, 2.8),
    0.8: (100.30, 9.97, 3.5),
    0.9: (96.86, 10.32, 3.7),
}
