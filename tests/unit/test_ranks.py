"""`prune.ranks.Ranks` without a process group: shares, owners, and a single process's no-op collectives."""

import pytest
import torch
from torch import nn

from prune.ranks import Ranks
from prune.walker import SharedInput, collect, solve_cost


@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [0, 1, 5, 16])
def test_shares_cover_every_item_once_in_order(world: int, n: int) -> None:
    shares = [list(Ranks(rank=r, world=world).share(n)) for r in range(world)]
    assert [i for s in shares for i in s] == list(range(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    dealt = sorted(i for r in range(world) for i in Ranks(rank=r, world=world).deal(n))
    assert dealt == list(range(n))


def test_owners_balance_the_cost_and_agree_on_every_rank() -> None:
    costs = [solve_cost(nn.Linear(i, o)) for i, o in [(64, 64)] * 3 + [(64, 64), (64, 172), (64, 172), (172, 64)]]
    owners = [Ranks(rank=r, world=2).owners(costs) for r in range(2)]
    assert owners[0] == owners[1]
    load = [sum(c for c, o in zip(costs, owners[0]) if o == r) for r in range(2)]
    assert max(load) <= sum(costs) / 2 + max(costs)  # the greedy (longest first) bound
    assert set(owners[0]) == {0, 1}
    assert Ranks().owners(costs) == [0] * len(costs)


def test_one_rank_sends_nothing() -> None:
    ranks = Ranks()
    t = torch.ones(3)
    ranks.sum_([t])
    ranks.broadcast_([t], 0)
    ranks.barrier()
    ranks.same_arguments(["prune", "--sparsity", "0.5"])
    assert torch.equal(t, torch.ones(3)) and ranks.traffic.total == 0
    assert ranks.gather_text("x") == ["x"] and ranks.broadcast_ints([3, 1], 0) == [3, 1]
    assert ranks.device("cuda") == "cuda" and Ranks(rank=1, world=2, local_rank=1).device("cuda") == "cuda:1"


def test_linears_declared_to_share_an_input_must_read_one() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(x * 2)  # b reads another tensor

    from prune.walker import BlockInputs

    block = Two()
    inputs = [BlockInputs(torch.randn(1, 4, 8), (), {})]
    feeds, _ = collect(block, {"a": block.a, "b": block.b}, ("hessian",), inputs, "cpu", shares=[])
    assert feeds["a"] is not feeds["b"]
    with pytest.raises(RuntimeError, match="declared to read one input"):
        collect(block, {"a": block.a, "b": block.b}, ("hessian",), inputs, "cpu", shares=[("a", "b")])
    assert isinstance(feeds["a"], SharedInput)
