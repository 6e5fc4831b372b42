import pytest

from prune.allocation import ALLOCATORS, AllocationContext
from prune.models import adapter_for, tiny_llama


@pytest.mark.parametrize("name", ALLOCATORS.names())
def test_every_allocator_plans_every_linear_around_the_target(name: str) -> None:
    model = tiny_llama(num_layers=3)
    adapter = adapter_for(model)
    plan = ALLOCATORS.get(name)().allocate(0.6, model, AllocationContext(adapter.block_linear_names(model)))
    assert set(plan) == set(adapter.named_linears(model))
    assert all(0.0 <= s < 1.0 for s in plan.values())
    assert sum(plan.values()) / len(plan) == pytest.approx(0.6, abs=0.02)


def test_uniform_gives_everyone_the_target() -> None:
    ctx = AllocationContext([["a", "b"], ["c"]])
    assert ALLOCATORS.get("uniform")().allocate(0.3, None, ctx) == {"a": 0.3, "b": 0.3, "c": 0.3}
