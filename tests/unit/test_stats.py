import torch

from prune.architecture import adapter_for
from prune.models import tiny_llama
from prune.stats import HessianAccumulator, InputNormAccumulator, gradient_norms


def _feed(acc, x: torch.Tensor, sizes: list[int]) -> None:  # noqa: ANN001
    for chunk in x.split(sizes):
        acc.update(chunk)


def test_hessian_is_the_running_mean_of_2xxT_and_invariant_to_batching() -> None:
    x = torch.randn(20, 7, 16, generator=torch.Generator().manual_seed(0))  # [batch, seq, in]
    one, many = HessianAccumulator(16), HessianAccumulator(16)
    _feed(one, x, [20])
    _feed(many, x, [3, 1, 9, 7])
    flat = x.reshape(-1, 16).double()
    expected = (2 * flat.T @ flat / flat.shape[0]).float()
    torch.testing.assert_close(one.result(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(many.result(), expected, rtol=1e-5, atol=1e-5)
    assert one.count == many.count == 140


def test_input_norm_is_the_l2_norm_over_all_tokens() -> None:
    x = torch.randn(5, 9, 12, generator=torch.Generator().manual_seed(1))
    acc = InputNormAccumulator(12)
    _feed(acc, x, [2, 3])
    torch.testing.assert_close(acc.result(), x.reshape(-1, 12).norm(dim=0))


def test_gradient_norms_are_per_sample_l2_norms() -> None:
    model = tiny_llama(num_layers=1)
    linears = adapter_for(model).named_linears(model)
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(2))
    got = gradient_norms(model, linears, [ids], progress=False)
    name = "model.layers.0.mlp.down_proj"
    per_sample = []
    for row in ids:
        model.zero_grad()
        model(input_ids=row[None], labels=row[None]).loss.backward()
        per_sample.append(linears[name].weight.grad.clone())
    model.zero_grad()
    expected = torch.stack(per_sample).pow(2).sum(0).sqrt()
    torch.testing.assert_close(got[name], expected, rtol=1e-4, atol=1e-7)
    assert all(not p.requires_grad or p.grad is None for p in model.parameters())


def test_accumulators_fed_shares_sum_to_the_one_fed_everything_bit_for_bit() -> None:
    """How ranks combine their shares of the calibration set (`prune.ranks.Ranks.sum_`): the float64 parts of
    accumulators fed disjoint batches add to the parts of one fed them all, and the results are equal bit for bit
    whatever the split."""
    from prune.stats import ACCUMULATORS

    batches = list(torch.randn(9, 5, 48, generator=torch.Generator().manual_seed(3)).split(1))
    for need, make in ACCUMULATORS.items():
        whole = make(48, "cpu")
        for b in batches:
            whole.update(b)
        for cut in (1, 4, 8):
            a, b = make(48, "cpu"), make(48, "cpu")
            for x in batches[:cut]:
                a.update(x)
            for x in batches[cut:]:
                b.update(x)
            for pa, pb in zip(a.parts(), b.parts()):
                pa += pb  # what an all-reduce does
            assert torch.equal(a.result(), whole.result()), (need, cut)
