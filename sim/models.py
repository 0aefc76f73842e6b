"""Model shapes as data: parameters, layers, KV bytes per token and experts (what the cost model needs).

    m = get_model("qwen3-8b")                    # a preset of sim/presets/models.yaml
    m = from_hf_config("path/config.json")       # any Hugging Face config.json, dense or MoE
    m = model_from_config(sim.model)             # what the simulator calls: preset or config, dtype overrides
    m.kv_bytes_per_token; m.weight_bytes; m.weight_bytes_read(tokens)

MoE: active parameters per token drive FLOPs; total parameters set memory; the weights one step reads grow with the
tokens in it, since more distinct experts are touched: with E routed experts and k per token, E * (1 - (1 -
k/E)^tokens) of them under uniform routing, fewer under a serving router's skew (routing_skew, sim/routing.py; a
`sim.model` section's default is the published Qwen3-30B-A3B skew, a bare ModelShape routes uniformly).
Configs read: Qwen3-MoE / Qwen2-MoE (num_experts, num_experts_per_tok, moe_intermediate_size, shared_expert_intermediate_size, decoder_sparse_step, mlp_only_layers), Llama 4
(num_local_experts, interleave_moe_layer_step / moe_layers, intermediate_size_mlp for the dense layers, one shared
expert per MoE layer, chunked attention on its RoPE layers), DeepSeek-V3 (n_routed_experts, n_shared_experts,
first_k_dense_replace, moe_layer_freq and MLA's q_lora_rank / kv_lora_rank / qk_nope_head_dim / qk_rope_head_dim /
v_head_dim: the KV cache holds kv_lora_rank + qk_rope_head_dim values per layer), Mixtral (num_local_experts), and
dense Llama / Qwen3 / Gemma3 (text_config, llm_config or language_config is read for multimodal wrappers), MiniMax-M2,
GLM-4.5 / 4.7 (Flash: MLA), Kimi K2. Keys a config.json leaves out take transformers' class defaults for its
model_type (sim/hf_defaults.py: tie_word_embeddings, a minimal Gemma 3 text_config's sizes). Gated MLPs (3 matrices)
except the families in hf_defaults.NON_GATED_MLP (2); Falcon's KV heads from multi_query / num_kv_heads. Configs of
layer kinds without a cost model here (hybrid Mamba / state-space, MiniMax-01 lightning attention, Gemma 3n's
per-layer inputs, encoder-decoders, an MLX checkpoint's `quantization`; attention over part of the context:
DeepSeek-V4's compressed sparse attention, DeepSeek Sparse Attention of DeepSeek-V3.2 / GLM-5, MiniMax-M3's
block-sparse attention; head counts or block shapes that differ by layer; Hunyuan-Large's cross-layer attention)
fail with one line naming the key. A number given per layer as a list (Hunyuan's moe_topk, num_shared_expert,
moe_intermediate_size) is read where every entry is equal, else fails the same way (config_integer); Hunyuan's
shared MLP is intermediate_size x num_shared_expert wide where use_mixed_mlp_moe.
transformers 5's mlp_layer_types ("dense" / "sparse" per layer) places the MoE layers where a config gives it.
Quantized checkpoints (quantization_config: AWQ, GPTQ, fp8, compressed-tensors, mxfp4, ModelOpt, bitsandbytes;
sim/quant.py): the module classes the scheme quantizes (attention, dense MLP, routed / shared experts, an untied LM
head) are stored at its bits per weight, the rest (embeddings, norms, routers, what it leaves out) at the
activation dtype; `dtype` stays the activation dtype and `matmul_dtype` names the peak its quantized matmuls run at
(weight-only: None). Sliding-window attention (Gemma3's layer_types / sliding_window_pattern, Mistral's
sliding_window): those layers read KV and spend score FLOPs over min(context, window) only (attended_context);
their KV memory follows vLLM's hybrid KV cache manager (sim/kv_cache.KVGroups / HybridKV: out-of-window blocks are
freed; engine.hybrid_kv).
Hybrid linear attention (Qwen3-Next, Qwen3.5: Gated DeltaNet "linear_attention" layers beside "full_attention"
ones, sim/linear_attn.py): only the full layers hold KV (kv_layers) and attend over the context; each linear
layer keeps a fixed state per request (state_bytes, read and written once a step; its blocks in vLLM's pool:
sim/kv_cache.StateKV) and spends per-token FLOPs independent of the context; the full layers' q_proj is twice as
wide (attn_output_gate: a sigmoid gate on the attention output).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lab.config_sim import MODEL_NAMES, ModelSpec, model_presets
from lab.errors import LabError
from lab.paths import config_json_path
from sim.hf_defaults import NON_GATED_MLP, with_defaults
from sim.linear_attn import GatedDeltaNet, gated_deltanet
from sim.quant import quant_scheme
from sim.routing import distinct_experts

DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5}
# the dtype vLLM serves a checkpoint's unquantized weights (and KV cache) in under its default `--dtype auto`: the
# config's torch_dtype, except that float32 -- or no dtype at all, which vLLM reads as float32 -- is downcast to the
# platform's preferred 16-bit dtype (vllm/config/model.py _resolve_auto_dtype, "Downcast for float32 models": bf16 on
# GPUs of compute capability 8.0+ and on CPUs with bf16; fp16 before, the same 2 bytes). `sim.model.dtype: fp32`
# prices a server started with --dtype float32.
SERVED_DTYPES = {"float32": "bf16", "bfloat16": "bf16", "float16": "fp16"}


def served_dtype(cfg: dict) -> str:
    """The dtype `vllm serve --dtype auto` runs this config.json's model in (SERVED_DTYPES)."""
    return SERVED_DTYPES.get(str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"), "bf16")


@dataclass(frozen=True)
class ModelShape:
    name: str
    params_b: float  # total parameters, billions (memory)
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    active_params_b: float | None = None  # parameters a token's matmuls touch (None: params_b)
    dtype: str = "bf16"  # weights
    kv_dtype: str | None = None  # KV cache (None: as the weights)
    kv_dim_override: int | None = None  # MLA: compressed latent width per layer instead of 2*kv_heads*head_dim
    attn_dim: int | None = None  # sum of query-key and value widths over heads (None: 2 * n_heads * head_dim)
    moe_experts: int = 0  # routed experts per MoE layer (0: dense)
    moe_top_k: int = 0  # routed experts per token
    expert_params_b: float = 0.0  # all routed-expert parameters, billions (part of params_b)
    moe_layers: int | None = None  # layers with routed experts (None: all, when moe_experts)
    sliding_window: int | None = None  # tokens a sliding-window layer attends to (Gemma3, Mistral)
    sliding_layers: int = 0  # layers that attend over the window only; the rest attend over everything
    source: str | None = None
    # a quantized checkpoint (sim/quant.py): `quant_dense_params_b` parameters outside the routed experts (and
    # the routed experts where `quant_experts`) are stored at `quant_bits` bits each, the rest at `dtype`;
    # the quantized matmuls run at `matmul_dtype`'s peak where the card has one (None: `dtype`, weight-only)
    quant_method: str | None = None
    quant_bits: float | None = None
    quant_dense_params_b: float = 0.0
    quant_experts: bool = False
    matmul_dtype: str | None = None
    quant_linears: int = 0  # linear layers (fused groups) per step whose activations a w8a8 / w4a4 scheme quantizes
    chunked_attention: bool = False  # the sliding layers are Llama 4's chunked local attention (window = chunk)
    linear: GatedDeltaNet | None = None  # hybrid linear attention: one Gated DeltaNet layer's shape
    linear_layers: int = 0  # of n_layers: Gated DeltaNet layers (no KV cache; a fixed state per request)
    vocab: int = 0  # vocab_size: the logits vLLM's profile run samples (sim/kv_cache.activation_reserve_bytes)
    max_model_len: int = 0  # vLLM's length without --max-model-len (derived_max_model_len); 0: unknown (presets)
    # that length where the config.json states one (MAX_LEN_KEYS), the limit vLLM refuses longer requests at;
    # 0 where it states none (a trimmed config: vLLM V0's fallback 2048 is no limit of the served model)
    stated_max_model_len: int = 0
    moe_intermediate: int = 0  # a routed expert's intermediate size (0: unknown; the mxfp4 Marlin layout needs it)
    routing_skew: float = 0.0  # spread of one MoE layer's expert popularity (sim/routing.py); 0: uniform routing
    # parameters vLLM holds whole on every tensor-parallel GPU (part of params_b and active_params_b): MLA's
    # down-projections, the MoE routers; `replicated_quant_params_b` of them stored at quant_bits (REPLICATED)
    replicated_params_b: float = 0.0
    replicated_quant_params_b: float = 0.0

    def __post_init__(self):
        if self.active_params_b is None:
            object.__setattr__(self, "active_params_b", self.params_b)
        for field_name in ("dtype", "kv_dtype", "matmul_dtype"):
            value = getattr(self, field_name)
            if value is not None and value not in DTYPE_BYTES:
                raise LabError(f"model {self.name}: {field_name} {value!r} is not one of {sorted(DTYPE_BYTES)}")
        if self.sliding_layers and not (self.sliding_window and 0 < self.sliding_layers <= self.n_layers):
            raise LabError(f"model {self.name}: sliding_layers {self.sliding_layers} needs a sliding_window and "
                           f"at most {self.n_layers} layers")
        if self.linear_layers and not (self.linear and 0 < self.linear_layers < self.n_layers
                                       and not self.sliding_layers):
            raise LabError(f"model {self.name}: linear_layers {self.linear_layers} needs a linear layer shape, at "
                           f"least one full-attention layer of {self.n_layers} and no sliding-window layers")
        if self.moe_experts and not 0 < self.moe_top_k <= self.moe_experts:
            raise LabError(f"model {self.name}: experts per token {self.moe_top_k} not in 1..{self.moe_experts}")

    @property
    def bytes_per_param(self) -> float:
        return DTYPE_BYTES[self.dtype]

    @property
    def kv_bytes_per_elem(self) -> float:
        return DTYPE_BYTES[self.kv_dtype or self.dtype]

    @property
    def kv_bytes_per_token(self) -> float:
        per_layer = self.kv_dim_override if self.kv_dim_override else 2 * self.n_kv_heads * self.head_dim
        return self.kv_layers * per_layer * self.kv_bytes_per_elem

    @property
    def kv_layers(self) -> int:
        """Layers that hold a KV cache and attend over it: all but the linear-attention ones."""
        return self.n_layers - self.linear_layers

    @property
    def state_bytes(self) -> float:
        """One request's fixed linear-attention state over all linear layers (conv + recurrent state, as vLLM
        keeps it; all tp GPUs together): what each step of the request reads and writes back once (0: none)."""
        return self.linear_layers * self.linear.state_bytes() if self.linear_layers else 0.0

    def kv_replication(self, tp: int) -> float:
        """How many times `tp` tensor-parallel GPUs store each token's KV together, over one copy: vLLM gives
        each GPU max(1, kv_heads // tp) KV heads, so past tp = kv_heads the heads are replicated (Qwen3-235B-A22B,
        4 KV heads, at tp 8: twice the KV memory and KV reads per token); a compressed-latent (MLA) cache is
        not split by heads, and every GPU holds all of it (tp copies)."""
        if self.kv_dim_override:
            return float(tp)
        return max(1.0, tp * max(1, self.n_kv_heads // tp) / self.n_kv_heads)  # (vLLM refuses a tp that does
        # not divide the heads or a multiple of them; no fewer than one copy whatever the tp)

    @property
    def expert_bytes_per_param(self) -> float:
        """Bytes of one routed-expert parameter (quantized where the checkpoint quantizes the experts)."""
        return self.quant_bits / 8 if self.quant_bits and self.quant_experts else self.bytes_per_param

    def _dense_bytes(self, dense_params_b: float) -> float:
        """Bytes of `dense_params_b` parameters outside the routed experts, all the quantized ones among them."""
        quantized = self.quant_dense_params_b
        return (dense_params_b - quantized) * 1e9 * self.bytes_per_param + quantized * 1e9 * self.quant_bits / 8

    @property
    def _routed_active_b(self) -> float:
        """Routed-expert parameters one token's matmuls touch (k of E), billions."""
        return self.expert_params_b * self.moe_top_k / self.moe_experts if self.moe_experts else 0.0

    @property
    def weight_bytes(self) -> float:
        if not self.quant_bits:
            return self.params_b * 1e9 * self.bytes_per_param
        return self._dense_bytes(self.params_b - self.expert_params_b) + \
            self.expert_params_b * 1e9 * self.expert_bytes_per_param

    @property
    def active_weight_bytes(self) -> float:
        if not self.quant_bits:
            return self.active_params_b * 1e9 * self.bytes_per_param
        return self._dense_bytes(self.active_params_b - self._routed_active_b) + \
            self._routed_active_b * 1e9 * self.expert_bytes_per_param

    def resident_weight_bytes(self, ep: int = 1) -> float:
        """Weights one expert-parallel rank holds: everything but the routed experts, plus 1/ep of those (a
        replica of tp GPUs over ep = tp x dp: pass dp, its share of the experts)."""
        if not self.quant_bits:
            return (self.params_b - self.expert_params_b * (1.0 - 1.0 / ep)) * 1e9 * self.bytes_per_param
        return self._dense_bytes(self.params_b - self.expert_params_b) + \
            self.expert_params_b / ep * 1e9 * self.expert_bytes_per_param

    @property
    def replicated_bytes(self) -> float:
        """Bytes of the weights vLLM replicates on every tensor-parallel GPU (one copy; see REPLICATED)."""
        quantized = self.replicated_quant_params_b
        return (self.replicated_params_b - quantized) * 1e9 * self.bytes_per_param + \
            (quantized * 1e9 * self.quant_bits / 8 if quantized else 0.0)

    def replicated_extra_bytes(self, tp: int) -> float:
        """Bytes tp GPUs together hold (and each step reads) beyond one copy of the model because every GPU keeps
        its own whole copy of the replicated weights: replicated_bytes x (tp - 1); 0 at tp 1."""
        return self.replicated_bytes * (tp - 1)

    def marlin_mxfp4_pad_bytes(self, tp: int = 1, dp: int = 1, expert_parallel: bool = False) -> float:
        """Bytes an mxfp4 checkpoint's routed experts grow by in vLLM's Marlin layout, all tp GPUs together (0:
        another scheme, or the expert shape unknown). Source: vllm/model_executor/layers/quantization/mxfp4.py
        (v0.10 - 0.11), Mxfp4MoEMethod.create_weights for Mxfp4Backend.MARLIN -- "the moe marlin kernel requires
        that for each linear n % 256 == 0 and k % 128 == 0": each rank's intermediate size rounds up to a
        multiple of 128 and the hidden size to one of 256, weights and scales alike; vLLM picks Marlin for mxfp4
        on cards without FP4 matmuls (its log: "Your GPU does not have native support for FP4 computation ...
        Marlin"). gpt-oss-120b (hidden 2880, intermediate 2880): x (2944 x 3072) / 2880^2 = 1.090 at tp 1, 65.7
        GiB where vLLM 0.10.1 logs 65.97 on one H100 (issue 23278); x 1.138 at tp 4, 17.1 GiB a GPU where it logs
        17.22 (four A100s, sim/validation/vllm_memory.yaml). With expert parallelism a rank holds whole experts
        (intermediate not split), a replica 1/dp of them (as resident_weight_bytes). vLLM's Triton mxfp4 backend
        (0.14+ on Hopper: 64.38 GiB in issue 33155) lays them out otherwise; not modelled."""
        return self.expert_params_b * 1e9 * self.expert_bytes_per_param / dp * (
            self.marlin_mxfp4_pad_factor(tp, expert_parallel) - 1.0)

    def marlin_mxfp4_dims(self, tp: int = 1, expert_parallel: bool = False) -> tuple[int, int] | None:
        """(intermediate, hidden) of one rank's routed experts in vLLM's Marlin mxfp4 layout: the rank's intermediate
        size rounded up to a multiple of 128 and the hidden size to one of 256 (Mxfp4MoEMethod.create_weights, the
        MARLIN branch, v0.10 - 0.11; see marlin_mxfp4_pad_bytes), e.g. gpt-oss (2880, 2880) -> (2944, 3072) at tp 1.
        The kernels run at these sizes: the padded weights are stored and multiplied whole, and FusedMoE pads each
        token's hidden row with zeros to the layer's padded hidden size before the call (forward_native: `F.pad(
        hidden_states, (0, self.hidden_size - og_hidden_states))`, output sliced back after). None: another scheme, or
        the expert shape unknown (no padding)."""
        if self.quant_method != "mxfp4" or not (self.quant_experts and self.moe_intermediate and self.moe_experts):
            return None
        inter = self.moe_intermediate if expert_parallel else self.moe_intermediate // tp
        return -(-inter // 128) * 128, -(-self.hidden // 256) * 256

    def marlin_mxfp4_pad_factor(self, tp: int = 1, expert_parallel: bool = False) -> float:
        """How many times one rank's routed-expert matrices grow in vLLM's Marlin mxfp4 layout (marlin_mxfp4_dims):
        their bytes, the bytes a step reads of each touched expert, and each token-expert pair's GEMM FLOPs alike.
        gpt-oss at tp 1: 2944 x 3072 / 2880^2 = 1.090. 1.0 where nothing is padded."""
        dims = self.marlin_mxfp4_dims(tp, expert_parallel)
        if dims is None:
            return 1.0
        inter = self.moe_intermediate if expert_parallel else self.moe_intermediate // tp
        return dims[0] * dims[1] / (inter * self.hidden)

    def weight_bytes_read(self, tokens, ep: int = 1):
        """Bytes of weights one step of `tokens` tokens reads on one rank: the dense parts always; of its E/ep
        routed experts the ones the ep ranks' tokens touch (each rank assumed as busy), 1 - (1 - k/E)^(ep x
        tokens) of them under uniform routing (dense models: the active weights)."""
        if not self.moe_experts:
            return self.active_weight_bytes
        return self.dense_bytes_read + self.routed_bytes_read(tokens, ep)

    @property
    def dense_bytes_read(self) -> float:
        """Bytes of the weights every token reads: all but the routed experts (a dense model: all active)."""
        if not self.moe_experts:
            return self.active_weight_bytes
        if self.quant_bits:
            return self._dense_bytes(self.active_params_b - self._routed_active_b)
        return (self.active_params_b - self._routed_active_b) * 1e9 * self.bytes_per_param

    def touched_experts(self, tokens, ep: int = 1, dp: int | None = None):
        """Routed experts of one MoE layer that a step of `tokens` tokens per rank touches on one of ep GPUs,
        averaged over the GPUs (numpy arrays work): uniform routing (routing_skew 0) E/ep x (1 - (1 - k/E)^(dp x
        tokens)); skewed, sim/routing.distinct_experts / ep (popular experts shared by more tokens: fewer). dp: the
        data-parallel ranks whose tokens every GPU's experts see (vLLM: ep = tp x dp; each DP rank's tokens are
        gathered to all, the TP ranks of one DP rank share its tokens); None: ep (tp 1)."""
        if not self.moe_experts:
            return 0.0
        gathered = tokens * (ep if dp is None else dp)
        if not self.routing_skew:
            return self.moe_experts / ep * (1.0 - (1.0 - self.moe_top_k / self.moe_experts) ** gathered)
        return distinct_experts(gathered, self.moe_experts, self.moe_top_k, self.routing_skew) / ep

    def routed_bytes_read(self, tokens, ep: int = 1, dp: int | None = None):
        """Routed-expert weight bytes a step of `tokens` tokens reads on one of ep GPUs (ep 1: the whole
        replica's), all MoE layers; dp as in touched_experts."""
        if not self.moe_experts:
            return 0.0
        return self.expert_params_b * 1e9 / self.moe_experts * self.touched_experts(tokens, ep, dp) * \
            self.expert_bytes_per_param

    @property
    def routed_flops_per_token(self) -> float:
        """Matmul FLOPs per token in the routed experts (k of E per MoE layer; part of flops_per_token)."""
        return 2.0 * self._routed_active_b * 1e9

    @property
    def flops_per_token(self) -> float:
        """Matmul FLOPs per token outside attention scores: 2 x active parameters, plus the linear-attention
        layers' recurrence (sim/linear_attn.GatedDeltaNet.flops_per_token), which no context length changes."""
        if self.linear_layers:
            return 2.0 * self.active_params_b * 1e9 + self.linear_layers * self.linear.flops_per_token
        return 2.0 * self.active_params_b * 1e9

    @property
    def head_flops_per_token(self) -> float:
        """Matmul FLOPs of the LM head (vocab x hidden, tied or not) per row it multiplies; part of flops_per_token.
        vLLM multiplies it only at the positions it samples from -- one per request in a step, plus each draft
        token verified -- not at every prompt token (sim/cost.py, CostModel._t_head_flops). 0 where the vocabulary
        is unknown (vocab 0: a preset shape)."""
        return 2.0 * min(float(self.vocab) * self.hidden, self.active_params_b * 1e9) if self.vocab else 0.0

    @property
    def attn_flops_per_context_token(self) -> float:
        """FLOPs one query token spends per cached token it attends to (QK^T and AV over the KV layers)."""
        width = self.attn_dim if self.attn_dim else 2 * self.n_heads * self.head_dim
        return 2.0 * self.kv_layers * width

    def attended_context(self, context: float) -> float:
        """Cached tokens one query token attends to, averaged over the KV layers: `context` on full-attention
        layers, min(context, window) on sliding-window ones (their KV reads and score FLOPs stop at the window).
        True of the kernels vLLM runs on the public rows: FlashAttention (window_size) and, for gpt-oss's attention
        sinks on pre-Hopper cards, the Triton unified kernel's 2D path from 0.11.0 (PR 24390); its split-KV 3D path
        (decode-only steps of few requests) scans the whole context until PR 31984 (2026-01), not modelled
        (BENCHMARKS.md, session 34, gpt-oss kernels)."""
        if not self.sliding_layers:
            return context
        full = self.n_layers - self.sliding_layers
        capped = np.minimum(context, self.sliding_window) if isinstance(context, np.ndarray) else \
            min(context, self.sliding_window)
        return (full * context + self.sliding_layers * capped) / self.n_layers

    @property
    def routed_intermediate(self) -> float:
        """A routed expert's intermediate size: moe_intermediate, else what its parameters give (gate, up and down
        projections: 3 x hidden x intermediate each)."""
        if not self.moe_experts:
            return 0.0
        return self.moe_intermediate or self.expert_params_b * 1e9 / (self.n_moe_layers * self.moe_experts * 3 * self.hidden)

    @property
    def n_moe_layers(self) -> int:
        if not self.moe_experts:
            return 0
        return self.moe_layers if self.moe_layers is not None else self.n_layers

    @property
    def layer_params_b(self) -> float:
        return self.active_params_b / self.n_layers


def get_model(name: str) -> ModelShape:
    """A preset of sim/presets/models.yaml."""
    if name not in MODEL_NAMES:
        raise LabError(f"sim.model.name: unknown model {name!r}; presets: {list(MODEL_NAMES)}")
    return ModelShape(name=name, **model_presets()[name])


def model_from_config(spec: ModelSpec) -> ModelShape:
    """The model a `sim.model` section describes: a preset or a config.json, with its dtype overrides."""
    if spec.config:
        model = from_hf_config(config_json_path(spec.config), name=spec.name if "name" in spec.model_fields_set else None,
                               quantized=spec.dtype is None)
    else:
        model = get_model(spec.name)
    update = {k: v for k, v in (("dtype", spec.dtype), ("kv_dtype", spec.kv_dtype)) if v is not None}
    if model.moe_experts:
        update["routing_skew"] = spec.routing_skew
    return replace(model, **update) if update else model


# where multimodal wrappers keep their language model's config: transformers' text_config (Gemma 3, Llama 4,
# Qwen-VL, Mistral 3, LLaVA), InternVL's llm_config, DeepSeek-VL2 / Janus's language_config
TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config")


def text_config(raw: dict) -> dict:
    """A config.json's decoder fields: a multimodal wrapper's text_config (or llm_config / language_config)
    merged over its top level."""
    for key in TEXT_CONFIG_KEYS:
        if isinstance(raw.get(key), dict):
            return {**raw, **raw[key]}
    return raw


# keys of layer kinds the simulator has no cost model for: state-space (Mamba) and convolution layers of
# hybrid models (Jamba, Zamba, Bamba, Falcon-H1, Nemotron-H, Granite 4 hybrids), MiniMax-01's lightning
# attention, Gemma 3n's per-layer inputs; a config with one fails at `lab validate` instead of being priced as an
# ordinary transformer
UNSUPPORTED_KEYS = {
    "attn_layer_period": "Jamba-style interleaved Mamba layers", "attn_layer_indices": "interleaved Mamba layers",
    "hybrid_override_pattern": "Nemotron-H hybrid Mamba layers", "layers_block_type": "hybrid Mamba layers",
    "mamba_d_state": "Mamba (state-space) layers", "mamba_d_ssm": "Mamba (state-space) layers",
    "ssm_state_size": "state-space layers",
    "hidden_size_per_layer_input": "Gemma 3n per-layer inputs (AltUp)",
    "moe_layer_start_index": "Ernie-4.5-style MoE layer placement (start / end / interval)",
    "moe_layer_interval": "Ernie-4.5-style MoE layer placement (start / end / interval)",
    # attention that reads only part of the context, each kind its own way (BENCHMARKS.md, session 36): DeepSeek-V4's
    # compressed sparse / heavily compressed attention (KV compressed 4x or 128x per layer, a 128-token window,
    # hyper-connections), DeepSeek Sparse Attention's top-k token indexer (DeepSeek-V3.2, GLM-5), MiniMax-M3's
    # block-sparse attention; read as ordinary attention they are mispriced without a word (GLM-5 as dense MLA over
    # the whole context, DeepSeek-V4's sliding_window as a 128-token window on every layer)
    "compress_ratios": "DeepSeek-V4 compressed sparse attention (CSA / HCA)",
    "index_topk": "DeepSeek Sparse Attention (a top-k token indexer: DeepSeek-V3.2, GLM-5)",
    "num_attention_heads_per_layer": "attention head counts that differ by layer",
    "block_configs": "per-layer block shapes (Nemotron-NAS / DeciLM: Llama-3.1/3.3-Nemotron Super and Ultra)",
}
# model types whose attention is DeepSeek Sparse Attention even when a trimmed copy of the config leaves index_topk out
SPARSE_ATTENTION_TYPES = {"deepseek_v32": "DeepSeek-V3.2", "glm_moe_dsa": "GLM-5"}
# the names MoE configs give the same numbers (first found wins): routed experts, experts a token picks, shared
# experts' total width, shared expert count
EXPERT_KEYS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
TOP_K_KEYS = ("num_experts_per_tok", "experts_per_token", "num_experts_per_token", "moe_k", "moe_topk")
SHARED_WIDTH_KEYS = ("shared_expert_intermediate_size", "moe_shared_expert_intermediate_size", "shared_intermediate_size",
                     "share_expert_dim")  # (the last: Step-3 / 3.5 / 3.7, vLLM's step3_text.py share_expert)
SHARED_COUNT_KEYS = ("n_shared_experts", "num_shared_experts", "moe_num_shared_experts")
LAYER_KINDS = {"full_attention", "sliding_attention", "linear_attention", "chunked_attention"}
# REPLICATED: linears vLLM builds unsplit, whole on every tensor-parallel GPU, where the rest of a layer is split
# over tp (each GPU stores and reads a full copy): MLA's down-projections q_a_proj (hidden x q_lora_rank) and
# kv_a_proj_with_mqa (hidden x (kv_lora_rank + qk_rope_head_dim)) -- ReplicatedLinear in
# vllm/model_executor/models/deepseek_v2.py, fused since into DeepSeekV2FusedQkvAProjLinear, a
# MergedColumnParallelLinear with disable_tp=True (vllm-project/vllm commit 002d6073aa03), both built with the
# model's quant_config, so quantized where the checkpoint quantizes attention -- and every MoE layer's router
# `gate` (hidden x experts): ReplicatedLinear(..., quant_config=None) in qwen3_moe.py (commit 002456df36fc) and
# mixtral.py ("Gate always runs at half / full precision"), GateLinear(ReplicatedLinear) with quant_config=None in
# deepseek_v2.py (002d6073aa03; layers/fused_moe/router/gate_linear.py): always at the activation dtype. (MLA's
# q_a / kv_a RMSNorms, q_lora + kv_lora values a layer, are replicated too; like the other norms they are left
# out of the parameter count.)


def _refuse_unsupported(raw: dict, cfg: dict, path: Path, quantized: bool) -> None:
    """One LabError line naming the key of an architecture the simulator would price wrong (quantized=False: the
    caller prices every weight at its own dtype, so a checkpoint's quantization key does not matter)."""
    if raw.get("is_encoder_decoder") is True or cfg.get("is_encoder_decoder") is True:
        raise LabError(f"{path}: config.json 'is_encoder_decoder' is true; the simulator prices decoder-only models")
    for key, what in UNSUPPORTED_KEYS.items():
        if key in cfg:
            raise LabError(f"{path}: config.json {key!r} describes {what}, which the simulator does not price "
                           f"(model_type {cfg.get('model_type')!r})")
    if str(cfg.get("model_type")) in SPARSE_ATTENTION_TYPES:
        raise LabError(f"{path}: config.json model_type {cfg['model_type']!r} "
                       f"({SPARSE_ATTENTION_TYPES[str(cfg['model_type'])]}) uses DeepSeek Sparse Attention, which the "
                       f"simulator does not price")
    sparse = cfg.get("sparse_attention_config")
    if isinstance(sparse, dict) and sparse.get("use_sparse_attention"):
        raise LabError(f"{path}: config.json 'sparse_attention_config' turns on block-sparse attention (MiniMax-M3), "
                       f"which the simulator does not price")
    if cfg.get("use_cla") and cfg.get("cla_share_factor", 1) not in (None, 0, 1):
        raise LabError(f"{path}: config.json 'use_cla' is true with cla_share_factor {cfg.get('cla_share_factor')!r}: "
                       f"cross-layer attention (Hunyuan-Large: layers that reuse an earlier layer's KV), which the "
                       f"simulator does not price")
    kinds = cfg.get("attn_type_list")  # MiniMax: 1 softmax attention (MiniMax-M2: every layer), 0 lightning
    if isinstance(kinds, list) and any(k != 1 for k in kinds):
        raise LabError(f"{path}: config.json 'attn_type_list' has lightning (linear) attention layers (MiniMax-01 / "
                       f"M1), which the simulator does not price; only softmax layers (1) are")
    types = cfg.get("layer_types")
    if isinstance(types, list):
        unknown = sorted({str(t) for t in types} - LAYER_KINDS)
        if unknown:
            raise LabError(f"{path}: config.json 'layer_types' has {unknown}; the simulator prices "
                           f"{sorted(LAYER_KINDS)} layers only")
    if quantized and "quantization" in raw and not raw.get("quantization_config"):
        raise LabError(f"{path}: config.json 'quantization' is an MLX checkpoint's (vLLM serves Hugging Face "
                       f"checkpoints); give sim.model.dtype to price every weight at one dtype")


# config.json keys vLLM reads a model's context length from, the smallest present winning (vllm/config.py
# _get_and_verify_max_len, the same list at v0.4.0.post1 - v0.7.3)
MAX_LEN_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_sequence_length", "max_seq_length", "seq_len")
# rope scaling types whose factor vLLM does not multiply the length by (the config's length already covers it)
UNSCALED_ROPE_TYPES = ("su", "longrope", "llama3")


def derived_max_model_len(cfg: dict) -> int:
    """The max_model_len vLLM (V0, 0.4 - 0.7) serves a config.json at without --max-model-len: the smallest of
    MAX_LEN_KEYS present (2048 where none is), times rope_scaling.factor unless its type is in UNSCALED_ROPE_TYPES
    (yarn: times original_max_position_embeddings). DeepSeek-Coder's 16,384 with linear factor 4 -> 65,536."""
    lengths = [v for v in (cfg.get(k) for k in MAX_LEN_KEYS) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    length = min(lengths) if lengths else 2048
    rope = cfg.get("rope_scaling")
    if isinstance(rope, dict) and isinstance(rope.get("factor"), (int, float)):
        kind = rope.get("type", rope.get("rope_type"))
        if kind not in UNSCALED_ROPE_TYPES:
            if kind == "yarn" and isinstance(rope.get("original_max_position_embeddings"), int):
                length = rope["original_max_position_embeddings"]
            length *= rope["factor"]
    return int(length)


def config_integer(value, key: str, path: Path, per_layer: bool = True):
    """A config.json value where the loader expects one number: `value` itself, or the one value of a list whose
    entries are all equal (per_layer: vLLM reads such keys per layer, list[layer_id] -- Hunyuan's moe_topk,
    num_shared_expert and moe_intermediate_size, vllm/model_executor/models/hunyuan_v1.py -- so equal entries are
    exactly that number on every layer). LabError naming the file and the key for a list whose entries differ
    (the cost model prices one shape for every layer), for an empty one, and for any list where not per_layer."""
    if not isinstance(value, list):
        return value
    shown = str(value[:4])[:-1] + (", ...]" if len(value) > 4 else "]")
    if per_layer and value and len({json.dumps(v) for v in value}) == 1:
        return value[0]
    why = "per-layer values are not supported (only a list whose entries are all equal)" if per_layer else \
        "it is one setting of the whole model"
    raise LabError(f"{path}: config.json {key!r} is a list ({shown}, {len(value)} entries) where the simulator reads "
                   f"one integer: {why}")


def from_hf_config(path: str | Path, name: str | None = None, quantized: bool = True) -> ModelShape:
    """Shape of a Hugging Face config.json (see the module docstring for the keys read); quantized=False reads
    past its quantization_config (the caller prices every weight at one dtype of its own)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"{path}: not a readable config.json ({exc})") from None
    if not isinstance(raw, dict):
        raise LabError(f"{path}: config.json must hold a JSON object, not {type(raw).__name__}")
    cfg = with_defaults(text_config(raw))  # as transformers reads it: the family's class defaults under it
    _refuse_unsupported(raw, cfg, path, quantized)

    def need(key) -> int:
        if key not in cfg:
            raise LabError(f"{path}: config.json has no {key!r}")
        return count(key, None, per_layer=False)  # the model's width, depth, heads and vocabulary: one number each

    def count(key, default: int | None, low: int = 1, per_layer: bool = True) -> int:
        """cfg[key] as a whole number >= low; absent, null or 0 mean `default` (as transformers reads them); a list
        (one value per layer) of equal entries is that value, unless not `per_layer` (a setting of the whole model:
        refused, config_integer)."""
        value = config_integer(cfg.get(key), key, path, per_layer)
        if default is not None and (value is None or value == 0):
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise LabError(f"{path}: config.json {key!r} must be a {'positive' if low else 'non-negative'} "
                           f"integer, not {value!r}")
        return value

    h, n_layers, n_heads = need("hidden_size"), need("num_hidden_layers"), need("num_attention_heads")
    vocab = need("vocab_size")
    model_type = str(cfg.get("model_type", ""))
    n_kv = count("num_key_value_heads", n_heads) if model_type != "falcon" else _falcon_kv_heads(cfg, n_heads, path)
    head_dim = count("head_dim", h // n_heads)
    if head_dim < 1:
        raise LabError(f"{path}: config.json num_attention_heads {n_heads} exceeds hidden_size {h}; give head_dim")
    tied = bool(cfg.get("tie_word_embeddings", True))
    inter = count("intermediate_size", count("ffn_hidden_size", 4 * h))
    mlp_mats = 2 if model_type in NON_GATED_MLP else 3  # up + down, or gate + up + down

    kv_dim = attn_dim = None
    if cfg.get("kv_lora_rank"):  # MLA (DeepSeek-V2/V3)
        kv_lora, rope = count("kv_lora_rank", None), count("qk_rope_head_dim", 64)
        nope, v_dim = count("qk_nope_head_dim", 128), count("v_head_dim", 128)
        q_lora = count("q_lora_rank", 0, low=0)
        q_proj = h * q_lora + q_lora * n_heads * (nope + rope) if q_lora else h * n_heads * (nope + rope)
        attn = q_proj + h * (kv_lora + rope) + kv_lora * n_heads * (nope + v_dim) + n_heads * v_dim * h
        kv_dim, attn_dim = kv_lora + rope, n_heads * (nope + rope + v_dim)
        attn_replicated = h * q_lora + h * (kv_lora + rope)  # q_a_proj, kv_a_proj_with_mqa (REPLICATED)
    else:
        attn = 2 * h * n_heads * head_dim + 2 * h * n_kv * head_dim
        attn_replicated = 0

    lin, n_linear, mixers = _hybrid_linear(cfg, path, n_layers, h, n_heads * head_dim, attn)
    experts = next((count(k, None) for k in EXPERT_KEYS if cfg.get(k)), 0)
    top_k = next((count(k, None) for k in TOP_K_KEYS if cfg.get(k)), 0) if experts else 0
    if experts and not top_k:
        raise LabError(f"{path}: MoE config ({experts} experts) has no num_experts_per_tok")
    moe_inter = count("moe_intermediate_size", inter)
    # shared experts: one width given outright (Qwen2-MoE; GLM's moe_shared_expert_intermediate_size, MiniMax's
    # shared_intermediate_size), else a count of routed-expert-wide ones (DeepSeek, GLM-4.5, Kimi)
    width = next((count(k, None) for k in SHARED_WIDTH_KEYS if cfg.get(k)), 0)
    shared = 3 * h * (width or moe_inter * next((count(k, None) for k in SHARED_COUNT_KEYS if cfg.get(k)), 0))
    if experts and not shared and cfg.get("num_shared_expert") and cfg.get("use_mixed_mlp_moe"):
        # Hunyuan (hunyuan_v1_moe): one shared MLP of intermediate_size x num_shared_expert on every MoE layer
        # (vllm/model_executor/models/hunyuan_v1.py HunYuanSparseMoeBlock: `if config.use_mixed_mlp_moe > 0`)
        shared = 3 * h * inter * count("num_shared_expert", None)
    llama4 = model_type.startswith("llama4")
    dense_inter = inter
    if llama4:  # Llama 4: intermediate_size is an expert's, intermediate_size_mlp the dense layers'; every MoE
        dense_inter = count("intermediate_size_mlp", inter)  # layer also runs one shared expert of intermediate_size
        shared += 3 * h * inter if experts else 0
    if experts:  # what _is_moe_layer reads
        for key, low in (("first_k_dense_replace", 0), ("moe_layer_freq", 1)):
            if key in cfg:
                count(key, None, low, per_layer=False)
        count("decoder_sparse_step", 1, per_layer=False)
        for key in ("mlp_only_layers", "moe_layers"):
            layers = cfg.get(key) or []
            if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
                raise LabError(f"{path}: config.json {key!r} must be a list of layer indices")
        count("interleave_moe_layer_step", 1, per_layer=False)
        kinds = cfg.get("mlp_layer_types")
        if kinds is not None and not (isinstance(kinds, list) and len(kinds) == n_layers
                                      and all(k in ("dense", "sparse") for k in kinds)):
            raise LabError(f"{path}: config.json 'mlp_layer_types' must name 'dense' or 'sparse' for each of its "
                           f"{n_layers} layers")
    moe_layer_ids = [i for i in range(n_layers) if experts and _is_moe_layer(cfg, i)]
    n_moe = len(moe_layer_ids)
    routed_per_layer = experts * 3 * h * moe_inter
    mlp = (n_layers - n_moe) * mlp_mats * h * dense_inter + n_moe * (routed_per_layer + shared + h * experts)
    embed = vocab * h
    total = embed * (1 if tied else 2) + mixers + n_layers * 2 * h + mlp + h
    expert_total = n_moe * routed_per_layer
    # an untied input embedding is a row lookup: memory, but neither read whole nor multiplied per step
    active = total - (0 if tied else embed) - (expert_total * (1 - top_k / experts) if experts else 0)

    # the activation dtype: unquantized weights, and the KV cache (vLLM's kv_cache_dtype auto)
    dtype = kv_dtype = served_dtype(cfg)
    scheme = quant_scheme(raw.get("quantization_config") or cfg.get("quantization_config"), str(path)) \
        if quantized else None
    classes = {"attention": mixers, "mlp": (n_layers - n_moe) * mlp_mats * h * dense_inter,
               "shared_experts": n_moe * shared, "lm_head": 0 if tied else embed}  # parameters per module class
    # linear groups as vLLM fuses them (qkv + out; gate_up + down; a shared expert's two; the LM head): each of
    # a w8a8 / w4a4 scheme's quantizes its input activation on the fly (routed experts: inside the fused MoE)
    groups = {"attention": 2 * n_layers, "mlp": 2 * (n_layers - n_moe), "shared_experts": 2 * n_moe if shared else 0,
              "lm_head": 0 if tied else 1}
    # REPLICATED: MLA's down-projections on the attention layers, the router of every MoE layer
    replicated_attn = (n_layers - n_linear) * attn_replicated
    replicated = {"replicated_params_b": (replicated_attn + n_moe * h * experts) / 1e9,
                  "replicated_quant_params_b": replicated_attn / 1e9
                  if scheme is not None and scheme.quantizes("attention") else 0.0}
    quant = {} if scheme is None else {
        "quant_method": scheme.method, "quant_bits": scheme.weight_bits, "matmul_dtype": scheme.matmul_dtype,
        "quant_dense_params_b": sum(n for c, n in classes.items() if scheme.quantizes(c)) / 1e9,
        "quant_experts": bool(experts) and scheme.quantizes("experts"),
        "quant_linears": sum(g for c, g in groups.items() if scheme.quantizes(c)) if scheme.matmul_dtype else 0}
    window, sliding = _sliding_window(cfg, n_layers, path)
    chunked = bool(sliding) and llama4 and bool(cfg.get("attention_chunk_size"))
    # a checkpoint's config.json is named by its folder; a config kept under its own name (qwen3-4b.json) by that
    label = name or cfg.get("_name_or_path") or (path.parent.name if path.name == "config.json" else path.stem) \
        or str(cfg.get("model_type", "model"))
    return ModelShape(name=str(label), params_b=total / 1e9, active_params_b=active / 1e9, n_layers=n_layers,
                      hidden=h, n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, dtype=dtype, kv_dtype=kv_dtype,
                      kv_dim_override=kv_dim, attn_dim=attn_dim, moe_experts=experts, moe_top_k=top_k,
                      expert_params_b=expert_total / 1e9, moe_layers=n_moe if experts else None,
                      sliding_window=window, sliding_layers=sliding, source=str(path), linear=lin,
                      linear_layers=n_linear, chunked_attention=chunked, vocab=vocab,
                      max_model_len=derived_max_model_len(cfg),
                      stated_max_model_len=derived_max_model_len(cfg) if any(k in cfg for k in MAX_LEN_KEYS) else 0,
                      moe_intermediate=moe_inter if experts else 0, **replicated, **quant)


def _falcon_kv_heads(cfg: dict, n_heads: int, path: Path) -> int:
    """Falcon's KV heads (transformers' FalconConfig): num_kv_heads with new_decoder_architecture (40B, 180B),
    else one shared head under multi_query (7B; the default) or one per query head."""
    if cfg.get("new_decoder_architecture"):
        value = config_integer(cfg.get("num_kv_heads"), "num_kv_heads", path) or n_heads
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LabError(f"{path}: config.json 'num_kv_heads' must be a positive integer, not {value!r}")
        return value
    return 1 if cfg.get("multi_query", True) else n_heads


def _hybrid_linear(cfg: dict, path: Path, n_layers: int, h: int, q_width: int, attn: int):
    """(Gated DeltaNet shape or None, linear layers, token-mixer parameters over all layers): n_layers x `attn`
    for an ordinary model; for a hybrid linear-attention one (sim/linear_attn.py) the full layers' attention
    with its output gate (attn_output_gate, on unless false: q_proj emits a gate of q's width, hidden x
    heads x head_dim more) plus the linear layers' own weights."""
    act = served_dtype(cfg)
    lin, n_linear = gated_deltanet(cfg, n_layers, act, str(path))
    if lin is None:
        return None, 0, n_layers * attn
    gate = h * q_width if cfg.get("attn_output_gate", True) is not False else 0
    return lin, n_linear, (n_layers - n_linear) * (attn + gate) + n_linear * lin.params(h)


def _sliding_window(cfg: dict, n_layers: int, path: Path) -> tuple[int | None, int]:
    """(window, sliding layers): Gemma3's layer_types (or the older sliding_window_pattern: every p-th layer
    full), Gemma2's alternate layers (older configs without layer_types), Mistral-style all layers when only
    sliding_window is set; none where use_sliding_window is false (Qwen2/Qwen3 carry a window they do not use).
    Llama 4's chunked attention (attention_chunk_size) on its RoPE layers (no_rope_layers[i] = 1; without the
    list, all but every no_rope_layer_interval-th) is priced as a window of one chunk: an upper bound, since a
    token attends to its own chunk only (on average half of it)."""
    chunk = cfg.get("attention_chunk_size")
    if str(cfg.get("model_type", "")).startswith("llama4") and isinstance(chunk, int) and not isinstance(chunk, bool) \
            and chunk > 0:
        flags = cfg.get("no_rope_layers")
        if isinstance(flags, list) and len(flags) == n_layers:
            chunked = sum(1 for flag in flags if flag)
        else:
            interval = cfg.get("no_rope_layer_interval") or 4
            chunked = n_layers - n_layers // interval if isinstance(interval, int) and interval > 0 else 0
        return (chunk, chunked) if chunked else (None, 0)
    if cfg.get("use_sliding_window") is False:
        return None, 0
    window = config_integer(cfg.get("sliding_window"), "sliding_window", path)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        return None, 0
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == n_layers:
        sliding = sum(t == "sliding_attention" for t in types)
    elif isinstance(cfg.get("sliding_window_pattern"), int) and cfg["sliding_window_pattern"] > 0:
        sliding = n_layers - n_layers // cfg["sliding_window_pattern"]
    elif cfg.get("model_type") == "gemma2":  # even layers slide, odd layers attend to everything
        sliding = n_layers - n_layers // 2
    else:
        sliding = n_layers
    return (window, sliding) if sliding else (None, 0)


def _is_moe_layer(cfg: dict, i: int) -> bool:
    kinds = cfg.get("mlp_layer_types")  # transformers 5's per-layer list ("dense" / "sparse"): Laguna, GLM-5.x
    if isinstance(kinds, list) and len(kinds) == int(cfg["num_hidden_layers"]):
        return kinds[i] == "sparse"
    if cfg.get("moe_layers"):  # Llama 4 lists them
        return i in cfg["moe_layers"]
    if cfg.get("interleave_moe_layer_step"):  # Llama 4 without the list: every step-th layer
        return (i + 1) % int(cfg["interleave_moe_layer_step"]) == 0
    if "first_k_dense_replace" in cfg or "moe_layer_freq" in cfg:  # DeepSeek-V3
        return i >= int(cfg.get("first_k_dense_replace", 0)) and i % int(cfg.get("moe_layer_freq", 1)) == 0
    if i in (cfg.get("mlp_only_layers") or []):  # Qwen3-MoE / Qwen2-MoE
        return False
    step = int(cfg.get("decoder_sparse_step") or 1)
    return (i + 1) % step == 0


# kept for callers that list the presets (dashboards): name -> shape
MODELS: dict[str, ModelShape] = {name: get_model(name) for name in MODEL_NAMES}
