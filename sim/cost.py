"""Cost model: the wall time of one engine step, and the steps-per-second curve SPS(B) policies use.

    cm = CostModel.from_config(sim_cfg)          # no I/O unless hardware.profile_csv is set
    cm.step_time(tokens, kv_sum, n_reqs, spec)   # seconds, scalar (hot path, pure Python)
    cm.step_time_vec(tokens_array, kv_sum, n_reqs, spec)   # numpy, for a policy's SPS curve

Roofline mode: t = max(FLOPs / (mfu * peak), (weights + KV bytes) / (bw_eff * BW)) / tp
  + n_layers * c_layer + n_reqs * c_req + c_step (+ TP all-reduce) + drafter pass + spec overhead,
with tokens = sum over requests of (1 + l_r) plus prefill chunk tokens, kv_sum = sum of KV lengths read.
Table mode: a measured step_ms(tokens) table (hardware.profile_csv), linearly interpolated, plus the KV
read term. Optional CUDA-graph buckets pad a step up to the next captured size (jagged SPS, as real engines).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from lab.errors import LabError
from sim.hardware import Hardware, get_hardware, load_profile_csv
from sim.models import ModelShape, get_model


@dataclass
class CostModel:
    hw: Hardware
    model: ModelShape
    tp: int = 1
    drafter_layers: int = 2
    max_draft: int = 7
    step_overhead_s: float = 0.13e-3
    layer_overhead_s: float = 32e-6
    request_overhead_s: float = 4e-6
    spec_overhead_s: float = 0.3e-3
    buckets: tuple[int, ...] | None = None
    eager_penalty: float = 1.1
    table_tokens: np.ndarray | None = None  # measured profile (tokens, seconds)
    table_s: np.ndarray | None = None

    def __post_init__(self):
        hw, m, tp = self.hw, self.model, self.tp
        bw = hw.mem_bw_tbs * 1e12 * hw.bw_eff * tp
        flops = hw.peak_tflops * 1e12 * hw.mfu * tp
        # per-step constants, precomputed so that step_time is a handful of float ops
        self._bw = bw
        self._moe = bool(m.moe_experts)
        self._t_weights = m.active_weight_bytes / bw
        self._t_per_token_flops = m.flops_per_token / flops
        self._t_per_kv_token = m.kv_bytes_per_token / bw
        self._fixed = self.step_overhead_s + m.n_layers * self.layer_overhead_s
        if tp > 1:  # two all-reduces per layer
            self._fixed += 2 * m.n_layers * hw.link_latency_us * 1e-6
            self._t_per_token_link = 2 * m.n_layers * m.hidden * 2 / (hw.link_gbs * 1e9)
        else:
            self._t_per_token_link = 0.0
        frac = self.drafter_layers / m.n_layers
        self._draft_weights = frac * self._t_weights
        self._draft_per_token = frac * self._t_per_token_flops
        self._draft_fixed = self.drafter_layers * self.layer_overhead_s
        self._bucket_list = list(self.buckets) if self.buckets else None
        self._bucket_max = self.buckets[-1] if self.buckets else 0
        if self.table_tokens is not None:
            self._tt = [float(x) for x in self.table_tokens]
            self._ts = [float(x) for x in self.table_s]

    @classmethod
    def from_config(cls, sim) -> CostModel:
        hw_cfg = sim.hardware
        model = get_model(sim.model.name)
        table_tokens = table_s = None
        if hw_cfg.profile_csv:
            table_tokens, step_ms = load_profile_csv(_expand(hw_cfg.profile_csv))
            table_s = step_ms / 1e3
            hw = get_hardware("h100") if hw_cfg.name not in _known() else get_hardware(hw_cfg.name)
        else:
            hw = get_hardware(hw_cfg.name, hw_cfg.mfu, hw_cfg.bw_efficiency)
        c = sim.cost
        return cls(hw=hw, model=model, tp=hw_cfg.tp, drafter_layers=sim.model.drafter_layers,
                   max_draft=sim.acceptance.max_draft, step_overhead_s=c.step_overhead_ms / 1e3,
                   layer_overhead_s=c.layer_overhead_us / 1e6, request_overhead_s=c.request_overhead_us / 1e6,
                   spec_overhead_s=c.spec_overhead_ms / 1e3,
                   buckets=tuple(c.cuda_graph_buckets) if c.cuda_graph_buckets else None,
                   eager_penalty=c.eager_penalty, table_tokens=table_tokens, table_s=table_s)

    # ---- KV capacity -------------------------------------------------------------------------------
    def kv_capacity_tokens(self, gpu_mem_util: float) -> int:
        budget = self.hw.mem_gib * 2**30 * gpu_mem_util * self.tp - self.model.weight_bytes
        if budget <= 0:
            raise LabError(f"sim: model {self.model.name} ({self.model.weight_bytes / 2**30:.0f} GiB) does not fit "
                           f"{self.tp} x {self.hw.name}; raise hardware.tp or set batching.kv_capacity_tokens")
        return int(budget / self.model.kv_bytes_per_token)

    # ---- step time ---------------------------------------------------------------------------------
    def _core(self, tokens: float) -> float:
        """Time of the token-proportional part (weights/FLOPs), before KV and overheads."""
        if self.table_tokens is not None:
            tt, ts = self._tt, self._ts
            if tokens <= tt[0]:
                return ts[0]
            if tokens >= tt[-1]:
                if len(tt) == 1:
                    return ts[0] * tokens / tt[0]
                slope = (ts[-1] - ts[-2]) / (tt[-1] - tt[-2])
                return ts[-1] + slope * (tokens - tt[-1])
            i = bisect.bisect_left(tt, tokens)
            w = (tokens - tt[i - 1]) / (tt[i] - tt[i - 1])
            return ts[i - 1] + w * (ts[i] - ts[i - 1])
        compute = tokens * self._t_per_token_flops
        w = self.model.weight_bytes_read(tokens) / self._bw if self._moe else self._t_weights
        return max(w, compute)

    def step_time(self, tokens: int, kv_sum: float, n_reqs: int, spec: bool) -> float:
        """Seconds for one engine step with `tokens` query tokens, reading `kv_sum` cached tokens."""
        mult = 1.0
        if self._bucket_list is not None:
            if tokens <= self._bucket_max:
                tokens = self._bucket_list[bisect.bisect_left(self._bucket_list, tokens)]
            else:
                mult = self.eager_penalty
        t = self._core(tokens)
        if self.table_tokens is None:
            t += kv_sum * self._t_per_kv_token + self._fixed + tokens * self._t_per_token_link
        else:
            t += kv_sum * self._t_per_kv_token
        t += n_reqs * self.request_overhead_s
        if spec:
            draft_tokens = n_reqs * self.max_draft
            dc = draft_tokens * self._draft_per_token
            t += (max(self._draft_weights, dc)) + self._draft_fixed + self.spec_overhead_s
        return t * mult

    def step_time_vec(self, tokens: np.ndarray, kv_sum: float, n_reqs: int, spec: bool) -> np.ndarray:
        """Vectorised step_time over an array of token counts (same batch, different verify budgets)."""
        tokens = np.asarray(tokens, dtype=np.float64)
        mult = 1.0
        if self._bucket_list is not None:
            b = np.asarray(self._bucket_list, dtype=np.float64)
            idx = np.searchsorted(b, tokens)
            inside = idx < len(b)
            tokens = np.where(inside, b[np.minimum(idx, len(b) - 1)], tokens)
            mult = np.where(inside, 1.0, self.eager_penalty)
        if self.table_tokens is not None:
            tt, ts = self.table_tokens.astype(np.float64), self.table_s
            core = np.interp(tokens, tt, ts)
            if len(tt) > 1:
                slope = (ts[-1] - ts[-2]) / (tt[-1] - tt[-2])
                core = np.where(tokens > tt[-1], ts[-1] + slope * (tokens - tt[-1]), core)
            t = core + kv_sum * self._t_per_kv_token
        else:
            w = self.model.weight_bytes_read(tokens) / self._bw if self._moe else self._t_weights
            t = np.maximum(tokens * self._t_per_token_flops, w)
            t = t + (kv_sum * self._t_per_kv_token + self._fixed) + tokens * self._t_per_token_link
        t = t + n_reqs * self.request_overhead_s
        if spec:
            dc = n_reqs * self.max_draft * self._draft_per_token
            t = t + (max(dc, self._draft_weights) + self._draft_fixed + self.spec_overhead_s)
        return t * mult

    @property
    def t_per_kv_token(self) -> float:
        return self._t_per_kv_token

    def linear_sps_params(self):
        """Constants of a speculative step's cost for the hot path, or None when the curve is a table,
        bucket-padded or has a TP link term (callers then use step_time_vec):
        step_time = max(tokens * f, W) + c_fixed + max(n_reqs * d_tok, d_w) + kv_sum * t_kv + n_reqs * c_req."""
        if self.table_tokens is not None or self._bucket_list is not None or self._t_per_token_link or self._moe:
            return None
        return (self._t_per_token_flops, self._t_weights, self._fixed + self.spec_overhead_s + self._draft_fixed,
                self.request_overhead_s, self.max_draft * self._draft_per_token, self._draft_weights)

    def sps_table(self, max_tokens: int, kv_per_req: float = 1024, spec: bool = True) -> np.ndarray:
        """SPS(B) for B = 1..max_tokens at one request per token (the 'profiled once at init' table)."""
        b = np.arange(1, max_tokens + 1)
        return 1.0 / self.step_time_vec(b, kv_per_req * b, int(b[0]), spec)


def _known():
    from sim.hardware import HARDWARE

    return HARDWARE


def _expand(path: str) -> str:
    import os

    return os.path.expandvars(os.path.expanduser(path))
