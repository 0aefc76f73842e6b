"""The per-step cost of vLLM's CUDA-graph layout (sim/cuda_graphs.py, engine.cuda_graph_mode): a PIECEWISE server
(vLLM V1 0.8 - 0.10) pays PIECEWISE_LAYER_US per layer and step over the FULL_AND_PIECEWISE layout the sheets are
scored on, the public rows take the layout from their vLLM version, and a one-user row of that era is priced with
it."""
import pydantic
import pytest

from sim.cost import CostModel
from sim.cuda_graphs import PIECEWISE_LAYER_US, graph_mode_layer_s
from sim.models import from_hf_config
from sim.public_check import REPO_ROOT, load_rows, row_sim_config, simulate_row, vllm_cuda_graph_mode
from sim.simulate import _cost_model
from tests.sim.conftest import make_sim

ROWS = REPO_ROOT / "sim" / "validation" / "public_vllm.yaml"


def test_the_term_is_vllm_pr_20059s_measured_gap_per_layer():
    # median TPOT at 1 request/s, Qwen2.5-1.5B-Instruct (28 layers): piecewise 5.42 ms, full graphs 5.02 ms
    assert PIECEWISE_LAYER_US == pytest.approx(14.29, abs=0.01)
    assert graph_mode_layer_s("piecewise") == pytest.approx(14.29e-6, rel=1e-3)
    assert graph_mode_layer_s("full_and_piecewise") == 0.0
    assert graph_mode_layer_s("piecewise", graphs=False) == 0.0  # a device that replays no graphs
    with pytest.raises(ValueError, match="cuda_graph_mode"):
        graph_mode_layer_s("eager")


def _decode_step_ms(preset: str, mode: str) -> float:
    sim = make_sim(hardware={"preset": preset}, model={"config": str(REPO_ROOT / "real/presets/qwen3-0.6b.json")},
                   engine={"cuda_graph_mode": mode})
    return _cost_model(sim, None, lambda p: False).step_time(1, 256, 1, False) * 1e3


def test_a_piecewise_step_costs_each_layer_the_term_more():
    layers = from_hf_config(REPO_ROOT / "real/presets/qwen3-0.6b.json").n_layers  # 28
    full, piecewise = _decode_step_ms("a100-80g", "full_and_piecewise"), _decode_step_ms("a100-80g", "piecewise")
    assert piecewise - full == pytest.approx(layers * PIECEWISE_LAYER_US / 1e3, rel=1e-9)  # 0.40 ms
    # the CPU preset replays no graphs: the layout costs nothing there
    assert _decode_step_ms("cpu", "piecewise") == pytest.approx(_decode_step_ms("cpu", "full_and_piecewise"))


def test_the_default_layout_prices_as_before():
    sim = make_sim(hardware={"preset": "a100-80g"})
    assert sim.engine.cuda_graph_mode == "full_and_piecewise"
    cm = _cost_model(sim, None, lambda p: False)
    bare = CostModel(hw=cm.hw, model=cm.model, async_scheduling=cm.async_scheduling)  # its own default: no graph term
    assert cm.step_time(4, 4096, 4, False) == pytest.approx(bare.step_time(4, 4096, 4, False), rel=1e-12)


def test_a_bad_layout_is_refused():
    with pytest.raises(pydantic.ValidationError, match="cuda_graph_mode"):
        make_sim(engine={"cuda_graph_mode": "eager"})


@pytest.mark.parametrize("version, mode", [
    ("0.4.0.post1", "full_and_piecewise"),  # V0: one whole-model graph per decode batch
    ("0.8.0", "piecewise"), ("0.8.5", "piecewise"), ("0.9.1", "piecewise"), ("0.10.2", "piecewise"),  # V1
    ("0.11.0", "full_and_piecewise"), ("0.19.2rc1.dev8", "full_and_piecewise"),  # PR 25444's default
])
def test_the_public_rows_take_the_layout_from_their_vllm_version(version, mode):
    assert vllm_cuda_graph_mode(version) == mode


def test_a_version_alone_keeps_the_sheets_layout_and_a_stated_one_is_priced():
    """A row's vLLM version does not switch its layout (applied by version it cost 6 held-out rows, session 34);
    a row whose engine states piecewise is priced with the term."""
    rows = {r.id: r for r in load_rows(ROWS)}
    c1 = rows["tenstorrent-a100-qwen3-0.6b-128-128-c1"]
    assert c1.vllm == "0.9.1" and vllm_cuda_graph_mode(c1.vllm) == "piecewise"
    assert row_sim_config(c1).engine.cuda_graph_mode == "full_and_piecewise"
    stated = c1.model_copy(update={"engine": c1.engine.model_copy(update={"cuda_graph_mode": "piecewise"})})
    stated._frontend = c1._frontend
    assert row_sim_config(stated).engine.cuda_graph_mode == "piecewise"
    # one user: every step a single decode, so TPOT moves by the whole term (28 layers x 14.3 us = 0.40 ms)
    piecewise, full = simulate_row(stated)["tpot_mean_ms"], simulate_row(c1)["tpot_mean_ms"]
    assert piecewise - full == pytest.approx(28 * PIECEWISE_LAYER_US / 1e3, rel=0.02)
