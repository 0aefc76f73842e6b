"""The CUDA-graph memory vLLM keeps back from its KV cache (engine.cuda_graph_memory).

    sizes = capture_sizes(max_num_seqs=256, max_num_batched_tokens=8192)   # (piecewise, full) token counts
    graphs = graph_counts(256, 8192)                                       # (51, 35): vLLM's log line
    gib = cuda_graph_memory_bytes(*graphs) / 2**30                         # ~0.8 GiB kept from the KV cache

From vLLM 0.20 (PR #38284, "Enable CUDAGraph memory profiling by default"; the log says "default since v0.21.0"
but 0.20.0 logs already apply it) the worker's memory profile (vllm/v1/worker/gpu_worker.py
determine_available_memory) runs, unless --enforce-eager, GPUModelRunner.profile_cudagraph_memory()
(PR #30515) and sizes the KV cache as total x gpu_memory_utilization - non-KV memory - that estimate, while
VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS (default 1) is on. The estimate is a measurement, not a formula: on a
minimal KV cache, for each CUDA-graph mode (PIECEWISE, FULL) it captures the two largest descriptors in a
throwaway pool and takes the free-memory drop of each, then extrapolates: max over modes of the first capture
+ sum over modes of (graphs - 1) x max(second capture, 1 MiB). It logs "Profiling CUDA graph memory:
PIECEWISE=51 (largest=512), FULL=35 (largest=256)" and "Estimated CUDA graph memory: X GiB total"; with the
estimate on, "The current --gpu-memory-utilization=U is equivalent to --gpu-memory-utilization=U' without CUDA
graph memory profiling" (U - U' = X / total). -O0 and cudagraph_mode NONE capture no graphs (estimate 0).

The simulator cannot capture graphs, so it prices that rule with two constants fitted on public logs
(sim/validation/vllm_memory.yaml, the entries with cuda_graph_gib; `python -m sim.vllm_memory --fit`,
BENCHMARKS.md session 28): a first capture of CUDA_GRAPH_FIRST_BYTES and CUDA_GRAPH_PER_GRAPH_BYTES for each
further graph of each mode. The graph counts follow vLLM's default capture sizes (vllm/config/vllm.py
_set_cudagraph_sizes): max size = min(max_num_seqs x (1 + speculative tokens) x 2, 512, max_num_batched_tokens),
sizes [1, 2, 4] + 8..248 step 8 + 256..max step 16 (PIECEWISE, mixed batches); FULL (decode, the default mode
FULL_AND_PIECEWISE) the sizes up to max_num_seqs x (1 + speculative tokens).
"""
from __future__ import annotations

MIB = 2**20
# The least-absolute-deviation fit of first + per x (graphs - modes) on the 9 logs' estimates (sim/vllm_memory.py
# fit_cuda_graphs; leave-one-out MAE 0.23 GiB; BENCHMARKS.md session 28, "CUDA-graph memory in vLLM's KV
# sizing"): vLLM's default 51 + 35 graphs (max_num_seqs 256) -> 0.78 GiB, 51 + 51 (1024 sequences) -> 0.86 GiB.
CUDA_GRAPH_FIRST_BYTES = 390 * MIB  # 389.7 MiB fitted
CUDA_GRAPH_PER_GRAPH_BYTES = 4.87 * MIB
CUDA_GRAPH_MAX_SIZE = 512  # vLLM's cap on the default max_cudagraph_capture_size


def capture_sizes(max_num_seqs: int, max_num_batched_tokens: int, spec_tokens: int = 0,
                  full: bool = True) -> tuple[list[int], list[int]]:
    """(PIECEWISE sizes, FULL sizes) vLLM captures by default; `full` False: PIECEWISE only (cudagraph_mode
    PIECEWISE, e.g. a backend without full-graph decode), FULL then empty."""
    query = 1 + spec_tokens
    top = min(max_num_seqs * query * 2, CUDA_GRAPH_MAX_SIZE, max_num_batched_tokens)
    sizes = [s for s in (1, 2, 4) if s <= top] + list(range(8, min(top + 1, 256), 8)) + \
        list(range(256, top + 1, 16))
    decode = [s for s in sizes if s <= max_num_seqs * query] if full else []
    return sizes, decode


def graph_counts(max_num_seqs: int, max_num_batched_tokens: int, spec_tokens: int = 0,
                 full: bool = True) -> tuple[int, int]:
    """(PIECEWISE graphs, FULL graphs), as vLLM's "Profiling CUDA graph memory" line counts them."""
    pw, fl = capture_sizes(max_num_seqs, max_num_batched_tokens, spec_tokens, full)
    return len(pw), len(fl)


def cuda_graph_memory_bytes(piecewise: int, full: int = 0, first: float = CUDA_GRAPH_FIRST_BYTES,
                            per_graph: float = CUDA_GRAPH_PER_GRAPH_BYTES) -> float:
    """Per-GPU bytes vLLM's estimate keeps back for `piecewise` + `full` graphs: the first capture + each
    further graph of each mode (0 when none are captured)."""
    further = max(piecewise - 1, 0) + max(full - 1, 0)
    return 0.0 if piecewise + full == 0 else first + per_graph * further
