"""Model shapes as data: parameters, layers and KV bytes per token (what the cost model needs).

    m = get_model("qwen3-8b"); m.kv_bytes_per_token; m.weight_bytes

Shapes follow the public configs (Qwen3, Gemma3, Llama); the DeepSeek-V4-Flash-like MoE is an
assumption-labelled stand-in (active parameters drive FLOPs and bytes read per token; MLA-style compressed
KV). Add a model by adding one entry.
"""
from __future__ import annotations

from dataclasses import dataclass

from lab.errors import LabError


@dataclass(frozen=True)
class ModelShape:
    name: str
    params_b: float  # total parameters, billions
    active_params_b: float  # parameters touched per token (== params_b for dense models)
    n_layers: int
    hidden: int
    n_kv_heads: int
    head_dim: int
    bytes_per_param: float = 2.0
    kv_bytes_per_elem: float = 2.0
    kv_dim_override: int | None = None  # MLA: compressed latent width per layer instead of 2*kv_heads*head_dim
    moe_experts: int = 0  # routed experts per MoE layer (0: dense)
    moe_top_k: int = 0  # routed experts per token
    expert_params_b: float = 0.0  # all routed-expert parameters, billions (part of params_b)

    @property
    def kv_bytes_per_token(self) -> float:
        per_layer = self.kv_dim_override if self.kv_dim_override else 2 * self.n_kv_heads * self.head_dim
        return self.n_layers * per_layer * self.kv_bytes_per_elem

    @property
    def weight_bytes(self) -> float:
        return self.params_b * 1e9 * self.bytes_per_param

    @property
    def active_weight_bytes(self) -> float:
        return self.active_params_b * 1e9 * self.bytes_per_param

    def weight_bytes_read(self, tokens):
        """Bytes of weights one step reads: dense parts always; routed experts as touched by `tokens`
        tokens with uniform routing, 1 - (1 - k/E)^tokens of them (dense models: active weights)."""
        if not self.moe_experts:
            return self.active_weight_bytes
        dense = (self.active_params_b - self.expert_params_b * self.moe_top_k / self.moe_experts) * 1e9
        touched = 1.0 - (1.0 - self.moe_top_k / self.moe_experts) ** tokens
        return (dense + self.expert_params_b * 1e9 * touched) * self.bytes_per_param

    @property
    def flops_per_token(self) -> float:
        return 2.0 * self.active_params_b * 1e9

    @property
    def layer_params_b(self) -> float:
        return self.active_params_b / self.n_layers


MODELS: dict[str, ModelShape] = {m.name: m for m in [
    ModelShape("qwen3-4b", 4.0, 4.0, 36, 2560, 8, 128),
    ModelShape("qwen3-8b", 8.2, 8.2, 36, 4096, 8, 128),
    ModelShape("qwen3-14b", 14.8, 14.8, 40, 5120, 8, 128),
    ModelShape("qwen3-32b", 32.8, 32.8, 64, 5120, 8, 128),
    ModelShape("gemma3-270m", 0.27, 0.27, 18, 640, 1, 256),
    ModelShape("gemma3-12b", 12.2, 12.2, 48, 3840, 8, 256),
    ModelShape("llama-3.1-8b", 8.0, 8.0, 32, 4096, 8, 128),
    ModelShape("llama-2-7b", 6.7, 6.7, 32, 4096, 32, 128),
    # assumption: ~284B total / ~13B active MoE (256 routed experts, 8 per token, ~276B in experts), 43 layers,
    # MLA-like 576-wide compressed KV, FP8 weights. Step bytes grow with tokens as more experts are touched.
    ModelShape("deepseek-v4-flash-like", 284.0, 13.0, 43, 4096, 1, 576, bytes_per_param=1.0,
               kv_bytes_per_elem=1.0, kv_dim_override=576, moe_experts=256, moe_top_k=8, expert_params_b=276.0),
]}


def get_model(name: str) -> ModelShape:
    if name not in MODELS:
        raise LabError(f"sim.model.name: unknown model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]
