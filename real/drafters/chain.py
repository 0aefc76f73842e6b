"""Chain (autoregressive) draft model shared by EAGLE-3 and MTP-1, with its drafter.

    model = ChainDraftModel(dims, FrozenIO(target, d2t), mode="eagle3")   # or "mtp"
    hidden = model.forward_unrolled(features, ids, anchors, steps=7)      # training: [A, steps, d]

Entry t pairs a feature h_t of the target at position t with the token x_(t+1) and predicts x_(t+2).
  eagle3: h_t = fc([H^(l1); ...; H^(l5)]) (Linear(5 d_t -> d), the same 5 tapped layers as DSpark);
          the decoder layer attends from [norm(emb(x)); norm(h)] (2d input), residual h.
  mtp:    h_t = the target's final hidden state at t (MTPDrafter.feature_source = "final");
          u = M([norm(h); norm(emb(x))]) (2d -> d), a standard decoder layer over u — DeepSeek-V3's
          MTP module.
Step 0 entries over the context are cached (keys at positions <= t are visible, causal). Drafting
step i >= 1 feeds the layer's own output o_(i-1) back as h with the token drafted at step i-1, at
position P-1+i, and attends to the cached context plus this chain's own earlier steps — the same
attention pattern as EAGLE-3's training-time test, so training (forward_unrolled) and inference
(ChainDrafter.propose) see identical inputs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from real.drafters.base import DraftState, Proposal
from real.drafters.layers import DraftDims, FrozenIO, RMSNorm, SwiGLU, draft_dims, init_weights, rope
from real.drafters.trained import TrainedDrafter, sample_slot


def chain_attend(q: torch.Tensor, k0: torch.Tensor, v0: torch.Tensor, ctx_len: torch.Tensor,
                 dk: torch.Tensor | None, dv: torch.Tensor | None) -> torch.Tensor:
    """q: [A, H, hd]; k0/v0: [C, Hkv, hd] cached context entries, the first ctx_len[a] visible to query a;
    dk/dv: [A, i, Hkv, hd] the chain's own earlier steps (or None) -> [A, H*hd]."""
    a, h, hd = q.shape
    rep = h // k0.shape[1]
    k0r, v0r = k0.repeat_interleave(rep, 1), v0.repeat_interleave(rep, 1)  # [C, H, hd]
    scores = torch.einsum("ahd,chd->ahc", q, k0r) / math.sqrt(hd)  # [A, H, C]
    visible = torch.arange(k0.shape[0], device=q.device)[None, :] < ctx_len[:, None]  # [A, C]
    scores = scores.masked_fill(~visible[:, None, :], float("-inf"))
    if dk is not None and dk.shape[1] > 0:
        dkr, dvr = dk.repeat_interleave(rep, 2), dv.repeat_interleave(rep, 2)  # [A, i, H, hd]
        sd = torch.einsum("ahd,aihd->ahi", q, dkr) / math.sqrt(hd)  # [A, H, i]
        probs = torch.softmax(torch.cat([scores, sd], dim=-1).float(), dim=-1).to(q.dtype)
        pc, pd = probs[..., : k0.shape[0]], probs[..., k0.shape[0]:]
        out = torch.einsum("ahc,chd->ahd", pc, v0r) + torch.einsum("ahi,aihd->ahd", pd, dvr)
    else:
        probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        out = torch.einsum("ahc,chd->ahd", probs, v0r)
    return out.reshape(a, h * hd)


class ChainLayer(nn.Module):
    def __init__(self, dims: DraftDims, in_dim: int):
        super().__init__()
        d, h, kv, hd = dims.hidden, dims.heads, dims.kv_heads, dims.head_dim
        self.dims = dims
        self.q_proj = nn.Linear(in_dim, h * hd, bias=False)
        self.k_proj = nn.Linear(in_dim, kv * hd, bias=False)
        self.v_proj = nn.Linear(in_dim, kv * hd, bias=False)
        self.o_proj = nn.Linear(h * hd, d, bias=False)
        self.q_norm = RMSNorm(hd, dims.eps)
        self.k_norm = RMSNorm(hd, dims.eps)
        self.post_attention_layernorm = RMSNorm(d, dims.eps)
        self.mlp = SwiGLU(d, dims.intermediate)

    def qkv(self, a_in: torch.Tensor, pos: torch.Tensor):
        """a_in: [N, in_dim]; pos: [N] -> q [N, H, hd], k, v [N, Hkv, hd]."""
        n, dm = a_in.shape[0], self.dims
        q = rope(self.q_norm(self.q_proj(a_in).view(n, dm.heads, dm.head_dim)), pos, dm.rope_theta)
        k = rope(self.k_norm(self.k_proj(a_in).view(n, dm.kv_heads, dm.head_dim)), pos, dm.rope_theta)
        return q, k, self.v_proj(a_in).view(n, dm.kv_heads, dm.head_dim)

    def finish(self, residual: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        x = residual + self.o_proj(attn)
        return x + self.mlp(self.post_attention_layernorm(x))


class ChainDraftModel(nn.Module):
    def __init__(self, dims: DraftDims, io: FrozenIO, mode: str):
        super().__init__()
        if mode not in ("eagle3", "mtp"):
            raise ValueError(f"chain mode {mode!r}: expected eagle3 or mtp")
        self.dims, self.io, self.mode = dims, io, mode
        d, d_t = dims.hidden, dims.target_hidden
        self.in_proj = nn.Identity() if d == d_t else nn.Linear(d_t, d, bias=False)
        self.out_proj = nn.Identity() if d == d_t else nn.Linear(d, d_t, bias=False)
        self.embed_norm = RMSNorm(d, dims.eps)
        self.hidden_norm = RMSNorm(d, dims.eps)
        if mode == "eagle3":
            self.fc = nn.Linear(dims.n_tap * d_t, d, bias=False)
            self.layer = ChainLayer(dims, 2 * d)
        else:
            self.h_proj = nn.Identity() if d == d_t else nn.Linear(d_t, d, bias=False)
            self.m_proj = nn.Linear(2 * d, d, bias=False)
            self.input_layernorm = RMSNorm(d, dims.eps)
            self.layer = ChainLayer(dims, d)
        self.norm = RMSNorm(d, dims.eps)
        init_weights(self)

    def fuse(self, features: torch.Tensor) -> torch.Tensor:
        """features: [N, n_tap*d_t] tapped layers (eagle3) or [N, d_t] final hidden (mtp) -> h [N, d]."""
        if self.mode == "eagle3":
            return self.fc(features.to(self.fc.weight.dtype))
        return self.h_proj(features.to(self.norm.weight.dtype))

    def entry(self, h: torch.Tensor, x_ids: torch.Tensor):
        """h: [N, d]; x_ids: [N] target ids -> (attention input [N, in_dim], residual [N, d])."""
        e = self.embed_norm(self.in_proj(self.io.embed(x_ids)))
        if self.mode == "eagle3":
            return torch.cat([e, self.hidden_norm(h)], dim=-1), h
        u = self.m_proj(torch.cat([self.hidden_norm(h), e], dim=-1))
        return self.input_layernorm(u), u

    def logits(self, o: torch.Tensor) -> torch.Tensor:
        """o: [..., d] layer output -> [..., Vd]."""
        return self.io.head(self.out_proj(self.norm(o)))

    def forward(self, features: torch.Tensor, ids: torch.Tensor, anchors: torch.Tensor):
        """Training entry point (what DDP wraps): -> logits [A, k, Vd], None (no confidence head)."""
        return self.logits(self.forward_unrolled(features, ids, anchors, self.dims.block_size)), None

    def forward_unrolled(self, features: torch.Tensor, ids: torch.Tensor, anchors: torch.Tensor,
                         steps: int) -> torch.Tensor:
        """One sequence. features: [T, n_tap*d_t]; ids: [T]; anchors: [A] anchor positions P >= 1.
        Step i of anchor P predicts ids[P+1+i] -> layer outputs [A, steps, d] (before the final norm)."""
        t = ids.numel()
        dev = ids.device
        pos0 = torch.arange(t - 1, device=dev)
        a_in, res = self.entry(self.fuse(features[: t - 1]), ids[1:])  # entries t = 0..T-2
        q0, k0, v0 = self.layer.qkv(a_in, pos0)  # [T-1, ...]
        ctx_len = anchors  # anchor P sees entries 0..P-1
        q, r = q0[anchors - 1], res[anchors - 1]
        outs, dks, dvs = [], [], []
        for i in range(steps):
            if i > 0:
                x = ids[(anchors + i).clamp(max=t - 1)]  # ground-truth token drafted at step i-1
                a_i, r = self.entry(outs[-1], x)
                q, k, v = self.layer.qkv(a_i, anchors - 1 + i)
                dks.append(k)
                dvs.append(v)
            dk = torch.stack(dks, 1) if dks else None
            dv = torch.stack(dvs, 1) if dvs else None
            outs.append(self.layer.finish(r, chain_attend(q, k0, v0, ctx_len, dk, dv)))
        return torch.stack(outs, dim=1)


class ChainDrafter(TrainedDrafter):
    """Drafts one token per step, feeding its own hidden state back (EAGLE-3 / MTP chain drafting).

    Subclasses set `method` ("eagle3" or "mtp"), which is also the ChainDraftModel mode.
    """

    @classmethod
    def build_model(cls, spec, target, d2t: torch.Tensor) -> ChainDraftModel:
        dims = draft_dims(target, spec, vocab_size=d2t.numel(), layers=1)
        return ChainDraftModel(dims, FrozenIO(target, d2t), mode=cls.method).to(target.device)

    @torch.inference_mode()
    def propose(self, state: DraftState, anchor: int, k: int, temperature: float,
                generator: torch.Generator | None) -> Proposal:
        model = self.model
        dev = model.norm.weight.device
        cache = state.extra.setdefault("chain", {"k": None, "v": None, "n": 0})
        p = len(state.tokens)
        # Entries t <= P-2 pair features[t] with the committed token t+1 and are cached for good; entry P-1
        # pairs features[P-1] with the anchor and is recomputed each round (the anchor may change).
        n, feats = cache["n"], state.features.to(dev)
        if n < p - 1:
            a_in, _ = model.entry(model.fuse(feats[n:p - 1]), torch.tensor(state.tokens[n + 1:p], device=dev))
            _, k_new, v_new = model.layer.qkv(a_in, torch.arange(n, p - 1, device=dev))
            cache["k"] = k_new if cache["k"] is None else torch.cat([cache["k"], k_new])
            cache["v"] = v_new if cache["v"] is None else torch.cat([cache["v"], v_new])
            cache["n"] = p - 1
        a_in, r = model.entry(model.fuse(feats[p - 1:p]), torch.tensor([anchor], device=dev))
        q, k_last, v_last = model.layer.qkv(a_in, torch.tensor([p - 1], device=dev))
        ctx_k = k_last if cache["k"] is None else torch.cat([cache["k"], k_last])  # [P, Hkv, hd]
        ctx_v = v_last if cache["v"] is None else torch.cat([cache["v"], v_last])
        ctx_len = torch.tensor([p], device=dev)
        picks, qs, conf, dks, dvs = [], [], [], [], []
        o = None
        for i in range(k):
            if i > 0:
                a_i, r = model.entry(o, model.io.to_target(torch.tensor([picks[-1]], device=dev)))
                q, kk, vv = model.layer.qkv(a_i, torch.tensor([p - 1 + i], device=dev))
                dks.append(kk)
                dvs.append(vv)
            dk = torch.stack(dks, 1) if dks else None
            dv = torch.stack(dvs, 1) if dvs else None
            o = model.layer.finish(r, chain_attend(q, ctx_k, ctx_v, ctx_len, dk, dv))  # [1, d]
            idx, qd, p_pick = sample_slot(model.logits(o)[0], temperature, generator)
            picks.append(idx)
            qs.append(qd)
            conf.append(p_pick)
        return self.make_proposal(picks, qs, conf)
