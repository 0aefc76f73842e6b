"""The real vLLM path: `vllm serve` of the embedded Gemma3-270M from the engine environment, driven by the
load generator, with n-gram speculation (minutes: start-up is 1.5-6 min on 2 CPU cores).

Skipped unless `lab engine setup vllm` has run and the embedded model is cached (`lab targets --prepare
gemma3-270m`). Run: python -m pytest -q -m engine tests/real/test_engine_vllm.py
"""
import pytest

from lab.config_engine import EngineSection, LoadSpec, SpeculativeSpec
from real.embedded import is_complete, model_cache_dir
from real.engine.loadgen import RandomTokens, TextTokens, run_load
from real.engine.metrics import counter_table, scrape_spec_counters
from real.engine.server import EngineServer, port_is_free, vllm_command
from real.engine.setup import default_venv, is_ready

pytestmark = [pytest.mark.slow, pytest.mark.engine,
              pytest.mark.skipif(not is_ready(default_vllm := default_venv("vllm")),
                                 reason="no vLLM environment (lab engine setup vllm)"),
              pytest.mark.skipif(not is_complete(model_cache_dir("gemma3-270m")),
                                 reason="embedded Gemma3-270M not cached (lab targets --prepare gemma3-270m)")]


def test_vllm_serves_gemma_with_ngram_speculation_and_exact_lengths(tmp_path):
    # eager and one worker thread: start-up in ~5 min even on a busy 2-core box (BENCHMARKS.md, issue 10)
    section = EngineSection(port=8791, max_num_seqs=4, max_model_len=512, kv_cache_space_gib=1, threads_bind="0",
                            extra_args=["--enforce-eager"])
    spec = SpeculativeSpec(method="ngram", num_speculative_tokens=3)
    argv, env = vllm_command(section, spec, model_cache_dir("gemma3-270m"), default_vllm)
    # a repetitive prompt, so that the n-gram drafter finds matches and some drafts are accepted
    text = TextTokens([2, 818, 5279, 529, 10701, 236761, 108] * 20)
    load = LoadSpec(name="t", kind="closed_loop", concurrency=2, prompt_tokens=64, output_tokens=24,
                    max_requests=4, timeout_s=300)
    with EngineServer(argv, env, tmp_path / "server.log", section.port, startup_timeout_s=1800) as server:
        before = scrape_spec_counters(server.base_url)
        frame, records = run_load(server.base_url, load, text, show_progress=False)
        table = counter_table(before, scrape_spec_counters(server.base_url))
        plain, _ = run_load(server.base_url, load.model_copy(update={"name": "r"}), RandomTokens(262144),
                            show_progress=False)
    assert port_is_free(section.port)
    assert (frame["output_tokens"] == 24).all() and (frame["input_tokens"] == 64).all(), records[0].error
    assert (plain["output_tokens"] == 24).all()
    assert table["delta"]["num_drafts"] > 0 and table["delta"]["num_accepted_tokens"] > 0
    assert len(table["delta"]["num_accepted_tokens_per_pos"]) == 3
    assert "Application startup complete" in (tmp_path / "server.log").read_text()
    assert "--enforce-eager" in argv
