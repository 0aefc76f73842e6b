"""The parallel KV-injected draft backbone of DSpark and DFlash (dspark_spec.md §1.1), plus its drafter.

    model = ParallelDraftModel(dims, FrozenIO(target, d2t))
    hidden = model.forward_anchors(features, ids, anchors)   # training / dense eval: [A, k, d]
    logits, conf = model.block_logits(hidden, prev_ids)      # teacher-forced Markov correction

Fusion H_ctx = RMSNorm(fc([H^(l1); ...; H^(l5)])), fc: Linear(n_tap*d_t -> d, no bias). In every draft
layer K = k_norm([k_proj(H_ctx); k_proj(H_blk)]), same for V, Q from the block only, shared projections,
RoPE at true positions. Block input [anchor, mask x (k-1)] at positions P..P+k-1 with bidirectional
in-block attention: slot j predicts the token at P+j+1 (the anchor slot predicts the next token), so k
slots give k drafts. Embedding and LM head are the target's, frozen.

block_layout "vllm" (DFlash only; vLLM's DFlash, vllm/v1/spec_decode/dflash.py + utils.py
copy_and_expand_dflash_inputs_kernel): the block is [anchor, mask x k] at positions P..P+k, still
bidirectional, and the k mask slots give the k drafts -- mask slot j (1..k) at position P+j predicts the
token at P+j; the anchor slot's output is computed (its K/V feed the mask slots) but never drafts. Either
way every consumer sees k slot hiddens [.., k, d] whose slot i predicts the token at P+1+i.

Because context K/V are projections of H_ctx only (never of earlier draft layers), the inference cache
is built straight from committed target features; block K/V are never stored, so nothing needs
cropping after a round.
"""
from __future__ import annotations

import torch
from torch import nn

from real.drafters.base import DraftState, Proposal
from real.drafters.layers import DraftDims, FrozenIO, RMSNorm, SwiGLU, attend, init_weights, rope
from real.drafters.markov import ConfidenceHead, MarkovHead
from real.drafters.trained import TrainedDrafter, sample_slot


class KVInjectLayer(nn.Module):
    def __init__(self, dims: DraftDims):
        super().__init__()
        d, h, kv, hd = dims.hidden, dims.heads, dims.kv_heads, dims.head_dim
        self.dims = dims
        self.input_layernorm = RMSNorm(d, dims.eps)
        self.q_proj = nn.Linear(d, h * hd, bias=False)
        self.k_proj = nn.Linear(d, kv * hd, bias=False)
        self.v_proj = nn.Linear(d, kv * hd, bias=False)
        self.o_proj = nn.Linear(h * hd, d, bias=False)
        self.q_norm = RMSNorm(hd, dims.eps)
        self.k_norm = RMSNorm(hd, dims.eps)
        self.post_attention_layernorm = RMSNorm(d, dims.eps)
        self.mlp = SwiGLU(d, dims.intermediate)

    def kv(self, x: torch.Tensor, pos: torch.Tensor):
        """x: [B, N, d] (H_ctx, or the normed block) -> k, v [B, N, Hkv, hd], RoPE applied to k."""
        b, n, _ = x.shape
        k = self.k_norm(self.k_proj(x).view(b, n, self.dims.kv_heads, self.dims.head_dim))
        v = self.v_proj(x).view(b, n, self.dims.kv_heads, self.dims.head_dim)
        return rope(k, pos, self.dims.rope_theta), v

    def forward(self, x: torch.Tensor, pos: torch.Tensor, ctx_k: torch.Tensor, ctx_v: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, N, d] block hidden; pos: [B, N]; ctx_k/v: [B, C, Hkv, hd]; mask: [B, N, C+N] or None."""
        b, n, _ = x.shape
        xn = self.input_layernorm(x)
        q = self.q_norm(self.q_proj(xn).view(b, n, self.dims.heads, self.dims.head_dim))
        q = rope(q, pos, self.dims.rope_theta)
        bk, bv = self.kv(xn, pos)
        k = torch.cat([ctx_k, bk], dim=1)  # [B, C+N, Hkv, hd]
        v = torch.cat([ctx_v, bv], dim=1)
        x = x + self.o_proj(attend(q, k, v, mask))
        return x + self.mlp(self.post_attention_layernorm(x))


class ParallelDraftModel(nn.Module):
    def __init__(self, dims: DraftDims, io: FrozenIO, mask_token_id: int):
        super().__init__()
        self.dims, self.io, self.mask_token_id = dims, io, mask_token_id
        d, d_t = dims.hidden, dims.target_hidden
        self.fc = nn.Linear(dims.n_tap * d_t, d, bias=False)
        self.fc_norm = RMSNorm(d, dims.eps)
        self.in_proj = nn.Identity() if d == d_t else nn.Linear(d_t, d, bias=False)
        self.out_proj = nn.Identity() if d == d_t else nn.Linear(d, d_t, bias=False)
        self.layers = nn.ModuleList(KVInjectLayer(dims) for _ in range(dims.layers))
        self.norm = RMSNorm(d, dims.eps)
        self.markov = (MarkovHead(d, dims.vocab, dims.markov_rank, dims.markov_variant)
                       if dims.markov_rank > 0 else None)
        self.confidence = ConfidenceHead(d, dims.markov_rank) if dims.confidence_head else None
        init_weights(self)

    # ---- context -----------------------------------------------------------------------------------
    def context_kv(self, features: torch.Tensor, pos: torch.Tensor):
        """features: [B, C, n_tap*d_t]; pos: [B, C] -> per layer (k, v) [B, C, Hkv, hd]."""
        h_ctx = self.fc_norm(self.fc(features.to(self.fc.weight.dtype)))  # [B, C, d]
        return [layer.kv(h_ctx, pos) for layer in self.layers]

    @property
    def first_draft_slot(self) -> int:
        """Index of the block slot holding the first draft: 0 (lab layout), 1 (vllm: the anchor slot is skipped)."""
        return 1 if self.dims.block_layout == "vllm" else 0

    @property
    def block_len(self) -> int:
        """Slots in the block fed to the layers: k (lab) or k + 1 (vllm)."""
        return self.dims.block_size + self.first_draft_slot

    def block_input(self, anchor_ids: torch.Tensor) -> torch.Tensor:
        """anchor_ids: [A] -> block token ids [A, block_len] = [anchor, mask, ..., mask]."""
        block = torch.full((anchor_ids.numel(), self.block_len), self.mask_token_id, dtype=torch.long,
                           device=anchor_ids.device)
        block[:, 0] = anchor_ids
        return block

    def run_layers(self, block_ids: torch.Tensor, pos: torch.Tensor, ctx, mask) -> torch.Tensor:
        """block_ids, pos: [B, N] -> final normed hidden [B, N, d]."""
        x = self.in_proj(self.io.embed(block_ids))  # [B, N, d]
        for layer, (ck, cv) in zip(self.layers, ctx):
            x = layer(x, pos, ck, cv, mask)
        return self.norm(x)

    # ---- training / dense evaluation ---------------------------------------------------------------
    def forward_anchors(self, features: torch.Tensor, ids: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """One sequence, many anchors at once. features: [T, n_tap*d_t]; ids: [T]; anchors: [A] positions
        P >= 1 of the anchor tokens. Anchor P sees context features < P and its own block -> [A, k, d],
        the k drafting slots (vllm layout: the block's n = k + 1 slots minus the anchor slot)."""
        t, n, a = ids.numel(), self.block_len, anchors.numel()
        dev = ids.device
        ctx = self.context_kv(features[None], torch.arange(t, device=dev)[None])
        block_ids = self.block_input(ids[anchors]).view(1, a * n)  # [1, A*n]
        pos = (anchors[:, None] + torch.arange(n, device=dev)[None]).view(1, a * n)  # [1, A*n]
        owner = torch.arange(a, device=dev).repeat_interleave(n)  # [A*n] block of each query
        see_ctx = torch.arange(t, device=dev)[None, :] < anchors[owner][:, None]  # [A*n, T]
        see_blk = owner[:, None] == owner[None, :]  # [A*n, A*n] bidirectional inside a block
        mask = torch.cat([see_ctx, see_blk], dim=1)[None]  # [1, A*n, T + A*n]
        hidden = self.run_layers(block_ids, pos, ctx, mask).view(a, n, -1)  # [A, n, d]
        return hidden[:, self.first_draft_slot:]  # [A, k, d]

    def forward(self, features: torch.Tensor, ids: torch.Tensor, anchors: torch.Tensor):
        """Training entry point (what DDP wraps): -> logits [A, k, Vd], confidence logits [A, k] or None."""
        hidden = self.forward_anchors(features, ids, anchors)
        slots = torch.arange(self.dims.block_size, device=ids.device)
        prev = ids[(anchors[:, None] + slots[None]).clamp(max=ids.numel() - 1)]  # [A, k] x_(j-1), x_0 = anchor
        return self.block_logits(hidden, prev)

    def block_logits(self, hidden: torch.Tensor, prev_ids: torch.Tensor):
        """Teacher-forced heads. hidden: [A, k, d]; prev_ids: [A, k] target ids x_(j-1) (anchor, then
        ground truth) -> logits [A, k, Vd] (U_j + Markov bias), confidence logits [A, k] or None."""
        u = self.io.head(self.out_proj(hidden))  # [A, k, Vd]
        prev = self.io.to_draft(prev_ids)  # [A, k] draft ids
        conf = None
        if self.markov is not None:
            state = self.markov.init_state(hidden.shape[0], hidden.device)
            biases = []
            for j in range(hidden.shape[1]):
                bias, state = self.markov.step(hidden[:, j], prev[:, j], state)
                biases.append(bias)
            u = u + torch.stack(biases, dim=1).float()
        if self.confidence is not None:
            emb = self.markov.embed(prev) if self.markov is not None else None
            conf = self.confidence(hidden, emb)
        return u, conf


class ContextCache:
    """Per-request draft cache: per layer context K/V [1, n, Hkv, hd] for the committed tokens."""

    def __init__(self):
        self.kv: list | None = None
        self.length = 0

    def extend(self, model: ParallelDraftModel, features: torch.Tensor) -> None:
        """features: [m, n_tap*d_t] of the next m context positions."""
        m = features.shape[0]
        if m == 0:
            return
        pos = torch.arange(self.length, self.length + m, device=features.device)[None]
        new = model.context_kv(features[None].to(features.device), pos)
        self.kv = new if self.kv is None else [
            (torch.cat([k0, k1], 1), torch.cat([v0, v1], 1)) for (k0, v0), (k1, v1) in zip(self.kv, new)]
        self.length += m


class ParallelDrafter(TrainedDrafter):
    """One backbone pass per round gives k slot hiddens; the Markov head then samples slot by slot."""

    @torch.inference_mode()
    def propose(self, state: DraftState, anchor: int, k: int, temperature: float,
                generator: torch.Generator | None) -> Proposal:
        model = self.model
        dev = model.fc.weight.device
        cache: ContextCache = state.extra.setdefault("cache", ContextCache())
        cache.extend(model, state.features[cache.length:].to(dev))
        p = len(state.tokens)  # the anchor's position
        kb = model.dims.block_size
        block = model.block_input(torch.tensor([anchor], device=dev))  # [1, n]: n = kb (lab) or kb + 1 (vllm)
        pos = torch.arange(p, p + model.block_len, device=dev)[None]  # [1, n]
        hidden = model.run_layers(block, pos, cache.kv, None)[0][model.first_draft_slot:]  # [kb, d]
        u = model.io.head(model.out_proj(hidden))  # [kb, Vd]
        prev = model.io.to_draft(torch.tensor([anchor], device=dev))  # [1]
        mstate = model.markov.init_state(1, dev) if model.markov is not None else None
        picks, qs, conf = [], [], []
        for j in range(min(k, kb)):
            logits = u[j]
            if model.markov is not None:
                bias, mstate = model.markov.step(hidden[j:j + 1], prev, mstate)
                logits = logits + bias[0].float()
            idx, q, p_pick = sample_slot(logits, temperature, generator)
            if model.confidence is not None:
                emb = model.markov.embed(prev) if model.markov is not None else None
                conf.append(float(torch.sigmoid(model.confidence(hidden[j:j + 1], emb))[0]))
            else:
                conf.append(p_pick)
            picks.append(idx)
            qs.append(q)
            prev = torch.tensor([idx], device=dev)
        return self.make_proposal(picks, qs, conf)
