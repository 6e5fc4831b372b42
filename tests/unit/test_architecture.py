"""`prune.architecture.DecoderAdapter` answers the architecture facts the exporters and stages need (q/k norms,
biases, tied embeddings, head size, KV heads); each answer is checked against the modules transformers builds
from a config of every registered model_type, in the variants the config can ask for."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.activations import ACT2FN

from prune.architecture import ADAPTERS, adapter_for, adapter_of

VARIANTS = {  # config overrides: each fact both ways where the architecture lets the config choose
    "plain": {},
    "tied, GQA, own head_dim": {"tie_word_embeddings": True, "num_key_value_heads": 1, "head_dim": 8},
    "biases": {"attention_bias": True, "mlp_bias": True},
}


def build(model_type: str, overrides: dict) -> torch.nn.Module:
    sizes = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 1, "num_attention_heads": 4,
             "num_key_value_heads": 4, "vocab_size": 64, "tie_word_embeddings": False}  # fmt: skip
    config = AutoConfig.for_model(model_type, **{**sizes, **overrides})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("model_type", ADAPTERS.names())
def test_the_adapter_answers_what_the_modules_are(model_type: str, variant: str) -> None:
    model = build(model_type, VARIANTS[variant])
    adapter, config = adapter_for(model), model.config
    assert adapter is adapter_of(config) and adapter.model_type == model_type
    block = adapter.blocks(model)[0]
    attn, mlp = block.self_attn, block.mlp
    assert adapter.qk_norm == hasattr(attn, "q_norm") == hasattr(attn, "k_norm")
    assert adapter.attention_biases(config) == (attn.q_proj.bias is not None) == (attn.k_proj.bias is not None)
    assert adapter.mlp_biases(config) == (mlp.down_proj.bias is not None)
    assert adapter.head_dim(config) * config.num_attention_heads == attn.q_proj.out_features
    assert adapter.kv_heads(config) * adapter.head_dim(config) == attn.k_proj.out_features
    assert adapter.tied_embeddings(config) == (model.lm_head.weight is model.get_input_embeddings().weight)
    assert type(mlp.act_fn) is type(ACT2FN[adapter.activation(config)])


def test_the_facts_differ_between_architectures() -> None:
    """The check above can fail: the registered answers are not all the same."""
    qwen3, qwen2, llama = (ADAPTERS.get(name) for name in ("qwen3", "qwen2", "llama"))
    assert qwen3.qk_norm and not llama.qk_norm
    config = build("qwen2", {}).config
    assert qwen2.attention_biases(config) and not llama.attention_biases(config)
