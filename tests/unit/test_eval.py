import math

import torch

from prune.eval import perplexity
from prune.models import tiny_llama


def test_perplexity_is_exp_mean_token_nll_and_batch_invariant() -> None:
    model = tiny_llama()
    windows = torch.randint(0, 256, (5, 20), generator=torch.Generator().manual_seed(0))
    r1 = perplexity(model, windows, batch_size=1, progress=False)
    r3 = perplexity(model, windows, batch_size=3, progress=False)
    with torch.no_grad():
        losses = [model(input_ids=w[None], labels=w[None]).loss.item() for w in windows]
    assert r1.tokens == 5 * 19 and r1.windows == 5 and r1.seqlen == 20
    assert math.isclose(r1.perplexity, math.exp(sum(losses) / len(losses)), rel_tol=1e-5)
    assert math.isclose(r1.perplexity, r3.perplexity, rel_tol=1e-5)
    # a random model over 256 tokens is near-uniform: perplexity close to the vocabulary size
    assert 150 < r1.perplexity < 400
