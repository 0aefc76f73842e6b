"""Engine defaults by vLLM release (sim/vllm_versions.py, sim.hardware.engine_with_defaults): a sim config or a
public row that names a release before 0.8 (the V0 engine) runs that release's `vllm serve` scheduler defaults --
256 sequences, chunked prefill off unless max_model_len > 32K (from 0.5.3), max(max_model_len, 2048) batched
tokens unchunked, 512 (2048 from 0.6.5) chunked, no prefix caching -- and an explicit setting still wins."""
from __future__ import annotations

from pathlib import Path

import pytest

from lab.config import config_from_dict
from lab.errors import LabError
from sim.hardware import engine_with_defaults, get_hardware
from sim.models import derived_max_model_len, from_hf_config, get_model
from sim.public_check import DEFAULT_FILE, load_rows, row_sim_config
from sim.simulate import prepare_inputs
from tests.sim.conftest import make_sim

CONFIGS = Path(__file__).resolve().parents[2] / "sim" / "validation" / "configs"
LLAMA31 = from_hf_config(CONFIGS / "llama-3.1-8b-instruct.json")  # 131,072 positions, llama3 rope: unscaled
LLAMA3_70B = from_hf_config(CONFIGS / "meta-llama-3-70b-instruct.json")  # 8,192 positions
CODER = from_hf_config(CONFIGS / "deepseek-coder-1.3b-instruct.json")  # 16,384 x linear rope factor 4
GEMMA3 = from_hf_config(CONFIGS / "gemma-3-12b-it.json")  # sliding-window layers


def resolved(version, model, preset="h100", **engine):
    sim = make_sim(hardware={"preset": preset}, engine={"vllm_version": version, **engine})
    e = engine_with_defaults(sim.engine, get_hardware(preset), model)
    return e.max_num_seqs, e.max_num_batched_tokens, e.enable_chunked_prefill


def test_the_length_vllm_derives_from_a_config():
    assert (LLAMA31.max_model_len, LLAMA3_70B.max_model_len, CODER.max_model_len) == (131072, 8192, 65536)
    assert derived_max_model_len({}) == 2048  # no length key: vLLM's fallback
    assert derived_max_model_len({"max_position_embeddings": 32768, "seq_length": 4096}) == 4096  # the smallest
    yarn = {"max_position_embeddings": 131072,
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}}
    assert derived_max_model_len(yarn) == 131072
    assert get_model("qwen3-8b").max_model_len == 0  # a preset: unknown


@pytest.mark.parametrize("version, model, want", [
    ("0.4.0.post1", CODER, (256, 65536, False)),  # before 0.5.3: never chunked, the budget holds a whole prompt
    ("0.5.2", LLAMA31, (256, 131072, False)),
    ("0.5.3", LLAMA31, (256, 512, True)),  # PR 6666: chunked for max_model_len > 32K, at SchedulerConfig's 512
    ("0.6.0", LLAMA31, (256, 512, True)),
    ("0.6.4.post1", LLAMA31, (256, 512, True)),
    ("0.6.5", LLAMA31, (256, 2048, True)),  # PR 10544: the chunked budget 512 -> 2048
    ("0.7.3", LLAMA31, (256, 2048, True)),
    ("0.6.0", LLAMA3_70B, (256, 8192, False)),  # 8K context: unchunked, max(8192, 2048)
    ("0.8.5", LLAMA31, (1024, 8192, True)),  # V1: the card's limits, as before
    (None, LLAMA31, (1024, 8192, True)),
])
def test_limits_follow_the_release_on_an_h100(version, model, want):
    assert resolved(version, model) == want


@pytest.mark.parametrize("version, preset, engine, chunked", [
    ("0.6.0", "mi300x", {}, True),  # ROCm reports a "cuda" device until 0.6.5 excludes it
    ("0.6.5", "mi300x", {}, False),
    ("0.6.0", "cpu", {}, False),
    ("0.6.0", "h100", {"prefix_caching": True}, False),  # --enable-prefix-caching blocked it until 0.6.1
    ("0.6.1", "h100", {"prefix_caching": True}, True),
])
def test_the_long_context_rule_on_other_platforms_and_with_prefix_caching(version, preset, engine, chunked):
    assert resolved(version, LLAMA31, preset=preset, **engine)[2] is chunked


def test_a_stated_max_model_len_sets_the_v0_budget_and_the_rest_of_the_release_follows():
    assert resolved("0.6.0", LLAMA31, max_model_len=2000) == (256, 2048, False)
    assert resolved("0.6.0", GEMMA3, max_model_len=65536) == (256, 65536, False)  # sliding window: never auto-chunked
    assert resolved("0.5.4", LLAMA31, max_model_len=8192) == (256, 8192, False)
    sim = make_sim(hardware={"preset": "h100"}, engine={"vllm_version": "0.6.0", "max_model_len": 2000})
    e = engine_with_defaults(sim.engine, get_hardware("h100"), LLAMA31)
    assert (e.prefix_caching, e.sampler, e.gpu_memory_utilization, e.cuda_graph_memory) == (False, "sort", 0.9, "none")
    v1 = make_sim(hardware={"preset": "h100"}, engine={"vllm_version": "0.8.5"}).engine
    assert engine_with_defaults(v1, get_hardware("h100"), LLAMA31).prefix_caching is True


def test_an_explicit_setting_still_wins():
    assert resolved("0.6.0", LLAMA31, max_num_seqs=1024, max_num_batched_tokens=4096) == (1024, 4096, True)
    assert resolved("0.6.0", LLAMA31, enable_chunked_prefill=False) == (256, 131072, False)
    assert resolved("0.6.0", LLAMA3_70B, enable_chunked_prefill=True) == (256, 512, True)
    assert resolved("0.6.5", LLAMA3_70B, enable_chunked_prefill=True) == (256, 2048, True)
    # the chunked budget before 0.4.2: none of its own at 0.4.0.post1 (the unchunked rule), 768 at 0.4.1
    assert resolved("0.4.0.post1", LLAMA3_70B, enable_chunked_prefill=True) == (256, 8192, True)
    assert resolved("0.4.1", LLAMA3_70B, enable_chunked_prefill=True) == (256, 768, True)
    sim = make_sim(hardware={"preset": "h100"}, engine={"vllm_version": "0.6.0", "max_model_len": 2048,
                                                        "sampler": "flashinfer", "prefix_caching": True})
    e = engine_with_defaults(sim.engine, get_hardware("h100"), LLAMA31)
    assert (e.sampler, e.prefix_caching) == ("flashinfer", True)


def test_a_yaml_naming_an_old_release_runs_its_defaults():
    sim = make_sim(hardware={"preset": "h100", "tp": 2},
                   model={"config": str(CONFIGS / "meta-llama-3-70b-instruct.json")},
                   engine={"vllm_version": "0.6.0"})
    e = prepare_inputs(sim).sim.engine
    assert (e.max_num_seqs, e.max_num_batched_tokens, e.enable_chunked_prefill, e.prefix_caching) == \
        (256, 8192, False, False)


def test_an_old_release_without_a_length_or_a_bad_version_is_refused():
    sim = make_sim(hardware={"preset": "h100"}, engine={"vllm_version": "0.6.0"})  # preset model: no length
    with pytest.raises(LabError, match="sim.engine.max_model_len"):
        engine_with_defaults(sim.engine, get_hardware("h100"), get_model("llama-2-7b"))
    assert resolved("0.6.0", get_model("llama-2-7b"), max_num_batched_tokens=4096,
                    enable_chunked_prefill=False) == (256, 4096, False)  # nothing left to size: no length needed
    bad = {"name": "t", "prompts": {"datasets": [{"name": "gsm8k"}]}, "stages": ["sim"],
           "drafters": [{"name": "dspark", "method": "dspark"}], "sim": {"engine": {"vllm_version": "latest"}}}
    with pytest.raises(LabError, match="sim.engine.vllm_version"):
        config_from_dict(bad, "x.yaml")


def test_public_rows_take_their_release_defaults():
    rows = {r.id: r for r in load_rows(DEFAULT_FILE)}
    arc53 = row_sim_config(rows["arc53-l4-llama-3.1-8b-sharegpt-rate-inf"], lengths_mode="mean").engine
    assert (arc53.max_num_seqs, arc53.max_num_batched_tokens, arc53.enable_chunked_prefill) == (256, 8192, False)
    lam = row_sim_config(rows["lambda-2xh100-tp2-llama-3-70b-sharegpt-10"], lengths_mode="mean").engine
    assert (lam.vllm_version, lam.max_num_seqs, lam.max_num_batched_tokens, lam.enable_chunked_prefill) == \
        ("0.6.0", 256, 2048, False)
    v1 = row_sim_config(rows["gpustack-h100-gpt-oss-120b-32k-rate-inf"], lengths_mode="mean").engine
    assert (v1.max_num_seqs, v1.max_num_batched_tokens, v1.enable_chunked_prefill) == (1024, 8192, True)


@pytest.mark.parametrize("version, backend", [
    ("0.8.5", "naive"), ("0.10.2", "naive"), ("0.11.0", "allgather_reducescatter"),
    ("0.19.2rc1.dev8", "allgather_reducescatter"), (None, "allgather_reducescatter")])
def test_the_release_names_its_default_all2all_backend(version, backend):
    from sim.vllm_versions import vllm_all2all
    assert vllm_all2all(version) == backend


@pytest.mark.parametrize("version, on", [("0.6.0", False), ("0.10.2", False), ("0.11.0", True), ("0.17.1", True),
                                         (None, True)])
def test_torch_symmetric_memory_all_reduce_is_on_from_0_11(version, on):
    """VLLM_ALLREDUCE_USE_SYMM_MEM defaults to "0" in the v0.10.2 wheel's vllm/envs.py and to "1" from v0.11.0
    (PR 24111); a run that names no release is priced at the current default."""
    from sim.vllm_versions import vllm_symm_mem_allreduce

    assert vllm_symm_mem_allreduce(version) is on
