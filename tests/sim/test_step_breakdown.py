"""sim.step_breakdown: a decode step's terms add up to CostModel.step_time on dense, MoE and hybrid rows, a formula
the breakdown does not follow fails loudly, and the command line prints the table or exits 2 on an unknown row."""
import pytest

from lab.errors import LabError
from sim import step_breakdown as sb
from sim.cost import CostModel
from sim.public_check import DEFAULT_FILE, load_rows, row_sim_config

ROWS = {r.id: r for r in load_rows(DEFAULT_FILE)}
MOE = "vllm23151-h100-qwen3-30b-a3b-2k-c10"
DENSE = "gpustack-h100-qwen3-8b-c8"
HYBRID = "gpustack-h200-qwen3.5-35b-a3b-fp8-sharegpt-rate-8"


def _cost(row_id):
    return CostModel.from_config(row_sim_config(ROWS[row_id]))


@pytest.mark.parametrize("row_id", [MOE, DENSE, HYBRID])
def test_terms_add_up_to_step_time(row_id):
    cm = _cost(row_id)
    terms = sb.decode_terms(cm, 10, 2550)
    assert terms["total"] == pytest.approx(cm.step_time(10, 10 * 2550.0, 10, False), rel=1e-12)
    assert sum(v for k, v in terms.items() if k != "total") == pytest.approx(terms["total"], rel=1e-9)


def test_moe_floor_is_the_sheets_per_layer_floor_over_moe_layers():
    cm = _cost(MOE)
    terms = sb.decode_terms(cm, 10, 2550)
    assert terms["moe floor (moe_layer_us)"] == pytest.approx(cm.model.n_moe_layers * cm.hw.moe_layer_us * 1e-6)
    assert terms["layer overhead"] == pytest.approx(cm.model.n_layers * cm.layer_overhead_s)
    assert "moe floor (moe_layer_us)" not in sb.decode_terms(_cost(DENSE), 10, 2550)


def test_a_formula_the_breakdown_does_not_follow_fails(monkeypatch):
    cm = _cost(MOE)
    real = CostModel.step_time
    monkeypatch.setattr(CostModel, "step_time", lambda self, *a, **k: real(self, *a, **k) + 1e-3)
    with pytest.raises(LabError, match="formula changed"):
        sb.decode_terms(cm, 10, 2550)


def test_bad_batch_is_refused():
    with pytest.raises(LabError, match="at least 1"):
        sb.decode_terms(_cost(DENSE), 0, 100)


def test_command_line(capsys):
    assert sb.main([MOE, "--batch", "10", "--context", "2550"]) == 0
    out = capsys.readouterr().out
    assert "total (step_time)" in out and "moe floor" in out and "47.9 of 128 (routing skew 1.16)" in out
    assert sb.main(["no-such-row", "--batch", "1", "--context", "1"]) == 2
    assert "no row" in capsys.readouterr().err
