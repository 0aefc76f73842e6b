"""attn_mfu, attention's own achievable fraction of peak: the field validates, a sheet without it prices every step
bit for bit as before (attention at mfu), a set value moves only the attention part of a step, and sim.attention_kernels
prices the published FlashAttention points (its fit is what the presets hold), failing on a bad file with one line."""
import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from lab.config_sim import HardwareSheet
from sim import attention_kernels as ak
from sim.cost import CostModel
from sim.hardware import achievable_attention_flops, achievable_flops, get_hardware
from sim.step_breakdown import decode_terms
from tests.sim.conftest import make_sim


@pytest.mark.parametrize("value", [0, -0.1, 1.5, "fast"])
def test_attn_mfu_outside_0_1_is_refused(value):
    sheet = get_hardware("a100-80g").model_dump()
    with pytest.raises(ValidationError, match="attn_mfu"):
        HardwareSheet.model_validate({**sheet, "attn_mfu": value})
    with pytest.raises(ValidationError, match="attn_mfu"):
        make_sim(hardware={"preset": "a100-80g", "attn_mfu": value})


def test_the_hardware_section_overrides_the_sheets_attn_mfu():
    hw = CostModel.from_config(make_sim(hardware={"preset": "a100-80g", "attn_mfu": 0.7})).hw
    assert hw.attn_mfu == 0.7 and hw.mfu == get_hardware("a100-80g").mfu
    assert achievable_attention_flops(hw, "bf16") == pytest.approx(0.7 * hw.peak_for("bf16") * 1e12)


def _pair(preset="h100", model="qwen3-8b", **update):
    """Cost models of one sheet without attn_mfu (the old pricing) and with `update` applied."""
    base = CostModel.from_config(make_sim(hardware={"preset": preset}, model={"name": model}))
    plain = base.hw.model_copy(update={"attn_mfu": None})
    return CostModel(plain, base.model), CostModel(plain.model_copy(update=update), base.model)


def test_without_attn_mfu_every_step_is_priced_as_before():
    old, same = _pair(attn_mfu=None)
    m = old.model
    # the old formula, operation for operation: attention at mfu x peak[activation dtype]
    assert old._t_attn == m.attn_flops_per_context_token / (achievable_flops(old.hw, m.dtype) * old.tp)
    # a sheet whose attn_mfu equals its mfu prices every path bit for bit as one without it
    _, equal = _pair(attn_mfu=old.hw.mfu)
    for cm in (same, equal):
        for tokens, kv, reqs, ctx in ((1, 4096, 1, None), (8192, 40_000, 3, 8192 * 4096.5), (64, 64 * 9000, 64, None)):
            assert cm.step_time(tokens, kv, reqs, False, attn_ctx=ctx) == old.step_time(tokens, kv, reqs, False,
                                                                                        attn_ctx=ctx)
            assert cm.step_time(tokens, kv, reqs, True) == old.step_time(tokens, kv, reqs, True)
        b = np.arange(1, 300, dtype=np.float64)
        assert np.array_equal(cm.step_time_vec(b, 50_000, 8, True, b - 8), old.step_time_vec(b, 50_000, 8, True, b - 8))
        assert np.array_equal(cm.sps_curve(512, 50_000, 8)(b), old.sps_curve(512, 50_000, 8)(b))


def test_a_set_attn_mfu_moves_only_the_attention_part():
    old, new = _pair(attn_mfu=0.7)
    m, hw = old.model, old.hw
    # no attended pairs (a chunk from context 0 of one token): no change at all
    assert new.step_time(1, 1, 1, False, attn_ctx=0.0) == old.step_time(1, 1, 1, False, attn_ctx=0.0)
    # a compute-bound prefill chunk: the difference is its attention FLOPs at the two fractions
    tokens, done = 8192, 16_384
    attended = tokens * (done + (tokens + 1) / 2)
    diff = old.step_time(tokens, done + tokens, 1, False, attn_ctx=attended) - \
        new.step_time(tokens, done + tokens, 1, False, attn_ctx=attended)
    per_pair = m.attn_flops_per_context_token / (hw.peak_for(m.dtype) * 1e12)
    assert diff == pytest.approx(attended * per_pair * (1 / hw.mfu - 1 / 0.7), rel=1e-9)
    assert new.attention_time(attended) == pytest.approx(attended * per_pair / 0.7, rel=1e-12)
    # the step breakdown: the attention term scales by mfu / attn_mfu, the GEMM and memory terms stay
    before, after = decode_terms(old, 64, 20_000), decode_terms(new, 64, 20_000)
    assert after["attention flops"] == pytest.approx(before["attention flops"] * hw.mfu / 0.7, rel=1e-12)
    for term in ("gemm flops", "weights (non-expert)", "kv reads"):
        assert after[term] == before[term]
    # the SPS curve's closed form moves with it: a long-context batch steps faster
    b = np.arange(1, 64, dtype=np.float64)
    assert np.all(new.sps_curve(4096, 64 * 30_000, 64)(b) >= old.sps_curve(4096, 64 * 30_000, 64)(b))


def _table(path, fraction=0.6, fit=True, **changes):
    """An H100 table made at `fraction` of the bf16 peak (TFLOP/s as a FlashAttention benchmark prints them)."""
    peak = get_hardware("h100").peak_for("bf16")
    points = [{"batch": 16384 // s, "seqlen": s, "heads": 16, "head_dim": 128, "causal": True,
               "value": fraction * peak * s / (s + 1)} for s in (1024, 4096, 16384)]  # the FA count: L^2 / 2
    run = {"id": "synthetic", "url": "https://example.org", "device": "h100", "kernel": "FA3", "unit": "tflops",
           "fit": fit, "points": points, **changes}
    path.write_text(yaml.safe_dump({"runs": [run]}))
    return path


def test_the_check_prices_a_table_made_at_a_fraction_exactly(tmp_path):
    points = ak.load_points(_table(tmp_path / "a.yaml", 0.6))
    scored = ak.score(points, {"h100": get_hardware("h100").model_copy(update={"attn_mfu": 0.6})})
    assert scored.error.to_numpy() == pytest.approx(0.0, abs=1e-9)
    fits = ak.fit(points)
    assert fits.attn_mfu_fitted.iloc[0] == pytest.approx(0.6, abs=1e-3)
    # at the sheet's mfu (no attn_mfu) the same points come out slower by 0.6 / mfu
    plain = ak.score(points, {"h100": get_hardware("h100").model_copy(update={"attn_mfu": None})})
    assert plain.error.to_numpy() == pytest.approx(0.6 / get_hardware("h100").mfu - 1, rel=1e-6)


def test_the_presets_hold_what_the_published_tables_fit():
    fits = ak.fit(ak.load_points(ak.DEFAULT_FILE)).set_index("device")
    for card in fits.index:
        assert get_hardware(card).attn_mfu == pytest.approx(fits.attn_mfu_fitted[card], abs=1e-3)
    assert get_hardware("h200").attn_mfu == get_hardware("h100").attn_mfu  # same die, no table of its own


def test_the_check_runs_and_writes_its_tables(tmp_path, capsys):
    assert ak.main(["--fit", "--out", str(tmp_path / "out")]) == 0
    for name in ("attention_kernels.csv", "attention_kernels.md", "attention_fit.csv"):
        assert (tmp_path / "out" / name).is_file()
    assert "fa3-paper-h100-causal-hdim128-fa3" in capsys.readouterr().out


@pytest.mark.parametrize(("changes", "field"), [({"device": "tpu"}, "device"), ({"unit": "us"}, "unit"),
                                                 ({"fit": "yes"}, "fit"), ({"points": []}, "points"),
                                                 ({"points": [{"batch": 1, "seqlen": 0, "heads": 1, "head_dim": 64,
                                                               "causal": True, "value": 1.0}]}, "points[0]"),
                                                 ({"points": [{"batch": 1, "seqlen": 1e308, "heads": 1, "head_dim": 64,
                                                               "causal": True, "value": 1.0}]}, "points[0]")])
def test_a_bad_file_fails_with_one_line_naming_the_field(tmp_path, capsys, changes, field):
    path = _table(tmp_path / "bad.yaml", **changes)
    assert ak.main(["--file", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and field in err[0]
    assert not (tmp_path / "out" / "attention_kernels.csv").exists()
