"""The walker on tiny random decoders, checked against an independent reference implementation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prune.architecture import ADAPTERS, adapter_for
from prune.errors import SlimpackError
from prune.masks import Pattern
from prune.methods import METHODS
from prune.models import tiny_llama
from prune.stats import ACCUMULATORS, Stats, gradient_norms
from prune.walker import walk


def run(model: nn.Module, method_name: str, batches, pattern: str = "unstructured", sparsity: float = 0.5, **kw):  # noqa: ANN001, ANN201
    adapter = adapter_for(model)
    method = METHODS.get(method_name)()
    plan = {name: sparsity for name in adapter.named_linears(model)}
    grads = (
        gradient_norms(model, adapter.named_linears(model), batches, progress=False) if method.needs_gradients else None
    )
    return walk(
        model, adapter, method, plan, Pattern.parse(pattern, method.default_scope), batches, grads, progress=False, **kw
    )


def reference_prune(model: nn.Module, method_name: str, batches, true_sequential: bool = False) -> None:  # noqa: ANN001
    """Independent reference: for each (block, group) in order, run the *whole* partially pruned
    model on the calibration data to collect the group's statistics, then compress it."""
    adapter = adapter_for(model)
    method = METHODS.get(method_name)()
    pattern = Pattern.parse("unstructured", method.default_scope)
    for i, block in enumerate(adapter.blocks(model)):
        linears = adapter.linears(block)
        groups = adapter.groups if true_sequential else (tuple(linears),)
        for group in groups:
            accs = {n: {k: ACCUMULATORS[k](linears[n].in_features, "cpu") for k in method.needs} for n in group}

            def feed(module: nn.Module, args: tuple, output: torch.Tensor, n: str = "") -> None:
                for acc in accs[n].values():
                    acc.update(args[0])

            handles = [linears[n].register_forward_hook(lambda m, a, o, n=n: feed(m, a, o, n)) for n in group]
            with torch.no_grad():
                for ids in batches:
                    model(input_ids=ids, use_cache=False)
            for h in handles:
                h.remove()
            for n in group:
                method.compress(linears[n], Stats({k: a.result() for k, a in accs[n].items()}), 0.5, pattern)


def no_hooks(model: nn.Module) -> bool:
    return all(
        not (m._forward_hooks or m._forward_pre_hooks or m._forward_pre_hooks_with_kwargs) for m in model.modules()
    )


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("true_sequential", [False, True])
def test_walker_matches_the_reference(method: str, true_sequential: bool, calib_batches) -> None:  # noqa: ANN001
    walked, ref = tiny_llama(num_layers=3), tiny_llama(num_layers=3)
    run(walked, method, calib_batches, true_sequential=true_sequential)
    reference_prune(ref, method, calib_batches, true_sequential=true_sequential)
    for (name, a), b in zip(walked.named_parameters(), ref.parameters()):
        assert torch.equal(a == 0, b == 0), name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("method", METHODS.names())
def test_every_method_walks_deterministically_and_leaves_no_hooks(method: str, calib_batches) -> None:  # noqa: ANN001
    a, b = tiny_llama(seed=3), tiny_llama(seed=3)
    run(a, method, calib_batches, pattern="2:4")
    run(b, method, calib_batches, pattern="2:4")
    assert no_hooks(a)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    for lin in adapter_for(a).named_linears(a).values():
        assert ((lin.weight.reshape(lin.out_features, -1, 4) == 0).sum(-1) == 2).all()


@pytest.mark.parametrize("method", ["magnitude", "wanda", "pruner-zero"])
def test_pruned_logits_equal_a_model_masked_directly(method: str, calib_batches) -> None:  # noqa: ANN001
    walked = tiny_llama(seed=4)
    direct = copy.deepcopy(walked)
    run(walked, method, calib_batches, sparsity=0.6)
    adapter = adapter_for(walked)
    masks = {n: lin.weight == 0 for n, lin in adapter.named_linears(walked).items()}
    for n, lin in adapter.named_linears(direct).items():
        lin.weight.data.masked_fill_(masks[n], 0.0)
    ids = calib_batches[0]
    with torch.no_grad():
        torch.testing.assert_close(walked(ids).logits, direct(ids).logits, rtol=0, atol=0)
    # 60 % per linear: the walker pruned every prunable weight matrix and nothing else
    for n, m in masks.items():
        assert m.float().mean().item() == pytest.approx(0.6, abs=0.01), n
    assert (walked.lm_head.weight != 0).all() and (walked.model.embed_tokens.weight != 0).all()


def test_hooks_are_removed_when_a_method_fails(calib_batches) -> None:  # noqa: ANN001
    model = tiny_llama()

    class Boom:
        name, needs, needs_gradients, default_scope = "boom", ("input_norm",), False, "row"
        modifies_weights, solver = True, False

        def compress(self, *a: object) -> None:
            raise RuntimeError("boom")

    adapter = adapter_for(model)
    plan = {n: 0.5 for n in adapter.named_linears(model)}
    with pytest.raises(RuntimeError, match="boom"):
        walk(model, adapter, Boom(), plan, Pattern(), calib_batches, progress=False)  # type: ignore[arg-type]
    assert no_hooks(model)


@pytest.mark.parametrize("model_type", ["mistral", "qwen2", "qwen3"])
def test_other_registered_architectures_walk(model_type: str, calib_batches) -> None:  # noqa: ANN001
    assert model_type in ADAPTERS
    model = tiny_llama(model_type=model_type)
    run(model, "sparsegpt", calib_batches)
    for lin in adapter_for(model).named_linears(model).values():
        assert (lin.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_unsupported_architecture_names_the_supported_ones() -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    gpt2 = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(SlimpackError, match="unsupported architecture 'gpt2'.*llama, mistral, qwen2"):
        adapter_for(gpt2)
