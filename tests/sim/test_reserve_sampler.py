"""The KV reserve's sampler term (sim/kv_cache.activation_reserve_bytes) priced against vLLM's own logs, its fit
(sim/vllm_memory.fit_sampler), the vLLM version -> sampler map of the public rows (sim/public_check.vllm_sampler),
and the mxfp4 Marlin layout of an MoE checkpoint's resident weights (ModelShape.marlin_mxfp4_pad_bytes)."""
import pytest
import yaml

from lab.errors import LabError
from sim import kv_cache as kc
from sim import vllm_memory as vm
from sim.cost import CostModel
from sim.hardware import get_hardware
from sim.models import from_hf_config, get_model
from sim.public_check import DEFAULT_FILE as PUBLIC_ROWS
from sim.public_check import load_rows, row_sim_config, vllm_sampler
from sim.simulate import engine_reserve_bytes

GPT_OSS_120B = "sim/validation/configs/gpt-oss-120b.json"


def test_reserve_is_the_larger_of_forward_and_sampler_plus_non_torch():
    a, s = kc.ACTIVATION_BYTES_PER_TOKEN_HIDDEN, kc.SAMPLER_BYTES_PER_LOGIT
    # no vocab: the forward alone (the old form)
    assert kc.activation_reserve_bytes(4096, 8192) == pytest.approx(8192 * 4096 * a + kc.NON_TORCH_BYTES)
    # Qwen3-Next on two H200s (vLLM 0.10.2, PyTorch sort): 1,024 rows of 151,936 logits outweigh 8,192 x 2,048
    sampler = 1024 * 151936 * s["sort"]
    assert sampler > 8192 * 2048 * a
    assert kc.activation_reserve_bytes(2048, 8192, 151936, 1024, "sort", tp=2) == pytest.approx(
        sampler + kc.NON_TORCH_BYTES + kc.NON_TORCH_TP_BYTES)
    assert kc.activation_reserve_bytes(2048, 8192, 151936, 1024, "sort", tp=2, custom_all_reduce=False) == \
        pytest.approx(sampler + kc.NON_TORCH_BYTES + kc.NON_TORCH_TP_NCCL_BYTES)
    # rows = min(max_num_seqs, tokens): a 512-token budget samples 512 dummy requests
    assert kc.activation_reserve_bytes(2048, 512, 151936, 1024, "sort") == pytest.approx(
        512 * 151936 * s["sort"] + kc.NON_TORCH_BYTES)
    # a full sort with int64 indices costs most, vLLM's Triton kernels less, FlashInfer's least
    assert s["sort"] > s["triton"] > s["flashinfer"] > 0


def test_the_adopted_reserve_prices_vllms_v1_logs_and_the_old_one_did_not():
    table = vm.compare(vm.load_logs(vm.DEFAULT_FILE))
    v1 = table[(table.engine == "V1") & (table.sampler != "unknown")]
    assert len(v1) >= 25 and v1.error_gib.abs().mean() < 0.3
    old = v1.tokens * v1.hidden * 32 / kc.GIB + 1.0  # tokens x hidden x 32 B + 1 GiB, before session 28
    assert (old - v1.logged_gib).abs().mean() > 1.0
    # the V1 MoE logs of unstated sampler that kept back 7.5 GiB: priced as a sort within 1.5 GiB (old: 2 GiB)
    unknown = table[table.sampler == "unknown"]
    assert len(unknown) == 3 and (unknown.error_gib.abs() < 1.5).all() and (unknown.logged_gib > 7).all()


def _log(i, tokens, hidden, vocab, seqs, sampler, tp, reserve_gib, all_reduce="custom"):
    return {"id": f"s-{i}", "url": "https://example.org", "device": "h100", "total_gib": 80.0, "total_source": "log",
            "util": 0.9, "tp": tp, "tokens": tokens, "tokens_basis": "logged", "model": "m", "hidden": hidden,
            "vocab": vocab, "max_num_seqs": seqs, "engine": "V1", "version": "0.0", "weights_gib": 10.0,
            "kv_gib": 80.0 * 0.9 - 10.0 - reserve_gib, "cuda_graphs": False, "sampler": sampler,
            **({"all_reduce": all_reduce} if tp > 1 else {})}


def test_fit_sampler_recovers_the_model_a_table_was_made_with(tmp_path):
    p = {"a": 40.0, "s_sort": 36.0, "s_flashinfer": 8.0, "s_triton": 15.0, "b": 0.25, "c": 1.9, "d": 0.1}
    shapes = [(8192, 4096, 128256, 1024, "sort", 1), (2048, 3584, 152064, 256, "sort", 1),
              (32768, 3584, 152064, 256, "sort", 1), (8192, 2048, 151936, 1024, "sort", 2),
              (8192, 4096, 128256, 1024, "triton", 1), (8192, 4096, 32016, 1024, "triton", 1),
              (8192, 3584, 256000, 1024, "triton", 4), (2048, 3584, 152064, 256, "flashinfer", 1),
              (16384, 4096, 201088, 1024, "flashinfer", 1), (2048, 2880, 201088, 1024, "flashinfer", 2),
              (2048, 4096, 152064, 256, "sort", 2), (4096, 5120, 100352, 256, "triton", 1)]
    runs = []
    for i, (t, h, v, n, kind, tp) in enumerate(shapes):
        ar = "nccl" if i in (9, 10) else "custom"
        multi = (p["c"] if ar == "custom" else p["d"]) if tp > 1 else 0.0
        reserve = max(p["a"] * t * h, p[f"s_{kind}"] * min(n, t) * v) / kc.GIB + p["b"] + multi
        runs.append(_log(i, t, h, v, n, kind, tp, reserve, ar))
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"runs": runs}))
    fitted = vm.fit_sampler(vm.compare(vm.load_logs(path)), "lsq", "max")
    for key, value in p.items():
        assert fitted[key] == pytest.approx(value, rel=0.02, abs=0.01), key
    assert fitted["mae_in_sample_gib"] < 0.01 and fitted["mae_leave_one_out_gib"] < 0.05


@pytest.mark.parametrize("patch, message", [
    ({"all_reduce": None}, "all_reduce"),          # tp 2 needs it
    ({"max_num_seqs": None}, "vocab and max_num_seqs"),
    ({"weights_gib": None}, "weights_gib"),
    ({"sampler": "cub"}, "sampler"),
])
def test_schema_refuses_incomplete_logs(tmp_path, patch, message):
    run = {**_log(0, 8192, 4096, 128256, 1024, "sort", 2, 3.0), **patch}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"runs": [run]}))
    with pytest.raises(LabError, match=message):
        vm.load_logs(path)


def test_vllm_versions_map_to_their_default_sampler_and_the_rows_take_it():
    assert [vllm_sampler(v) for v in ("0.7.3", "0.8.5", "0.10.2", "0.11.0", "0.11.1", "0.15.1", "0.17.1", "0.19.0",
                                      "0.23.0")] == \
        ["sort", "flashinfer", "flashinfer", "flashinfer", "sort", "sort", "triton", "triton", "flashinfer"]
    rows = {row.id: row for row in load_rows(PUBLIC_ROWS)}
    assert row_sim_config(rows["gpustack-h100-gpt-oss-120b-32k-rate-inf"], lengths_mode="mean").engine.sampler == \
        "flashinfer"  # vLLM 0.10.2
    assert row_sim_config(rows["kvcached-h100-qwen3-0.6b-rate-inf"], lengths_mode="mean").engine.sampler == "triton"


def test_marlin_mxfp4_layout_matches_vllms_logged_weights():
    """gpt-oss-120b in vLLM's Marlin layout: 65.97 GiB logged on one H100 (issue 23278), 17.22 GiB a GPU at tp 4 on
    A100s; the checkpoint's own bytes are 60.7 GiB."""
    m = from_hf_config(GPT_OSS_120B)
    assert m.resident_weight_bytes() / kc.GIB == pytest.approx(60.7, abs=0.1)
    assert (m.resident_weight_bytes() + m.marlin_mxfp4_pad_bytes(1)) / kc.GIB == pytest.approx(65.97, abs=0.2)
    assert (m.resident_weight_bytes() + m.marlin_mxfp4_pad_bytes(4)) / 4 / kc.GIB == pytest.approx(17.22, abs=0.15)
    assert get_model("qwen3-8b").marlin_mxfp4_pad_bytes(1) == 0.0
    # every log with a config: the simulator's weights per GPU within 0.2 GiB of vLLM's, V0's DeepSeek-R1 at tp 8
    # (MLA, fp8) aside
    table = vm.compare(vm.load_logs(vm.DEFAULT_FILE))
    with_config = table[table.sim_weights_gib.notna() & (table.id != "deepseek-r1-h200-tp8")]
    assert len(with_config) >= 20 and ((with_config.sim_weights_gib - with_config.weights_gib).abs() < 0.2).all()
    # the cost model pads on a card without FP4 matmuls (H100) and not on one with them (B200)
    block = 16 * m.kv_bytes_per_token
    for card, padded in (("h100", True), ("b200", False)):
        hw = get_hardware(card)
        blocks = CostModel(hw, m).kv_blocks(0.9, 2 * kc.GIB, 16)
        expect = (hw.kv_budget_gib * kc.GIB * 0.9 - 2 * kc.GIB - m.resident_weight_bytes()
                  - (m.marlin_mxfp4_pad_bytes(1) if padded else 0.0)) // block
        assert blocks == int(expect), card


def test_flashinfer_sampler_term_is_the_four_tensors_vllm_holds_at_its_peak():
    """V1's dummy sampler on FlashInfer (vLLM 0.10 - 0.11.0) holds, per logit, the runner's bf16 logits (2 B), the
    sampler's fp32 copy (4 B), FlashInfer's top-k-masked logits (4 B) and their softmax (4 B) at once. At vLLM's H100
    defaults (1,024 rows) a 201K vocab makes that 2.68 GiB: the gpustack gpt-oss-120b row keeps it back (session 35;
    the fitted 8.2 B per logit kept back 1.57 GiB)."""
    assert kc.SAMPLER_BYTES_PER_LOGIT["flashinfer"] == kc.FLASHINFER_SAMPLER_BYTES_PER_LOGIT == 2 + 4 + 4 + 4
    rows = {row.id: row for row in load_rows(PUBLIC_ROWS)}
    sim = row_sim_config(rows["gpustack-h100-gpt-oss-120b-32k-rate-inf"], lengths_mode="mean")
    cost = CostModel.from_config(sim)
    assert (sim.engine.sampler, sim.engine.max_num_seqs, cost.model.vocab) == ("flashinfer", 1024, 201088)
    reserve = engine_reserve_bytes(sim, cost)
    assert reserve == pytest.approx(1024 * 201088 * 14 + kc.NON_TORCH_BYTES)
    assert (reserve - kc.NON_TORCH_BYTES) / kc.GIB == pytest.approx(2.68, abs=0.01)
    # the forward over 8,192 tokens stays below it: the sampler sets the peak
    assert 8192 * cost.model.hidden * kc.ACTIVATION_BYTES_PER_TOKEN_HIDDEN < reserve - kc.NON_TORCH_BYTES


def test_fit_sampler_holds_a_pinned_term_and_fits_the_rest(tmp_path):
    """A table made with FlashInfer's counted 14 B per logit and a non-torch constant of 0.05 GiB: pinned at 14, the
    fit recovers the other terms and reports the pinned one as given."""
    p = {"a": 40.0, "s_sort": 36.0, "s_flashinfer": 14.0, "s_triton": 15.0, "b": 0.05, "c": 1.9, "d": 0.1}
    shapes = [(8192, 4096, 128256, 1024, "sort", 1), (2048, 3584, 152064, 256, "sort", 1),
              (32768, 3584, 152064, 256, "sort", 1), (8192, 2048, 151936, 1024, "sort", 2),
              (8192, 4096, 128256, 1024, "triton", 1), (8192, 4096, 32016, 1024, "triton", 1),
              (8192, 3584, 256000, 1024, "triton", 4), (2048, 3584, 152064, 256, "flashinfer", 1),
              (2048, 2880, 201088, 256, "flashinfer", 2), (2048, 4096, 152064, 256, "sort", 2),
              (4096, 5120, 100352, 256, "triton", 1)]
    runs = []
    for i, (t, h, v, n, kind, tp) in enumerate(shapes):
        ar = "nccl" if i in (8, 9) else "custom"
        multi = (p["c"] if ar == "custom" else p["d"]) if tp > 1 else 0.0
        reserve = max(p["a"] * t * h, p[f"s_{kind}"] * min(n, t) * v) / kc.GIB + p["b"] + multi
        runs.append(_log(i, t, h, v, n, kind, tp, reserve, ar))
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"runs": runs}))
    table = vm.compare(vm.load_logs(path))
    fitted = vm.fit_sampler(table, "lsq", "max", pinned={"s_flashinfer": 14.0})
    assert fitted["s_flashinfer"] == 14.0
    for key, value in p.items():
        assert fitted[key] == pytest.approx(value, rel=0.02, abs=0.01), key
    # the leave-one-out refits keep the pinned term too: every log comes back
    assert fitted["mae_leave_one_out_gib"] < 0.05
