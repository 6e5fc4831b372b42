import pytest
import torch

from prune.errors import SlimpackError
from prune.masks import Pattern, select_prune_mask
from prune.spec import check_sparsity


@pytest.mark.parametrize("nm", ["2:4", "4:8", "1:4", "3:8", "1:2"])
def test_nm_mask_has_exactly_n_zeros_per_group_and_they_are_the_lowest(nm: str) -> None:
    p = Pattern.parse(nm)
    score = torch.rand(37, 64, generator=torch.Generator().manual_seed(1))
    mask = select_prune_mask(score, p.n / p.m, p)
    groups = mask.reshape(37, 64 // p.m, p.m)
    assert (groups.sum(-1) == p.n).all()
    s = score.reshape(37, 64 // p.m, p.m)
    pruned_max = torch.where(groups, s, torch.full_like(s, -1)).amax(-1)
    kept_min = torch.where(groups, torch.full_like(s, 2), s).amin(-1)
    assert (pruned_max < kept_min).all()


def test_nm_takes_each_modules_n_from_its_sparsity() -> None:
    """Mixed N:M: a module whose plan gives 1/4 under a 2:4 pattern loses 1 weight in every 4, and 0 keeps all."""
    score = torch.rand(8, 16, generator=torch.Generator().manual_seed(2))
    assert (select_prune_mask(score, 0.25, Pattern.parse("2:4")).reshape(8, 4, 4).sum(-1) == 1).all()
    assert (select_prune_mask(score, 0.75, Pattern.parse("2:4")).reshape(8, 4, 4).sum(-1) == 3).all()
    assert not select_prune_mask(score, 0.0, Pattern.parse("2:4")).any()


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.25, 0.5, 0.7, 0.9])
def test_row_scope_prunes_exactly_the_target_in_every_row(sparsity: float) -> None:
    score = torch.randn(50, 80, generator=torch.Generator().manual_seed(2))
    mask = select_prune_mask(score, sparsity, Pattern(scope="row"))
    assert (mask.sum(1) == round(sparsity * 80)).all()
    # the pruned weights of each row are its lowest scores
    kth = score.sort(1).values[:, round(sparsity * 80) - 1] if sparsity else None
    if kth is not None:
        assert (score[mask].reshape(50, -1) <= kth.unsqueeze(1)).all()


def test_layer_scope_prunes_the_globally_lowest_scores() -> None:
    score = torch.randn(30, 40, generator=torch.Generator().manual_seed(3))
    score[0] -= 100  # row 0 is all unimportant: layer scope must take it whole
    mask = select_prune_mask(score, 0.5, Pattern(scope="layer"))
    assert mask.sum() == 600
    assert mask[0].all()
    assert score[mask].max() < score[~mask].min()


@pytest.mark.parametrize("text", ["4:4", "5:4", "0:4", "2-4", "abc", "2:"])
def test_bad_patterns_are_rejected(text: str) -> None:
    with pytest.raises(SlimpackError, match="pattern"):
        Pattern.parse(text)


def test_bad_scope_and_sparsity_are_rejected() -> None:
    with pytest.raises(SlimpackError, match="scope"):
        Pattern.parse("unstructured", scope="column")
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(SlimpackError, match=str(bad)):
            check_sparsity(bad)
    assert check_sparsity(0.0) == 0.0


def test_m_must_divide_the_input_features() -> None:
    Pattern.parse("2:4").check_features(64, "x")
    with pytest.raises(SlimpackError, match="M=3 does not divide its 64"):
        Pattern.parse("1:3").check_features(64, "x")
