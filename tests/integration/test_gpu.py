"""CUDA paths: the walker on the GPU gives the CPU's masks. Skipped cleanly without a GPU."""

import pytest
import torch

from prune.architecture import adapter_for
from prune.masks import Pattern
from prune.methods import METHODS
from prune.models import tiny_llama
from prune.walker import walk

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_walker_on_cuda_matches_cpu(method: str, calib_batches) -> None:  # noqa: ANN001
    results = []
    for device in ("cpu", "cuda"):
        model = tiny_llama(seed=5)
        adapter = adapter_for(model)
        m = METHODS.get(method)()
        plan = {n: 0.5 for n in adapter.named_linears(model)}
        walk(model, adapter, m, plan, Pattern.parse("2:4"), calib_batches, device=device, progress=False)
        results.append({n: lin.weight.detach().cpu() for n, lin in adapter.named_linears(model).items()})
    for name in results[0]:
        agree = ((results[0][name] == 0) == (results[1][name] == 0)).float().mean().item()
        assert agree > 0.99, name


def test_semi24_checkpoint_on_cuda_matches_dense(tmp_path, tiny_dir) -> None:  # noqa: ANN001
    """The semi24 loader on CUDA: SparseSemiStructuredTensor weights, logits equal the dense fp16 model's."""
    from torch.sparse import SparseSemiStructuredTensor

    from export.api import ExportConfig, export_model
    from export.semi24 import load_semi24
    from runtime_bench.cli import main

    pruned = tmp_path / "p24"
    assert (
        main(
            ["-q", "prune", "--model", str(tiny_dir), "--method", "magnitude", "--pattern", "2:4", "--out", str(pruned)]
        )
        == 0
    )
    export_model(ExportConfig(str(pruned), "semi24", tmp_path / "semi24"))
    sparse = load_semi24(tmp_path / "semi24", device="cuda")
    dense = load_semi24(tmp_path / "semi24").to("cuda")
    assert isinstance(sparse.model.layers[0].mlp.down_proj.weight, SparseSemiStructuredTensor)
    ids = torch.randint(0, 200, (4, 64), device="cuda")
    with torch.inference_mode():
        a, b = sparse(input_ids=ids).logits.float(), dense(input_ids=ids).logits.float()
    assert (a - b).abs().max() <= 2e-2 * b.abs().max()
