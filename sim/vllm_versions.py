"""Engine settings that follow the vLLM release being modelled (`sim.engine.vllm_version`, a public row's `vllm`).

    from sim.vllm_versions import release_defaults, vllm_version_defaults
    vllm_version_defaults("0.8.5")   # sampler, cuda_graph_memory, gpu_memory_utilization, linear_attn_mixed, async_scheduling
    release_defaults(engine, v1_limits, model, "cuda")   # engine.vllm_version 0.6.0: 256 sequences, unchunked, ...

sim.hardware.engine_with_defaults applies both to the engine fields a YAML leaves unset; sim.public_check applies
the first to its rows. Every rule cites the vLLM source it was read from (tags: github.com/vllm-project/vllm/tree/vX).
"""
from __future__ import annotations

import re

from lab.errors import LabError


def version_tuple(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string such as 0.19.2rc1.dev8."""
    return (tuple(int(x) for x in re.findall(r"\d+", version)[:3]) + (0, 0, 0))[:3]


def vllm_sampler(version: str) -> str:
    """How the vLLM `version`'s official image applies top-k / top-p by default (engine.sampler, which sets the
    profile run's sampler peak, sim/kv_cache.py): V0 (before 0.8) sorts; 0.8 - 0.11.0 use FlashInfer's kernels
    (the 0.8 images ship FlashInfer 0.2.1.post2, older than the 0.2.3 API that 0.8 refuses and PR 15777 adopted;
    a pip install without FlashInfer sorts instead), 0.11.1 - 0.16 sort (PR 26859 turned FlashInfer's off),
    0.17 - 0.19 run vLLM's Triton kernels (PR 33538), later releases FlashInfer's again (PR 40376)."""
    major, minor, patch = version_tuple(version)
    if (major, minor) < (0, 8):
        return "sort"
    if (major, minor, patch) <= (0, 11, 0):
        return "flashinfer"
    if (major, minor) < (0, 17):
        return "sort"
    return "triton" if (major, minor) < (0, 20) else "flashinfer"


# vLLM PR #38284 (in 0.20.0; its log says "default since v0.21.0"): the worker takes its CUDA-graph estimate off the
# KV cache (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1) and the default --gpu-memory-utilization rises 0.9 -> 0.92
CUDA_GRAPH_ESTIMATE_SINCE = (0, 20, 0)
# V1 (the default engine from 0.8.0) replayed PIECEWISE graphs until PR 25444 (2025-09-23) made FULL_AND_PIECEWISE the
# default in 0.11.0 (sim/cuda_graphs.py)
PIECEWISE_SINCE, FULL_AND_PIECEWISE_SINCE = (0, 8, 0), (0, 11, 0)


def vllm_cuda_graph_mode(version: str) -> str:
    """The CUDA-graph layout the vLLM `version` replays by default (engine.cuda_graph_mode, sim/cuda_graphs.py):
    piecewise for V1 from 0.8.0 (the release that made V1 the default engine) to 0.10.x, full_and_piecewise from
    0.11.0 (PR 25444). V0 (before 0.8) captured each decode batch as one whole-model graph: full_and_piecewise."""
    return "piecewise" if PIECEWISE_SINCE <= version_tuple(version) < FULL_AND_PIECEWISE_SINCE \
        else "full_and_piecewise"


# vLLM's all2all backend for expert parallelism over data-parallel ranks (sim.hardware.all2all, sim/cost.py
# all2all_cost) when the server is not told one (VLLM_ALL2ALL_BACKEND, later --all2all-backend): "naive" up to 0.10
# (vllm/envs.py: `os.getenv("VLLM_ALL2ALL_BACKEND", "naive")`), "allgather_reducescatter" once PR #23964 (opened
# 2025-08-29) added the AgRs manager (a main between 0.10.2 and 0.11.0 already declares it the default in vllm/envs.py;
# PR #33728, 2026-02: "allgather_reducescatter is already the default"). Taken from 0.11.0, as lab/config_sim.py says
ALLGATHER_REDUCESCATTER_SINCE = (0, 11, 0)


def vllm_all2all(version: str | None) -> str:
    """The all2all backend `vllm serve` of release `version` runs by default for --enable-expert-parallel over
    --data-parallel-size > 1: naive before 0.11, allgather_reducescatter from 0.11 (ALLGATHER_REDUCESCATTER_SINCE)
    and for a run that does not name its release (priced at the current release's defaults)."""
    if version is not None and version_tuple(version) < ALLGATHER_REDUCESCATTER_SINCE:
        return "naive"
    return "allgather_reducescatter"


# Async scheduling (vLLM PR #19970, `--async-scheduling`, experimental from 0.10.0): the engine core schedules step N+1
# and the model runner prepares its inputs while step N runs on the GPU (AsyncScheduler with the executor's
# max_concurrent_batches = 2, EngineCore.step_with_batch_queue), and applies step N's sampled tokens
# (Scheduler.update_from_output) while N+1 runs. Off by default through 0.13; on by default from v0.14.0 (release notes:
# "Async scheduling is now enabled by default", PR #27614; quoted at https://github.com/OpenBMB/UltraRAG/pull/259;
# v0.11.1's notes: "We expect --async-scheduling to be enabled by default in the next release",
# https://github.com/replicate/cog/pull/2566), except pipeline parallelism, the CPU backend and speculative methods
# other than EAGLE / MTP (PR #31998). V0 never had it (it overlapped output processing only, from 0.6.0: not modelled).
ASYNC_SCHEDULING_SINCE = (0, 14, 0)


def vllm_async_scheduling(version: str | None, device: str = "cuda") -> bool:
    """Whether `vllm serve` of release `version` runs async scheduling by default (engine.async_scheduling):
    from 0.14.0 (ASYNC_SCHEDULING_SINCE) on a GPU, and for a run that does not name its release (the current
    release's default, as vllm_all2all and vllm_symm_mem_allreduce take it); False before 0.14 and on the CPU
    backend (`device` cpu, which the default leaves out, PR #31998)."""
    if device == "cpu":
        return False
    return version is None or version_tuple(version) >= ASYNC_SCHEDULING_SINCE


def engine_async_scheduling(engine, device: str = "cuda") -> bool:
    """engine.async_scheduling where the section sets it, else (None: left out or null) its release's default on
    `device` (vllm_async_scheduling): what sim.cost.CostModel.from_config prices, from the section as written (the
    cost model is built before sim.hardware.engine_with_defaults fills in the rest)."""
    if engine.async_scheduling is not None:
        return engine.async_scheduling
    return vllm_async_scheduling(engine.vllm_version, device)


# Torch symmetric-memory all-reduce (vLLM PR #20759, VLLM_ALLREDUCE_USE_SYMM_MEM): off by default through 0.10.2
# (vllm/envs.py of the v0.10.2 wheel: `os.getenv("VLLM_ALLREDUCE_USE_SYMM_MEM", "0")`), on from 0.11.0 (the v0.11.0
# wheel: "1"; PR #24111 "Enable Torch Symmetric Memory All-Reduce By Default"); still "1" in later releases read (0.17).
# Where it is on, CudaCommunicator builds a SymmMemCommunicator and CustomAllreduce(symm_mem_enabled=True) lowers its
# max size to CUSTOM_ALL_REDUCE_MAX_SIZES[capability][tp] (interconnect.symm_mem_allreduce, sim/cost.py)
SYMM_MEM_ALLREDUCE_SINCE = (0, 11, 0)


def vllm_symm_mem_allreduce(version: str | None) -> bool:
    """Whether `vllm serve` of release `version` runs torch symmetric-memory all-reduce by default: from 0.11.0
    (SYMM_MEM_ALLREDUCE_SINCE) and for a run that does not name its release (priced at the current release's
    default); False before 0.11.0."""
    return version is None or version_tuple(version) >= SYMM_MEM_ALLREDUCE_SINCE


# vLLM PR #44700 (merged 2026-06-06) runs a mixed step's decodes through the recurrent GDN kernel instead of the chunked
# one with their states gathered and scattered (sim/linear_attn.py). v0.22.0 predates it (public engine logs of
# v0.22.0 dated 2026-05-30); v0.23.0 (logs from 2026-06-15) may or may not hold it: not established, taken as split
LINEAR_ATTN_SPLIT_SINCE = (0, 23, 0)


def vllm_version_defaults(version: str | None) -> dict:
    """Engine settings that follow the vLLM `version` (None: a row that does not say, priced as before, except
    engine.async_scheduling, which release_defaults gives the current release's default, on): the
    sampler, engine.cuda_graph_memory (estimate from 0.20, none before: graphs were captured after sizing the KV
    cache), the default gpu_memory_utilization (0.92 from 0.20, 0.9 before), engine.linear_attn_mixed (unified
    before 0.23, split from it: LINEAR_ATTN_SPLIT_SINCE) and engine.async_scheduling (from 0.14:
    vllm_async_scheduling). Not engine.cuda_graph_mode: a row takes PIECEWISE only where its source states the
    layout (EngineOverrides.cuda_graph_mode). Applied by version (vllm_cuda_graph_mode) it moved held-out TPOT
    within 10% from 110 to 104 of 281 (session 34, BENCHMARKS.md): the 0.8.5 IOG H100 PCIe rows, already priced slow,
    got slower; the measured gap (PR 20059) is one A100 host's. The scheduler's limits follow the
    version too (scheduler_defaults), but through the card and the model: sim.hardware.engine_with_defaults."""
    if version is None:
        return {"cuda_graph_memory": "none", "gpu_memory_utilization": 0.9}
    mixed = {"linear_attn_mixed": "unified" if version_tuple(version) < LINEAR_ATTN_SPLIT_SINCE else "split",
             "async_scheduling": vllm_async_scheduling(version)}
    if version_tuple(version) < CUDA_GRAPH_ESTIMATE_SINCE:
        return {"sampler": vllm_sampler(version), "cuda_graph_memory": "none", "gpu_memory_utilization": 0.9,
                **mixed}
    return {"sampler": vllm_sampler(version), "cuda_graph_memory": "estimate", "gpu_memory_utilization": 0.92,
            **mixed}


# The V0 engine: every release before 0.8.0, the one that made V1 the default (0.6.5 - 0.7.x ran V1 only under
# VLLM_USE_V1=1: vllm/envs.py, `os.getenv("VLLM_USE_V1", "0")` at v0.7.3, "1" at v0.8.0). Its `vllm serve` defaults,
# read in each release's own source (the PyPI wheel of v0.4.0.post1, v0.4.1, v0.4.2, v0.4.3, v0.5.0, v0.5.2 - v0.5.5,
# v0.6.0, v0.6.1, v0.6.4.post1, v0.6.5, v0.7.3, v0.8.0 = github.com/vllm-project/vllm/tree/<tag>; BENCHMARKS.md,
# "Session 36"):
#   max_num_seqs 256: vllm/engine/arg_utils.py EngineArgs.max_num_seqs = 256 (v0.4.0.post1 - v0.6.4.post1), from
#     v0.6.5 None -> `256 if not envs.VLLM_USE_V1 else 1024`;
#   chunked prefill off (EngineArgs.enable_chunked_prefill = False), except that from v0.5.3 (PR 6666) an unset
#     --enable-chunked-prefill turns it on when max_model_len > 32768 on a "cuda" device with no sliding window
#     (create_engine_config, use_long_context), and not with --enable-prefix-caching (v0.5.3 - v0.6.0; PR 8342 lifted
#     it in v0.6.1) nor on ROCm (from v0.6.5);
#   max_num_batched_tokens (vllm/config.py SchedulerConfig): max(max_model_len, 2048) unchunked; chunked, the same at
#     v0.4.0.post1 (no chunked default yet), 768 at v0.4.1, 512 from v0.4.2, 2048 from v0.6.5 (PR 10544);
#   max_model_len without --max-model-len: sim.models.derived_max_model_len (_get_and_verify_max_len);
#   no automatic prefix caching: EngineArgs.enable_prefix_caching = False (v0.6.5 - v0.7.x: bool(VLLM_USE_V1)).
# Without chunked prefill V0's scheduler runs a step of prefills or a step of decodes, never both (v0_prefill_steps).
# Not modelled: multi-step scheduling (--num-scheduler-steps, v0.5.5 - v0.7.x: the scheduler runs once per round of
# n decode steps and the round's tokens are streamed together).
V1_DEFAULT_SINCE = (0, 8, 0)
V0_MAX_NUM_SEQS = 256
V0_MIN_BATCHED_TOKENS = 2048  # the unchunked budget's floor: max(max_model_len, 2048)
LONG_CONTEXT_TOKENS = 32768
CHUNKED_LONG_CONTEXT_SINCE = (0, 5, 3)  # PR 6666
PREFIX_CACHING_BLOCKS_AUTO_CHUNK_UNTIL = (0, 6, 1)  # PR 8342
ROCM_NO_AUTO_CHUNK_SINCE = (0, 6, 5)
# SchedulerConfig's chunked budget by release: (since, tokens); None: max(max_model_len, 2048) as unchunked
V0_CHUNK_BUDGETS = (((0, 0, 0), None), ((0, 4, 1), 768), ((0, 4, 2), 512), ((0, 6, 5), 2048))


def is_v0(version: str) -> bool:
    """Whether `vllm serve` of this release runs the V0 engine by default (before 0.8.0)."""
    return version_tuple(version) < V1_DEFAULT_SINCE


def v0_prefill_steps(engine) -> bool:
    """Whether a resolved engine (sim.hardware.engine_with_defaults) schedules as V0 does without chunked prefill:
    a step of whole prompts whenever waiting requests fit, the running decodes paused for it, else a step of decodes
    (vllm/core/scheduler.py: Scheduler._schedule at v0.4.0.post1, _schedule_default at v0.6.0; sim.cluster.Replica
    ._prefill_step). V1, and V0 with chunked prefill, mix decodes and prefill chunks in one step."""
    return engine.vllm_version is not None and is_v0(engine.vllm_version) and not engine.enable_chunked_prefill


def v0_chunked_prefill(version: str, max_model_len: int, device: str = "cuda", sliding_window: bool = False,
                       prefix_caching: bool = False) -> bool:
    """Whether V0 `version` chunks prefills where --enable-chunked-prefill is not given (device: cuda, rocm or
    cpu, as vLLM's platform)."""
    v = version_tuple(version)
    return (v >= CHUNKED_LONG_CONTEXT_SINCE and max_model_len > LONG_CONTEXT_TOKENS and device != "cpu"
            and not sliding_window and not (prefix_caching and v < PREFIX_CACHING_BLOCKS_AUTO_CHUNK_UNTIL)
            and not (device == "rocm" and v >= ROCM_NO_AUTO_CHUNK_SINCE))


def v0_batched_tokens(version: str, chunked: bool, max_model_len: int | None) -> int:
    """V0's default max_num_batched_tokens: max(max_model_len, 2048) unchunked (a prompt is never split, so the
    budget holds the longest), else the release's chunked budget (V0_CHUNK_BUDGETS)."""
    budget = None
    if chunked:
        budget = [tokens for since, tokens in V0_CHUNK_BUDGETS if version_tuple(version) >= since][-1]
    return budget if budget is not None else max(max_model_len, V0_MIN_BATCHED_TOKENS)


def release_defaults(engine, v1_limits: dict, model=None, device: str = "cuda") -> dict:
    """The engine settings (lab.config_sim.EngineSpec) left unset that `vllm serve` of engine.vllm_version picks:
    vllm_version_defaults, and the scheduler's -- `v1_limits` (max_num_seqs / max_num_batched_tokens on the card,
    sim.hardware.vllm_serve_batch_defaults) with chunked prefill on from 0.8 or without a version; V0's (above)
    before 0.8, by engine.max_model_len, else the length vLLM derives from `model`'s config.json (ModelShape
    .max_model_len), on `device` (cuda, rocm, cpu). LabError naming sim.engine.max_model_len where a V0 default
    needs a length none gives."""
    version, given = engine.vllm_version, engine.model_fields_set
    out = {} if version is None else {k: v for k, v in vllm_version_defaults(version).items() if k not in given}
    chunked = engine.enable_chunked_prefill
    if version is None or not is_v0(version):
        limits = v1_limits
        chunked = True if chunked is None else chunked
    else:
        prefix_caching = engine.prefix_caching if "prefix_caching" in given else False
        if "prefix_caching" not in given:
            out["prefix_caching"] = False

        def length() -> int:
            n = engine.max_model_len or (model.max_model_len if model is not None else 0)
            if not n:
                raise LabError(f"sim.engine.max_model_len: vLLM {version} (V0) sizes its default batch limits and "
                               "chunked prefill by --max-model-len; give it, or a model config.json that has "
                               "max_position_embeddings")
            return n

        if chunked is None:
            chunked = version_tuple(version) >= CHUNKED_LONG_CONTEXT_SINCE and v0_chunked_prefill(
                version, length(), device, bool(model is not None and model.sliding_window), prefix_caching)
        limits = {"max_num_seqs": V0_MAX_NUM_SEQS}
        if engine.max_num_batched_tokens is None:
            budget_needs_length = not chunked or version_tuple(version) < V0_CHUNK_BUDGETS[1][0]
            limits["max_num_batched_tokens"] = v0_batched_tokens(version, chunked,
                                                                 length() if budget_needs_length else None)
    if engine.async_scheduling is None:  # the release's default on this device (the CPU backend runs none; no
        out["async_scheduling"] = vllm_async_scheduling(version, device)  # release named: the current one's)
    if engine.enable_chunked_prefill is None:
        out["enable_chunked_prefill"] = chunked
    out.update({k: v for k, v in limits.items() if getattr(engine, k) is None})
    return out
