"""Layerwise sparsity allocation: a pre-pass that returns a sparsity plan ``{module_name: ratio}``.

The registry and its types are in `prune.allocation.base` (which the implementations import); importing this
package registers every allocator."""

# Import for registration side effects.
from prune.allocation import dlp, log_increase, owl, pi, rl_search, uniform  # noqa: E402,F401
from prune.allocation.base import (  # noqa: F401
    ALLOCATORS,
    Allocation,
    AllocationContext,
    Allocator,
    SparsityPlan,
    allocate,
    block_plan,
    quantize_nm,
    read_plan_file,
    validate_plan,
    weighted_mean,
)
from prune.allocation.scores import spread  # noqa: F401
