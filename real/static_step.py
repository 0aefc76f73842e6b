"""Fast target steps: a static KV cache (target.engine: static) and CUDA-graph replay (target.engine: graphs).

    target.engine = resolve_engine(cfg.target.engine, device)     # load_target does this
    cache = target.new_cache(max_len=prompt_len + max_new + k + 2)
    out = target.forward(ids, cache)         # static / graphs: same TargetOutput, same tokens as eager

Eager transformers decoding with a DynamicCache is launch- and Python-bound on a GPU (a Qwen3-4B bf16 step
took 29-44 ms on an H200 whose weights-read bound is ~1.7 ms; transformers' StaticCache alone gave 4.9x,
../shared/reference/gpu_h200_check.md). Two pieces close that gap:

- StaticKV: one preallocated cache per target, every layer (sliding ones too) a full-length StaticLayer
  holding keys at their absolute positions. Rolling back rejected drafts only moves the layer counters
  (the causal / sliding-window mask hides the stale tail until it is overwritten), so speculative rollback
  works for Gemma3's sliding layers, which transformers' own sliding static layer cannot crop past its
  window. The cache is reused across requests (its counters reset), so captured graphs stay valid.
- GraphedSteps (CUDA only): one torch.cuda.CUDAGraph per (query length, features) bucket, captured
  lazily after two warm-up forwards on a side stream. The cache counter is a device tensor advanced by an
  in-place add_ inside the graph, so a replay advances it exactly as an eager step does -- the failure of
  torch.compile(mode="reduce-overhead") (cudagraph trees overwriting that counter between replays) does
  not arise with a graph we own. A bucket whose capture fails falls back to the static eager step, once,
  with a message. Outputs are cloned out of the graph's pool before the next replay.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, StaticLayer

ENGINES = ("eager", "static", "graphs")


def resolve_engine(engine: str, device) -> str:
    """target.engine auto -> graphs on CUDA, eager elsewhere (graphs need CUDA; static runs anywhere)."""
    if engine != "auto":
        return engine
    return "graphs" if torch.device(device).type == "cuda" else "eager"


class StaticKV(Cache):
    """A preallocated KV cache of `max_len` positions per layer, rolled back by moving counters."""

    def __init__(self, num_layers: int, max_len: int):
        super().__init__(layers=[StaticLayer(max_cache_len=max_len) for _ in range(num_layers)])
        self.max_len = max_len

    def length(self) -> int:
        layer = self.layers[0]
        return int(layer.cumulative_length) if layer.is_initialized else 0

    def rewind(self) -> None:
        """Empty it for the next request (the stale keys are masked, then overwritten)."""
        with torch.inference_mode():  # the counters may be inference tensors: see crop
            for layer in self.layers:
                layer.cumulative_length.zero_()

    def crop(self, tokens_to_remove: int) -> None:
        """Forget the last |tokens_to_remove| positions: the counters move back in place (the tensors keep
        their static addresses for CUDA graphs); 0 is a no-op. transformers' StaticLayer.crop (5.2x)
        does the same and is missing in 5.17, so it is done here."""
        n = abs(int(tokens_to_remove))
        if n:
            # StaticLayer.lazy_initialization moves its counter with .to(device) inside the target's
            # inference_mode forward: on CUDA that copy is an inference tensor, which an in-place update
            # outside inference mode refuses (it crashed the first H200 bench); on CPU .to() is a no-op.
            with torch.inference_mode():
                for layer in self.layers:
                    layer.cumulative_length.sub_(n)


@dataclass
class _Graph:
    graph: object  # torch.cuda.CUDAGraph
    input_ids: torch.Tensor  # [1, T] static input buffer
    output: object  # TargetOutput living in the graph's memory pool


class GraphedSteps:
    """CUDA-graph replays of a target's forward over its StaticKV, one graph per query-length bucket."""

    def __init__(self, max_query: int = 64):
        self.max_query = max_query
        self.graphs: dict[tuple[int, bool], _Graph | None] = {}  # None: capture failed, run static eager

    def reset(self) -> None:
        self.graphs.clear()

    def usable(self, input_ids: torch.Tensor, cache, attention_mask, position_ids, last_logits_only) -> bool:
        return (isinstance(cache, StaticKV) and input_ids.shape[0] == 1 and input_ids.shape[1] <= self.max_query
                and attention_mask is None and position_ids is None and not last_logits_only
                and cache.length() > 0 and cache.layers[0].keys.device.type == "cuda")

    def run(self, eager_forward, input_ids: torch.Tensor, cache: StaticKV, with_features: bool):  # pragma: no cover
        """GPU only (tests/real/test_gpu.py): replay the bucket's graph, capturing it on first use."""
        key = (int(input_ids.shape[1]), bool(with_features))
        if key not in self.graphs:
            self.graphs[key] = self._capture(eager_forward, input_ids, cache, with_features)
        entry = self.graphs[key]
        if entry is None:
            return eager_forward(input_ids, cache, with_features)
        entry.input_ids.copy_(input_ids)
        entry.graph.replay()
        out = entry.output
        return type(out)(logits=out.logits.clone(),
                         features=None if out.features is None else out.features.clone(),
                         last_hidden=None if out.last_hidden is None else out.last_hidden.clone())

    def _capture(self, eager_forward, input_ids, cache: StaticKV, with_features):  # pragma: no cover
        query = input_ids.shape[1]
        static_ids = input_ids.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: kernels chosen, workspaces allocated; the counter is put back
                    eager_forward(static_ids, cache, with_features)
                    cache.crop(query)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # recorded, not run: the cache is as it was
                output = eager_forward(static_ids, cache, with_features)
        except RuntimeError as exc:  # a step that syncs with the host (.item(), ...) cannot be captured
            torch.cuda.synchronize()
            print(f"target.engine graphs: query length {query} not captured ({type(exc).__name__}: "
                  f"{str(exc)[:160]}); this bucket runs the static eager step", file=sys.stderr)
            return None
        return _Graph(graph, static_ids, output)
