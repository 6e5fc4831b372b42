"""Layer methods: what the walker runs on each ``nn.Linear`` of a block.

The registry and its types are in `prune.methods.base` (which the implementations import); importing this
package registers every method."""

# Import for registration side effects.
from prune.methods import pgz, sparsegpt  # noqa: E402,F401
from prune.methods.base import (  # noqa: F401
    METHODS,
    JointPruner,
    LayerMethod,
    MaskPruner,
    MetricPruner,
    SendsOutput,
)
