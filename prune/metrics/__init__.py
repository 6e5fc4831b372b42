"""Pruning metrics: pure functions ``score(W [out, in], stats) → [out, in]``; higher = keep.

The registry and its types are in `prune.metrics.base` (which the implementations import); importing this
package registers every metric."""

# Import for registration side effects.
from prune.metrics import magnitude, pruner_zero, wanda  # noqa: E402,F401
from prune.metrics.base import (  # noqa: F401
    METRICS,
    Metric,
    register_metric,
)
