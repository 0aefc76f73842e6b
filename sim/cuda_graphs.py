"""vLLM's CUDA graphs in the simulator: the memory vLLM keeps back from its KV cache for them
(engine.cuda_graph_memory) and the per-step cost of the graph layout its steps replay (engine.cuda_graph_mode).

    sizes = capture_sizes(max_num_seqs=256, max_num_batched_tokens=8192)   # (piecewise, full) token counts
    graphs = graph_counts(256, 8192)                                       # (51, 35): vLLM's log line
    gib = cuda_graph_memory_bytes(*graphs) / 2**30                         # ~0.8 GiB kept from the KV cache
    extra = graph_mode_layer_s("piecewise") * n_layers                     # s per step beyond FULL decode graphs

Graph layout (engine.cuda_graph_mode). vLLM V1 (the default engine from 0.8.0) captured PIECEWISE graphs only up
to 0.10.x: the pieces between attention ops are graphs and each layer's attention runs eagerly between them,
launched from Python ("vLLM's V1 architecture uses piecewise cudagraph ... we only capture the cudagraph for the
piece of graph between attention operations", docs/source/design/v1/torch_compile.md, vLLM PR 14437). PR 20059
(benchmarks posted June - August 2025) added full graphs for FlashAttention 2 / FlashInfer, and PR 25444 ("[Perf]
Change default CUDAGraphMode from PIECEWISE to FULL_AND_PIECEWISE", mgoin, 2025-09-23; first released in 0.11.0)
made a uniform decode step one full graph by default. The cost model's fixed terms (the sheets' step / layer /
request overheads) are scored on decode steps of FULL_AND_PIECEWISE-era vLLM (sim/validation/step_floor.yaml,
`python -m sim.step_floor_check`), so a PIECEWISE server pays PIECEWISE_LAYER_US more per layer and step: PR
20059's own serving benchmark (fhl2000, comment of 2025-06-29; vLLM main of that week; Qwen2.5-1.5B-Instruct, 28
layers, ShareGPT 100 prompts at 1 request/s, i.e. one user most of the time; the author's machine in PR 20050,
that change's first version: A100 40G, torch 2.6, CUDA 12.4) printed a median TPOT of 5.42 ms with piecewise
graphs and 5.02 ms with full graphs over the piecewise fx graph (the layout FULL_AND_PIECEWISE became; 5.09 ms
with a full fx graph): 0.40 ms / 28 layers = 14.3 us per layer and step (median ITL: 5.39 vs 4.97 ms, 15.0 us).
At 5-50 requests/s the same table's gap is 0.54-0.73 ms and at 100 requests/s 0.28 ms: one user's value is taken,
the case it was measured closest to. It is CPU time on that host (Python launching each layer's attention), not a
property of the GPU, and applies on a device that replays graphs at all (the sheet's `graphs`). It is added to
every step of a PIECEWISE server, as the benchmark measured it (over whole serving runs, where at one user nearly
every step is a pure decode); FULL_AND_PIECEWISE runs a step with a prefill chunk piecewise too, which the
sheets' fixed terms were not scored on separately.

CUDA-graph memory (engine.cuda_graph_memory).
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

from lab.config_sim import CUDA_GRAPH_MODES

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


# vLLM PR 20059's median TPOT at 1 request/s, piecewise (5.42 ms) minus full graphs over the piecewise fx graph
# (5.02 ms), over Qwen2.5-1.5B's 28 layers (module docstring): the per-layer, per-step cost of a PIECEWISE server
PIECEWISE_LAYER_US = (5.42 - 5.02) / 28 * 1e3  # 14.3 us


def graph_mode_layer_s(mode: str, graphs: bool = True) -> float:
    """Seconds per layer and step a server in CUDA-graph `mode` pays beyond the FULL_AND_PIECEWISE layout the
    sheets' fixed terms were scored on: PIECEWISE_LAYER_US for piecewise, 0 for full_and_piecewise or on a device
    without graphs (`graphs` False, the sheet's)."""
    if mode not in CUDA_GRAPH_MODES:
        raise ValueError(f"cuda_graph_mode {mode!r} is not one of {CUDA_GRAPH_MODES}")
    return PIECEWISE_LAYER_US * 1e-6 if mode == "piecewise" and graphs else 0.0
