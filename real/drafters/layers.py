"""Building blocks shared by the trained drafters: sizes, norms, RoPE, attention, MLP, frozen target I/O.

    dims = draft_dims(target, spec, vocab_size=len(d2t))
    io = FrozenIO(target, d2t)            # frozen target embedding + LM head rows of the draft vocab
    logits = io.head(hidden)              # [.., Vd] over the draft vocabulary

Draft layers are compact Qwen3-style decoder layers (RMSNorm, q/k-norm, RoPE, SwiGLU) sized from the
target's layer config unless the YAML overrides them — a copy of the target's layer config, as in
DeepSpec's build_draft_config. When the draft width d differs from the target's d_t, the frozen
embedding is followed by a trainable Linear(d_t -> d) and the LM head preceded by Linear(d -> d_t).
Not for direct use; see backbone.py (DSpark/DFlash) and chain.py (EAGLE-3/MTP).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DraftDims:
    target_hidden: int  # d_t
    n_tap: int  # tapped target layers
    hidden: int  # d
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    layers: int
    rope_theta: float
    eps: float
    vocab: int  # draft vocabulary size Vd
    target_vocab: int  # V
    block_size: int
    markov_rank: int = 0
    markov_variant: str = "vanilla"
    confidence_head: bool = False
    block_layout: str = "lab"  # parallel drafters: "lab" [anchor, mask x (k-1)] or "vllm" [anchor, mask x k]

    def to_dict(self) -> dict:
        return asdict(self)


def rope_theta_of(config) -> float:
    """rope_theta from a transformers 5 config (rope_parameters, per layer type for Gemma3)."""
    params = getattr(config, "rope_parameters", None) or {}
    if "full_attention" in params:
        params = params["full_attention"]
    return float(params.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def draft_dims(target, spec, vocab_size: int, layers: int | None = None) -> DraftDims:
    cfg = target.config
    d_t = target.hidden_size
    d = spec.hidden_size or d_t
    heads = spec.num_heads or (cfg.num_attention_heads if d == d_t else max(1, d // 64))
    kv = spec.num_kv_heads or (cfg.num_key_value_heads if d == d_t else heads)
    head_dim = spec.head_dim or (getattr(cfg, "head_dim", None) or d_t // cfg.num_attention_heads
                                 if d == d_t else d // heads)
    inter = spec.intermediate_size or (cfg.intermediate_size * d // d_t)
    if heads % kv:
        raise ValueError(f"drafter {spec.name}: num_heads {heads} must be a multiple of num_kv_heads {kv}")
    return DraftDims(target_hidden=d_t, n_tap=len(target.tap_layers), hidden=d, heads=heads, kv_heads=kv,
                     head_dim=head_dim, intermediate=inter, layers=layers or spec.num_layers,
                     rope_theta=rope_theta_of(cfg), eps=float(getattr(cfg, "rms_norm_eps", 1e-6)),
                     vocab=vocab_size, target_vocab=target.vocab_size, block_size=spec.block_size,
                     block_layout=getattr(spec, "block_layout", "lab"))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x).to(dtype)


def rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding at true positions. x: [..., N, H, hd]; pos: [..., N] long."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (torch.arange(0, hd, 2, device=x.device, dtype=torch.float32) / hd))
    freqs = pos.float()[..., None] * inv_freq  # [..., N, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)[..., None, :]  # [..., N, 1, hd]
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q: [B, Nq, H, hd]; k, v: [B, Nk, Hkv, hd]; mask: [B or 1, Nq, Nk] bool (True = visible) -> [B, Nq, H*hd]."""
    rep = q.shape[2] // k.shape[2]
    if rep > 1:  # grouped-query attention: share each K/V head across `rep` query heads
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=None if mask is None else mask[:, None])
    return out.transpose(1, 2).flatten(2)


class SwiGLU(nn.Module):
    def __init__(self, d: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, inter, bias=False)
        self.up_proj = nn.Linear(d, inter, bias=False)
        self.down_proj = nn.Linear(inter, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class FrozenIO(nn.Module):
    """The target's frozen embedding and LM head, restricted to the draft vocabulary on the output side.

    Target weights are referenced, never registered as parameters, so checkpoints and optimizers hold
    only the drafter's own weights. d2t: [Vd] target id of each draft id (persistent: saved with the
    drafter); t2d: [V] draft id of each target id, Vd for tokens outside the draft vocab.
    """

    def __init__(self, target, d2t: torch.Tensor):
        super().__init__()
        vocab = target.vocab_size
        self.__dict__["_embed"] = target.embed_tokens  # plain attribute: not a submodule, not saved
        head = target.lm_head.weight  # [V, d_t]
        full = d2t.numel() == vocab and bool((d2t.cpu() == torch.arange(vocab)).all())
        self.full_vocab = full
        self.register_buffer("d2t", d2t.long().clone(), persistent=True)
        t2d = torch.full((vocab,), d2t.numel(), dtype=torch.long)
        t2d[d2t.long()] = torch.arange(d2t.numel())
        self.register_buffer("t2d", t2d, persistent=False)
        # Full vocab shares the target's storage (and dtype); a reduced vocab copies its Vd rows in float32
        # (small), so that a bf16 target still gives the drafter an fp32 output layer.
        rows = head.detach() if full else head.detach()[d2t.to(head.device)].float()
        self.register_buffer("head_weight", rows, persistent=False)
        self.softcap = getattr(target.config, "final_logit_softcapping", None)

    @property
    def vocab(self) -> int:
        return self.d2t.numel()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [...] target ids -> [..., d_t] float32 (Gemma's sqrt(d) scale included)."""
        with torch.no_grad():
            return self._embed(ids).float()

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [..., d_t] -> logits [..., Vd] float32 over the draft vocabulary."""
        w = self.head_weight
        logits = F.linear(hidden.to(w.dtype) if not torch.is_autocast_enabled() else hidden, w).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def to_draft(self, target_ids: torch.Tensor) -> torch.Tensor:
        return self.t2d[target_ids]

    def to_target(self, draft_ids: torch.Tensor) -> torch.Tensor:
        return self.d2t[draft_ids]


def init_weights(module: nn.Module, std: float = 0.02, generator: torch.Generator | None = None) -> None:
    """N(0, std) linear / embedding weights, zero biases; norms stay at one. Seeded by `generator`."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std, generator=generator)
