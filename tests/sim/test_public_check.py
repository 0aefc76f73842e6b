"""The simulator against public vLLM benchmarks (sim/public_check.py, sim/validation/public_vllm.yaml) and the
bounded closed loop it relies on (workload.max_requests: vLLM bench's --num-prompts with --max-concurrency)."""
from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from lab.errors import LabError
from sim.public_check import (
    DEFAULT_FILE,
    PublicRow,
    Reported,
    error_summary,
    error_table,
    fit_frontends,
    fitted_frontends,
    load_data,
    load_rows,
    main,
    markdown,
    row_sim_config,
    shown_metrics,
    simulate_row,
)
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim

FAST_ROWS = "gpustack-h100-qwen3-8b-c1,mushfiq-4090-mistral-7b-c8"


IOG_FILE = re.compile(r"/(?:1ffd7960d341d7ff15e962af098ca5b08d9f253e|834d4bd5224e0700efebf3f9eb28c6d97d420344)/results/"
                      r"vllm_200prompts(\d+)qps_(.+)_sharegpt_(\d)x(NVIDIA-H100-PCIe|NVIDIA-GeForce-RTX-4090)\.json$")


def test_iog_rows_are_held_out_and_say_what_their_file_says():
    """Every IOG Foundation row (sessions 24 and 26): held out, no front end, and its rate, model, GPU count (= tp)
    and card read from its own result file's name at one of the two cited commits; 200 ShareGPT prompts each, sent
    by run_benchmark.sh at --seed 42."""
    iog = [r for r in load_rows(DEFAULT_FILE) if r.id.startswith("iog-")]
    assert len(iog) == 110 and len({r.source for r in iog}) == 110
    cards = {"NVIDIA-H100-PCIe": "h100-pcie", "NVIDIA-GeForce-RTX-4090": "rtx-4090"}
    for r in iog:
        m = IOG_FILE.search(r.source)
        assert m, r.id
        assert r.after_fit and r.frontend is None and r.vllm == "0.8.5", r.id
        assert (float(m[1]), m[2], int(m[3]), cards[m[4]]) == (r.bench.request_rate, r.model.split("/")[1], r.tp,
                                                                   r.gpu), r.id
        assert r.bench.dataset == "sharegpt" and r.bench.num_prompts == 200 and r.bench.lengths == "mean", r.id
        assert r.bench.seed == 42, r.id  # run_benchmark.sh's --seed (834d4bd)
        # run_benchmark.sh loops --request-rate 32, 16, 8, 4, 1 against one server: every point after the first
        # sends the prompts the one before sent
        assert r.bench.after_same_prompts == (r.bench.request_rate < 32), r.id


CLOUDRIFT_FILE = re.compile(r"/cloudrift-ai/server-benchmark/blob/[0-9a-f]{40}/results/(?:rtx4900_rtx5900_pro6000_08_10_2025/)?"
                            r"(rtx4090|rtx5090|pro6000|l40s)_x_(\d)_(QuantTrio|ibnzterrell)_.+_vllm_benchmark\.txt$")


def test_cloudrift_rows_are_held_out_and_say_what_their_file_says():
    """Every CloudRift server-benchmark row (session 29): held out, no front end, random 1000 / 1000 with outputs
    forced (997 prompt tokens on average), one tp-1 server per card (dp = the file name's GPU count, nginx in front)
    and the card its file names; the Qwen3-Coder AWQ config keeps Qwen3-30B-A3B's shape at 4-bit AWQ."""
    from pathlib import Path

    from sim.models import from_hf_config

    rows = [r for r in load_rows(DEFAULT_FILE) if r.id.startswith("cloudrift-")]
    assert len(rows) == 9 and len({r.source for r in rows}) == 9
    cards = {"rtx4090": "rtx-4090", "rtx5090": "rtx-5090", "pro6000": "rtx-pro-6000", "l40s": "l40s"}
    for r in rows:
        m = CLOUDRIFT_FILE.search(r.source)
        assert m, r.id
        assert r.after_fit and r.half == "held-out" and r.frontend is None and r.vllm == "0.11.0", r.id
        assert (cards[m[1]], int(m[2]), r.tp) == (r.gpu, r.dp, 1), r.id
        assert (r.bench.input_tokens, r.bench.output_tokens, r.bench.lengths) == (997, 1000, "mean"), r.id
        assert r.engine.gpu_memory_utilization == 0.9 and r.bench.max_concurrency in (200, 400), r.id
    configs = Path(DEFAULT_FILE).parent / "configs"
    coder, base = (from_hf_config(configs / f"{n}.json") for n in ("qwen3-coder-30b-a3b-instruct-awq", "qwen3-30b-a3b"))
    assert coder.params_b == pytest.approx(base.params_b) and coder.quant_method == "awq"
    assert coder.quant_bits == pytest.approx(4 + 20 / 128)


DEPLODOCK_FILE = re.compile(r"/cloudrift-ai/deplodock/blob/[0-9a-f]{40}/experiments/(Qwen3-Coder-30B-A3B-Instruct-AWQ|"
                            r"Qwen3-Coder-Next-FP8)/optimal_mcr_(rtx5090|pro6000_vllm)/2026-03-0[34]_[0-9_-]+_[0-9a-f]{8}/"
                            r"(?:rtx5090|pro6000)x1_mc(\d+)_np80_mcr(\d+)_vllm_benchmark\.txt$")


@pytest.mark.parametrize("prefix,gpu,concurrency,fit", [
    ("deplodock-5090-", "rtx-5090", list(range(8, 41, 4)), [12, 20, 28, 36]),
    ("deplodock-rtxpro6000-", "rtx-pro-6000", [8, 12, 16, 20, 24, 32, 40, 48], [8, 16, 24, 40])])
def test_deplodock_sweeps_alternate_fit_and_held_out_in_one_block(prefix, gpu, concurrency, fit):
    """The two deplodock sweeps (session 29): contiguous rows, one per --max-concurrency C (= --max-num-seqs, as each
    file's name and serve command say), 80 prompts of 4000 / 4000, alternating fit / held-out by position; vLLM
    0.16.0, inferred (the files print none; session 35: `latest` pulled on the run day); the RTX 5090 block starts at
    an odd position (C 8 held out), the PRO 6000 block right after it."""
    sweep = [r for r in load_rows(DEFAULT_FILE) if r.id.startswith(prefix)]
    assert [r.bench.max_concurrency for r in sweep] == concurrency
    assert [r._index for r in sweep] == list(range(sweep[0]._index, sweep[0]._index + len(sweep)))
    assert [r.bench.max_concurrency for r in sweep if r.half == "fit"] == fit
    for r in sweep:
        m = DEPLODOCK_FILE.search(r.source)
        assert m and int(m[3]) == int(m[4]) == r.bench.max_concurrency == r.engine.max_num_seqs, r.id
        assert (r.gpu, r.tp, r.dp, r.vllm, r.after_fit) == (gpu, 1, 1, "0.16.0", False), r.id
        assert (r.bench.input_tokens, r.bench.output_tokens, r.bench.lengths, r.bench.num_prompts) == (4000, 4000,
                                                                                                       "fixed", 80)


def test_session_31_rows_are_held_out_on_the_new_cards_and_load():
    """The session-31 rows (issue 9, "hardware from a spec sheet"): at the end of the file, held out, on cards that had
    no preset before (L4, A10G, A40), no front end; the wmx L4 sweep is a closed loop at C = 1..32 of random 256 / 128
    at --gpu-memory-utilization 0.6, scored on output throughput and median TTFT only; the DatabaseMart A40 rows are 50
    prompts at once of random 100 in, outputs at the run's means; every row builds a sim config; the
    deepseek-coder-1.3b config reads as its published 1.35B Llama shape."""
    from pathlib import Path

    from sim.models import from_hf_config

    rows = load_rows(DEFAULT_FILE)
    new = [r for r in rows if r.id.startswith(("wmx-l4-", "arc53-l4-", "vllm4030-a10g-", "dbm-a40-"))]
    ids = [r.id for r in rows]
    start = ids.index(new[0].id)  # one block, after every earlier row (the AMD rows below follow it)
    assert ids[start:start + len(new)] == [r.id for r in new] and len(new) == 14
    for r in new:
        assert r.after_fit and r.half == "held-out" and r.frontend is None and r.gpu in ("l4", "a10g", "a40"), r.id
        assert row_sim_config(r).hardware.preset == r.gpu
    wmx = [r for r in new if r.id.startswith("wmx-")]
    assert [r.bench.max_concurrency for r in wmx] == [1, 2, 4, 8, 16, 32]
    for r in wmx:
        assert (r.vllm, r.engine.gpu_memory_utilization, r.bench.input_tokens, r.bench.output_tokens) == (
            "0.23.0", 0.6, 256, 128), r.id
        assert r.reported.tpot_mean_ms is None and r.reported.ttft_median_ms and r.reported.output_throughput_tok_s
    a40 = [r for r in new if r.gpu == "a40"]
    assert len(a40) == 6 and all((r.bench.num_prompts, r.bench.input_tokens, r.bench.lengths, r.bench.max_concurrency)
                                 == (50, 100, "mean", None) and r.bench.output_tokens < 600 for r in a40)
    coder = from_hf_config(Path(DEFAULT_FILE).parent / "configs" / "deepseek-coder-1.3b-instruct.json")
    assert coder.params_b == pytest.approx(1.346, abs=0.001) and (coder.n_layers, coder.n_kv_heads) == (24, 16)


GLM_AIR = "-tp4-glm-4.5-air-"  # the session-33 GLM-4.5-Air rows
LAMBDA = "lambda-"  # the session-33 Lambda Llama-3-70B rows, the file's last


def test_session_31_amd_rows_are_held_out_at_the_end_and_load():
    """The MI300X rows of vLLM recipes PRs #431 / #443 (one harness: random 1024 / 1024, 100 prompts at 32 users, tp 1):
    held out; #443's Ministral-3-8B-Reasoning row closes the session-31 additions (only the session-33 GLM-4.5-Air
    and Lambda Llama-3-70B blocks follow it) and reads as an 8.49B untied Mistral-style decoder (8.4B on the card: the language model; the
    0.4B vision encoder is not modelled)."""
    from pathlib import Path

    from sim.models import from_hf_config

    rows = load_rows(DEFAULT_FILE)
    amd = [r for r in rows if r.gpu in ("mi300x", "mi325x", "mi355x")]
    assert [r.id for r in amd] == ["vllmrecipes-mi300x-qwen3guard-gen-8b-c32",
                                   "vllmrecipes-mi300x-ministral-3-8b-reasoning-c32"]
    ids = [r.id for r in rows]
    later = [r.id for r in rows if GLM_AIR in r.id] + [r.id for r in rows if r.id.startswith(LAMBDA)]
    assert ids[ids.index(amd[-1].id) + 1:] == later
    for r in amd:
        assert r.after_fit and r.half == "held-out" and r.tp == 1, r.id
        assert (r.bench.input_tokens, r.bench.output_tokens, r.bench.num_prompts, r.bench.max_concurrency) == (
            1024, 1024, 100, 32), r.id
        assert row_sim_config(r).hardware.preset == "mi300x"
    m = from_hf_config(Path(DEFAULT_FILE).parent / "configs" / "ministral-3-8b-2512.json")
    assert m.params_b == pytest.approx(8.49, abs=0.01) and (m.n_layers, m.n_kv_heads, m.vocab) == (34, 8, 131072)


def test_session_33_glm_4_5_air_rows_are_the_pages_vllm_runs_held_out_at_the_end():
    """gpustack performance-lab glm-4.5-air/a100.md (commit 1dbc3b8): `vllm serve zai-org/GLM-4.5-Air -tp 4` on 4 x A100
    SXM 80GB, vLLM v0.11.0 -- its ShareGPT run and four random baseline runs, all at once -- then the H100 page's
    (48d8b10) runs of the same command as their control: its ShareGPT block, and its four random runs from the summary
    table (TPOT and total tok/s only; the page's blocks are the A100 page's); held out, one block after the AMD rows; every
    mean is a page's token totals over its successful requests (the H100 random rows: the A100 runs' prompts, the asked
    outputs), and the config reads as the model card's 106B-total MoE."""
    from pathlib import Path

    from sim.models import from_hf_config

    rows = load_rows(DEFAULT_FILE)
    ids = [r.id for r in rows]
    glm = [r for r in rows if GLM_AIR in r.id]
    start = ids.index(glm[0].id)
    assert ids[start:start + 10] == [r.id for r in glm]
    shapes = ("sharegpt-rate-inf", "32k-rate-inf", "4k-rate-inf", "2k-rate-inf", "128-rate-inf")
    assert [r.id.split(GLM_AIR) for r in glm] == [["gpustack-a100", w] for w in shapes] + [
        ["gpustack-h100", w] for w in shapes]
    totals = {"a100-sharegpt": (214465, 199904, 1000), "a100-32k": (3200000, 9987, 100),
              "a100-4k": (1999787, 99547, 500), "a100-2k": (999429, 50000, 500), "a100-128": (127881, 4000, 1000),
              "h100-sharegpt": (214465, 199895, 1000), "h100-32k": (3200000, 100 * 100, 100),
              "h100-4k": (1999787, 200 * 500, 500), "h100-2k": (999429, 100 * 500, 500),
              "h100-128": (127881, 4 * 1000, 1000)}  # the pages' bench outputs (h100 random: see the docstring)
    summary = {"32k": (176.99, 20732.85), "4k": (82.53, 21705.53), "2k": (125.44, 22582.76), "128": (214.38, 7066.67)}
    page = {"a100": "1dbc3b8130da92d31539404545a1aff5c3992f8c", "h100": "48d8b104d50ac4d41edb33b5cc0300177ead2427"}
    for r in glm:
        card, shape = r.gpu[:4], r.id.split(GLM_AIR)[1].split("-")[0]
        assert r.source.endswith(f"{page[card]}/docs/performance-lab/glm-4.5-air/{card}.md"), r.id
        assert (r.gpu, r.tp, r.ep, r.vllm, r.frontend, r.after_fit, r.half) == (
            {"a100": "a100-80g", "h100": "h100"}[card], 4, 1, "0.11.0", f"gpustack-{card}", True, "held-out"), r.id
        inp, out, n = totals[f"{card}-{shape}"]
        b = r.bench
        assert (b.num_prompts, b.input_tokens, b.output_tokens, b.lengths) == (n, round(inp / n), round(out / n),
                                                                               "mean"), r.id
        assert math.isinf(b.request_rate) and b.max_concurrency is None, r.id
        assert row_sim_config(r).hardware.preset == r.gpu
        if card == "h100" and shape in summary:
            rep = r.reported
            assert (rep.tpot_mean_ms, rep.total_throughput_tok_s) == summary[shape] and rep.ttft_mean_ms is None, r.id
    m = from_hf_config(Path(DEFAULT_FILE).parent / "configs" / "glm-4.5-air.json")
    assert m.params_b == pytest.approx(106.85, abs=0.01) and (m.n_layers, m.n_moe_layers, m.moe_experts) == (46, 45, 128)


def test_session_33_lambda_llama_3_70b_rows_are_the_ten_prompt_runs_held_out_at_the_end():
    """LambdaLabsML/vllm-benchmark's 10-prompt ShareGPT runs of Meta-Llama-3-70B-Instruct at tp 2 / 4 / 8 on A100 SXM
    (commit a9b42a5) and, as their control, on H100 SXM (a4f9f43): the file's last rows, held out, tp = the results
    folder's GPU count; each is the eight prompts that streamed (the files' 1369 input tokens less the two empty
    prompts' 399 + 328), its output mean the file's total_output_tokens / 8; no TTFT mean or throughput scored; `vllm`
    0.6.0, inferred (the streams' ~10-token chunks are multi-step scheduling, which the script's v0.5.4 lacks; the
    repository's report ran it on v0.6.0; session 36), at the folder's --max-model-len, so V0's defaults: 256
    sequences, unchunked, max(len, 2048) = 2048 batched tokens (sim/vllm_versions.py)."""
    rows = load_rows(DEFAULT_FILE)
    lam = rows[-6:]
    assert [r.id for r in rows if r.id.startswith(LAMBDA)] == [r.id for r in lam]
    commit = {"a100": "a9b42a5f83bc39976bcb6bd44a96b2b15d820e10", "h100": "a4f9f4371a1ccac781293837fce2bce0cc6d25cc"}
    outputs = {("a100", 2): 2149, ("a100", 4): 2009, ("a100", 8): 2089,
               ("h100", 2): 2091, ("h100", 4): 2091, ("h100", 8): 2054}  # the files' total_output_tokens
    assert [(r.gpu, r.tp) for r in lam] == [("a100-80g", tp) for tp in (2, 4, 8)] + [("h100", tp) for tp in (2, 4, 8)]
    for r in lam:
        card = r.gpu[:4]
        folder = f"{r.tp}x{card.upper()}-80GB-SXM"
        length = {"a100": 2000, "h100": 2048}[card]
        assert r.source.endswith(f"{commit[card]}/results/prompt_10/{folder}/Meta-Llama-3-70B-Instruct_tp{r.tp}_len"
                                 f"{length}.json"), r.id
        assert (r.model_config_path, r.vllm, r.engine.max_model_len, r.after_fit, r.half) == (
            "sim/validation/configs/meta-llama-3-70b-instruct.json", "0.6.0", length, True, "held-out"), r.id
        b = r.bench
        assert (b.dataset, b.tokenizer, b.num_prompts, b.lengths) == ("sharegpt", "llama3", 8, "mean"), r.id
        assert (b.input_tokens, b.output_tokens) == (round((1369 - 399 - 328) / 8), round(outputs[card, r.tp] / 8))
        assert math.isinf(b.request_rate) and b.max_concurrency is None, r.id
        rep = r.reported
        assert rep.ttft_mean_ms is None and rep.output_throughput_tok_s is None, r.id
        assert rep.tpot_median_ms < rep.tpot_mean_ms and rep.ttft_median_ms > 0, r.id
        sim = row_sim_config(r)
        assert sim.hardware.preset == r.gpu and sim.hardware.tp == r.tp
        e = sim.engine
        assert (e.max_num_seqs, e.max_num_batched_tokens, e.enable_chunked_prefill, e.sampler) == \
            (256, 2048, False, "sort"), r.id


def test_the_qwen3_coder_next_fp8_config_is_qwen3_next_at_block_fp8():
    """Qwen3-Coder-Next keeps Qwen3-Next-80B-A3B's architecture keys; the FP8 checkpoint: fp8 block-128 weights and
    fp8 matmuls, about half the bf16 bytes."""
    from pathlib import Path

    from sim.models import from_hf_config

    configs = Path(DEFAULT_FILE).parent / "configs"
    fp8, bf16 = (from_hf_config(configs / f"{n}.json") for n in ("qwen3-coder-next-fp8", "qwen3-next-80b-a3b-instruct"))
    assert fp8.params_b == pytest.approx(bf16.params_b) and (fp8.quant_method, fp8.matmul_dtype) == ("fp8", "fp8")
    assert 0.5 < fp8.weight_bytes / bf16.weight_bytes < 0.53


# Rows whose `vllm` the source does not state but its evidence fixes (sessions 34-36; public_vllm.yaml's block
# comments say how): id prefix -> the version taken
INFERRED_VLLM = {"tenstorrent-a100-qwen3-0.6b-": "0.9.1", "tenstorrent-a100-qwen3-1.7b-": "0.9.1",
                 "tenstorrent-a100-qwen3-14b-": "0.9.2", "vllm23151-": "0.10.1", "deplodock-": "0.16.0",
                 "arc53-l4-": "0.5.4", "lambda-": "0.6.0"}


def test_an_inferred_vllm_version_says_so_in_its_note():
    """A `vllm` the source does not print is marked in the row's note ("`vllm`: inferred", the block comment giving
    the evidence: a `latest` image or `pip install vllm` on a dated run, a source checkout's date, a stream's
    multi-step chunks): exactly the rows of INFERRED_VLLM carry the mark, each at its family's version."""
    rows = load_rows(DEFAULT_FILE)
    marked = {r.id: r.vllm for r in rows if "`vllm`: inferred" in (r.note or "")}
    expected = {r.id: v for r in rows for prefix, v in INFERRED_VLLM.items() if r.id.startswith(prefix)}
    assert len(expected) == 14 + 1 + 17 + 1 + 6 and marked == expected


def test_data_file_parses_and_every_row_builds_a_sim_config():
    rows = load_rows(DEFAULT_FILE)
    assert len(rows) >= 8 and len({r.gpu for r in rows}) >= 3
    for row in rows:
        assert row.source.startswith("https://")
        sim = row_sim_config(row, lengths_mode="mean")
        wl, b = sim.workload, row.bench
        assert (wl.lengths.prompt_tokens, wl.lengths.output_tokens) == (b.input_tokens, b.output_tokens)
        # vLLM's random rule where the lengths were asked for, else the run's means (the ShareGPT fallback)
        assert wl.lengths.source == ("random" if b.lengths == "fixed" else "fixed")
        if b.dataset == "sharegpt":
            assert row_sim_config(row, lengths_mode="table").workload.lengths.source == "sharegpt"
        assert wl.max_requests == b.num_prompts
        if math.isfinite(b.request_rate):  # with --max-concurrency too, at most that many in flight
            assert wl.kind == "poisson" and wl.rate == b.request_rate and wl.max_concurrency == b.max_concurrency
        else:  # rate inf: a closed loop of max_concurrency users, or of every prompt at once
            assert wl.kind == "closed_loop" and wl.concurrency == (b.max_concurrency or b.num_prompts)
        assert sim.hardware.preset == row.gpu and sim.hardware.tp == row.tp
        for key, value in row.engine.model_dump().items():
            if value is not None:
                assert getattr(sim.engine, key) == value
        # the source's API server, as the file's `frontends:` names it; off: none
        none = {"latency_ms": 0.0, "request_ms": 0.0, "output_token_ms": 0.0, "intake": "fifo"}
        assert sim.frontend.model_dump() == (none if row.frontend is None else {**none, **row._frontend})
        assert not row_sim_config(row, lengths_mode="mean", frontend="off").frontend.enabled


def vllm_server_defaults(hardware_preset: str) -> dict:
    from sim.hardware import get_hardware, vllm_serve_batch_defaults

    return vllm_serve_batch_defaults(get_hardware(hardware_preset))


def test_vllm_serve_defaults_follow_the_card():
    assert vllm_server_defaults("h100") == {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
    assert vllm_server_defaults("a100-80g") == {"max_num_batched_tokens": 2048, "max_num_seqs": 256}
    assert vllm_server_defaults("rtx-4090") == {"max_num_batched_tokens": 2048, "max_num_seqs": 256}


def test_bounded_closed_loop_sends_num_prompts_and_ends_with_the_last_reply():
    sim = make_sim(workload={"kind": "closed_loop", "concurrency": 3, "max_requests": 7, "duration_s": 50,
                             "warmup_s": 0, "lengths": {"prompt_tokens": 64, "output_tokens": 16}})
    res = simulate(prepare_inputs(sim), "ar")
    log = res.requests
    assert len(log) == 7 and log["finish_s"].notna().all()
    assert res.summary["sim_time_s"] == pytest.approx(log["finish_s"].max())
    # never more than 3 in flight: request i > 2 arrives when an earlier one finishes
    times = np.sort(np.concatenate([log["arrival_s"].to_numpy(), log["finish_s"].to_numpy()]))
    in_flight = [((log["arrival_s"] <= t) & (log["finish_s"] > t)).sum() for t in times]
    assert max(in_flight) == 3
    # measured like vLLM's benchmark: throughput over all requests, first arrival to last finish
    expected = log["output_tokens"].sum() / (log["finish_s"].max() - log["arrival_s"].min())
    assert res.summary["throughput_tok_s"] == pytest.approx(expected)


def test_a_row_with_a_rate_and_a_max_concurrency_runs_both():
    """`--request-rate 4 --max-concurrency 2`: Poisson arrivals at 4 req/s, at most 2 in flight (before: refused,
    'max_concurrency with a finite request_rate is not supported'); the table says both."""
    row = PublicRow.model_validate({
        "id": "t", "source": "https://example.org/x", "gpu": "h100", "gpu_reported": "H100",
        "model": "Qwen/Qwen3-8B", "model_config": "real/presets/qwen3-8b.json", "tp": 1,
        "bench": {"input_tokens": 100, "output_tokens": 50, "num_prompts": 10, "request_rate": 4.0,
                  "max_concurrency": 2}, "reported": {"tpot_mean_ms": 10.0}})
    wl = row_sim_config(row, lengths_mode="mean").workload
    assert (wl.kind, wl.rate, wl.max_concurrency, wl.client_limit, wl.max_requests) == ("poisson", 4.0, 2, 2, 10)
    simulated = simulate_row(row)  # 10 prompts through the simulator, at most 2 of them in flight
    assert simulated["sim_requests"] == 10 and simulated["sim_unfinished"] == 0
    table = error_table([row], [simulated])
    text = markdown(table, error_summary(table))
    assert "| 4/s, c=2 |" in text


def _row(**reported) -> PublicRow:
    return PublicRow.model_validate({
        "id": "t", "source": "https://example.org/x", "gpu": "h100", "gpu_reported": "H100",
        "model": "Qwen/Qwen3-8B", "model_config": "real/presets/qwen3-8b.json", "tp": 1,
        "bench": {"input_tokens": 100, "output_tokens": 50, "num_prompts": 10, "request_rate": "inf",
                  "max_concurrency": 2}, "reported": reported})


def _dp_ep_row(vllm: str | None, **extra) -> PublicRow:
    """Qwen3-30B-A3B as `vllm serve --data-parallel-size 2 --enable-expert-parallel` of release `vllm`."""
    return PublicRow.model_validate({
        "id": "dpep", "source": "https://example.org/x", "gpu": "h100", "gpu_reported": "2 x H100",
        "model": "Qwen/Qwen3-30B-A3B", "model_config": "sim/validation/configs/qwen3-30b-a3b.json", "vllm": vllm,
        "tp": 1, "dp": 2, "ep": 2, **extra,
        "bench": {"input_tokens": 100, "output_tokens": 50, "num_prompts": 10, "request_rate": "inf"},
        "reported": {"tpot_mean_ms": 10.0}})


@pytest.mark.parametrize("vllm, extra, backend", [
    ("0.10.1", {}, "naive"),  # vLLM's default up to 0.10 (was priced as 0.11's allgather_reducescatter)
    ("0.11.0", {}, "allgather_reducescatter"),
    (None, {}, "allgather_reducescatter"),  # a run that does not name its release: the current one's
    ("0.10.1", {"all2all": "dispatch"}, "dispatch"),  # the source's VLLM_ALL2ALL_BACKEND=deepep_* / pplx wins
    ("0.11.0", {"all2all": "naive"}, "naive"),
])
def test_a_dp_ep_row_runs_its_all2all_backend(vllm, extra, backend):
    sim = row_sim_config(_dp_ep_row(vllm, **extra))
    assert (sim.replicas, sim.hardware.ep, sim.hardware.all2all) == (2, 2, backend)


@pytest.mark.parametrize("fields", [{"dp": 1, "ep": 2, "tp": 2}, {"dp": 2, "ep": 1}])
def test_all2all_needs_expert_parallelism_over_data_parallel_ranks(fields):
    with pytest.raises(ValidationError, match="all2all is the backend of expert parallelism over data-parallel"):
        _dp_ep_row("0.11.0", all2all="naive", **fields)


def test_error_table_is_sim_over_reported_minus_one():
    rows = [_row(tpot_mean_ms=10.0, ttft_mean_ms=200.0, output_throughput_tok_s=1000.0),
            _row(ttft_mean_ms=50.0, output_throughput_tok_s=400.0)]
    sims = [{"tpot_mean_ms": 11.0, "ttft_mean_ms": 150.0, "output_throughput_tok_s": 1000.0},
            {"tpot_mean_ms": 9.0, "ttft_mean_ms": 100.0, "output_throughput_tok_s": 380.0}]
    table = error_table(rows, sims)
    assert table["rel_err_tpot_mean_ms"].iloc[0] == pytest.approx(0.1)
    assert table["rel_err_ttft_mean_ms"].tolist() == pytest.approx([-0.25, 1.0])
    assert table["rel_err_output_throughput_tok_s"].tolist() == pytest.approx([0.0, -0.05])
    assert np.isnan(table["rel_err_tpot_mean_ms"].iloc[1])  # the second source gives no TPOT
    summary = error_summary(table)
    assert summary["tpot_mean_ms"]["rows"] == 1
    assert summary["ttft_mean_ms"]["mean_abs"] == pytest.approx(0.625)
    assert summary["output_throughput_tok_s"]["within_10pct"] == 2
    assert summary["ttft_mean_ms"]["mean_signed"] == pytest.approx(0.375)


def _load_row(row_id: str, max_concurrency: int | None, **reported) -> PublicRow:
    return PublicRow.model_validate({
        "id": row_id, "source": "https://example.org/x", "gpu": "h100", "gpu_reported": "H100",
        "model": "Qwen/Qwen3-8B", "model_config": "real/presets/qwen3-8b.json", "tp": 1,
        "bench": {"input_tokens": 100, "output_tokens": 50, "num_prompts": 10, "request_rate": "inf",
                  "max_concurrency": max_concurrency}, "reported": reported})


def test_summary_has_median_signed_geomean_and_the_bursts_ttft_against_inverse_throughput():
    """Three bursts (no --max-concurrency) and one closed loop, all in the fit half. TTFT sim / reported 1.5, 0.5,
    2, 4: median signed (0.5 + 1) / 2 = +75%, geometric mean 6 ** (1 / 4) - 1 = +56.5% (the mean, +100%, is
    the far row's). Output throughput 0.8, 1.25, -, 1: median 0%, geometric mean 1 - 1 = 0%. The bursts' TTFT ratio x
    throughput ratio (the third by its total throughput, the only one it reports): 1.2, 0.625, 2 -> median +20%.
    The held-out half has no row: its burst line prints '-', never nan."""
    from sim.public_check import summary_markdown

    rows = [_load_row("b1", None, ttft_mean_ms=200.0, output_throughput_tok_s=1000.0),
            _load_row("b2", None, ttft_mean_ms=100.0, output_throughput_tok_s=400.0),
            _load_row("b3", None, ttft_mean_ms=100.0, total_throughput_tok_s=1000.0),
            _load_row("c4", 2, ttft_mean_ms=100.0, output_throughput_tok_s=100.0)]
    sims = [{"ttft_mean_ms": 300.0, "output_throughput_tok_s": 800.0, "total_throughput_tok_s": 2400.0},
            {"ttft_mean_ms": 50.0, "output_throughput_tok_s": 500.0, "total_throughput_tok_s": 1500.0},
            {"ttft_mean_ms": 200.0, "output_throughput_tok_s": 300.0, "total_throughput_tok_s": 1000.0},
            {"ttft_mean_ms": 400.0, "output_throughput_tok_s": 100.0, "total_throughput_tok_s": 300.0}]
    table = error_table(rows, sims)
    summary = error_summary(table)
    assert summary["ttft_mean_ms"]["median_signed"] == pytest.approx(0.75)
    assert summary["ttft_mean_ms"]["geomean_ratio_minus_1"] == pytest.approx(6 ** 0.25 - 1)
    assert summary["ttft_mean_ms"]["mean_signed"] == pytest.approx(1.0)
    assert summary["output_throughput_tok_s"]["median_signed"] == pytest.approx(0.0)
    assert summary["output_throughput_tok_s"]["geomean_ratio_minus_1"] == pytest.approx(0.0, abs=1e-12)
    text = summary_markdown(table, summary)
    assert "| ttft_mean_ms (all) | 4 | 125% | 75% | 0 | +100% | +75.0% | +56.5% |" in text
    assert "| ttft_mean_ms (fit) | 4 | 125% | 75% | 0 | +100% | +75.0% | +56.5% |" in text
    assert "| output_throughput_tok_s (all) | 3 | 15% | 20% | 1 | +2% | +0.0% | +0.0% |" in text
    assert "tpot_mean_ms" not in text  # no row reports it: no line, as before
    assert re.search(r"TTFT against inverse throughput .*: all \+20\.0% \(3 rows\), fit \+20\.0% \(3 rows\), "
                     r"held-out - \(0 rows\)$", text, re.MULTILINE)
    assert "nan" not in text.lower()


def test_signed_stats_of_no_rows_print_a_dash():
    from sim.error_stats import burst_inverse_error, pct, signed_stats

    empty = signed_stats(np.array([]))
    assert [pct(v) for v in empty.values()] == ["-", "-"]
    closed = error_table([_load_row("c", 2, ttft_mean_ms=100.0, output_throughput_tok_s=100.0)],
                         [{"ttft_mean_ms": 50.0, "output_throughput_tok_s": 100.0}])
    assert burst_inverse_error(closed) == {"rows": 0, "median": pytest.approx(float("nan"), nan_ok=True)}


def test_a_source_that_prints_only_medians_is_scored_on_the_simulated_medians():
    """vLLM bench prints Median TPOT / TTFT beside the means; a post that quotes only the medians is compared
    with the medians of the simulated per-request log (TPOT = (E2E - TTFT) / (n - 1), one-token outputs out)."""
    from sim.public_check import median_metrics

    log = pd.DataFrame({"arrival_s": [0.0, 0.0, 0.0, 1.0], "first_token_s": [0.1, 0.3, 0.2, 1.5],
                        "finish_s": [1.1, 2.3, 0.2, 3.5], "output_tokens": [11, 21, 1, 5]})
    got = median_metrics(log)  # TPOT 100, 100, -, 500 ms; TTFT 0.1, 0.3, 0.2, 0.5 s
    assert got["tpot_median_ms"] == pytest.approx(100.0)
    assert got["ttft_median_s"] == pytest.approx(0.25)
    row = _row(tpot_median_ms=50.0, ttft_median_ms=200.0, output_throughput_tok_s=10.0)
    table = error_table([row], [{"tpot_mean_ms": 9.0, "ttft_mean_ms": 300.0, "output_throughput_tok_s": 11.0,
                                 "tpot_median_ms": 55.0, "ttft_median_ms": 150.0}])
    assert table["rel_err_tpot_median_ms"].iloc[0] == pytest.approx(0.1)
    assert table["rel_err_ttft_median_ms"].iloc[0] == pytest.approx(-0.25)
    assert np.isnan(table["rel_err_tpot_mean_ms"].iloc[0])  # no mean reported: not scored
    shown = [m[0] for m in shown_metrics(table)]  # the table and plot gain the median columns
    assert shown[-2:] == ["tpot_median_ms", "ttft_median_ms"]
    assert "tpot_median_ms" not in [m[0] for m in shown_metrics(error_table([_row(tpot_mean_ms=1.0)], [{}]))]


def test_a_tpot_from_run_totals_is_compared_with_the_simulated_mean_request(monkeypatch):
    """A source whose TPOT is (mean latency - mean TTFT) / (mean output - 1) (the Qwen3.5 guidellm rows:
    `tpot_mean_of: totals`) is compared with that statistic of the simulated log, not vLLM's per-request mean: a
    burst's short replies, whose few tokens shared its prefill steps, weigh by their tokens, not as one request each."""
    from types import SimpleNamespace

    import sim.public_check as pc

    log = pd.DataFrame({"arrival_s": [0.0, 0.0, 0.0], "first_token_s": [1.0, 1.0, 2.0],
                        "finish_s": [2.0, 11.0, 2.0], "output_tokens": [3, 101, 1], "input_tokens": [10, 10, 10]})
    # per request: 500 ms and 100 ms (the one-token reply has none): vLLM's mean 300 ms; the mean request:
    # (mean E2E 5.0 s - mean TTFT 1.333 s) / (mean output 35 - 1) = 107.8 ms
    assert pc.mean_request_tpot_ms(log) == pytest.approx((5.0 - 4.0 / 3) / 34 * 1e3)
    assert pc.mean_request_tpot_ms(log.iloc[[2]]) != pc.mean_request_tpot_ms(log.iloc[[2]])  # one-token: NaN
    summary = {"requests": 3, "unfinished": 0, "preemptions": 0, "prefix_cache_hits": 0, "prefix_cache_queries": 0,
               "mean_decode_batch": 1.0}
    monkeypatch.setattr(pc, "simulate", lambda *a, **k: SimpleNamespace(requests=log, summary=summary))
    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == "gpustack-h200-qwen3.5-35b-a3b-sharegpt-c512")
    assert row.reported.tpot_mean_of == "totals"
    assert simulate_row(row)["tpot_mean_ms"] == pytest.approx(pc.mean_request_tpot_ms(log))
    vllm_bench = row.model_copy(update={"reported": row.reported.model_copy(update={"tpot_mean_of": "requests"})})
    assert simulate_row(vllm_bench)["tpot_mean_ms"] == pytest.approx(300.0)
    with pytest.raises(ValidationError, match="tpot_mean_of"):
        Reported.model_validate({"tpot_mean_ms": 1.0, "tpot_mean_of": "tokens"})


def test_the_rows_whose_tpot_comes_from_totals_are_the_qwen3_5_guidellm_runs():
    """The file's Qwen3.5 ShareGPT rows (gpustack's guidellm runs: TPOT = (mean latency - mean TTFT) / (mean output -
    1), their notes say) and no other row (vLLM bench's Mean TPOT, the default) carry tpot_mean_of: totals."""
    rows = load_rows(DEFAULT_FILE)
    totals = {r.id for r in rows if r.reported.tpot_mean_of == "totals"}
    assert len(totals) == 16
    assert totals == {r.id for r in rows if r.bench.tokenizer == "qwen3.5"}
    assert all("the mean request's per-token time" in r.note for r in rows if r.id in totals)


def test_a_source_that_prints_only_total_throughput_is_scored_on_input_plus_output_tokens():
    """vLLM bench's "Total Token throughput" counts the finished requests' prompt and generated tokens over the span
    its output throughput uses (first arrival to last finish); a source that quotes only it is scored on it."""
    from sim.public_check import total_throughput_tok_s

    log = pd.DataFrame({"arrival_s": [0.0, 0.0, 1.0], "first_token_s": [0.5, 1.0, np.nan],
                        "finish_s": [2.0, 4.0, np.nan], "input_tokens": [100, 300, 50],
                        "output_tokens": [20, 80, 0]})
    assert total_throughput_tok_s(log) == pytest.approx((100 + 300 + 20 + 80) / 4.0)  # the unfinished one: out
    row = _row(total_throughput_tok_s=200.0)
    table = error_table([row], [{"total_throughput_tok_s": 180.0, "output_throughput_tok_s": 90.0}])
    assert table["rel_err_total_throughput_tok_s"].iloc[0] == pytest.approx(-0.1)
    assert np.isnan(table["rel_err_output_throughput_tok_s"].iloc[0])  # not reported: not scored
    assert "total_throughput_tok_s" in [m[0] for m in shown_metrics(table)]
    assert "total_throughput_tok_s" not in [m[0] for m in shown_metrics(error_table([_row(tpot_mean_ms=1.0)], [{}]))]


def test_script_runs_two_rows_and_writes_its_table(tmp_path, capsys):
    assert main(["--rows", FAST_ROWS, "--out", str(tmp_path)]) == 0
    table = pd.read_csv(tmp_path / "public_check.csv")
    assert table["id"].tolist() == FAST_ROWS.split(",")
    assert table["sim_tpot_mean_ms"].gt(0).all() and table["sim_output_throughput_tok_s"].gt(0).all()
    assert table["sim_requests"].tolist() == [100, 300]
    assert table["half"].tolist() == ["fit", "held-out"]  # the data file's even / odd rows
    assert (tmp_path / "public_check.png").stat().st_size > 0
    md = (tmp_path / "public_check.md").read_text()
    assert "gpustack-h100-qwen3-8b-c1" in md and "| tpot_mean_ms (all) | 1 |" in md
    assert "public_check" in capsys.readouterr().out


def _occupancy(text: str, block: str) -> str:
    """The data file with its frontend_occupancy section (if any) replaced by `block`."""
    text = re.sub(r"^frontend_occupancy:.*?(?=^frontends:)", "", text, count=1, flags=re.DOTALL | re.MULTILINE)
    return text.replace("frontends:", block + "\nfrontends:", 1)


def _bad_occupancy(block: str, message: str):
    """A bad-file case: the frontend_occupancy section replaced by `block`, the error naming it + `message`."""
    return (lambda t: _occupancy(t, "frontend_occupancy: " + block)), "frontend_occupancy" + message


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("gpu: h100", "gpu: h900", 1), "rows[0].gpu"),
    (lambda t: t.replace("num_prompts: 500", "num_prompts: -1", 1), "rows[0].bench.num_prompts"),
    (lambda t: t.replace("rows:", "rowz:", 1), "rows: a non-empty list"),
    (lambda t: t.replace("dataset: sharegpt, tokenizer: qwen3,", "dataset: sharegpt,", 1), "rows[2].bench: "),
    (lambda t: t.replace("bench: {input_tokens: 512", "bench: {tokenizer: qwen3, input_tokens: 512", 1),
     "rows[0].bench: "),
    (lambda t: t.replace("    frontend: kvcached-h100", "    frontend: nobody", 1),
     "rows[0].frontend: 'nobody' is not under frontends"),
    (lambda t: re.sub(r"kvcached-h100: \{request_ms: [0-9.]+", "kvcached-h100: {request_ms: -1", t, count=1),
     "frontends.kvcached-h100.request_ms: Input should be greater than or equal to 0"),
    (lambda t: t.replace("frontends:", "frontends: [1]\nunused:", 1), "frontends: a mapping"),
    _bad_occupancy("{fraction: 1.5, source: a run}", ".fraction: Input should be less than or equal to 1"),
    _bad_occupancy("{fraction: 0, source: a run}", ".fraction: Input should be greater than 0"),
    _bad_occupancy("{fraction: x, source: a run}", ".fraction: Input should be a valid number"),
    _bad_occupancy("{fraction: 0.4, source: ' '}", ".source: Value error, say where it was measured"),
    _bad_occupancy("{fraction: 0.4}", ".source: required key is missing"),
    _bad_occupancy("0.4", ": a mapping {fraction, source} expected"),
    _bad_occupancy("{fraction: 0.4, source: s, unit: ms}", ".unit: unknown key"),
    (lambda t: re.sub(r"(kvcached-h100: \{[^}]*?)latency_ms: [0-9.]+", r"\1latency_ms: -2", t, count=1),
     "frontends.kvcached-h100.latency_ms: Input should be greater than or equal to 0"),
    (lambda t: t.replace("    dp: 2\n", "    dp: 2\n    all2all: pplx\n", 1), ".all2all: Input should be"),
])
def test_bad_data_file_is_one_line_and_exit_2(tmp_path, capsys, edit, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(DEFAULT_FILE.read_text()))
    out = tmp_path / "out"
    assert main(["--file", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_the_data_file_names_the_measured_occupancy(tmp_path):
    rows, occupancy = load_data(DEFAULT_FILE)
    assert rows and 0 < occupancy.fraction <= 1 and "server_side" in occupancy.source  # measured, and says where
    good = tmp_path / "good.yaml"
    good.write_text(_occupancy(DEFAULT_FILE.read_text(), "frontend_occupancy: {fraction: 0.4, source: vLLM on this box}"))
    occupancy = load_data(good)[1]
    assert (occupancy.fraction, occupancy.source) == (0.4, "vLLM on this box")
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("fraction: 0.4", "fraction: 1.01"))
    with pytest.raises(LabError, match=r"bad.yaml: frontend_occupancy.fraction: "):
        load_data(bad)


@pytest.mark.parametrize("args, message", [
    (["--occupancy", "0.5"], "--occupancy: only with --fit-frontend"),
    (["--fit-frontend", "--occupancy", "0"], "--occupancy: 0.0 is not in (0, 1]"),
    (["--fit-frontend", "--occupancy", "1.5"], "--occupancy: 1.5 is not in (0, 1]"),
    (["--fit-frontend", "--occupancy", "nan"], "--occupancy: nan is not in (0, 1]"),
])
def test_bad_occupancy_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["--rows", SHAREGPT_ROW, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


def test_the_fit_splits_the_delay_by_the_occupancy(monkeypatch):
    # a burst of 40 prompts at once whose "reported" numbers are the simulator's own behind a server of 10 ms
    # work and 30 ms latency a request: the fit, told F = 0.25, finds D = 40 and reproduces them exactly; one that
    # ignored F (request_ms = D) can reproduce no grid point (40 at once reach the engine 40 ms apart, not 10)
    row = PublicRow.model_validate({
        "id": "burst", "source": "https://example.org/x", "gpu": "h100", "gpu_reported": "H100",
        "model": "Qwen/Qwen3-8B", "model_config": "real/presets/qwen3-8b.json", "frontend": "x",
        "bench": {"input_tokens": 200, "output_tokens": 20, "num_prompts": 40, "request_rate": "inf"},
        "reported": {"tpot_mean_ms": 1.0}})
    truth = simulate_row(row, frontend={"request_ms": 10.0, "latency_ms": 30.0})
    row.reported = Reported(**{k: truth[k] for k in ("tpot_mean_ms", "ttft_mean_ms", "output_throughput_tok_s")})
    monkeypatch.setattr("sim.public_check.FRONTEND_GRID", {"delay_ms": (20.0, 40.0, 80.0), "output_token_ms": (0.0,)})
    (line,) = fit_frontends([row], occupancy=0.25)
    assert line["delay_ms"] == 40.0 and line["occupancy"] == 0.25
    assert (line["request_ms"], line["latency_ms"], line["output_token_ms"]) == (10.0, 30.0, 0.0)
    assert line["fit_loss_min"] == pytest.approx(0.0, abs=1e-9) and line["identified"]
    # all of the delay on the server (F = 1, the default): no grid point reproduces the burst
    (whole,) = fit_frontends([row])
    assert whole["latency_ms"] == 0.0 and whole["request_ms"] == whole["delay_ms"]
    assert whole["fit_loss_min"] > 0.01


def test_the_fit_tells_shared_intake_and_its_split_from_a_burst(monkeypatch):
    # a burst of 40 prompts at once, "reported" as the simulator's own behind a server whose 10 ms of work a request
    # is shared (processor sharing, as asyncio interleaves the handlers' pieces) after 30 ms of latency: the fit
    # finds the intake and the split (the burst sees both: the engine gets all 40 together, 400 ms in), and, the
    # per-token cost being invisible on its grid, takes the prior for it
    row = PublicRow.model_validate({
        "id": "burst", "source": "https://example.org/x", "gpu": "h100", "gpu_reported": "H100",
        "model": "Qwen/Qwen3-8B", "model_config": "real/presets/qwen3-8b.json", "frontend": "x",
        "bench": {"input_tokens": 200, "output_tokens": 20, "num_prompts": 40, "request_rate": "inf"},
        "reported": {"tpot_mean_ms": 1.0}})
    truth = simulate_row(row, frontend={"request_ms": 10.0, "latency_ms": 30.0, "intake": "shared"})
    row.reported = Reported(**{k: truth[k] for k in ("tpot_mean_ms", "ttft_mean_ms", "output_throughput_tok_s")})
    monkeypatch.setattr("sim.public_check.FRONTEND_GRID", {"intake": ("fifo", "shared"), "delay_ms": (20.0, 40.0),
                                                           "share": (0.25, 1.0), "output_token_ms": (0.0, 1e-4)})
    (line,) = fit_frontends([row], occupancy=0.79, prior_output_ms=2e-4)
    assert (line["intake"], line["delay_ms"], line["share"]) == ("shared", 40.0, 0.25)
    assert (line["request_ms"], line["latency_ms"], line["output_token_ms"]) == (10.0, 30.0, 2e-4)
    assert line["intake_identified"] and line["split_identified"] and not line["output_identified"]
    assert line["identified"] and line["fit_loss_min"] < 0.01
    assert fitted_frontends([line]) == {"x": {"request_ms": 10.0, "latency_ms": 30.0, "output_token_ms": 2e-4,
                                              "intake": "shared"}}
    # a prior the burst can see (0.3 ms a token: 12 ms of streaming a step) is judged by it, and not taken
    (seen,) = fit_frontends([row], occupancy=0.79, prior_output_ms=0.3)
    assert seen["output_identified"] and seen["output_token_ms"] < 0.3 and seen["fit_loss_min"] < 0.01


def test_fit_frontend_takes_the_files_occupancy_unless_overridden(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sim.public_check.FRONTEND_GRID", {"delay_ms": (0.0, 40.0), "output_token_ms": (0.0,)})
    data = tmp_path / "data.yaml"
    data.write_text(_occupancy(DEFAULT_FILE.read_text(), "frontend_occupancy: {fraction: 0.5, source: a test}"))
    got = {}
    for name, extra in (("file", []), ("what-if", ["--occupancy", "0.25"])):
        out = tmp_path / name
        assert main(["--file", str(data), "--rows", SHAREGPT_ROW, "--out", str(out), "--lengths", "mean",
                     "--fit-frontend", *extra]) == 0
        fit = pd.read_csv(out / "public_frontend_fit.csv").iloc[0]
        fitted = pd.read_csv(out / "public_frontend_fitted.csv").iloc[0]
        got[name] = fit
        # one user: the c1 row's TTFT gap (~46 ms) picks the 40 ms delay whatever its split
        assert fit["frontend"] == "gpustack-h100" and fit["delay_ms"] == 40.0 and fit["identified"]
        assert (fitted["sim_frontend_request_ms"], fitted["sim_frontend_latency_ms"]) == (
            fit["request_ms"], fit["latency_ms"])
        assert "| ttft_mean_ms (fit) | 1 |" in (out / "public_frontend_fitted.md").read_text()
    assert (got["file"]["occupancy"], got["file"]["request_ms"], got["file"]["latency_ms"]) == (0.5, 20.0, 20.0)
    assert (got["what-if"]["occupancy"], got["what-if"]["request_ms"], got["what-if"]["latency_ms"]) == (
        0.25, 10.0, 30.0)
    printed = capsys.readouterr().out
    assert "occupancy F = 0.5 from frontend_occupancy (a test)" in printed
    assert "occupancy F = 0.25 from --occupancy (what-if)" in printed


def test_unknown_row_id_is_an_error(tmp_path, capsys):
    assert main(["--rows", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "--rows: unknown ids ['nope']" in capsys.readouterr().err
    # a near miss names the nearest ids, not the whole file
    assert main(["--rows", "gpustack-h100-qwen3-8b-c3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nearest: gpustack-h100-qwen3-8b-c2" in err and "iog-4090" not in err and len(err.splitlines()) == 1


SHAREGPT_ROW = "gpustack-h100-qwen3-8b-c1"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(root))
    return root


def test_sharegpt_rows_draw_conversations_from_the_cached_table_else_their_means(cache, tmp_path, capsys):
    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == SHAREGPT_ROW)
    assert row.bench.dataset == "sharegpt" and row.bench.tokenizer == "qwen3"
    assert row_sim_config(row).workload.lengths.source == "fixed"  # no table yet: the run's means
    out = tmp_path / "out"
    assert main(["--rows", SHAREGPT_ROW, "--out", str(out), "--lengths", "table"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sim.workload.lengths.tokenizer: no ShareGPT length table") and "\n" not in err
    assert not out.exists()
    # five conversations vLLM would send (and one its filter drops): 100 prompts send each exactly 20 times
    table = cache / "lengths" / "sharegpt-qwen3.csv"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"conversation": range(6), "prompt_tokens": [30, 120, 200, 410, 90, 2000],
                  "output_tokens": [400, 15, 250, 80, 310, 5]}).to_csv(table, index=False)
    assert row_sim_config(row).workload.lengths.source == "sharegpt"
    assert row_sim_config(row, lengths_mode="mean").workload.lengths.source == "fixed"
    assert main(["--rows", SHAREGPT_ROW, "--out", str(out)]) == 0
    got = pd.read_csv(out / "public_check.csv").iloc[0]
    assert got["sim_lengths"] == "sharegpt (qwen3)" and got["sim_requests"] == 100
    assert got["sim_mean_input"] == pytest.approx(170.0) and got["sim_mean_output"] == pytest.approx(211.0)
    assert "sharegpt (qwen3) (170 / 211)" in (out / "public_check.md").read_text()
    assert main(["--rows", SHAREGPT_ROW, "--out", str(out), "--lengths", "mean"]) == 0
    got = pd.read_csv(out / "public_check.csv").iloc[0]
    assert got["sim_lengths"] == "mean" and got["sim_mean_input"] == pytest.approx(233.0)


def test_without_a_table_sharegpt_rows_say_they_fall_back(cache, tmp_path, capsys):
    assert main(["--rows", SHAREGPT_ROW, "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "note: no ShareGPT length table at" in err and "python -m real.sharegpt_lengths --tokenizer qwen3" in err
    assert pd.read_csv(tmp_path / "o" / "public_check.csv")["sim_lengths"].tolist() == ["mean"]


def test_rows_run_behind_their_sources_front_end_unless_it_is_off(tmp_path):
    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == SHAREGPT_ROW)
    fe = row._frontend
    assert row.frontend == "gpustack-h100" and fe["request_ms"] > 0
    got = {}
    for mode in ("file", "off"):
        assert main(["--rows", SHAREGPT_ROW, "--out", str(tmp_path / mode), "--frontend", mode, "--lengths", "mean"]) == 0
        got[mode] = pd.read_csv(tmp_path / mode / "public_check.csv").iloc[0]
    assert got["off"]["sim_frontend_request_ms"] == 0 and got["off"]["sim_frontend_utilization"] == 0
    assert got["file"]["sim_frontend_request_ms"] == fe["request_ms"]
    assert got["file"]["sim_frontend_output_token_ms"] == fe["output_token_ms"]
    assert got["file"]["frontend"] == "gpustack-h100"
    # one user at a time: every request's TTFT grows by at least its request_ms (plus its first token's streaming)
    assert got["file"]["sim_ttft_mean_ms"] - got["off"]["sim_ttft_mean_ms"] >= fe["request_ms"] - 1e-6


PRIOR_ROW = "tenstorrent-a100-qwen3-0.6b-128-128-c1"  # its source has no front end; 8 prompts, one user


def test_a_row_without_a_front_end_runs_behind_the_files_prior_only_when_asked(tmp_path):
    rows = {r.id: r for r in load_rows(DEFAULT_FILE)}
    prior = rows[PRIOR_ROW]._prior_frontend
    assert rows[PRIOR_ROW].frontend is None and prior["request_ms"] > 0 and prior["latency_ms"] > 0
    assert prior["output_token_ms"] == 0  # the prior's per-request terms only: its per-token cost is the fit's
    assert rows[SHAREGPT_ROW]._prior_frontend is None  # a row naming a front end never takes the prior
    got = {}
    for mode in ("file", "prior"):
        assert main(["--rows", f"{PRIOR_ROW},{SHAREGPT_ROW}", "--out", str(tmp_path / mode), "--frontend", mode,
                     "--lengths", "mean"]) == 0
        got[mode] = pd.read_csv(tmp_path / mode / "public_check.csv").set_index("id")
    plain, behind = got["file"].loc[PRIOR_ROW], got["prior"].loc[PRIOR_ROW]
    assert plain["sim_frontend_request_ms"] == 0 and plain["sim_frontend_latency_ms"] == 0  # the default: none
    assert (behind["sim_frontend_request_ms"], behind["sim_frontend_latency_ms"]) == (prior["request_ms"],
                                                                                    prior["latency_ms"])
    # one user at a time: every request reaches the engine request_ms + latency_ms later, and its TPOT is unchanged
    delay = prior["request_ms"] + prior["latency_ms"]
    assert behind["sim_ttft_mean_ms"] - plain["sim_ttft_mean_ms"] == pytest.approx(delay, abs=1e-6)
    assert behind["sim_tpot_mean_ms"] == pytest.approx(plain["sim_tpot_mean_ms"], rel=1e-9)
    named = [got[m].loc[SHAREGPT_ROW].drop(["frontend"]) for m in ("file", "prior")]
    pd.testing.assert_series_equal(*named)  # the named front end's row runs as before


@pytest.mark.parametrize("prior, message", [
    ("{output_token_ms: 0.05, source: a page}", "row tenstorrent-a100-qwen3-0.6b-128-128-c1 names no front end "
                                                "and the data file's frontend_prior gives no request_ms / latency_ms"),
    ("{output_token_ms: 0.05, request_ms: -1, source: a page}",
     "frontend_prior.request_ms: Input should be greater than or equal to 0"),
    ("{output_token_ms: 0.05, latency_ms: 8, intake: lifo, source: a page}", "frontend_prior.intake: Input should be"),
])
def test_bad_prior_is_one_line_and_exit_2(tmp_path, capsys, prior, message):
    bad = tmp_path / "bad.yaml"
    text = re.sub(r"^frontend_prior:.*?(?=^frontends:)", "frontend_prior: " + prior + "\n", DEFAULT_FILE.read_text(),
                  count=1, flags=re.DOTALL | re.MULTILINE)
    bad.write_text(text)
    out = tmp_path / "out"
    assert main(["--file", str(bad), "--rows", PRIOR_ROW, "--out", str(out), "--frontend", "prior"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("name,method,bits,matmul", [
    ("qwen3-8b-awq", "awq", 4 + 20 / 128, None), ("qwen3-8b-gptq-int4", "gptq", 4 + 16 / 128, None),
    ("qwen3-8b-gptq-int8", "gptq", 8 + 16 / 128, None), ("qwen3-8b-w4a16", "compressed-tensors", 4 + 16 / 128, None),
    ("qwen3-8b-fp8-static", "fp8", 8.0, "fp8"), ("qwen3-8b-fp8-dynamic", "fp8", 8 + 32 / 128 ** 2, "fp8"),
    ("qwen3-8b-bnb-4bit", "bitsandbytes", 4 + 8 / 64 + 32 / (64 * 256), None),
    ("deepseek-r1-0528", "fp8", 8 + 32 / 128 ** 2, "fp8")])
def test_the_quantized_rows_configs_read_as_their_method(name, method, bits, matmul):
    """The session-23 rows' checkpoints (sim/validation/configs/): the method, bits per weight and matmul dtype the
    simulator prices them at; the Qwen3-8B ones keep Qwen3-8B's architecture."""
    from pathlib import Path

    from sim.models import from_hf_config

    m = from_hf_config(Path(DEFAULT_FILE).parent / "configs" / f"{name}.json")
    assert (m.quant_method, m.matmul_dtype) == (method, matmul) and m.quant_bits == pytest.approx(bits)
    if name.startswith("qwen3-8b"):
        assert m.params_b == pytest.approx(from_hf_config(Path(DEFAULT_FILE).parents[2] / "real/presets/qwen3-8b.json").params_b)


@pytest.mark.parametrize("name,params_b,window,sliding", [
    ("deepseek-r1-distill-qwen-7b", 7.62, None, 0), ("qwen2.5-7b", 7.62, None, 0), ("qwen2.5-14b", 14.77, None, 0),
    ("qwen2.5-32b", 32.76, None, 0), ("gemma-2-9b-it", 9.24, 4096, 21), ("phi-4", 14.66, 16384, 40),
    ("llama-3.3-70b-instruct", 70.55, None, 0), ("meta-llama-3-70b-instruct", 70.55, None, 0),
    ("llama-3.1-nemotron-70b-instruct-fp8-dynamic", 70.55, None, 0)])
def test_the_session_26_configs_read_as_their_published_shapes(name, params_b, window, sliding):
    """The session-26 IOG rows' configs: the parameter counts their cards publish (R1-Distill-Qwen-7B / Qwen2.5-7B
    7.6B, Qwen2.5-14B 14.8B, -32B 32.8B, gemma-2-9b 9.2B with alternate 4096-token windows, phi-4 14.7B, the
    Llama-3 70B family 70.6B) and Nemotron FP8-dynamic as a w8a8 fp8 compressed-tensors checkpoint (8 bits + a
    per-channel scale, about half the bf16 bytes)."""
    from pathlib import Path

    from sim.models import from_hf_config

    m = from_hf_config(Path(DEFAULT_FILE).parent / "configs" / f"{name}.json")
    assert m.params_b == pytest.approx(params_b, abs=0.01) and (m.sliding_window, m.sliding_layers) == (window, sliding)
    if "fp8" in name:
        bf16 = from_hf_config(Path(DEFAULT_FILE).parent / "configs" / "llama-3.3-70b-instruct.json")
        assert (m.quant_method, m.matmul_dtype) == ("compressed-tensors", "fp8")
        assert 0.5 < m.weight_bytes / bf16.weight_bytes < 0.53


def test_held_out_rows_are_summarised_by_model_kind():
    import pandas as pd

    from sim.models import from_hf_config
    from sim.public_check import REPO_ROOT, kind_markdown, model_kind

    assert model_kind(from_hf_config(REPO_ROOT / "sim/validation/configs/gpt-oss-20b.json"), 1) == "MoE, mxfp4, tp 1"
    assert model_kind(from_hf_config(REPO_ROOT / "real/presets/qwen3-8b.json"), 2) == "dense, bf16, tp 2"
    table = pd.DataFrame({"half": ["held-out", "held-out", "fit", "held-out"],
                          "sim_model_kind": ["dense, bf16, tp 1", "dense, bf16, tp 1", "dense, bf16, tp 1",
                                             "MoE, mxfp4, tp 1"],
                          "rel_err_tpot_mean_ms": [0.05, -0.30, 0.0, float("nan")],
                          "rel_err_output_throughput_tok_s": [0.02, 0.2, 0.0, -0.5]})
    text = kind_markdown(table)
    assert "| dense, bf16, tp 1 | 2 | 1 of 2 | 18% | 1 of 2 |" in text  # the fit row is not counted
    assert "| MoE, mxfp4, tp 1 | 1 | 0 of 0 | - | 0 of 1 |" in text
    # and by card: the card with its tensor-parallel size
    cards = kind_markdown(table.assign(gpu=["rtx-4090", "rtx-4090", "rtx-4090", "h100"], tp=[1, 2, 1, 1],
                                       ep=[1, 1, 1, 2], dp=[1, 1, 1, 2]), "card")
    assert cards.startswith("| held-out rows on card |")
    assert "| rtx-4090, tp 1 | 1 | 1 of 1 | 5% | 1 of 1 |" in cards and "| rtx-4090, tp 2 | 1 | 0 of 1 | 30% |" in cards
    assert "| h100, tp 1, dp 2, ep 2 | 1 |" in cards  # data and expert parallelism named where set


def test_a_table_row_runs_the_seed_whose_draw_matches_the_runs_own_mean_lengths(cache):
    """vLLM sent one seeded sample whose token totals it printed: of the candidate seeds, the row runs the one
    whose drawn requests' means are nearest them, and the requests it simulates are that draw."""
    from sim.public_check import SEED_CANDIDATES, matching_seed, simulate_row
    from sim.simulate import lengths_rng
    from sim.workload import LengthSampler

    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == SHAREGPT_ROW)
    rng = np.random.default_rng(7)
    table = cache / "lengths" / "sharegpt-qwen3.csv"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"conversation": range(400), "prompt_tokens": rng.integers(20, 600, 400),
                  "output_tokens": rng.integers(10, 500, 400)}).to_csv(table, index=False)
    sim = row_sim_config(row)
    rows = prepare_inputs(sim).length_table
    want = np.log([row.bench.input_tokens, row.bench.output_tokens])

    def means(seed):
        p, o = LengthSampler.from_spec(sim.workload.lengths, rows, rng=lengths_rng(0, seed)).sample(100, None)
        return np.array([p.mean(), o.mean()])

    seed = matching_seed(row, sim, rows)
    gaps = {s: np.abs(np.log(means(s)) - want).sum() for s in range(SEED_CANDIDATES)}
    assert gaps[seed] == min(gaps.values()) and gaps[seed] < gaps[0]
    got = simulate_row(row)
    assert got["sim_seed"] == seed and [got["sim_mean_input"], got["sim_mean_output"]] == pytest.approx(means(seed))
    assert matching_seed(row, row_sim_config(row, lengths_mode="mean"), None) == 0  # the means: nothing drawn


def test_a_data_and_expert_parallel_row_runs_dp_replicas_with_the_experts_spread():
    """`vllm serve --data-parallel-size 2 --enable-expert-parallel` of a MoE model: two tp-1 replicas behind one
    server (least loaded first), the routed experts spread over both GPUs and the two ranks stepping together."""
    from sim.public_check import simulate_row

    row = PublicRow.model_validate({
        "id": "moe-dp2", "source": "https://example.org/x", "gpu": "h100", "gpu_reported": "2 x H100",
        "model": "Qwen/Qwen3-30B-A3B", "model_config": "sim/validation/configs/qwen3-30b-a3b.json", "tp": 1,
        "dp": 2, "ep": 2, "bench": {"input_tokens": 200, "output_tokens": 40, "num_prompts": 16,
                                    "request_rate": "inf", "max_concurrency": 8}, "reported": {"tpot_mean_ms": 10.0}})
    sim = row_sim_config(row)
    assert (sim.replicas, sim.hardware.tp, sim.hardware.ep, sim.router) == (2, 1, 2, "least_loaded")
    one = row_sim_config(row.model_copy(update={"dp": 1, "ep": 1}))
    from sim.cost import CostModel

    spread, whole = CostModel.from_config(sim), CostModel.from_config(one)
    assert spread.model.resident_weight_bytes(2) < whole.model.resident_weight_bytes(1)  # half the experts each
    got = simulate_row(row)
    assert got["sim_requests"] == 16 and got["sim_unfinished"] == 0
    with pytest.raises(ValidationError):
        PublicRow.model_validate({**row.model_dump(by_alias=True), "dp": 0})


PROXY_ROW = "iog-h100pcie-phi-4-sharegpt-rate-1"  # phi4: no table built for it, none it shares
DISTILL_ROW = "iog-h100pcie-r1-distill-qwen-7b-sharegpt-rate-1"  # deepseek-r1-distill-qwen: reads qwen3's table


def test_rows_without_a_table_borrow_another_tokenizers_conversations_scaled_to_their_means(cache, tmp_path, capsys):
    """A ShareGPT row whose tokenizer has no table (phi4) draws the nearest cached table's conversations scaled to
    its run's means (`borrow`, sim/workload.py borrowed_sharegpt_table) under the default `auto`; `own` keeps the
    old fallback (the means), as does a cache with no table at all; a row with its own table is unchanged."""
    from sim.public_check import borrows_sharegpt_table, simulate_row

    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == PROXY_ROW)
    assert row.bench.tokenizer == "phi4" and (row.bench.input_tokens, row.bench.output_tokens) == (203, 118)
    assert not borrows_sharegpt_table(row) and row_sim_config(row).workload.lengths.source == "fixed"  # none cached
    assert main(["--rows", PROXY_ROW, "--out", str(tmp_path / "o0")]) == 0
    assert "sharegpt-phi4.csv: 1 ShareGPT rows run at their mean lengths" in capsys.readouterr().err
    rng = np.random.default_rng(3)
    table = cache / "lengths" / "sharegpt-qwen3.csv"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"conversation": range(500), "prompt_tokens": rng.integers(20, 900, 500),
                  "output_tokens": rng.integers(10, 900, 500)}).to_csv(table, index=False)
    assert borrows_sharegpt_table(row)
    assert [borrows_sharegpt_table(row, m) for m in ("own", "table", "mean")] == [False] * 3
    assert row_sim_config(row, lengths_mode="own").workload.lengths.source == "fixed"
    lengths = row_sim_config(row).workload.lengths
    assert (lengths.source, lengths.tokenizer, lengths.borrow) == ("sharegpt", "phi4", True)
    assert (lengths.prompt_tokens, lengths.output_tokens) == (203, 118)
    own = next(r for r in load_rows(DEFAULT_FILE) if r.id == SHAREGPT_ROW)
    assert not borrows_sharegpt_table(own) and not row_sim_config(own).workload.lengths.borrow  # qwen3: its own
    got = simulate_row(row)
    assert got["sim_lengths"] == "sharegpt (qwen3 scaled to 203 / 118 as phi4)"
    # 200 of the ~490 scaled conversations, the seed whose draw is nearest the run's means: near, not exact
    assert got["sim_mean_input"] == pytest.approx(203, rel=0.1) and got["sim_mean_output"] == pytest.approx(118, rel=0.1)
    assert simulate_row(row, lengths_mode="own")["sim_lengths"] == "mean"
    assert main(["--rows", PROXY_ROW, "--out", str(tmp_path / "o")]) == 0
    assert "1 ShareGPT rows draw another tokenizer's conversations scaled to their mean lengths" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "o" / "public_check.csv").iloc[0]["sim_lengths"] == got["sim_lengths"]


def test_distill_qwen_rows_draw_qwen3s_conversations_with_their_bos(cache, tmp_path, capsys):
    """R1-Distill-Qwen rows count ShareGPT with Qwen's vocabulary plus a BOS (sim/workload.py
    SHAREGPT_TABLE_ALIASES): by default they draw qwen3's table, one token more on every prompt and reply."""
    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == DISTILL_ROW)
    assert row.bench.tokenizer == "deepseek-r1-distill-qwen"
    assert row_sim_config(row).workload.lengths.source == "fixed"  # no qwen3 table yet: the run's means
    assert main(["--rows", DISTILL_ROW, "--out", str(tmp_path / "o")]) == 0
    assert "sharegpt-qwen3.csv: 1 ShareGPT rows run at their mean lengths (build it: python -m " \
           "real.sharegpt_lengths --tokenizer qwen3)" in capsys.readouterr().err
    table = cache / "lengths" / "sharegpt-qwen3.csv"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"conversation": range(4), "prompt_tokens": [99, 199, 299, 3], "output_tokens": [149, 249, 199, 9]}
                 ).to_csv(table, index=False)
    sim = row_sim_config(row)
    assert (sim.workload.lengths.source, sim.workload.lengths.tokenizer) == ("sharegpt", "deepseek-r1-distill-qwen")
    assert main(["--rows", DISTILL_ROW, "--out", str(tmp_path / "o")]) == 0
    got = pd.read_csv(tmp_path / "o" / "public_check.csv").iloc[0]
    assert got["sim_lengths"] == "sharegpt (qwen3 +1 / +1 as deepseek-r1-distill-qwen)"
    # 200 requests over the 4 conversations vLLM's filter keeps once the BOS is counted (3 -> 4 tokens passes)
    assert got["sim_mean_input"] == pytest.approx((100 + 200 + 300 + 4) / 4)
    assert got["sim_mean_output"] == pytest.approx((150 + 250 + 200 + 10) / 4)


def test_the_plot_of_rows_that_report_no_ttft_warns_nothing(tmp_path):
    """`--rows` of rows without a reported TTFT (musgrave-a100-40g-llama-3.1-8b-c1): the empty panel's legend()
    printed matplotlib's two-line 'No artists with labels' warning on stderr; the panel now says so itself."""
    import warnings

    from sim.public_check import plot

    table = error_table([_row(tpot_mean_ms=10.0)], [{"tpot_mean_ms": 11.0, "ttft_mean_ms": 90.0,
                                                     "output_throughput_tok_s": 70.0}])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot(table, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def _qwen3_table(cache, n=400):
    """A synthetic ShareGPT qwen3 length table of `n` conversations in the test's cache."""
    rng = np.random.default_rng(7)
    table = cache / "lengths" / "sharegpt-qwen3.csv"
    table.parent.mkdir(parents=True)
    pd.DataFrame({"conversation": range(n), "prompt_tokens": rng.integers(20, 600, n),
                  "output_tokens": rng.integers(10, 500, n)}).to_csv(table, index=False)


DRAW_ROWS = f"{SHAREGPT_ROW},mushfiq-4090-mistral-7b-c8"  # one drawn from the table, one at fixed lengths


def test_one_draw_writes_what_the_check_wrote_before(cache, tmp_path):
    _qwen3_table(cache)
    assert main(["--rows", DRAW_ROWS, "--out", str(tmp_path / "a")]) == 0
    assert main(["--rows", DRAW_ROWS, "--out", str(tmp_path / "b"), "--draws", "1"]) == 0
    for name in ("public_check.csv", "public_check.md"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert "draws" not in (tmp_path / "a" / "public_check.csv").read_text()


def test_draws_run_a_table_rows_next_matching_seeds_and_bracket_its_error(cache, tmp_path):
    """--draws 3: the table row also runs its 2nd and 3rd nearest seeds (matching_seeds, the chosen one first);
    its spread columns hold the chosen seed's error between their min and max; the fixed-length row runs once."""
    from sim.public_check import matching_seed, matching_seeds

    _qwen3_table(cache)
    assert main(["--rows", DRAW_ROWS, "--out", str(tmp_path), "--draws", "3"]) == 0
    got = pd.read_csv(tmp_path / "public_check.csv").set_index("id")
    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == SHAREGPT_ROW)
    sim = row_sim_config(row)
    table = prepare_inputs(sim).length_table
    seeds = matching_seeds(row, sim, table, count=3)
    assert seeds[0] == matching_seed(row, sim, table) and len(set(seeds)) == 3
    drawn, fixed = got.loc[SHAREGPT_ROW], got.loc["mushfiq-4090-mistral-7b-c8"]
    assert drawn["sim_draws"] == 3 and drawn["sim_draw_seeds"] == " ".join(map(str, seeds))
    assert drawn["sim_seed"] == seeds[0] and fixed["sim_draws"] == 1
    for col in ("tpot_mean_ms", "output_throughput_tok_s"):
        lo, err, hi = (drawn[f"{p}rel_err_{col}"] for p in ("draws_min_", "", "draws_max_"))
        assert lo <= err <= hi and lo < hi  # three draws of 100 requests do not all run alike
        each = [float(x) for x in drawn[f"draws_rel_err_{col}"].split()]
        assert len(each) == 3 and each[0] == pytest.approx(err, rel=1e-5) \
            and [min(each), max(each)] == pytest.approx([lo, hi], rel=1e-5)
        spread = [fixed[f"{p}rel_err_{col}"] for p in ("draws_min_", "", "draws_max_")]  # NaN: none reported
        assert np.array_equal(spread, [spread[1]] * 3, equal_nan=True) and not fixed[f"draws_flip_{col}"]
    assert math.isnan(fixed["rel_err_tpot_mean_ms"]) and fixed["rel_err_output_throughput_tok_s"] > -1
    md = (tmp_path / "public_check.md").read_text()
    assert "Draw noise (--draws 3" in md and "1 such rows" in md  # the held-out row (fixed lengths) has one draw
    assert "- held-out out tok/s within 10%: 1 of 1 (draws: between 1 and 1; 0 rows flip; by draw 1)" in md


def test_the_draw_summary_counts_rows_within_in_every_draw_and_in_any(monkeypatch):
    """held-out rows with TPOT errors over their draws: +5% (all within), -8%..+20% (flips; chosen +20%),
    +15%..+30% (none within), and a fit row (not counted): 1 within with the chosen seeds, between 1 and 2."""
    from sim.public_check import draws_markdown

    table = pd.DataFrame({"half": ["held-out", "held-out", "held-out", "fit"], "sim_draws": [1, 3, 3, 3],
                          "rel_err_tpot_mean_ms": [0.05, 0.20, 0.15, 0.0],
                          "draws_min_rel_err_tpot_mean_ms": [0.05, -0.08, 0.15, -0.3],
                          "draws_max_rel_err_tpot_mean_ms": [0.05, 0.20, 0.30, 0.0],
                          "draws_flip_tpot_mean_ms": [False, True, False, True],
                          "draws_rel_err_tpot_mean_ms": ["0.05", "0.2 -0.08 0.1", "0.15 0.3 0.2", "0 -0.3 -0.1"]})
    monkeypatch.setattr("sim.public_check.shown_metrics", lambda t: [("tpot_mean_ms", None, None, None)])
    text = draws_markdown(table)
    assert "--draws 3" in text and "3 such rows" in text
    assert "- held-out TPOT within 10%: 1 of 3 (draws: between 1 and 2; 1 rows flip; by draw 1 / 2 / 2)" in text
    assert draws_markdown(table.drop(columns="sim_draws")) == ""


@pytest.mark.parametrize("value", ["0", "-1", "x", "1000"])
def test_bad_draws_is_one_line_and_exit_2(tmp_path, capsys, value):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        main(["--rows", SHAREGPT_ROW, "--out", str(out), "--draws", value])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: python -m sim.public_check: argument --draws") and "\n" not in err
    assert not out.exists()


def test_a_poisson_sharegpt_row_of_benchmark_serving_is_sent_at_its_clients_seeded_times():
    """IOG's rows ran benchmark_serving.py of vLLM 0.8.5 at --seed 42 (run_benchmark.sh): their send times are
    numpy's legacy draws (client_send_seed -> workload.client_seed), the same for every run seed, so the seed a row
    runs (matching_seed)
    chooses its conversations only. Not a burst, a random dataset (numpy drew its lengths first), a vLLM from 0.10
    (`vllm bench serve` rescales its gaps) or a row without a version."""
    from sim.public_check import client_send_seed
    from sim.workload import vllm_client_send_times

    iog = next(r for r in load_rows(DEFAULT_FILE) if r.id.startswith("iog-") and r.bench.request_rate == 4.0)
    sim = row_sim_config(iog)
    assert client_send_seed(iog) == 42 and sim.workload.kind == "poisson" and sim.workload.client_seed == 42
    inputs = prepare_inputs(row_sim_config(iog, lengths_mode="mean"))
    want = vllm_client_send_times(200, 4.0, 1.0, 42)
    for seed in (0, 5):
        got = simulate(inputs, "ar", seed=seed).requests["arrival_s"].sort_values().to_numpy()
        assert got == pytest.approx(want, rel=1e-12)

    def variant(**changes):
        data = iog.model_dump(by_alias=True)
        for key, value in changes.items():
            where, field = key.split("__") if "__" in key else (None, key)
            (data[where] if where else data)[field] = value
        return PublicRow.model_validate(data)

    assert client_send_seed(variant(bench__seed=0)) == 0
    assert client_send_seed(variant(vllm="0.10.0")) is None and client_send_seed(variant(vllm=None)) is None
    assert client_send_seed(variant(bench__request_rate=float("inf"), bench__after_same_prompts=False)) is None
    random_row = variant(bench__dataset="random", bench__tokenizer=None, bench__lengths="fixed")
    assert client_send_seed(random_row) is None and row_sim_config(random_row).workload.client_seed is None


def test_the_deplodock_sweeps_run_behind_their_hosts_front_ends():
    """Each deplodock host (RTX 5090 VM, RTX PRO 6000 VM) has its own front end, fitted on its sweep's fit rows:
    every row of a sweep names its host's, with a per-request delay (request_ms + latency_ms) above 0."""
    rows = [r for r in load_rows(DEFAULT_FILE) if r.id.startswith("deplodock-")]
    assert len(rows) == 17
    for r in rows:
        host = "deplodock-5090" if r.gpu == "rtx-5090" else "deplodock-pro6000"
        assert r.frontend == host and r._frontend["request_ms"] + r._frontend["latency_ms"] > 0


def test_a_closed_loop_of_equal_requests_bunches_behind_a_front_end_delay():
    """80 equal 4000 / 4000 requests from 8 users on the RTX 5090 (the deplodock c8 row): with no delay between a
    finish and the next prompt's admission the users stay staggered a prefill apart (every later TTFT one
    prefill, ~0.2 s); with the host's delay the requests that finish while a prompt is on its way finish in
    decode steps, so their successors arrive together and their prefills queue: the median TTFT is several
    prefills (the run printed 844 ms), while TPOT barely moves."""
    row = next(r for r in load_rows(DEFAULT_FILE) if r.id == "deplodock-5090-qwen3-coder-30b-a3b-awq-4k-c8")
    off, on = simulate_row(row, frontend="off"), simulate_row(row)
    assert off["ttft_median_ms"] < 250 and on["ttft_median_ms"] > 2.5 * off["ttft_median_ms"]
    assert on["tpot_mean_ms"] == pytest.approx(off["tpot_mean_ms"], rel=0.02)
