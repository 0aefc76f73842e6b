"""Cost model: roofline by hand, memory-bound flatness, CUDA-graph padding, measured profiles, KV capacity,
TP on the configured link, expert parallelism, the CPU terms (GEMM weight bandwidth, compute/memory overlap)."""
import numpy as np
import pytest

from lab.config_sim import InterconnectSheet, SimSection
from lab.errors import LabError
from sim.cost import CostModel, allreduce_time_s, ep_remote_pair_bytes, moe_pair_bytes
from sim.hardware import achievable_bandwidth, get_hardware
from sim.models import from_hf_config, get_model
from tests.sim.conftest import make_sim


def test_roofline_by_hand():
    hw, m = get_hardware("h100"), get_model("llama-2-7b")
    cm = CostModel(hw, m, step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0, spec_overhead_s=0)
    bw = 3.35e12 * hw.bw_efficiency
    weights = 6.7e9 * 2 / bw
    assert cm.step_time(1, 0, 1, False) == pytest.approx(weights)
    assert m.kv_bytes_per_token == 2 * 32 * 32 * 128 * 2
    assert cm.step_time(1, 10_000, 1, False) == pytest.approx(weights + 10_000 * m.kv_bytes_per_token / bw)
    big = 8192
    assert cm.step_time(big, 0, 1, False) == pytest.approx(big * 2 * 6.7e9 / (989.4e12 * hw.mfu))
    # memory bound: 64 tokens cost the same as 1; compute bound: cost grows with tokens
    assert cm.step_time(64, 0, 1, False) == cm.step_time(1, 0, 1, False)
    assert cm.step_time(4096, 0, 1, False) > 1.5 * cm.step_time(64, 0, 1, False)
    vec = cm.step_time_vec(np.array([1, 64, 4096]), 0, 1, True)
    assert np.allclose(vec, [cm.step_time(t, 0, 1, True) for t in (1, 64, 4096)])


def test_cuda_graph_buckets_make_sps_jagged():
    sim = make_sim(cost={"cuda_graph_buckets": [8, 16, 32, 64, 128, 256]})
    cm = CostModel.from_config(sim)
    assert cm.step_time(9, 0, 4, True) == cm.step_time(16, 0, 4, True)
    assert cm.step_time(300, 0, 4, True) == pytest.approx(1.1 * CostModel.from_config(make_sim()).step_time(300, 0, 4, True))
    sps = 1 / cm.step_time_vec(np.arange(1, 258), 0, 4, True)
    # flat runs inside a bucket, steps down between buckets, and a cliff where graphs run out
    assert len(np.unique(np.round(sps[:256], 9))) <= 6
    assert sps[256] < 0.95 * sps[255]


def write_grid_profile(directory, ms):
    from sim.step_profile import write_profile

    rows = [{"batch": b, "query_tokens": q, "context_len": c, "step_ms": ms(b, q, c), "step_ms_p90": ms(b, q, c),
             "repeats": 3} for b in (1, 8) for q in (1, 8) for c in (0, 1024)]
    meta = {"source": "lab", "model": "llama-2-7b", "dtype": "bf16", "device": "cuda", "hardware": "rtx-4090",
            "cpu_capability": None, "threads": None, "versions": {}, "created": "2026-11-26T00:00:00"}
    write_profile(directory, rows, meta)
    return directory


def test_measured_profile_is_the_step_cost_without_kv_on_top(tmp_path):
    def ms(b, q, c):
        return 10 + 0.1 * b * q + 0.002 * b * c
    write_grid_profile(tmp_path, ms)
    sim = make_sim(hardware={"preset": "rtx-4090"}, cost={"profile": str(tmp_path)})
    cm = CostModel.from_config(sim)
    # the profile's own number, interpolated: no KV-read time, no overheads added on top. kv_sum counts
    # the step's own tokens; the profile's context is what was cached before it
    assert cm.step_time(8, 8 * 1025, 8, False) == pytest.approx(ms(8, 1, 1024) / 1e3)
    assert cm.step_time(16, 4 * 516, 4, False) == pytest.approx(ms(4, 4, 512) / 1e3)
    # a fresh prompt's prefill reads its own 512 tokens: the profile's context-0 row, not context 512
    assert cm.step_time(512, 512, 1, False) == pytest.approx(ms(1, 512, 0) / 1e3)
    vec = cm.step_time_vec(np.array([4, 16, 32]), 4 * 512, 4, True)
    assert np.allclose(vec, [cm.step_time(t, 4 * 512, 4, True) for t in (4, 16, 32)])
    # KV capacity from the named device (the 23.55 GiB a 24 GB RTX 4090 reports), not H100's 80
    cap = cm.kv_capacity_tokens(0.9)
    assert cap == int((23.55 * 2**30 * 0.9 - 6.7e9 * 2) / (2 * 32 * 32 * 128 * 2))


def test_profile_without_a_device_fails_at_validate(tmp_path):
    write_grid_profile(tmp_path, lambda b, q, c: 5.0)
    data = make_sim().model_dump()
    data.pop("hardware")
    data["cost"]["profile"] = str(tmp_path)
    with pytest.raises(ValueError, match="name the device"):
        SimSection.model_validate(data)
    data["engine"]["kv_capacity_tokens"] = 1000
    SimSection.model_validate(data)  # memory given directly
    with pytest.raises(LabError, match="does not exist"):
        CostModel.from_config(make_sim(hardware={"preset": "l40s"}, cost={"profile": str(tmp_path / "none")}))


def test_sps_curve_is_the_step_time():
    for sim in (make_sim(), make_sim(cost={"cuda_graph_buckets": [8, 64]}), make_sim(hardware={"tp": 2})):
        cm = CostModel.from_config(sim)
        b = np.array([1, 7, 30, 200])
        sps = cm.sps_curve(16, 5000, 6)(b)
        assert np.allclose(sps, [1 / cm.step_time(int(x) + 16, 5000, 6, True) for x in b])


def test_roofline_sps_values_equal_the_array_curve_bit_for_bit():
    # RooflineSps.values (plain Python, small batches) must give the very floats of the numpy curve, on both
    # sides of the memory/compute knee and with the whole range memory-bound (its one-value shortcut)
    from sim.cost import RooflineSps

    rng = np.random.default_rng(3)
    cm = CostModel.from_config(make_sim())
    for _ in range(300):
        p0, kv, n = int(rng.integers(0, 4096)), float(rng.integers(0, 200_000)), int(rng.integers(1, 64))
        sps = cm.sps_curve(p0 * int(rng.integers(0, 2)), kv, n)
        assert isinstance(sps, RooflineSps)
        lo = int(rng.integers(1, 64))
        hi = lo + int(rng.integers(1, 300))
        assert sps.values(lo, hi) == sps(np.arange(lo, hi)).tolist()
    knee = RooflineSps(0, 1.0, 10.0, 0.5)  # (b x 1) vs 10: memory-bound up to b = 10
    assert knee.values(8, 13) == knee(np.arange(8, 13)).tolist() == [1 / 10.5] * 3 + [1 / 11.5, 1 / 12.5]
    assert knee.values(1, 11) == [1 / 10.5] * 10


def test_tp_all_reduce_priced_on_the_configured_link():
    m = get_model("llama-2-7b")
    nvlink = CostModel(get_hardware("h100"), m, tp=2)
    link = InterconnectSheet(kind="pcie", bandwidth_gbs=25, latency_us=15)
    pcie = get_hardware("h100").model_copy(update={"interconnect": link})
    slow = CostModel(pcie, m, tp=2)
    gap = slow.step_time(1024, 0, 8, False) - nvlink.step_time(1024, 0, 8, False)
    per_token = 65 * 2 * 0.5 * 4096 * 2  # bytes: (2 x layers + the embedding's) all-reduces x ring factor x hidden x bf16
    # 1024 tokens x 8 KiB = 8 MiB an all-reduce: not below the custom kernel's 8 MiB, so the H100's NCCL pair
    latency = (65 + 1) * (15 - 20.1) * 1e-6  # + the logits' gather (a preset shape: no vocabulary, so no bytes)
    assert gap == pytest.approx(1024 * per_token * (1 / 25e9 - 1 / 311.4e9) + latency)
    section = make_sim(hardware={"preset": "h100", "tp": 2,
                                 "interconnect": {"kind": "pcie", "bandwidth_gbs": 25, "latency_us": 15}},
                       engine={"async_scheduling": False})  # as `slow`: the host time in series
    assert CostModel.from_config(section).step_time(1024, 0, 8, False) == pytest.approx(
        slow.step_time(1024, 0, 8, False))


def test_one_all_reduce_by_hand_and_the_step_prices_two_per_layer():
    """allreduce_time_s (what sim.allreduce_check scores on published timings) by hand, and a tp > 1 step's link
    time is 2 x layers + 1 (the embedding's) all-reduces of its hidden states and the logits' gather (its latency
    alone on a preset shape without a vocabulary); tp 1 has none."""
    link = InterconnectSheet(kind="pcie", bandwidth_gbs=4, latency_us=30)
    assert allreduce_time_s(link, 4, 8 * 2 ** 20) * 1e6 == pytest.approx(30 + 1.5 * 8388608 / 4000)  # 3175.728 us
    assert allreduce_time_s(link, 2, 0) * 1e6 == pytest.approx(30)
    m = get_model("llama-2-7b")  # 32 layers, hidden 4096, bf16
    hw = get_hardware("h100").model_copy(update={"interconnect": link})
    cm = CostModel(hw, m, tp=4)
    # an ideal link, past the sheets' bound on user input (model_construct skips it): the gap is the link's alone
    ideal = InterconnectSheet.model_construct(kind="none", bandwidth_gbs=1e12)
    no_link = CostModel(hw.model_copy(update={"interconnect": ideal}), m, tp=4)
    gap = cm.step_time(1024, 0, 8, False) - no_link.step_time(1024, 0, 8, False)
    assert gap == pytest.approx(65 * allreduce_time_s(link, 4, 1024 * 4096 * 2) + 30e-6, rel=1e-6)
    assert gap == pytest.approx((65 * (30 + 1.5 * 1024 * 4096 * 2 / 4000) + 30) * 1e-6, rel=1e-6)
    assert CostModel(hw, m, tp=1).step_time(1024, 0, 8, False) == CostModel(
        get_hardware("h100"), m, tp=1).step_time(1024, 0, 8, False)


def test_tp_step_all_reduces_the_embedding_and_gathers_the_sampled_logits():
    """At tp > 1 vLLM's forward pass all-reduces the vocab-parallel embedding's rows once beside the layers' two
    all-reduces each, and LogitsProcessor gathers the vocab-parallel logits of the sampled rows once a step (V1: an
    all-gather, every worker samples): (tp-1)/tp x rows x vocab x 2 bytes + one latency. A prefill chunk's earlier
    prompt tokens have no logits row; a verified draft has one. tp 1 has none of it."""
    m = from_hf_config("sim/validation/configs/llama-3.1-8b-instruct.json")  # 32 layers, hidden 4096, vocab 128,256
    assert (m.n_layers, m.hidden, m.vocab) == (32, 4096, 128256)
    link = InterconnectSheet(kind="pcie", bandwidth_gbs=5.0, latency_us=40)
    hw = get_hardware("rtx-4090").model_copy(update={"interconnect": link})
    ideal = InterconnectSheet.model_construct(kind="none", bandwidth_gbs=1e12, latency_us=0)  # past the input bound
    free = hw.model_copy(update={"interconnect": ideal})
    cm, no_link = CostModel(hw, m, tp=4), CostModel(free, m, tp=4)

    def gap(tokens, n_reqs, drafts=0):
        return cm.step_time(tokens, 300.0 * n_reqs, n_reqs, False, drafts) - no_link.step_time(
            tokens, 300.0 * n_reqs, n_reqs, False, drafts)

    all_reduce = lambda tokens: 65 * (40e-6 + 1.5 * tokens * 4096 * 2 / 5e9)  # noqa: E731
    gather = lambda rows: 40e-6 + 0.75 * rows * 128256 * 2 / 5e9  # noqa: E731
    assert gap(3, 3) == pytest.approx(all_reduce(3) + gather(3), rel=1e-9)  # 2.97 ms, the gather 0.27 of it
    assert gap(3 + 512, 4) == pytest.approx(all_reduce(515) + gather(4), rel=1e-9)  # a chunk: one row for it
    assert gap(3 * 4, 3, drafts=9) == pytest.approx(all_reduce(12) + gather(12), rel=1e-9)  # each draft sampled
    assert cm.step_time_vec(np.array([3.0, 515.0]), 1200.0, 4, False, 0)[1] == pytest.approx(
        cm.step_time(515, 1200.0, 4, False), rel=1e-12)
    one = CostModel(hw, m, tp=1)
    assert one.step_time(3, 900.0, 3, False) == CostModel(free, m, tp=1).step_time(3, 900.0, 3, False)


def test_rtx_4090_link_is_the_fit_on_published_all_reduce_timings():
    """The RTX 4090 link: sim.allreduce_check --fit's bandwidth (nccl-tests), sim.tp_decode_check --fit's serving
    latency; a tp 2 step costs the hand-computed extra over the old 25 GB/s / 15 us sheet, a tp 1 step nothing."""
    hw, m = get_hardware("rtx-4090"), get_model("llama-2-7b")
    assert (hw.interconnect.bandwidth_gbs, hw.interconnect.latency_us) == (5.54, 37.1)
    old = hw.model_copy(update={"interconnect": InterconnectSheet(kind="pcie", bandwidth_gbs=25, latency_us=15)})
    extra = 65 * ((37.1 - 15) * 1e-6 + 1024 * 4096 * 2 * (1 / 5.54e9 - 1 / 25e9))  # ring factor 1 at tp 2
    extra += (37.1 - 15) * 1e-6  # the logits' gather: its latency (no vocabulary on a preset shape)
    assert CostModel(hw, m, tp=2).step_time(1024, 0, 8, False) - CostModel(old, m, tp=2).step_time(
        1024, 0, 8, False) == pytest.approx(extra)
    assert CostModel(hw, m, tp=1).step_time(1024, 0, 8, False) == CostModel(old, m, tp=1).step_time(1024, 0, 8, False)


def test_a100_link_is_the_fit_on_published_nvlink_all_reduce_timings():
    """The A100 SXM link: sim.allreduce_check --fit's pooled nccl-tests fit (36.8 us, 143.1 GB/s); a tp 8 step
    costs the hand-computed extra over the old line-rate sheet (8 us, 300 GB/s), a tp 1 step nothing."""
    for name in ("a100-80g", "a100-40g"):
        link = get_hardware(name).interconnect
        assert (link.kind, link.bandwidth_gbs, link.latency_us) == ("nvlink", 143.1, 36.8), name
    hw, m = get_hardware("a100-80g"), get_model("llama-2-7b")
    old = hw.model_copy(update={"interconnect": InterconnectSheet(kind="nvlink", bandwidth_gbs=300, latency_us=8)})
    ring = 2 * (8 - 1) / 8
    extra = 65 * ((36.8 - 8) * 1e-6 + 2048 * 4096 * 2 * ring * (1 / 143.1e9 - 1 / 300e9))  # 2 x 32 layers + embedding
    extra += (36.8 - 8) * 1e-6  # the logits' gather: its latency (no vocabulary on a preset shape)
    assert CostModel(hw, m, tp=8).step_time(2048, 0, 8, False) - CostModel(old, m, tp=8).step_time(
        2048, 0, 8, False) == pytest.approx(extra)
    assert CostModel(hw, m, tp=1).step_time(2048, 0, 8, False) == CostModel(old, m, tp=1).step_time(2048, 0, 8, False)


def test_all_reduce_runs_the_custom_kernel_below_its_max_size_and_nccl_from_it():
    """vLLM's should_custom_ar takes a tensor while inp_size < max_size: one byte-multiple of 16 under the limit is
    priced at the custom pair, the limit itself at NCCL's (the link's own); scalar and array alike."""
    link = InterconnectSheet(kind="nvlink", bandwidth_gbs=100, latency_us=30,
                             custom_allreduce={"latency_us": 10, "bandwidth_gbs": 200, "max_bytes": 8 * 2 ** 20})
    below, at = 8 * 2 ** 20 - 16, 8 * 2 ** 20
    assert allreduce_time_s(link, 4, below) * 1e6 == pytest.approx(10 + 1.5 * below / 2e5)  # 72.9 us
    assert allreduce_time_s(link, 4, at) * 1e6 == pytest.approx(30 + 1.5 * at / 1e5)  # 155.8 us
    both = allreduce_time_s(link, 4, np.array([float(below), float(at)])) * 1e6
    assert both == pytest.approx([10 + 1.5 * below / 2e5, 30 + 1.5 * at / 1e5])
    assert allreduce_time_s(link, 4, 8192, kernel="nccl") == allreduce_time_s(
        link.model_copy(update={"custom_allreduce": None}), 4, 8192)
    per_tp = link.model_copy(update={"custom_allreduce": link.custom_allreduce.model_copy(
        update={"max_bytes": {2: 64 * 2 ** 20, 8: 256 * 1024}})})  # vLLM's SM 9.0 table with symmetric memory
    assert allreduce_time_s(per_tp, 8, 256 * 1024 - 16) * 1e6 == pytest.approx(10 + 1.75 * (256 * 1024 - 16) / 2e5)
    assert allreduce_time_s(per_tp, 8, 256 * 1024) * 1e6 == pytest.approx(30 + 1.75 * 256 * 1024 / 1e5)
    assert allreduce_time_s(per_tp, 4, 8192) * 1e6 == pytest.approx(30 + 1.5 * 8192 / 1e5)  # tp 4 not in the map


def test_custom_all_reduce_is_off_on_pcie_past_two_gpus_and_at_unsupported_world_sizes():
    """CustomAllreduce: PCIe GPUs (not fully connected) run it at tp 2 only ("not supported on more than two
    PCIe-only GPUs"); world sizes outside 2 / 4 / 6 / 8 never; NVLink at 2 / 4 / 6 / 8."""
    custom = {"latency_us": 10, "bandwidth_gbs": 200, "max_bytes": 8 * 2 ** 20}
    pcie = InterconnectSheet(kind="pcie", bandwidth_gbs=25, latency_us=15, custom_allreduce=custom)
    nvlink = pcie.model_copy(update={"kind": "nvlink"})
    nbytes = 8192
    assert allreduce_time_s(pcie, 2, nbytes) * 1e6 == pytest.approx(10 + nbytes / 2e5)
    for tp in (4, 8):
        assert allreduce_time_s(pcie, tp, nbytes) * 1e6 == pytest.approx(15 + 2 * (tp - 1) / tp * nbytes / 2.5e4)
        assert allreduce_time_s(nvlink, tp, nbytes) * 1e6 == pytest.approx(10 + 2 * (tp - 1) / tp * nbytes / 2e5)
    for tp in (3, 16):
        assert allreduce_time_s(nvlink, tp, nbytes) * 1e6 == pytest.approx(15 + 2 * (tp - 1) / tp * nbytes / 2.5e4)


def test_a100_decode_steps_run_the_custom_kernel_and_prefill_chunks_nccl():
    """The A100 sheets' custom_allreduce pair (sim.allreduce_check --fit over SGLang PR 2688's tables of vLLM's
    kernel: 13.1 us, 192.5 GB/s, below 8 MiB): a tp 8 decode step of 64 requests (512 KiB all-reduces) pays 65 of
    them at that pair where the NCCL pair alone priced them ~26 us dearer each; a 2048-token chunk (16 MiB) runs
    NCCL, unchanged; step_time_vec agrees with step_time on both sides of the limit."""
    for name in ("a100-80g", "a100-40g"):
        custom = get_hardware(name).interconnect.custom_allreduce
        assert (custom.latency_us, custom.bandwidth_gbs, custom.max_bytes) == (13.1, 192.5, 8 * 2 ** 20), name
    hw, m = get_hardware("a100-80g"), get_model("llama-2-7b")  # hidden 4096, bf16: 8 KiB a token
    nccl_only = hw.model_copy(update={"interconnect": hw.interconnect.model_copy(update={"custom_allreduce": None})})
    now, before = CostModel(hw, m, tp=8), CostModel(nccl_only, m, tp=8)
    ring, nbytes = 2 * 7 / 8, 64 * 4096 * 2
    saved = 65 * ((36.8 - 13.1) * 1e-6 + nbytes * ring * (1 / 143.1e9 - 1 / 192.5e9))
    assert before.step_time(64, 64 * 500, 64, False) - now.step_time(64, 64 * 500, 64, False) == pytest.approx(saved)
    assert now.step_time(2048, 0, 8, False) == before.step_time(2048, 0, 8, False)
    tokens = np.array([64.0, 1023.0, 1024.0, 2048.0])  # 1024 tokens: exactly 8 MiB -> NCCL
    assert now.step_time_vec(tokens, 64 * 500, 64, False) == pytest.approx(
        [now.step_time(int(t), 64 * 500, 64, False) for t in tokens], rel=1e-12)
    assert now.tp_allreduce_s(1024) == before.tp_allreduce_s(1024) > now.tp_allreduce_s(1023)


def test_symmetric_memory_takes_the_middle_sizes_on_the_releases_that_run_it():
    """vLLM 0.11+ (VLLM_ALLREDUCE_USE_SYMM_MEM on): CudaCommunicator tries the custom kernel (its max size lowered to
    min(own, CUSTOM_ALL_REDUCE_MAX_SIZES[tp])), then torch symmetric memory below SYMM_MEM_ALL_REDUCE_MAX_SIZES[tp],
    then NCCL. Off (symm_mem False, a release before 0.11.0) the custom kernel keeps its own max size; a tp the
    sheet's table lacks runs without symmetric memory; kernel symm_mem forces its pair."""
    link = InterconnectSheet(
        kind="nvlink", bandwidth_gbs=100, latency_us=30,
        custom_allreduce={"latency_us": 10, "bandwidth_gbs": 200, "max_bytes": 8 * 2 ** 20},
        symm_mem_allreduce={"latency_us": 12, "bandwidth_gbs": 300, "max_bytes": {4: 32 * 2 ** 20, 8: 64 * 2 ** 20},
                            "custom_max_bytes": {4: 32 * 2 ** 20, 8: 256 * 1024}})
    custom = lambda tp, b: 10 + 2 * (tp - 1) / tp * b / 2e5  # noqa: E731 -- microseconds at each pair
    symm = lambda tp, b: 12 + 2 * (tp - 1) / tp * b / 3e5  # noqa: E731
    nccl = lambda tp, b: 30 + 2 * (tp - 1) / tp * b / 1e5  # noqa: E731
    kib, mib = 1024, 2 ** 20
    on = {b: allreduce_time_s(link, 8, b, symm_mem=True) * 1e6 for b in (256 * kib - 16, 256 * kib, 64 * mib - 16, 64 * mib)}
    assert on == pytest.approx({256 * kib - 16: custom(8, 256 * kib - 16), 256 * kib: symm(8, 256 * kib),
                                64 * mib - 16: symm(8, 64 * mib - 16), 64 * mib: nccl(8, 64 * mib)})
    # tp 4: the custom kernel's own 8 MiB is the smaller limit; symmetric memory from it to 32 MiB
    assert allreduce_time_s(link, 4, 8 * mib - 16, symm_mem=True) * 1e6 == pytest.approx(custom(4, 8 * mib - 16))
    assert allreduce_time_s(link, 4, 8 * mib, symm_mem=True) * 1e6 == pytest.approx(symm(4, 8 * mib))
    assert allreduce_time_s(link, 4, 32 * mib, symm_mem=True) * 1e6 == pytest.approx(nccl(4, 32 * mib))
    sizes = np.array([8192.0, 256 * kib, 8 * mib, 64 * mib])
    assert allreduce_time_s(link, 8, sizes, symm_mem=True) * 1e6 == pytest.approx(
        [custom(8, 8192), symm(8, 256 * kib), symm(8, 8 * mib), nccl(8, 64 * mib)])
    assert allreduce_time_s(link, 8, sizes) * 1e6 == pytest.approx(  # off: custom below 8 MiB, NCCL from it
        [custom(8, 8192), custom(8, 256 * kib), nccl(8, 8 * mib), nccl(8, 64 * mib)])
    assert allreduce_time_s(link, 2, 16 * mib, symm_mem=True) * 1e6 == pytest.approx(nccl(2, 16 * mib))  # no tp 2
    assert allreduce_time_s(link, 8, 8192, kernel="symm_mem", symm_mem=True) * 1e6 == pytest.approx(symm(8, 8192))
    with pytest.raises(Exception, match="symm_mem_allreduce"):
        InterconnectSheet(kind="pcie", bandwidth_gbs=25, latency_us=15, symm_mem_allreduce=link.symm_mem_allreduce)


def test_h100_all_reduces_follow_the_rows_release():
    """The H100 / H200 sheets carry three pairs (sim.allreduce_check --fit): NCCL (Azure's nccl-tests table: 20.1 us,
    311.4 GB/s), vLLM's custom kernel below 8 MiB (8.4 us, 208.9 GB/s) and torch symmetric memory (12.2 us, 348.8
    GB/s) with vLLM 0.11.0's SM 9.0 tables. A tp 8 decode step of 64 requests (512 KiB all-reduces at hidden 4096)
    runs the custom kernel on 0.10.2 and symmetric memory on 0.11.0 (CostModel.from_config takes the rule from
    engine.vllm_version); a 64-token step (128 KiB) runs the custom kernel on both."""
    for name in ("h100", "h200"):
        link = get_hardware(name).interconnect
        assert (link.latency_us, link.bandwidth_gbs) == (20.1, 311.4), name
        assert (link.custom_allreduce.latency_us, link.custom_allreduce.bandwidth_gbs) == (8.4, 208.9), name
        assert link.symm_mem_allreduce.custom_max_bytes[8] == 256 * 1024 == link.symm_mem_allreduce.max_bytes[8] // 256
    models = {v: CostModel.from_config(make_sim(hardware={"preset": "h100", "tp": 8},
                                               engine={"vllm_version": v})) for v in ("0.10.2", "0.11.0")}
    assert not models["0.10.2"].symm_mem_allreduce and models["0.11.0"].symm_mem_allreduce
    ring, nbytes = 2 * 7 / 8, 64 * 4096 * 2
    saved = 65 * ((8.4 - 12.2) * 1e-6 + nbytes * ring * (1 / 208.9e9 - 1 / 348.8e9))
    assert models["0.10.2"].tp_allreduce_s(64) - models["0.11.0"].tp_allreduce_s(64) == pytest.approx(saved)
    assert models["0.10.2"].tp_allreduce_s(16) == models["0.11.0"].tp_allreduce_s(16)


def test_expert_parallel_all_to_all_and_memory():
    m = get_model("deepseek-v4-flash-like")
    one = CostModel(get_hardware("h200"), m, tp=4)
    ep8 = CostModel(get_hardware("h200"), m, tp=4, ep=8)  # --tensor-parallel-size 4 --data-parallel-size 2 + EP
    assert ep8.kv_capacity_tokens(0.9) > one.kv_capacity_tokens(0.9)  # fewer experts resident
    # a decode step of few tokens: each rank reads fewer expert bytes; vLLM's default all2all
    # (allgather_reducescatter) gathers the other DP rank's hidden states + top-8 ids / weights and
    # reduce-scatters the output: 2 calls per MoE layer
    link = get_hardware("h200").interconnect
    a2a = 43 * (2 * link.latency_us * 1e-6 + 1 * (2 * 4096 * 2 + 8 * 8) / (link.bandwidth_gbs * 1e9))
    # expert reads: at ep 1 the 8 experts one token touches, a quarter of each on each of the 4 GPUs; at ep 8 each
    # GPU reads its own 32 experts whole, of which the two DP ranks' tokens touch 32 x (1 - (1 - 8/256)^2)
    expert = m.expert_params_b * 1e9 / 256 * m.expert_bytes_per_param
    per_gpu = 1 / (one._t_per_expert_byte * 4)  # one GPU's expert bandwidth (moe_[quant_]bw_efficiency)
    reads = (32 * (1 - (1 - 8 / 256) ** 2) - 8 / 4) * expert / per_gpu
    # and the fused-MoE call's rows of the 2 x 8 pairs it is handed, 7/8 of them other ranks' (ep_remote_pair_bytes)
    remote = m.n_moe_layers * 2 * 8 * 5 * m.routed_intermediate * (1 - 1 / 8) * 2 / achievable_bandwidth(get_hardware("h200"))
    # every pair's activation rows (moe_pair_bytes): 2 tokens' pairs, the rank's 1/8 of them at the whole width,
    # against one token's pairs at a quarter of the width
    pairs = m.n_moe_layers * (moe_pair_bytes(2, 8, m.routed_intermediate, m.hidden, 2.0, own_share=1 / 8)
                              - moe_pair_bytes(1, 8, m.routed_intermediate / 4, m.hidden, 2.0)) \
        / achievable_bandwidth(get_hardware("h200"))
    assert ep8.step_time(1, 0, 1, False) - one.step_time(1, 0, 1, False) == pytest.approx(a2a + reads + remote + pairs)


def test_expert_parallel_is_tp_times_dp():
    """vLLM lays ep over tp x dp GPUs. ep = tp (dp 1): no all-to-all, all experts resident in the replica, and
    a big step's expert reads are the same bytes as without EP, now whole experts per GPU -- the step's only
    extra is the fused-MoE call's rows of the other ranks' pairs (ep_remote_pair_bytes); ep not a multiple of tp
    is no vLLM layout."""
    m = get_model("deepseek-v4-flash-like")
    tp8 = CostModel(get_hardware("h200"), m, tp=8)
    ep8 = CostModel(get_hardware("h200"), m, tp=8, ep=8)
    assert ep8.kv_capacity_tokens(0.9) == tp8.kv_capacity_tokens(0.9)
    assert ep8._t_per_token_link == tp8._t_per_token_link
    # 4096 tokens touch every expert: 256 experts / 8 GPUs, each GPU its 32 whole = 256 slices of 1/8
    remote = m.n_moe_layers * ep_remote_pair_bytes(4096, 1, 8, 8, m.routed_intermediate, m.hidden, 2.0)
    assert ep8._experts_time(4096, 4096) == pytest.approx(
        tp8._experts_time(4096, 4096) + remote / achievable_bandwidth(get_hardware("h200")), rel=1e-9)
    with pytest.raises(LabError, match="multiple of tp"):
        CostModel(get_hardware("h200"), m, tp=4, ep=2)
    with pytest.raises(Exception, match="multiple of tp"):
        make_sim(hardware={"preset": "h200", "tp": 4, "ep": 2})


def test_kv_capacity_and_tp():
    cm = CostModel(get_hardware("h100"), get_model("llama-2-7b"))
    cap = cm.kv_capacity_tokens(0.9)  # of the 79.2 GiB an 80 GB H100 reports (usable_mem_gib), not 80
    assert cap == int((79.2 * 2**30 * 0.9 - 6.7e9 * 2) / (2 * 32 * 32 * 128 * 2))
    with pytest.raises(LabError, match="does not fit"):
        CostModel(get_hardware("h100"), get_model("qwen3-32b")).kv_capacity_tokens(0.5)
    tp2 = CostModel(get_hardware("h100"), get_model("qwen3-32b"), tp=2)
    assert tp2.kv_capacity_tokens(0.9) > 0
    one = CostModel(get_hardware("h100"), get_model("qwen3-32b"))
    assert tp2.step_time(1, 0, 1, False) < one.step_time(1, 0, 1, False)


def test_kv_heads_replicated_past_their_count_under_tp():
    """vLLM gives each GPU max(1, kv_heads // tp) KV heads: Qwen3-235B-A22B (4 KV heads) at tp 8 stores and
    reads every token's KV twice, at tp 4 once; a compressed-latent (MLA) cache sits whole on every GPU."""
    from sim.models import from_hf_config

    m = from_hf_config("sim/validation/configs/qwen3-235b-a22b-instruct-2507.json")
    assert m.n_kv_heads == 4
    assert [m.kv_replication(tp) for tp in (1, 2, 4, 8, 16)] == [1, 1, 1, 2, 4]
    assert get_model("deepseek-v4-flash-like").kv_replication(4) == 4
    hw = get_hardware("h100")
    tp8 = CostModel(hw, m, tp=8, step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0)
    budget = 8 * (79.2 * 2**30 * 0.9) - m.resident_weight_bytes() - 7 * m.replicated_bytes  # routers: on each GPU
    assert tp8.kv_capacity_tokens(0.9) == int(budget // (2 * m.kv_bytes_per_token))
    # a step's KV read: each GPU reads its own copy of 1 head x 94 layers per token, at one GPU's bandwidth
    read = tp8.step_time(1, 100_000, 1, False) - tp8.step_time(1, 0, 1, False)
    assert read == pytest.approx(100_000 * 2 * m.kv_bytes_per_token / (8 * 3.35e12 * hw.bw_efficiency))
    h200 = get_hardware("h200")
    tp4 = CostModel(h200, m, tp=4)  # 4 heads on 4 GPUs: one copy (bf16 weights fit 4 x 141 GiB, not 4 x 80)
    assert tp4.kv_capacity_tokens(0.9) == int((4 * (h200.usable_mem_gib * 2**30 * 0.9) - m.resident_weight_bytes()
                                               - 3 * m.replicated_bytes)
                                              // m.kv_bytes_per_token)


def test_moe_reads_more_experts_as_tokens_grow():
    m = get_model("deepseek-v4-flash-like")
    assert m.weight_bytes_read(1) == pytest.approx(m.active_weight_bytes)
    assert m.weight_bytes_read(2048) == pytest.approx(m.weight_bytes, rel=0.02)
    cm = CostModel(get_hardware("h200").model_copy(update={"moe_layer_us": 0.0}), m, tp=4)  # reads alone
    t = cm.step_time_vec(np.array([1, 8, 64, 512]), 0, 1, False)
    assert np.all(np.diff(t) > 0) and t[2] > 5 * t[0]
    assert np.allclose(t, [cm.step_time(x, 0, 1, False) for x in (1, 8, 64, 512)])


def test_a_speculative_servers_profile_adds_what_its_steps_cost_over_the_plain_profile(tmp_path):
    """cost.spec_profile: rows measured on the speculative server (query_tokens = 1 + k). A speculative step
    of that shape costs what the speculative server measured; plain steps are untouched."""
    from sim.step_profile import write_profile

    def plain(b, q, c):
        return 10 + 0.1 * b * q + 0.002 * b * c
    write_grid_profile(tmp_path / "plain", plain)

    def spec(b, c):
        return plain(b, 5, c) + 7 + 3 * b
    rows = [{"batch": b, "query_tokens": 5, "context_len": c, "step_ms": spec(b, c), "step_ms_p90": 0, "repeats": 9}
            for b in (1, 8) for c in (0, 1024)]
    meta = {"source": "vllm", "model": "m", "dtype": "fp32", "device": "cpu", "hardware": "rtx-4090",
            "cpu_capability": None, "threads": 1, "versions": {}, "created": "2026-11-26T00:00:00"}
    for r in rows:
        r["step_ms_p90"] = r["step_ms"]
    write_profile(tmp_path / "spec", rows, meta)
    base = {"hardware": {"preset": "rtx-4090"}, "acceptance": {"source": "parametric", "max_draft": 4},
            "model": {"name": "llama-2-7b", "drafter_layers": 0}}
    without = CostModel.from_config(make_sim(**base, cost={"profile": str(tmp_path / "plain"), "spec_overhead_ms": 0}))
    with_spec = CostModel.from_config(make_sim(**base, cost={"profile": str(tmp_path / "plain"), "spec_overhead_ms": 0,
                                                             "spec_profile": str(tmp_path / "spec")}))
    for reqs, kv in ((1, 600), (8, 8 * 700), (4, 4 * 300)):
        ctx = (kv - 5 * reqs) / reqs
        # reqs requests verifying 4 drafts each: exactly the speculative server's step, interpolated
        assert with_spec.step_time(5 * reqs, kv, reqs, True, 4 * reqs) == pytest.approx(spec(reqs, ctx) / 1e3)
        assert with_spec.step_time(5 * reqs, kv, reqs, True, 4 * reqs) - without.step_time(
            5 * reqs, kv, reqs, True, 4 * reqs) == pytest.approx((spec(reqs, ctx) - plain(5 * reqs, 1, ctx)) / 1e3)
        assert with_spec.step_time(reqs, kv, reqs, False) == without.step_time(reqs, kv, reqs, False)
        vec = with_spec.step_time_vec(np.array([5 * reqs, 6 * reqs]), kv, reqs, True, np.array([4 * reqs, 5 * reqs]))
        assert np.allclose(vec, [with_spec.step_time(t, kv, reqs, True, t - reqs) for t in (5 * reqs, 6 * reqs)])
    with pytest.raises(ValueError, match="set sim.cost.profile too"):
        make_sim(**base, cost={"spec_profile": str(tmp_path / "spec")})
    # a plain profile (several query lengths) given as the speculative one is refused, not half-read
    with pytest.raises(LabError, match="one query_tokens value"):
        CostModel.from_config(make_sim(**base, cost={"profile": str(tmp_path / "plain"),
                                                     "spec_profile": str(tmp_path / "plain")}))


def test_profile_reads_draft_tokens_as_decoding_requests_tokens(tmp_path):
    """A verified draft token needs its logits like a decoding request's token; a profile row of
    query_tokens > 1 is a prefill with one logit row per request. So a step of 1 request x (1 + 4 drafts)
    is read at the profile's 5 x 1 decode row, not at its 1 x 5 prefill row; a mixed step spreads its
    tokens over requests + drafts. The roofline (GPU sheets) prices every query token alike: unchanged."""
    def ms(b, q, c):  # a decoding request's token (2.5 ms) costs more than a prefill token (0.5 ms)
        return 10 + 2 * b + 0.5 * b * q + 0.002 * b * c
    write_grid_profile(tmp_path, ms)
    cm = CostModel.from_config(make_sim(hardware={"preset": "rtx-4090"}, cost={"profile": str(tmp_path),
                                                                               "spec_overhead_ms": 0},
                                        model={"name": "llama-2-7b", "drafter_layers": 0}))
    kv = 300 + 5  # 300 cached tokens, then the step's own 5
    assert cm.step_time(5, kv, 1, True, 4) == pytest.approx(ms(5, 1, 300) / 1e3)
    assert cm.step_time(5, kv, 1, True, 4) > cm.step_time(5, kv, 1, True, 0) == pytest.approx(ms(1, 5, 300) / 1e3)
    # 2 decoding requests with 3 drafts each beside a 16-token prefill chunk: 9 rows of 24 / 9 tokens
    assert cm.step_time(24, 2 * 200 + 24, 3, True, 6) == pytest.approx(ms(9, 24 / 9, 400 / 3) / 1e3)
    vec = cm.step_time_vec(np.array([5, 9]), kv, 1, True, np.array([4, 8]))
    assert np.allclose(vec, [cm.step_time(5, kv, 1, True, 4), cm.step_time(9, kv, 1, True, 8)])
    # a policy's SPS curve counts b - decode_reqs of b decode tokens as drafts
    sps = cm.sps_curve(16, 2 * 200 + 16, 3, decode_reqs=2)
    assert sps(np.array([8]))[0] == pytest.approx(1 / cm.step_time(24, 2 * 200 + 16, 3, True, 6))
    roof = CostModel(get_hardware("h100"), get_model("llama-2-7b"))
    assert roof.step_time(5, 1000, 1, True, 4) == roof.step_time(5, 1000, 1, True)
    assert np.array_equal(roof.step_time_vec(np.array([5, 9]), 1000, 1, True, np.array([4, 8])),
                          roof.step_time_vec(np.array([5, 9]), 1000, 1, True))


def _bare(hw, m, **kw):
    return CostModel(hw, m, step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0, spec_overhead_s=0, **kw)


def test_gemm_bandwidth_prices_multi_token_weight_reads():
    hw, m = get_hardware("h100"), get_model("llama-2-7b")
    assert hw.gemm_bw_efficiency is None and hw.compute_memory_overlap == 1.0  # GPU presets: terms off
    same = hw.model_copy(update={"gemm_bw_efficiency": hw.bw_efficiency})
    for tokens, kv, n in ((1, 0, 1), (64, 30_000, 16), (4096, 0, 1)):
        assert _bare(same, m).step_time(tokens, kv, n, True) == _bare(hw, m).step_time(tokens, kv, n, True)
    cpu_like = hw.model_copy(update={"gemm_bw_efficiency": 0.2})
    base, slow = _bare(hw, m), _bare(cpu_like, m)
    # a one-token step (matrix-vector products) reads its weights at bw_efficiency, as before
    assert slow.step_time(1, 5_000, 1, False) == base.step_time(1, 5_000, 1, False)
    # a 4-token step reads them at gemm_bw_efficiency; KV reads keep bw_efficiency
    weights = 6.7e9 * 2 / 3.35e12
    kv = 5_000 * m.kv_bytes_per_token / (3.35e12 * hw.bw_efficiency)
    assert slow.step_time(4, 5_000, 1, False) == pytest.approx(weights / 0.2 + kv)
    assert base.step_time(4, 5_000, 1, False) == pytest.approx(weights / hw.bw_efficiency + kv)


def test_compute_memory_overlap_adds_the_hidden_share():
    hw, m = get_hardware("h100"), get_model("llama-2-7b")
    tokens, kv = 512, 20_000
    # attention's score FLOPs at the sheet's attn_mfu (the FlashAttention kernel's fraction), the GEMMs at mfu
    compute = tokens * (2 * 6.7e9 / hw.mfu + kv * m.attn_flops_per_context_token / (hw.attn_mfu or hw.mfu)) / 989.4e12
    memory = (6.7e9 * 2 + kv * m.kv_bytes_per_token) / (3.35e12 * hw.bw_efficiency)
    for overlap in (1.0, 0.5, 0.0):
        cm = _bare(hw.model_copy(update={"compute_memory_overlap": overlap}), m)
        expected = max(compute, memory) + (1 - overlap) * min(compute, memory)
        assert cm.step_time(tokens, kv, 1, False) == pytest.approx(expected)


def test_cpu_terms_agree_across_step_time_vec_and_sps_curve():
    hw = get_hardware("cpu").model_copy(update={"gemm_bw_efficiency": 0.25, "compute_memory_overlap": 0.0})
    cm = CostModel(hw, get_model("llama-2-7b"))
    b = np.array([1, 2, 7, 30, 200])
    vec = cm.step_time_vec(b, 4_000, 1, True)
    assert np.allclose(vec, [cm.step_time(int(x), 4_000, 1, True) for x in b])
    assert np.allclose(cm.sps_curve(0, 4_000, 1)(b), 1 / vec)
    plain = CostModel(get_hardware("cpu"), cm.model)
    assert vec[0] > plain.step_time(1, 4_000, 1, True)  # the drafter's multi-token pass pays the GEMM reads
    assert vec[1] > 1.5 * plain.step_time(2, 4_000, 1, True)


def test_kv_capacity_is_one_formula_for_cost_and_simulator():
    from sim.cuda_graphs import cuda_graph_memory_bytes, graph_counts
    from sim.kv_cache import GIB
    from sim.simulate import kv_capacity_tokens

    sim = make_sim(engine={"activation_reserve_gib": 2.0, "block_size": 16, "gpu_memory_utilization": 0.9})
    cm = CostModel.from_config(sim)
    m = cm.model
    graphs = cuda_graph_memory_bytes(*graph_counts(1024, 8192))  # vLLM 0.20+'s estimate, vllm serve's H100 limits
    blocks = int((79.2 * GIB * 0.9 - 2 * GIB - graphs - m.resident_weight_bytes()) // (16 * m.kv_bytes_per_token))
    assert kv_capacity_tokens(sim, cm) == cm.kv_capacity_tokens(0.9, 2 * GIB + graphs, 16) == blocks * 16
    with pytest.raises(LabError, match="does not fit.*no KV memory"):
        cm.kv_capacity_tokens(0.9, 79 * GIB, 16)


def test_kv_bandwidth_prices_attention_reads_only():
    hw, m = get_hardware("h100"), get_model("llama-2-7b")
    assert hw.kv_bw_efficiency is None  # GPU presets: KV reads at bw_efficiency, as before
    same = hw.model_copy(update={"kv_bw_efficiency": hw.bw_efficiency})
    for tokens, kv, n in ((1, 0, 1), (64, 30_000, 16), (4096, 0, 1)):
        assert _bare(same, m).step_time(tokens, kv, n, True) == pytest.approx(_bare(hw, m).step_time(tokens, kv, n, True))
    slow_kv = _bare(hw.model_copy(update={"kv_bw_efficiency": 0.1}), m)
    weights = 6.7e9 * 2 / (3.35e12 * hw.bw_efficiency)
    assert slow_kv.step_time(1, 0, 1, False) == pytest.approx(_bare(hw, m).step_time(1, 0, 1, False))  # no KV
    kv = 5_000 * m.kv_bytes_per_token / (3.35e12 * 0.1)
    assert slow_kv.step_time(1, 5_000, 1, False) == pytest.approx(weights + kv)


def test_gemm_row_tile_charges_whole_tiles_past_the_first():
    hw, m = get_hardware("h100"), get_model("llama-2-7b")
    assert hw.gemm_row_tile == 1  # GPU presets: off
    compute_bound = hw.model_copy(update={"compute_memory_overlap": 0.0})  # compute visible at every size
    flat, tiled = _bare(compute_bound, m), _bare(compute_bound.model_copy(update={"gemm_row_tile": 8}), m)
    # within the first tile nothing changes; past it a step computes whole tiles of weight products
    for tokens in (1, 5, 8, 16, 64):
        assert tiled.step_time(tokens, 2_000, 1, False) == flat.step_time(tokens, 2_000, 1, False)
    assert tiled.step_time(12, 2_000, 1, False) > flat.step_time(12, 2_000, 1, False)
    per_token_flops = 2 * 6.7e9 / (989.4e12 * hw.mfu)
    extra = tiled.step_time(12, 0, 1, False) - flat.step_time(12, 0, 1, False)
    assert extra == pytest.approx(4 * per_token_flops)  # 12 -> 16 rows of weight products, attention as it is
    b = np.array([3, 9, 12, 16, 17, 40])
    assert np.allclose(tiled.step_time_vec(b, 2_000, 1, False), [tiled.step_time(int(x), 2_000, 1, False) for x in b])
    assert np.allclose(tiled.sps_curve(0, 2_000, 1)(b), 1 / tiled.step_time_vec(b, 2_000, 1, True,
                                                                                   np.maximum(b - 1, 0)))


def test_gemv_rows_reads_few_row_steps_at_the_one_row_rate():
    """gemv_rows 4 (a CPU BLAS that runs a product of up to 4 rows as a matrix-vector one): steps of 2-4 tokens
    read the weights at bw_efficiency, 5+ at gemm_bw_efficiency; the default (1) and every GPU preset: unchanged."""
    hw, m = get_hardware("h100"), get_model("llama-2-7b")
    assert hw.gemv_rows == 1
    cpu_like = hw.model_copy(update={"gemm_bw_efficiency": hw.bw_efficiency / 3, "compute_memory_overlap": 0.0})
    plain, gemv = _bare(cpu_like, m), _bare(cpu_like.model_copy(update={"gemv_rows": 4}), m)
    weights = 6.7e9 * 2 / (3.35e12 * hw.bw_efficiency)  # the one-token step's read
    for tokens in (2, 4):
        assert plain.step_time(tokens, 0, 1, False) - gemv.step_time(tokens, 0, 1, False) == pytest.approx(
            2 * weights, rel=1e-3)  # 3x the read without it, 1x with it
    for tokens in (1, 5, 64):
        assert gemv.step_time(tokens, 0, 1, False) == plain.step_time(tokens, 0, 1, False)
    b = np.array([1, 3, 4, 5, 9])
    assert np.allclose(gemv.step_time_vec(b, 2_000, 1, False), [gemv.step_time(int(x), 2_000, 1, False) for x in b])


def test_routed_experts_priced_as_their_own_kernels():
    """A MoE step = the dense part's roofline + per MoE layer the fused-MoE floor, moe_expert_us per touched
    expert, the longer of the experts' reads (moe_bw_efficiency) and FLOPs (moe_mfu) and its pairs' activation
    rows (moe_pair_bytes); a dense model and the dense part never see the MoE terms."""
    m = get_model("deepseek-v4-flash-like")
    plain = get_hardware("h200").model_copy(update={"moe_layer_us": 0.0, "moe_lowp_efficiency": None})
    terms = plain.model_copy(update={"moe_layer_us": 40.0, "moe_expert_us": 0.5, "moe_bw_efficiency": 0.5,
                                     "moe_mfu": 0.1})
    quiet = {"step_overhead_s": 0, "layer_overhead_s": 0, "request_overhead_s": 0, "spec_overhead_s": 0}
    base, moe = CostModel(plain, m, **quiet), CostModel(terms, m, **quiet)
    bw = plain.mem_bw_tbs * 1e12
    flops = plain.peak_for(m.dtype) * 1e12 * plain.lowp_matmul_efficiency.get(m.dtype, 1.0)  # an fp8 model
    for tokens in (1, 16, 4096):
        dense = max(m.dense_bytes_read / (bw * plain.bw_efficiency),
                    tokens * (m.flops_per_token - m.routed_flops_per_token) / (flops * plain.mfu))
        experts = max(m.routed_bytes_read(tokens) / (bw * 0.5), tokens * m.routed_flops_per_token / (flops * 0.1))
        fixed = m.n_moe_layers * (40e-6 + 0.5e-6 * m.touched_experts(tokens))
        pairs = m.n_moe_layers * moe_pair_bytes(tokens, m.moe_top_k, m.routed_intermediate, m.hidden, 2.0) \
            / achievable_bandwidth(plain)  # every token-expert pair's activation rows (moe_pair_bytes)
        assert moe.step_time(tokens, 0, 1, False) == pytest.approx(dense + experts + fixed + pairs)
        assert moe.moe_layer_time(tokens) == pytest.approx((experts + fixed + pairs) / m.n_moe_layers)
    # fp8 experts (w8a8) with the sheet's moe_lowp_efficiency: that fraction of the fp8 peak replaces moe_mfu x eff
    lowp = CostModel(terms.model_copy(update={"moe_lowp_efficiency": 0.05}), m, **quiet)
    experts = max(m.routed_bytes_read(tokens) / (bw * 0.5),
                  tokens * m.routed_flops_per_token / (plain.peak_for("fp8") * 1e12 * 0.05))
    assert lowp.moe_layer_time(tokens) == pytest.approx((experts + fixed + pairs) / m.n_moe_layers)
    assert lowp.moe_layer_time(tokens) > moe.moe_layer_time(tokens)
    assert moe.step_time(1, 0, 1, False) > base.step_time(1, 0, 1, False)
    t = np.array([1, 8, 64, 4096])
    assert np.allclose(moe.step_time_vec(t, 0, 1, False), [moe.step_time(x, 0, 1, False) for x in t])
    llama = get_model("llama-2-7b")
    assert CostModel(terms, llama).step_time(8, 0, 1, False) == CostModel(plain, llama).step_time(8, 0, 1, False)


def test_fused_moe_floor_is_on_by_default_on_gpus_only():
    m = get_model("deepseek-v4-flash-like")
    h200 = get_hardware("h200")
    off = h200.model_copy(update={"moe_layer_us": 0.0})
    gap = CostModel(h200, m).step_time(1, 0, 1, False) - CostModel(off, m).step_time(1, 0, 1, False)
    assert h200.moe_layer_us > 0 and gap == pytest.approx(m.n_moe_layers * h200.moe_layer_us * 1e-6)
    assert get_hardware("cpu").moe_layer_us == 0.0


def test_ep_remote_pair_bytes_by_hand():
    """vLLM's fused-MoE call on an EP rank sizes its rows for every pair it is handed at its whole experts' width:
    Triton writes zeros into the other ranks' GEMM1 rows (2 I) and the activation reads 2 I and writes I of every
    row; Marlin skips those GEMM1 rows but zeroes the down projection's output (hidden) first."""
    # Qwen3-30B-A3B at dp 2, ep 2: 100 tokens per rank, 8 experts each, 768 wide, half of the pairs elsewhere
    assert ep_remote_pair_bytes(100, 2, 2, 8, 768, 2048, 2.0) == 2 * 100 * 8 * 5 * 768 * 0.5 * 2.0
    assert ep_remote_pair_bytes(100, 2, 2, 8, 768, 2048, 2.0, marlin=True) == 2 * 100 * 8 * (3 * 768 * 0.5 + 2048) * 2.0
    assert ep_remote_pair_bytes(100, 1, 1, 8, 768, 2048, 2.0) == 0.0
    assert np.allclose(ep_remote_pair_bytes(np.array([1.0, 10.0]), 1, 4, 8, 1536, 4096, 2.0),
                       [ep_remote_pair_bytes(1.0, 1, 4, 8, 1536, 4096, 2.0),
                        ep_remote_pair_bytes(10.0, 1, 4, 8, 1536, 4096, 2.0)])


def test_moe_pair_bytes_by_hand():
    """vLLM's Triton fused-MoE call per token-expert pair: the gathered input row (hidden), cache1 written and read
    (2 x width each), cache2 written and read (width each), cache3 written and read back by moe_sum (hidden each),
    + one output row per token; Qwen3-235B-A22B at tp 8: hidden 4096, width 1536 / 8 = 192, top 8."""
    assert moe_pair_bytes(1, 8, 192, 4096, 2.0) == (8 * (3 * 4096 + 6 * 192) + 4096) * 2.0
    assert moe_pair_bytes(100, 8, 1536, 4096, 2.0, own_share=0.25) == 100 * (8 * (3 * 4096 + 6 * 384) + 4096) * 2.0
    assert np.allclose(moe_pair_bytes(np.array([1.0, 10.0]), 8, 192, 4096, 2.0),
                       [moe_pair_bytes(1.0, 8, 192, 4096, 2.0), moe_pair_bytes(10.0, 8, 192, 4096, 2.0)])


def test_moe_pair_traffic_does_not_shrink_with_tp():
    """The expert reads and FLOPs of a GPU fall as 1 / tp; its pairs' hidden-wide rows do not (every tp GPU
    handles every pair at its 1 / tp width): from tp 4 to tp 8 on Qwen3-235B-A22B the per-token pair time falls by
    only the width share, and under EP at dp 1 (whole experts, 1 / ep of the pairs the rank's own) it is TP's."""
    from sim.models import from_hf_config

    m = from_hf_config("sim/validation/configs/qwen3-235b-a22b-instruct-2507.json")
    hw = get_hardware("h100")
    tp4, tp8, ep8 = CostModel(hw, m, tp=4), CostModel(hw, m, tp=8), CostModel(hw, m, tp=8, ep=8)
    per_token = {tp: m.n_moe_layers * moe_pair_bytes(1.0, 8, 1536 / tp, 4096, 2.0) / achievable_bandwidth(hw)
                 for tp in (4, 8)}
    assert tp4._t_moe_pairs_per_token == pytest.approx(per_token[4])
    assert tp8._t_moe_pairs_per_token == pytest.approx(per_token[8])
    assert tp8._t_moe_pairs_per_token / tp4._t_moe_pairs_per_token > 0.9  # vs 0.5 for the expert reads / FLOPs
    assert ep8._t_moe_pairs_per_token == pytest.approx(tp8._t_moe_pairs_per_token)
    assert CostModel(hw, get_model("llama-2-7b"), tp=8)._moe is False


def test_moe_pair_traffic_prices_the_lab_tp8_kernel_table():
    """The lab's fused-MoE timings at Qwen3-235B-A22B's tp-8 slice on an H100 (sim/validation/moe_kernels.yaml,
    python -m real.bench_moe, searched tiles): at 1024 and 4096 tokens the call is 355 / 752 us where the expert
    reads and FLOPs alone price 248 / 482 us (-30% / -36%); with the pairs' activation rows within 15%."""
    from sim.moe_kernels import layer_us, load_runs

    run = next(r for r in load_runs("sim/validation/moe_kernels.yaml")
               if r.id == "lab-h100-qwen3-235b-a22b-instruct-2507-tp8-ep1-bf16-searched")
    tokens = np.array([1024.0, 4096.0])
    priced = layer_us(run, get_hardware(run.device), tokens)
    measured = np.array([run.kernel_us[1024], run.kernel_us[4096]])
    assert np.all(np.abs(priced / measured - 1) < 0.15)


def test_expert_parallel_at_dp_1_costs_the_remote_pairs_over_tp():
    """`-tp 4 --enable-expert-parallel` vs `-tp 4` (Qwen3-235B-A22B FP8, the public gpustack pairs): the same expert
    bytes, no all-to-all, but an 8192-token step's fused-MoE calls move each rank's other-rank pairs' rows --
    Triton's path on an H100 (fp8 peak), Marlin's on an A100 (fp8 weights dequantized)."""
    from sim.models import from_hf_config

    m = from_hf_config("sim/validation/configs/qwen3-235b-a22b-instruct-2507-fp8.json")
    for card, marlin in (("h100", False), ("a100-80g", True)):
        hw = get_hardware(card)
        tp4, ep4 = CostModel(hw, m, tp=4), CostModel(hw, m, tp=4, ep=4)
        extra = m.n_moe_layers * ep_remote_pair_bytes(8192, 1, 4, 8, 1536, 4096, 2.0, marlin) / achievable_bandwidth(hw)
        assert m.routed_intermediate == 1536 and m.n_moe_layers == 94
        assert ep4.step_time(8192, 0, 1, False) - tp4.step_time(8192, 0, 1, False) == pytest.approx(extra, rel=1e-6)
        assert ep4.step_time(1, 0, 1, False) - tp4.step_time(1, 0, 1, False) == pytest.approx(extra / 8192, rel=1e-3)


def test_a_dispatch_backend_over_dp_ranks_moves_no_remote_pairs():
    """pplx / DeepEP (all2all: dispatch) send each DP rank only the pairs of its own experts, so the fused-MoE call
    has no other-rank rows to zero or activate; the gathering backends hand it every rank's pairs (dp x tokens)."""
    from sim.models import from_hf_config

    m = from_hf_config("sim/validation/configs/qwen3-30b-a3b.json")
    hw = get_hardware("h100")
    gathered = CostModel(hw, m, tp=1, ep=2, all2all="allgather_reducescatter")
    dispatched = CostModel(hw, m, tp=1, ep=2, all2all="dispatch")
    assert dispatched._t_ep_remote_per_token == 0.0
    per_token = m.n_moe_layers * ep_remote_pair_bytes(1.0, 2, 2, m.moe_top_k, m.routed_intermediate, m.hidden, 2.0)
    assert gathered._t_ep_remote_per_token == pytest.approx(per_token / achievable_bandwidth(hw))


def test_the_drafters_passes_and_head_come_from_the_model_section():
    """sim.model.drafter_passes / drafter_head_vocab reach the cost model: a chain of k one-token passes costs k
    times one such pass; one pass over every draft position (the default, DSpark's) is unchanged by them."""
    import pydantic

    from tests.sim.conftest import make_sim

    chain = CostModel.from_config(make_sim(model={"name": "llama-2-7b", "drafter_layers": 1,
                                                  "drafter_passes": "per_token", "drafter_head_vocab": 32000}))
    assert chain.drafter_passes == "per_token" and chain.drafter_head_vocab == 32000
    single = CostModel(chain.hw, chain.model, drafter_layers=1, max_draft=1, drafter_passes="per_token",
                       drafter_head_vocab=32000)
    assert chain._draft_pass(4) == pytest.approx(chain.max_draft * single._draft_pass(4))
    default = CostModel.from_config(make_sim(model={"name": "llama-2-7b", "drafter_layers": 1}))
    assert default.drafter_passes == "one" and default._draft_fixed == default.layer_overhead_s
    with pytest.raises(pydantic.ValidationError, match="drafter_passes"):
        make_sim(model={"name": "llama-2-7b", "drafter_passes": "tree"})


def test_weight_only_checkpoints_multiply_at_the_marlin_efficiency():
    """A weight-only checkpoint's quantized linears and routed experts run through Marlin (dequantized in the
    kernel, bf16 math): on a sheet with marlin_efficiency e their FLOPs take 1 / e of a bf16 matmul's time; the
    unquantized rest (LM head, attention scores) and a card that has the checkpoint's own peak are unchanged."""
    from sim.models import from_hf_config

    fp8 = from_hf_config("sim/validation/configs/qwen3-235b-a22b-instruct-2507-fp8.json")  # fp8 blocks, experts too
    a100 = get_hardware("a100-80g")
    assert a100.marlin_efficiency == pytest.approx(0.61)  # Marlin's published A100 table (sim.gemm_kernels --fit)
    bf16_rate = a100.model_copy(update={"marlin_efficiency": None})
    marlin, plain = CostModel(a100, fp8, tp=4), CostModel(bf16_rate, fp8, tp=4)
    quant = 2.0 * fp8.quant_dense_params_b * 1e9  # FLOPs per token of the quantized linears
    # the unquantized rest, with the routers (bf16) each of the 4 GPUs multiplies whole: 3 more copies
    rest = fp8.flops_per_token - fp8.routed_flops_per_token - quant + 2.0 * fp8.replicated_params_b * 1e9 * 3
    assert quant > 0 and rest > 0  # the LM head stays bf16 (lm_head excluded by default)
    assert marlin._t_per_token_flops / plain._t_per_token_flops == pytest.approx((quant / 0.61 + rest) / (quant + rest))
    assert marlin._t_per_token_expert_flops == pytest.approx(plain._t_per_token_expert_flops / 0.61)
    assert marlin.step_time(8192, 0, 1, False) > 1.2 * plain.step_time(8192, 0, 1, False)  # a compute-bound step
    assert marlin.step_time(1, 0, 1, False) == pytest.approx(plain.step_time(1, 0, 1, False))  # weight reads
    # an H100 has an fp8 peak (w8a8 Triton / CUTLASS, no Marlin), and a bf16 checkpoint has nothing to dequantize
    h100 = get_hardware("h100")
    assert CostModel(h100.model_copy(update={"marlin_efficiency": 0.5}), fp8, tp=4).step_time(8192, 0, 1, False) == \
        pytest.approx(CostModel(h100, fp8, tp=4).step_time(8192, 0, 1, False))
    bf16 = from_hf_config("sim/validation/configs/qwen3-235b-a22b-instruct-2507.json")
    assert CostModel(a100, bf16, tp=8).step_time(8192, 0, 1, False) == \
        pytest.approx(CostModel(bf16_rate, bf16, tp=8).step_time(8192, 0, 1, False))


def test_replicated_weights_are_read_and_held_on_every_tp_gpu():
    """DeepSeek-R1's replicated linears (sim/models.REPLICATED) cost nothing extra at tp 1; at tp 8 each GPU reads
    its whole copy, replicated bytes x 7 / (8 x one GPU's bandwidth) more weight time per step, and holds it (fewer KV
    blocks); a dense Llama, with none, prices the same weights split over tp at any tp."""
    from dataclasses import replace

    from sim.models import from_hf_config
    from tests.sim.test_model_configs import CONFIG_DIR

    hw = get_hardware("h200")
    m = from_hf_config(CONFIG_DIR / "deepseek-r1-0528.json")
    split = replace(m, replicated_params_b=0.0, replicated_quant_params_b=0.0)  # everything split over tp
    one, one_split = CostModel(hw, m, tp=1), CostModel(hw, split, tp=1)
    assert one._t_weights == one_split._t_weights
    assert one.step_time(1, 4096, 1, False) == one_split.step_time(1, 4096, 1, False)
    eight, eight_split = CostModel(hw, m, tp=8), CostModel(hw, split, tp=8)
    extra = m.replicated_bytes * 7 / (8 * achievable_bandwidth(hw))
    assert eight._t_weights - eight_split._t_weights == pytest.approx(extra, rel=1e-9)
    assert 0.15e-3 < extra < 0.35e-3
    assert eight.step_time(1, 4096, 1, False) > eight_split.step_time(1, 4096, 1, False)
    # every GPU also multiplies its whole copy: 2 x replicated params x 7 more FLOPs per token at 8 GPUs' fp8 rate
    assert one._t_per_token_flops == one_split._t_per_token_flops
    per_flop = one_split._t_per_token_flops / (m.flops_per_token - m.routed_flops_per_token) / 8
    assert eight._t_per_token_flops - eight_split._t_per_token_flops == \
        pytest.approx(2 * m.replicated_params_b * 1e9 * 7 * per_flop, rel=1e-9)
    blocks, blocks_split = (c.kv_blocks(0.9, 4 * 2**30, 16) for c in (eight, eight_split))
    assert blocks_split - blocks == pytest.approx(m.replicated_bytes * 7 / (16 * m.kv_bytes_per_token * 8), abs=1)
    llama = from_hf_config(CONFIG_DIR / "llama-3.1-8b-instruct.json")
    for tp in (1, 2, 8):
        cm = CostModel(hw, llama, tp=tp)
        assert cm._t_weights == llama.dense_bytes_read / (achievable_bandwidth(hw) * tp)


def test_the_lm_head_multiplies_only_the_rows_vllm_samples():
    """vLLM computes logits at logits_indices only (the last scheduled token of each request, plus each verified
    draft): a prefill chunk's earlier tokens pay the layers' FLOPs without the LM head's; decode steps unchanged."""
    from dataclasses import replace

    hw = get_hardware("h100")
    m = replace(get_model("llama-2-7b"), vocab=32000)
    cm = CostModel(hw, m, step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0, spec_overhead_s=0)
    flops, head = 989.4e12 * hw.mfu, 2.0 * 32000 * 4096
    body = 2 * 6.7e9 - head  # the rest of a token's matmul FLOPs
    assert m.head_flops_per_token == head
    assert cm.step_time(8192, 0, 1, False) == pytest.approx((8192 * body + head) / flops)  # one prompt: one row
    assert cm.step_time(8192, 0, 4, False) == pytest.approx((8192 * body + 4 * head) / flops)  # four chunks
    # a verify step samples every token (requests + drafts): the whole 2 x params per token, as before
    assert cm.step_time(8192, 0, 1024, False, drafts=7168) == pytest.approx(8192 * (body + head) / flops)
    # the vectorised step and the closed-form SPS curve price the same rows
    b = np.array([1, 64, 512, 4096])
    assert np.allclose(cm.step_time_vec(b + 4096, 0, 9, True, b - 8),
                       [cm.step_time(int(x) + 4096, 0, 9, True, int(x) - 8) for x in b])
    assert np.allclose(cm.sps_curve(4096, 0, 9, decode_reqs=8)(b), 1 / cm.step_time_vec(b + 4096, 0, 9, True, b - 8))
    # a shape without a vocabulary (a preset) keeps pricing every token's head
    plain = CostModel(hw, get_model("llama-2-7b"), step_overhead_s=0, layer_overhead_s=0, request_overhead_s=0,
                      spec_overhead_s=0)
    assert plain.step_time(8192, 0, 1, False) == pytest.approx(8192 * 2 * 6.7e9 / flops)
