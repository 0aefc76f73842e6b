"""moe_lowp_efficiency: w8a8 (fp8 / int8) routed experts priced at the fused-MoE kernels' own fraction of the fp8
peak -- the preset values reproduce from the kernel tables, a fp8 MoE step gets slower, bf16 MoE and dense fp8 models
do not move, and a bad value in a user's sheet is one error line."""
from pathlib import Path

import pytest

from lab.config import config_from_dict
from lab.errors import LabError
from sim import moe_kernels as mk
from sim.cost import CostModel
from sim.hardware import get_hardware
from sim.models import from_hf_config

DATA = Path(__file__).parent / "data"
CONFIGS = Path(__file__).resolve().parents[2] / "sim/validation/configs"
TERMS = ("moe_lowp_efficiency",)


@pytest.mark.parametrize("card", ["h100", "h200"])
def test_the_preset_value_is_its_cards_own_fit_on_the_fp8_kernel_tables(card):
    runs = [r for r in mk.fit_runs(mk.load_runs(mk.DEFAULT_FILE), TERMS) if r.device == card]
    assert runs and all(mk.KERNEL_DTYPES[r.dtype][1] == "fp8" for r in runs)  # the fp8 runs alone
    assert get_hardware(card).moe_lowp_efficiency == pytest.approx(mk.fit_terms(runs, TERMS)["moe_lowp_efficiency"],
                                                                   abs=1e-3)


def test_the_h100_pcie_takes_the_h100s_and_cards_without_a_table_stay_neutral():
    assert get_hardware("h100-pcie").moe_lowp_efficiency == get_hardware("h100").moe_lowp_efficiency
    for card in ("l40s", "b200", "rtx-pro-6000", "a100-80g", "mi300x", "cpu"):
        assert get_hardware(card).moe_lowp_efficiency is None


def _step(model, hw, tp=8, tokens=8192):
    """Seconds of a prefill-sized step (the experts' FLOPs bind) and of a one-token decode step."""
    cm = CostModel(hw, model, tp=tp, drafter_layers=0)
    return cm.step_time(tokens, 0.0, 8, False), cm.step_time(1, 4096.0, 1, False)


def test_a_fp8_moe_step_is_priced_slower_with_the_field():
    """DeepSeek-V3 block fp8 at tp 8 on an H200: an 8192-token step's expert GEMMs run at 0.128 of the fp8 peak
    instead of 0.35 x 0.80 = 0.28, so the step is slower; by hand, the routed FLOPs' time grows by 0.28 / 0.128."""
    model = from_hf_config(DATA / "deepseek_v3_config.json")
    hw = get_hardware("h200")
    neutral = hw.model_copy(update={"moe_lowp_efficiency": None})
    (big, small), (big0, small0) = _step(model, hw), _step(model, neutral)
    assert big > big0 * 1.2
    assert small == pytest.approx(small0, rel=1e-3)  # one token: the expert reads bind, not the FLOPs
    flops = 8192 * model.routed_flops_per_token / (8 * 1978.9e12)
    assert big - big0 == pytest.approx(flops * (1 / hw.moe_lowp_efficiency - 1 / (hw.mfu * 0.8)), rel=0.05)


@pytest.mark.parametrize("config", [DATA / "qwen3_30b_a3b_config.json",  # bf16 MoE
                                    CONFIGS / "llama-3.1-nemotron-70b-instruct-fp8-dynamic.json"])  # dense fp8
def test_bf16_moe_and_dense_fp8_models_do_not_move(config):
    model = from_hf_config(config)
    hw = get_hardware("h100")
    assert hw.moe_lowp_efficiency is not None
    assert _step(model, hw, tp=2) == _step(model, hw.model_copy(update={"moe_lowp_efficiency": None}), tp=2)


@pytest.mark.parametrize("value", [0, -0.1, 1.5])
def test_a_bad_value_in_a_users_sheet_is_one_error_line(value):
    spec = {"name": "mycard", "peak_tflops": {"bf16": 100, "fp8": 200}, "mem_bw_tbs": 1.0, "mem_gib": 48,
            "moe_lowp_efficiency": value}
    with pytest.raises(LabError, match="moe_lowp_efficiency") as err:
        config_from_dict({"name": "hw", "stages": ["sim"], "sim": {"acceptance": {"source": "parametric"},
                                                                   "hardware": {"spec": spec}}}, "x.yaml")
    assert "\n" not in str(err.value).strip()
