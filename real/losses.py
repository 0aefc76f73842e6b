"""Drafter training losses (dspark_spec.md §1.3) and the analytic acceptance metrics logged with them.

    w = loss_weights(spec)                  # method defaults, YAML overrides
    loss, metrics = block_loss(logits, conf_logits, labels, target_logp, valid, w)

Per anchor a draft block of k slots is scored against the target:
  position weights   w_j = exp(-j / gamma_decay), j = 0..k-1 (eagle3: step_decay^j), times the
                     contiguous valid-prefix mask;
  CE                 hard labels = the dataset (target-regenerated) tokens;
  L1                 sum_v |p_d - p_t| over the full vocabulary (= 2 TV, not KL); with a reduced draft
                     vocab p_d is 0 outside it, so the target mass there is added as is;
  confidence         BCE_with_logits(conf, 1 - 0.5 ||p_d - p_t||_1), soft label detached;
  soft CE (eagle3)   -sum_v p_t log p_d (SpecForge's EAGLE-3 objective);
each term normalised as sum(w l) / sum(w). DSpark: 0.1 CE + 0.9 L1 + 1.0 conf; DFlash and MTP: CE only;
EAGLE-3: soft CE with 0.8^j step decay.

gamma_decay = 4.0 follows DeepSpec's code (`loss_decay_gamma=4.0` in every config). The paper writes
exp(-(k-1)/gamma) with gamma the block size (7); we follow the code, the YAML can set 7.

Logged: accept@j = 1 - TV_j (the analytic acceptance rate of slot j given earlier ones accepted) and
tau_probabilistic = 1 + sum_j prod_(i<=j) (1 - TV_i).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    ce: float
    l1: float
    conf: float
    soft_ce: float
    gamma_decay: float
    step_decay: float | None  # set: weights step_decay^j (eagle3); None: exp(-j / gamma_decay)


METHOD_DEFAULTS = {  # (ce, l1, conf, soft_ce)
    "dspark": (0.1, 0.9, 1.0, 0.0),
    "dflash": (1.0, 0.0, 0.0, 0.0),
    "eagle3": (0.0, 0.0, 0.0, 1.0),
    "mtp": (1.0, 0.0, 0.0, 0.0),
}


def loss_weights(spec) -> LossWeights:
    ce, l1, conf, soft = METHOD_DEFAULTS[spec.method]
    ce = ce if spec.ce_weight is None else spec.ce_weight
    l1 = l1 if spec.l1_weight is None else spec.l1_weight
    conf = conf if spec.conf_weight is None else spec.conf_weight
    if spec.method == "dspark" and not spec.confidence_head:
        conf = 0.0
    return LossWeights(ce=ce, l1=l1, conf=conf, soft_ce=soft, gamma_decay=spec.gamma_decay,
                       step_decay=spec.step_decay if spec.method == "eagle3" else None)


def position_weights(k: int, w: LossWeights, device) -> torch.Tensor:
    j = torch.arange(k, device=device, dtype=torch.float32)
    if w.step_decay is not None:
        return w.step_decay ** j
    return torch.exp(-j / w.gamma_decay)


def block_loss(logits: torch.Tensor, conf_logits: torch.Tensor | None, labels: torch.Tensor,
               target_logp: torch.Tensor, valid: torch.Tensor, w: LossWeights):
    """logits: [N, k, Vd] draft logits; conf_logits: [N, k] or None; labels: [N, k] draft ids (Vd = out of
    the draft vocab); target_logp: [N, k, Vd] log p_t over the draft vocab (normalised over the full
    vocab); valid: [N, k] bool. Returns (loss scalar, metrics dict of floats)."""
    _n, k, vd = logits.shape
    logits = logits.float()
    # [N, k] weights: decay times the contiguous valid prefix
    prefix = torch.cumprod(valid.long(), dim=1).bool()
    weights = position_weights(k, w, logits.device)[None, :] * prefix
    denom = weights.sum().clamp_min(1e-8)

    logp_d = F.log_softmax(logits, dim=-1)  # [N, k, Vd]
    p_d = logp_d.exp()
    p_t = target_logp.float().exp()  # [N, k, Vd]
    outside = (1.0 - p_t.sum(-1)).clamp_min(0.0)  # [N, k] target mass outside the draft vocab
    l1 = (p_d - p_t).abs().sum(-1) + outside  # [N, k] = 2 TV
    # a bf16 target's log-normaliser can leave sum(p_t) a hair above 1; TV is a probability
    tv = (0.5 * l1).clamp(0.0, 1.0)

    total = logits.new_zeros(())
    parts = {}
    if w.ce > 0:
        in_vocab = labels < vd
        ce = -logp_d.gather(-1, labels.clamp(max=vd - 1)[..., None]).squeeze(-1)  # [N, k]
        ce_w = weights * in_vocab
        parts["ce"] = (ce * ce_w).sum() / ce_w.sum().clamp_min(1e-8)
        total = total + w.ce * parts["ce"]
    if w.soft_ce > 0:
        soft = -(p_t * logp_d).sum(-1)  # [N, k]
        parts["soft_ce"] = (soft * weights).sum() / denom
        total = total + w.soft_ce * parts["soft_ce"]
    if w.l1 > 0:
        parts["l1"] = (l1 * weights).sum() / denom
        total = total + w.l1 * parts["l1"]
    if w.conf > 0 and conf_logits is not None:
        label = (1.0 - tv).clamp(0.0, 1.0).detach()
        bce = F.binary_cross_entropy_with_logits(conf_logits.float(), label, reduction="none")
        parts["conf"] = (bce * weights).sum() / denom
        total = total + w.conf * parts["conf"]

    metrics = {name: float(v.detach()) for name, v in parts.items()}
    metrics["loss"] = float(total.detach())
    metrics.update(acceptance_metrics(tv.detach(), prefix))
    return total, metrics


def acceptance_metrics(tv: torch.Tensor, valid: torch.Tensor) -> dict:
    """tv: [N, k] total variation per slot; valid: [N, k] -> accept@j means and tau_probabilistic."""
    counts = valid.sum(0).clamp_min(1)
    accept = ((1.0 - tv) * valid).sum(0) / counts  # [k]
    out = {f"accept@{j + 1}": float(a) for j, a in enumerate(accept)}
    out["tau"] = float(1.0 + torch.cumprod(accept, 0).sum())
    return out
