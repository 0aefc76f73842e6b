"""vLLM's names for what a `sim:` section calls otherwise: `vllm serve` / `vllm bench serve` flags a user writes into
an experiment YAML by habit, and the lab key that says the same thing. Read by lab.config_base.validation_message,
which adds the hint to the one-line "unknown key" error:

    error: x.yaml: sim.workload.num_prompts: unknown key (vLLM's --num-prompts is sim.workload.max_requests here)

    from lab.vllm_flags import flag_hint
    flag_hint(("sim", "workload", "num_prompts"))   # -> "vLLM's --num-prompts is sim.workload.max_requests here"
"""
from __future__ import annotations

# vLLM flag (its dest name, underscores) -> what the simulator calls it (README, "Predicting a `vllm bench serve` run")
SIM_KEYS = {
    "tensor_parallel_size": "sim.hardware.tp",
    "data_parallel_size": "sim.replicas (router: least_loaded, as vLLM's DP load balancer)",
    "enable_expert_parallel": "sim.hardware.ep: tp x data-parallel size",
    "enable_prefix_caching": "sim.engine.prefix_caching",
    "no_enable_prefix_caching": "sim.engine.prefix_caching: false",
    "enable_chunked_prefill": "sim.engine.enable_chunked_prefill",
    "kv_cache_dtype": "sim.model.kv_dtype",
    "dtype": "sim.model.dtype",
    "quantization": "sim.model.config (the checkpoint config.json's quantization_config)",
    "num_prompts": "sim.workload.max_requests",
    "max_concurrency": "sim.workload.max_concurrency beside a poisson / gamma rate (at --request-rate inf: "
                       "sim.workload.concurrency, kind closed_loop)",
    "request_rate": "sim.workload.rate (kind: poisson; inf: .inf, or kind closed_loop)",
    "burstiness": "sim.workload.cv = 1 / sqrt(burstiness) (kind: gamma)",
    "dataset_name": "sim.workload.lengths.source",
    "random_input_len": "sim.workload.lengths.prompt_tokens (source: random)",
    "input_len": "sim.workload.lengths.prompt_tokens",
    "random_output_len": "sim.workload.lengths.output_tokens (source: random)",
    "output_len": "sim.workload.lengths.output_tokens",
    "random_range_ratio": "sim.workload.lengths.range_ratio (source: random)",
}


def flag_hint(loc: tuple) -> str | None:
    """The hint for an unknown key at `loc` (a validation error's location) of a `sim:` section whose last part is
    a vLLM flag's name; None for any other key."""
    if not loc or loc[0] != "sim":
        return None
    key = str(loc[-1])
    if key not in SIM_KEYS:
        return None
    return f"vLLM's --{key.replace('_', '-')} is {SIM_KEYS[key]} here"
