"""Every config.json in sim/validation/configs through the public loader (sim.models.model_from_config, what a
`sim.model: {config: ...}` section runs), checked against facts from outside the loader: the model cards' parameter
counts, KV bytes per token worked out by hand, and a short simulation on enough H200s to hold the weights.

    PYTHONPATH=. /work/venv/bin/python -m pytest -q tests/sim/test_model_configs.py -p no:cacheprovider

Sources of each file: sim/validation/configs/README.md. Published counts: the Hugging Face model cards (the
"Model size" the hub computes from the safetensors, or the card's own numbers), keras-hub's presets (exact counts
of the Gemma 3 text decoders and Phi-3-mini: keras_hub/src/models/{gemma3,phi3}/*_presets.py), the Kimi K2 and
DeepSeek-V3 technical reports.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.config_sim import ModelSpec
from lab.errors import LabError
from sim.hardware import get_hardware
from sim.hf_defaults import with_defaults
from sim.models import from_hf_config, model_from_config, text_config
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim

CONFIG_DIR = Path(__file__).resolve().parents[2] / "sim/validation/configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.json"))
NEEDS_DTYPE = {"gemma-3-27b-it-mlx-4bit"}  # an MLX checkpoint's config: priced only at a dtype the YAML names


def load(stem: str):
    spec = ModelSpec(config=str(CONFIG_DIR / f"{stem}.json"), dtype="bf16" if stem in NEEDS_DTYPE else None)
    return model_from_config(spec)


def test_there_are_at_least_50_configs_of_20_families():
    families = {json.loads(p.read_text()).get("model_type") or "?" for p in CONFIGS}
    assert len(CONFIGS) >= 50 and len(families) >= 20, (len(CONFIGS), sorted(families))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_with_consistent_shapes(path):
    m = load(path.stem)
    assert 0 < m.active_params_b <= m.params_b
    assert m.weight_bytes > 0 and m.active_weight_bytes <= m.weight_bytes + 1
    if m.kv_dim_override:  # MLA: one latent per layer, whatever the head count
        assert m.kv_bytes_per_token == m.kv_layers * m.kv_dim_override * m.kv_bytes_per_elem
    else:  # GQA: every KV head serves a whole group of query heads
        assert m.n_heads % m.n_kv_heads == 0, (m.n_heads, m.n_kv_heads)
        assert m.kv_bytes_per_token == m.kv_layers * 2 * m.n_kv_heads * m.head_dim * m.kv_bytes_per_elem
    if m.moe_experts:
        assert 0 < m.expert_params_b < m.params_b and 0 < m.n_moe_layers <= m.n_layers
        assert m.params_b - m.active_params_b == pytest.approx(m.expert_params_b * (1 - m.moe_top_k / m.moe_experts)
                                                               + (0 if _tied(path) else m.vocab * m.hidden / 1e9))


def _tied(path: Path) -> bool:
    """Whether the config ties its LM head to the input embedding (as transformers reads it: its class default when
    the key is absent)."""
    return bool(with_defaults(text_config(json.loads(path.read_text())))["tie_word_embeddings"])


# (config, published total B, published active B, what the published active counts, relative tolerance, source)
# "all": every parameter a token's matmuls touch plus the input embedding (DeepSeek-V3's 37B, Mixtral's 12.9B);
# "matmuls": the LM head in, the input embedding (a row lookup) out -- the simulator's own active_params_b;
# "no_vocab": neither the embedding nor the LM head (GLM's 12B / 32B)
PUBLISHED = [
    ("llama-3.2-3b", 3.21, None, None, 0.01, "meta-llama/Llama-3.2-3B card: 3.21B"),
    ("qwen2.5-3b", 3.09, None, None, 0.01, "Qwen/Qwen2.5-3B card: 3.09B"),
    ("qwen3-4b", 4.02, None, None, 0.01, "Qwen/Qwen3-4B card: 4.0B"),
    ("qwen3-32b", 32.8, None, None, 0.01, "Qwen/Qwen3-32B card: 32.8B"),
    ("yi-34b", 34.4, None, None, 0.01, "01-ai/Yi-34B hub: 34.4B"),
    ("mistral-nemo-12b", 12.2, None, None, 0.01, "mistralai/Mistral-Nemo-Instruct-2407 hub: 12.2B"),
    ("phi-3-mini-4k-instruct", 3.821079552, None, None, 0.001, "keras-hub phi3_mini_4k_instruct_en: 3,821,079,552"),
    ("gemma-3-4b-it-mlx-bf16", 3.880099328, None, None, 0.001, "keras-hub gemma3_4b_text: 3,880,099,328"),
    ("gemma-3-12b-it", 11.765788416, None, None, 0.001, "keras-hub gemma3_12b_text: 11,765,788,416"),
    ("gemma-3-27b-it-mlx-4bit", 27.0, None, None, 0.02, "google/gemma-3-27b-it: 27B (text decoder; vision 0.4B)"),
    ("gemma-2-27b-it", 27.2, None, None, 0.01, "google/gemma-2-27b-it hub: 27.2B"),
    ("mixtral-8x7b-instruct-v0.1", 46.7, 12.9, "all", 0.01, "Mixtral of Experts (arXiv 2401.04088): 47B / 13B"),
    ("qwen2-57b-a14b", 57.4, 14.0, "all", 0.02, "Qwen/Qwen2-57B-A14B card: 57B total, 14B activated"),
    ("deepseek-coder-v2-lite-base", 15.7, 2.4, "matmuls", 0.03, "DeepSeek-Coder-V2-Lite card: 16B / 2.4B active"),
    ("glm-4.5-air", 106.0, 12.0, "no_vocab", 0.02, "zai-org/GLM-4.5-Air card: 106B total, 12B active"),
    ("glm-4.7", 355.0, 32.0, "no_vocab", 0.01, "zai-org/GLM-4.7 (GLM-4.5 shape) card: 355B total, 32B active"),
    ("glm-4.7-flash", 30.0, 3.0, "no_vocab", 0.10, "zai-org/GLM-4.7-Flash: 30B-A3B (rounded in the name)"),
    ("kimi-k2-instruct", 1040.0, 32.6, "all", 0.015, "Kimi K2 tech report (arXiv 2507.20534): 1.04T / 32.6B"),
    ("kimi-k2.5", 1040.0, 32.6, "all", 0.015, "moonshotai/Kimi-K2.5: K2's decoder (+ a 0.4B vision tower)"),
    ("llama-4-maverick-17b-128e-instruct", 400.0, 17.0, "all", 0.01, "Llama 4 model card: 400B / 17B active"),
    ("llama-4-scout-17b-16e-instruct", 109.0, 17.0, "all", 0.015, "Llama 4 model card: 109B / 17B active"),
    ("qwen3-vl-235b-a22b-thinking", 235.0, 22.0, "all", 0.01, "Qwen3-VL-235B-A22B: text decoder 235B / 22B"),
    ("minimax-m2.7", 230.0, 10.0, "matmuls", 0.05, "MiniMaxAI/MiniMax-M2 card: 230B total, 10B active"),
    ("qwen3-30b-a3b", 30.5, 3.3, "all", 0.01, "Qwen/Qwen3-30B-A3B card: 30.5B / 3.3B activated"),
    ("qwen3-235b-a22b-instruct-2507", 235.0, 22.0, "all", 0.02, "Qwen3-235B-A22B card: 235B / 22B activated"),
    ("deepseek-r1-0528", 671.0, 37.0, "all", 0.01, "DeepSeek-V3 tech report: 671B / 37B activated"),
    ("gpt-oss-120b", 116.8, 5.13, "matmuls", 0.01, "gpt-oss model card (arXiv 2508.10925): 116.83B total, 5.13B active"),
    ("gpt-oss-20b", 20.9, 3.61, "matmuls", 0.01, "gpt-oss model card (arXiv 2508.10925): 20.91B total, 3.61B active"),
    ("qwen3-next-80b-a3b-instruct", 80.0, 3.0, "no_vocab", 0.10, "Qwen3-Next-80B-A3B card: 80B / 3B activated"),
    ("llama-3.1-8b-instruct", 8.03, None, None, 0.01, "meta-llama/Llama-3.1-8B hub: 8.03B"),
    ("llama-3.3-70b-instruct", 70.6, None, None, 0.01, "meta-llama/Llama-3.3-70B hub: 70.6B"),
    ("mistral-7b-instruct-v0.3", 7.25, None, None, 0.01, "mistralai/Mistral-7B-Instruct-v0.3 hub: 7.25B"),
    ("qwen2.5-7b", 7.61, None, None, 0.01, "Qwen/Qwen2.5-7B card: 7.61B"),
    ("qwen2.5-1.5b-instruct", 1.54, None, None, 0.01, "Qwen/Qwen2.5-1.5B-Instruct card: 1.54B"),
    ("qwen2.5-32b", 32.5, None, None, 0.01, "Qwen/Qwen2.5-32B card: 32.5B"),
    ("phi-4", 14.7, None, None, 0.01, "microsoft/phi-4 hub: 14.7B"),
    ("gemma-2-9b-it", 9.24, None, None, 0.01, "google/gemma-2-9b-it hub: 9.24B"),
    ("ministral-3-8b-2512", 8.4, None, None, 0.015,
     "Ministral 3 8B card: 8.4B language model + 0.4B vision encoder (the encoder not modelled)"),
    ("qwen3.5-397b-a17b", 397.0, 17.0, "all", 0.01, "Qwen/Qwen3.5-397B-A17B: 397B total, 17B activated (name)"),
    # (its "~11B active" is not compared: the abridged copy leaves tie_word_embeddings out, 10.3B tied, 10.9B untied)
    ("step-3.7-flash", 196.0, None, None, 0.01,
     "vLLM recipe stepfun-ai/Step-3.7-Flash: 196B language backbone (+ 1.8B vision encoder), ~11B active"),
]


@pytest.mark.parametrize("stem,total,active,counts,tol,source", PUBLISHED, ids=[r[0] for r in PUBLISHED])
def test_parameters_match_the_published_count(stem, total, active, counts, tol, source):
    m = load(stem)
    assert m.params_b == pytest.approx(total, rel=tol), source
    if active is None:
        return
    vocab_b = m.vocab * m.hidden / 1e9
    embed_b = 0.0 if _tied(CONFIG_DIR / f"{stem}.json") else vocab_b  # an untied input embedding: not a matmul
    ours = {"all": m.active_params_b + embed_b, "matmuls": m.active_params_b,
            "no_vocab": m.active_params_b - vocab_b}[counts]
    assert ours == pytest.approx(active, rel=max(tol, 0.03)), source


def test_published_table_covers_every_new_config():
    named = {row[0] for row in PUBLISHED}
    new = {"llama-3.2-3b", "qwen2.5-3b", "qwen3-4b", "qwen3-32b", "yi-34b", "mistral-nemo-12b", "phi-3-mini-4k-instruct",
           "gemma-3-4b-it-mlx-bf16", "gemma-3-12b-it", "gemma-3-27b-it-mlx-4bit", "gemma-2-27b-it",
           "mixtral-8x7b-instruct-v0.1", "qwen2-57b-a14b", "deepseek-coder-v2-lite-base", "glm-4.5-air", "glm-4.7",
           "glm-4.7-flash", "kimi-k2-instruct", "kimi-k2.5", "llama-4-maverick-17b-128e-instruct",
           "qwen3-vl-235b-a22b-thinking", "minimax-m2.7"}
    assert new <= named and new <= {p.stem for p in CONFIGS}


def test_session_36_configs_are_checked():
    assert {"qwen3.5-397b-a17b", "step-3.7-flash"} <= {row[0] for row in PUBLISHED} & {p.stem for p in CONFIGS}


# KV bytes per token worked out by hand from each config's keys (bf16 cache: 2 bytes a value)
KV_BY_HAND = [
    ("llama-3.2-3b", 28 * 2 * 8 * 128 * 2),  # GQA, head_dim given
    ("qwen2.5-3b", 36 * 2 * 2 * (2048 // 16) * 2),  # GQA, head_dim = hidden / heads
    ("mistral-nemo-12b", 40 * 2 * 8 * 128 * 2),  # head_dim 128 given, not 5120 / 32 = 160
    ("qwen3-vl-235b-a22b-thinking", 94 * 2 * 4 * 128 * 2),  # text_config nesting
    ("kimi-k2-instruct", 61 * (512 + 64) * 2),  # MLA: kv_lora_rank + qk_rope_head_dim per layer
    ("deepseek-coder-v2-lite-base", 27 * (512 + 64) * 2),  # MLA without a q_lora_rank
    ("glm-4.7-flash", 47 * (512 + 64) * 2),  # MLA in GLM (head_dim / KV heads in the file do not count)
    ("gemma-3-12b-it", 48 * 2 * 8 * 256 * 2),
    ("gemma-3-4b-it-mlx-bf16", 34 * 2 * 4 * 256 * 2),  # heads, KV heads, head_dim: Gemma3TextConfig's defaults
    ("gemma-2-27b-it", 46 * 2 * 16 * 128 * 2),
    ("phi-3-mini-4k-instruct", 32 * 2 * 32 * (3072 // 32) * 2),
    ("minimax-m2.7", 62 * 2 * 8 * 128 * 2),
    ("ministral-3-8b-2512", 34 * 2 * 8 * 128 * 2),  # text_config of a Mistral 3 wrapper
    ("qwen3.5-397b-a17b", 15 * 2 * 2 * 256 * 2),  # 15 full-attention layers of 60 hold KV (45 Gated DeltaNet)
    ("step-3.7-flash", 45 * 2 * 8 * 128 * 2),
]


@pytest.mark.parametrize("stem,kv", KV_BY_HAND, ids=[r[0] for r in KV_BY_HAND])
def test_kv_bytes_per_token_by_hand(stem, kv):
    assert load(stem).kv_bytes_per_token == kv


@pytest.mark.parametrize("stem,window,sliding,n_layers", [
    ("gemma-3-12b-it", 1024, 40, 48),  # sliding_window_pattern 6: every sixth layer full
    ("gemma-3-4b-it-mlx-bf16", 1024, 29, 34),  # pattern absent: Gemma3TextConfig's default 6
    ("gemma-2-27b-it", 4096, 23, 46),  # Gemma 2: alternate layers
    ("phi-3-mini-4k-instruct", 2047, 32, 32),  # Mistral-style: every layer
    ("mistral-nemo-12b", None, 0, 40),  # sliding_window null
    ("llama-4-maverick-17b-128e-instruct", 8192, 36, 48),  # chunked attention on 3 of 4 layers
    ("step-3.7-flash", 512, 33, 45),  # layer_types: 3 sliding of every 4, 12 full
])
def test_sliding_windows(stem, window, sliding, n_layers):
    m = load(stem)
    assert (m.sliding_window, m.sliding_layers, m.n_layers) == (window, sliding, n_layers)
    if window:  # a 32K context: the sliding layers read `window` tokens, the rest all of it
        assert m.attended_context(32768) == pytest.approx(((n_layers - sliding) * 32768 + sliding * window) / n_layers)


def test_untied_lm_head_when_the_config_omits_the_key():
    """Llama 4's text_config leaves tie_word_embeddings out; Llama4TextConfig's default is False (an LM head of its
    own: 202,048 x 5,120 = 1.03 B parameters more than a tied one)."""
    m = load("llama-4-maverick-17b-128e-instruct")
    assert m.params_b == pytest.approx(400.71, abs=0.01)


def _tp_for(m) -> int:
    """Fewest H200s (a power of two dividing the attention heads, and the KV heads or a multiple of them, as vLLM
    requires: sim/cost.check_tp_split) that hold the weights in 85% of their memory."""
    for tp in (1, 2, 4, 8, 16, 32, 64):
        if m.weight_bytes <= 0.85 * tp * 141e9 and m.n_heads % tp == 0 and (
                m.kv_dim_override or m.n_kv_heads % tp == 0 or tp % m.n_kv_heads == 0):
            return tp
    raise AssertionError(f"{m.name}: no tp holds it")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_short_simulation_runs(path):
    m = load(path.stem)
    tp = _tp_for(m)
    model = {"config": str(path)} | ({"dtype": "bf16"} if path.stem in NEEDS_DTYPE else {})
    sim = make_sim(hardware={"preset": "h200", "tp": tp}, model=model,
                   workload={"kind": "closed_loop", "concurrency": 4, "duration_s": 4, "warmup_s": 0.5,
                             "lengths": {"source": "fixed", "prompt_tokens": 300, "output_tokens": 40}})
    res = simulate(prepare_inputs(sim), "ar", None, 0)
    s = res.summary
    assert s["finished"] > 0 and s["unfinished"] == 0 and s["kv_capacity_tokens"] >= 4 * 340
    # a decode step of 4 requests reads at least the weights they touch (one GPU's share) at the HBM bandwidth,
    # and no model here needs 10x that plus 30 ms a token at 4 users
    floor_ms = m.weight_bytes_read(4) / tp / (get_hardware("h200").mem_bw_tbs * 1e12) * 1e3
    assert floor_ms <= s["tpot_ms_p50"] <= 10 * floor_ms + 30, (floor_ms, s["tpot_ms_p50"])


# -- what the loader refuses: one line naming the file and the key --------------------------------------------

TINY = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 99}


@pytest.mark.parametrize("extra,needle", [
    ({"attn_layer_period": 8, "attn_layer_offset": 4}, "'attn_layer_period' describes Jamba-style"),
    ({"hybrid_override_pattern": "M-M*"}, "'hybrid_override_pattern'"),
    ({"layer_types": ["mamba", "full_attention", "mamba", "full_attention"]}, "'layer_types' has ['mamba']"),
    ({"attn_type_list": [0, 0, 0, 1]}, "'attn_type_list' has lightning"),
    ({"is_encoder_decoder": True}, "'is_encoder_decoder' is true"),
    ({"quantization": {"group_size": 64, "bits": 4}}, "'quantization' is an MLX checkpoint's"),
    ({"hidden_size_per_layer_input": 256}, "'hidden_size_per_layer_input'"),
    ({"moe_num_experts": 8, "moe_k": 2, "moe_layer_start_index": 1}, "'moe_layer_start_index' describes Ernie"),
])
def test_unsupported_architectures_fail_with_one_line(tmp_path, extra, needle):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **extra}))
    with pytest.raises(LabError) as err:
        from_hf_config(path)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message


# session 36: public configs of architectures whose attention (or layer shapes) the cost model does not know; each
# must fail with one line naming the file and the key, not be priced as dense attention (sources: configs/README.md)
REFUSED_DIR = CONFIG_DIR / "refused"
REFUSED = [
    ("deepseek-v4-flash-fp8", "'compress_ratios' describes DeepSeek-V4 compressed sparse attention"),
    ("deepseek-v4-pro-fp8", "'compress_ratios' describes DeepSeek-V4 compressed sparse attention"),
    ("glm-5.2-fp8", "'index_topk' describes DeepSeek Sparse Attention"),
    ("glm-5-fp8", "model_type 'glm_moe_dsa' (GLM-5) uses DeepSeek Sparse Attention"),  # a copy without index_topk
    ("minimax-m3", "'sparse_attention_config' turns on block-sparse attention"),
    ("laguna-xs.2-fp8", "'num_attention_heads_per_layer' describes attention head counts that differ by layer"),
]


@pytest.mark.parametrize("stem,needle", REFUSED, ids=[r[0] for r in REFUSED])
def test_public_configs_of_unpriced_attention_are_refused(stem, needle):
    path = REFUSED_DIR / f"{stem}.json"
    with pytest.raises(LabError) as err:
        model_from_config(ModelSpec(config=str(path)))
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message
    assert {p.stem for p in REFUSED_DIR.glob("*.json")} == {r[0] for r in REFUSED}


@pytest.mark.parametrize("extra,needle", [
    ({"block_configs": [{"attention": {"n_heads_in_group": 8}, "ffn": {"ffn_mult": 2.0}}] * 4}, "'block_configs'"),
    ({"model_type": "deepseek_v32", "kv_lora_rank": 512}, "'deepseek_v32' (DeepSeek-V3.2)"),
    ({"num_experts": 4, "num_experts_per_tok": 2, "mlp_layer_types": ["dense", "sparse"]}, "'mlp_layer_types' must"),
])
def test_more_unpriced_shapes_fail_with_one_line(tmp_path, extra, needle):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY, **extra}))
    with pytest.raises(LabError) as err:
        from_hf_config(path)
    assert needle in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_mlp_layer_types_place_the_dense_layers_and_a_step_shared_expert_is_read(tmp_path):
    """transformers 5's mlp_layer_types ("dense" / "sparse" per layer) decides which layers hold routed experts
    (Laguna, GLM-5.x); Step-3's share_expert_dim is its shared expert's width."""
    moe = {**TINY, "intermediate_size": 256, "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**moe, "mlp_layer_types": ["dense", "sparse", "sparse", "dense"]}))
    m = from_hf_config(path)
    assert m.moe_layers == 2 and m.expert_params_b * 1e9 == 2 * 8 * 3 * 64 * 32
    path.write_text(json.dumps(moe))
    assert from_hf_config(path).moe_layers == 4
    path.write_text(json.dumps({**moe, "share_expert_dim": 48}))
    shared = from_hf_config(path)
    path.write_text(json.dumps({**moe, "share_expert_dim": 48, "n_shared_experts": 1}))
    both = from_hf_config(path)
    assert both.params_b == pytest.approx(shared.params_b)  # the width is given: the count does not multiply it
    path.write_text(json.dumps(moe))
    assert (shared.params_b - from_hf_config(path).params_b) * 1e9 == pytest.approx(4 * 3 * 64 * 48)


def test_minimax_m2_full_attention_list_is_accepted_and_mlx_config_prices_at_the_yaml_dtype():
    assert load("minimax-m2.7").moe_experts == 256  # attn_type_list of all 1s: softmax attention everywhere
    with pytest.raises(LabError, match="'quantization' is an MLX checkpoint's"):
        model_from_config(ModelSpec(config=str(CONFIG_DIR / "gemma-3-27b-it-mlx-4bit.json")))
    assert load("gemma-3-27b-it-mlx-4bit").dtype == "bf16"


def test_llm_config_and_language_config_nesting(tmp_path):
    """InternVL keeps its decoder in llm_config, DeepSeek-VL2 in language_config: read like text_config."""
    inner = {**TINY, "model_type": "qwen2", "num_key_value_heads": 2}
    for key in ("llm_config", "language_config", "text_config"):
        path = tmp_path / f"{key}.json"
        path.write_text(json.dumps({"model_type": "wrapper", key: inner, "vision_config": {"hidden_size": 9}}))
        m = from_hf_config(path)
        assert (m.hidden, m.n_kv_heads, m.n_layers) == (64, 2, 4)


def test_non_gated_mlp_and_falcon_multi_query(tmp_path):
    """Falcon-7B's shape (hidden 4544, 71 heads, 32 layers, vocab 65024, no intermediate_size: 4 x hidden,
    dense_h_to_4h / dense_4h_to_h, one shared KV head under multi_query, tied embeddings): 6.9 B parameters as
    its card says (6.92 B), KV 32 x 2 x 64 values a token; priced with a gated MLP it would read 9.6 B."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "falcon", "hidden_size": 4544, "num_attention_heads": 71,
                                "num_hidden_layers": 32, "vocab_size": 65024, "multi_query": True,
                                "new_decoder_architecture": False}))
    m = from_hf_config(path)
    assert m.params_b == pytest.approx(6.92, rel=0.01) and m.n_kv_heads == 1
    assert m.kv_bytes_per_token == 32 * 2 * 1 * 64 * 2
    two, three = tmp_path / "two.json", tmp_path / "three.json"
    two.write_text(json.dumps({**TINY, "model_type": "starcoder2", "intermediate_size": 256, "tie_word_embeddings": True}))
    three.write_text(json.dumps({**TINY, "model_type": "llama", "intermediate_size": 256, "tie_word_embeddings": True}))
    assert round((from_hf_config(three).params_b - from_hf_config(two).params_b) * 1e9) == 4 * 64 * 256  # a matrix


def test_moe_key_aliases_and_one_shared_expert_named_twice(tmp_path):
    """Other names for the same MoE numbers: gpt-oss's experts_per_token, Ernie's moe_num_experts / moe_k; a config
    that gives a shared expert's width and its count (1) holds one shared expert, not two."""
    base = {**TINY, "model_type": "x", "tie_word_embeddings": True, "moe_intermediate_size": 16}
    counted, named_twice, aliased = (tmp_path / f"{n}.json" for n in ("a", "b", "c"))
    counted.write_text(json.dumps({**base, "num_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1}))
    named_twice.write_text(json.dumps({**base, "num_experts": 8, "num_experts_per_tok": 2, "num_shared_experts": 1,
                                       "moe_shared_expert_intermediate_size": 16}))
    aliased.write_text(json.dumps({**base, "moe_num_experts": 8, "moe_k": 2, "moe_num_shared_experts": 1}))
    a, b, c = (from_hf_config(p) for p in (counted, named_twice, aliased))
    assert a.params_b == b.params_b == c.params_b and (c.moe_experts, c.moe_top_k) == (8, 2)
    # one shared expert (3 x 64 x 16) over the routed ones' 8 x 3 x 64 x 16 and the router's 64 x 8, per layer
    dense = from_hf_config(_write(tmp_path / "d.json", {**base}))
    assert round((a.params_b - dense.params_b) * 1e9) == 4 * (9 * 3 * 64 * 16 + 64 * 8 - 3 * 64 * 4 * 64)


# Hunyuan-A13B's MoE numbers as its config.json gives them: one entry per layer (4 layers here), all equal
HUNYUAN = {**TINY, "model_type": "hunyuan_v1_moe", "intermediate_size": 48, "num_experts": 8, "use_mixed_mlp_moe": True,
           "moe_topk": [2] * 4, "num_shared_expert": [1] * 4, "moe_intermediate_size": [16] * 4, "use_cla": False}


@pytest.mark.parametrize("key,value", [
    ("moe_topk", [2, 2, 1, 2]), ("moe_intermediate_size", [16, 16, 32, 16]), ("num_shared_expert", [1, 0, 1, 1]),
    ("num_key_value_heads", [4, 2, 4, 2]), ("head_dim", [16, 8, 16, 8]), ("sliding_window", [64, 128, 64, 128]),
    ("head_dim", []),
])
def test_per_layer_values_that_differ_fail_with_one_line_naming_the_key(tmp_path, key, value):
    """Any number the loader reads once for every layer, given as a list whose entries differ (or none), is one
    line naming the file, the key and that per-layer values are not supported -- not 'must be a positive integer'
    with the whole list, and never a window silently dropped."""
    path = _write(tmp_path / "config.json", {**HUNYUAN, key: value})
    with pytest.raises(LabError) as err:
        from_hf_config(path)
    message = str(err.value)
    assert str(path) in message and f"{key!r} is a list" in message and "\n" not in message, message
    assert "per-layer values are not supported" in message, message


@pytest.mark.parametrize("key", ["decoder_sparse_step", "interleave_moe_layer_step", "first_k_dense_replace"])
def test_a_whole_model_setting_given_as_a_list_fails_with_one_line(tmp_path, key):
    path = _write(tmp_path / "config.json", {**HUNYUAN, key: [1] * 4})
    with pytest.raises(LabError) as err:
        from_hf_config(path)
    assert str(path) in str(err.value) and f"{key!r} is a list" in str(err.value) and "whole model" in str(err.value)


def test_per_layer_lists_of_equal_entries_read_as_the_one_value_with_hunyuans_shared_mlp(tmp_path):
    """Hunyuan-A13B gives moe_topk / num_shared_expert / moe_intermediate_size per layer, every entry equal: the
    same shape as the one numbers. Its shared MLP is intermediate_size x num_shared_expert wide (vLLM's
    hunyuan_v1.py HunYuanSparseMoeBlock, use_mixed_mlp_moe), counted; Hunyuan-Large's cross-layer attention
    (use_cla, cla_share_factor 2) is refused."""
    listed = from_hf_config(_write(tmp_path / "lists.json", HUNYUAN))
    scalars = {**HUNYUAN, "moe_topk": 2, "num_shared_expert": 1, "moe_intermediate_size": 16}
    one = from_hf_config(_write(tmp_path / "one.json", scalars))
    assert listed.params_b == one.params_b and listed.active_params_b == one.active_params_b
    assert (listed.moe_experts, listed.moe_top_k, listed.moe_intermediate) == (8, 2, 16)
    unshared = from_hf_config(_write(tmp_path / "unshared.json", {**scalars, "use_mixed_mlp_moe": False}))
    assert round((one.params_b - unshared.params_b) * 1e9) == 4 * 3 * 64 * 48  # intermediate_size wide, 4 layers
    two = from_hf_config(_write(tmp_path / "two.json", {**scalars, "num_shared_expert": [2] * 4}))
    assert round((two.params_b - unshared.params_b) * 1e9) == 4 * 3 * 64 * 96
    cla = _write(tmp_path / "cla.json", {**HUNYUAN, "use_cla": True, "cla_share_factor": 2})
    with pytest.raises(LabError, match="'use_cla' is true with cla_share_factor 2"):
        from_hf_config(cla)


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(json.dumps(cfg))
    return path


# -- the dtype vLLM serves a checkpoint in ----------------------------------------------------------------------

@pytest.mark.parametrize("stored,served", [("float32", "bf16"), (None, "bf16"), ("bfloat16", "bf16"),
                                           ("float16", "fp16")])
def test_a_float32_checkpoint_is_served_in_16_bits(tmp_path, stored, served):
    """vLLM's --dtype auto downcasts a float32 checkpoint (or one that names no dtype) to a 16-bit dtype
    (_resolve_auto_dtype): its weights and KV cost 2 bytes a value, not 4; sim.model.dtype fp32 keeps 4."""
    cfg = {**TINY, "torch_dtype": stored} if stored else dict(TINY)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    m = model_from_config(ModelSpec(config=str(path)))
    assert m.dtype == served and m.kv_dtype == served
    assert m.weight_bytes == pytest.approx(m.params_b * 1e9 * 2)
    fp32 = model_from_config(ModelSpec(config=str(path), dtype="fp32"))
    assert fp32.weight_bytes == pytest.approx(2 * m.weight_bytes)


def test_replicated_weights_by_hand():
    """The linears vLLM keeps whole on every TP GPU (sim/models.REPLICATED), counted from config.json: DeepSeek-R1
    (V3 shape, fp8 blocks): 61 layers of q_a_proj (7168 x 1536) + kv_a_proj_with_mqa (7168 x (512 + 64)), fp8 like
    the rest of its attention, and 58 MoE layers' routers (7168 x 256) at bf16; V2-Lite (no q_lora_rank): the
    kv_a projection and 26 routers; Qwen3-30B-A3B: 48 routers only; a dense Llama: none."""
    r1 = load("deepseek-r1-0528")
    attn, gate = 61 * (7168 * 1536 + 7168 * (512 + 64)), 58 * 7168 * 256
    assert r1.replicated_params_b * 1e9 == pytest.approx(attn + gate, rel=1e-12)
    assert r1.replicated_quant_params_b * 1e9 == pytest.approx(attn, rel=1e-12)
    assert r1.replicated_bytes == pytest.approx(attn * r1.quant_bits / 8 + gate * 2.0, rel=1e-12)
    assert r1.replicated_extra_bytes(8) / 8 == pytest.approx(0.994e9, rel=1e-3)  # ~1 GB more on each of 8 GPUs
    lite = load("deepseek-coder-v2-lite-base")
    assert lite.replicated_params_b * 1e9 == pytest.approx(27 * 2048 * (512 + 64) + 26 * 2048 * 64, rel=1e-12)
    assert lite.replicated_quant_params_b == 0.0
    qwen = load("qwen3-30b-a3b")
    assert qwen.replicated_params_b * 1e9 == pytest.approx(48 * 2048 * 128, rel=1e-12)
    llama = load("llama-3.1-8b-instruct")
    assert llama.replicated_params_b == 0.0 and llama.replicated_extra_bytes(8) == 0.0


def test_a_checkpoint_directory_reads_its_config_json(tmp_path):
    """`sim.model.config` takes a checkpoint directory as `target.path` does (session 37)."""
    source = next(p for p in CONFIGS if p.stem not in NEEDS_DTYPE)
    (tmp_path / "config.json").write_text(source.read_text())
    by_dir = model_from_config(ModelSpec(config=str(tmp_path)))
    by_file = model_from_config(ModelSpec(config=str(tmp_path / "config.json")))
    assert by_dir == by_file and by_dir.n_layers > 0
