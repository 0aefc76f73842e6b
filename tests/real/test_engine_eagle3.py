"""The lab's EAGLE-3 drafter inside real vLLM: a tiny Qwen3 target saved as a checkpoint, a drafter exported to
vLLM's eagle3 layout, two servers (plain, eagle3); outputs and spec-decode counters against the lab's own.

Skipped unless `lab engine setup vllm` has run. Minutes (two server start-ups on CPU):
    python -m pytest -q -m engine tests/real/test_engine_eagle3.py
"""
import pytest
import torch
import yaml

from lab.config import config_from_dict
from real.drafters.chain import ChainDraftModel
from real.drafters.layers import FrozenIO, draft_dims
from real.drafters.trained import save_model
from real.engine.setup import default_venv, is_ready
from real.targets import load_target

pytestmark = [pytest.mark.slow, pytest.mark.engine,
              pytest.mark.skipif(not is_ready(default_venv("vllm")),
                                 reason="no vLLM environment (lab engine setup vllm)")]

EXPERIMENT = {
    "name": "eagle3_vllm", "stages": ["engine"],
    "target": {"name": "tiny-qwen3-hd32", "dtype": "float32"},
    "prompts": {"datasets": [{"name": "humaneval", "cap": 3}], "max_prompt_tokens": 48},
    "decode": {"max_new_tokens": 24},
    "drafters": [{"name": "eagle3", "method": "eagle3", "block_size": 3, "draft_vocab_size": 4096}],
    "engine": {"port": 8794, "dtype": "float32", "kv_cache_space_gib": 1, "threads_bind": "0",
               "max_model_len": 512, "startup_timeout_s": 1800, "extra_args": ["--enforce-eager"],
               "variants": [{"name": "nospec"},
                            {"name": "eagle3", "speculative": {"method": "eagle3", "drafter": "eagle3",
                                                               "num_speculative_tokens": 3}}]},
}


def test_vllm_serves_the_exported_eagle3_drafter_losslessly_with_the_labs_acceptance(tmp_path):
    from real.engine.drafter_check import run_check

    cfg = config_from_dict(EXPERIMENT)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    target = load_target(cfg.target)
    spec = cfg.drafters[0]
    # every 37th token id as the draft vocabulary (exercises d2t and the exported LM-head rows)
    d2t = torch.arange(0, target.vocab_size, 37)[: spec.draft_vocab_size]
    torch.manual_seed(0)
    model = ChainDraftModel(draft_dims(target, spec, d2t.numel(), layers=1), FrozenIO(target, d2t), "eagle3")
    save_model(model, spec, run / "drafters" / "eagle3")

    report = run_check(run, n_prompts=None, max_new=None)

    assert report["vllm_plain_vs_lab_plain"]["identical"] == 3, report  # the target's greedy parity (fp32)
    entry = report["variants"]["eagle3"]
    assert entry["vllm_spec_vs_vllm_plain"]["identical"] == 3, report  # lossless
    assert entry["lab_spec_vs_lab_plain"]["identical"] == 3, report
    lab, vllm = entry["lab_counters"], entry["vllm_counters"]
    assert vllm["num_drafts"] > 0 and vllm["num_draft_tokens"] == 3 * vllm["num_drafts"]
    assert lab == vllm, report  # same drafts, same accepted positions
    assert (run / "engine" / "export" / "eagle3" / "config.json").is_file()
    assert (run / "engine" / "export" / "target" / "tokenizer.json").is_file()
