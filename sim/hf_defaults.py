"""What transformers assumes for the config.json keys a checkpoint leaves out, per model_type (sim/models.py reads
a config.json the way transformers -- and so vLLM, which loads configs through it -- reads it).

    from sim.hf_defaults import with_defaults, NON_GATED_MLP
    cfg = with_defaults(cfg)          # the config with its family's class defaults under it

Source: the configuration classes of transformers 5.24 (src/transformers/models/<type>/configuration_<type>.py;
`CONFIG_MAPPING[model_type]()` printed for each type below). Two things matter:
- tie_word_embeddings: PretrainedConfig's default is True, but most decoder classes set False; a config.json
  that omits it (Llama 4's text_config, many hand-trimmed copies) would otherwise price an untied LM head as
  tied (Llama-4-Scout: 1.03 B parameters, 2 GB of bf16 weights, missing).
- sizes: minimal configs (mlx-community conversions of Gemma 3; LLaVA's text_config) omit the keys whose value
  is the class default (Gemma3TextConfig: 8 heads, 4 KV heads, head_dim 256, vocab 262,208).
NON_GATED_MLP: families whose MLP is two matrices (up, down) rather than the gated three (gate, up, down) --
GPT-NeoX, Phi-1/2, StarCoder2, Falcon (dense_h_to_4h / dense_4h_to_h), Nemotron and Arcee (squared ReLU).
"""
from __future__ import annotations

# model_type -> class defaults of the keys sim/models.py reads (transformers 5.24)
_SIZES = {
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
              "num_attention_heads": 32},
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "sliding_window": 4096},
    "gemma3_text": {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 4096,
                    "sliding_window_pattern": 6},
}
_SIZES["gemma3"] = _SIZES["gemma3_text"]

_TIED = {"gemma", "gemma2", "gemma3", "gemma3_text", "starcoder2", "falcon", "cohere", "cohere2", "smollm3",
         "ernie4_5_moe", "qwen3_vl_moe_text", "qwen3_vl_text"}
_UNTIED = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next", "llama4",
           "llama4_text", "deepseek_v2", "deepseek_v3", "kimi_k2", "phi3", "phimoe", "glm4", "glm4_moe",
           "glm4_moe_lite", "phi", "gpt_neox", "olmo2", "olmoe", "granite", "granitemoe", "exaone", "minimax",
           "minimax_m2", "gpt_oss", "nemotron", "mistral3", "hunyuan_v1_moe", "dots1", "arcee", "seed_oss"}

NON_GATED_MLP = frozenset({"gpt_neox", "phi", "starcoder2", "falcon", "nemotron", "arcee"})


def with_defaults(cfg: dict) -> dict:
    """`cfg` over the class defaults of its model_type (unknown types: PretrainedConfig's tie_word_embeddings
    True only, as transformers reads them)."""
    model_type = str(cfg.get("model_type", ""))
    base = dict(_SIZES.get(model_type, {}))
    base["tie_word_embeddings"] = model_type in _TIED or model_type not in _UNTIED
    return {**base, **cfg}
