"""sim.gemm_kernels: published low-precision speed-ups beside the cost model's, the fit of act_quant_us and
lowp_matmul_efficiency recovers what a synthetic table was made with, bad files fail with one line and exit 2."""
import pytest
import yaml

from lab.errors import LabError
from sim import gemm_kernels as gk
from sim.hardware import get_hardware


def _table(path, quant_us=3.0, efficiency=0.7):
    """An H100 table made from the cost model itself: bf16, fp8 without and with on-the-fly quantization."""
    ideal = get_hardware("h100").model_copy(update={"lowp_matmul_efficiency": {"fp8": efficiency},
                                                    "act_quant_us": 0.0})
    points = []
    for m in (1, 64, 2048, 8192):
        shape = {"m": m, "n": 8192, "k": 8192}
        bf16 = gk.sim_seconds(ideal, m, 8192, 8192, "bf16") * 1e6
        fp8 = gk.sim_seconds(ideal, m, 8192, 8192, "fp8_w8a8") * 1e6
        points += [{**shape, "dtype": "bf16", "kernel": "torch-bf16", "value": bf16},
                   {**shape, "dtype": "fp8_w8a8", "kernel": "fp8-tensor-w-tensor-a-noquant", "value": fp8},
                   {**shape, "dtype": "fp8_w8a8", "kernel": "fp8-tensor-w-tensor-a", "value": fp8 + quant_us}]
    path.write_text(yaml.safe_dump({"runs": [{"id": "synthetic", "url": "https://example.org", "device": "h100",
                                              "unit": "us", "points": points}]}))
    return path


def test_fit_recovers_the_terms_a_table_was_made_with(tmp_path):
    fitted = gk.fit(gk.load_points(_table(tmp_path / "g.yaml")))
    assert fitted["act_quant_us"] == pytest.approx(3.0, abs=1e-6) and fitted["act_quant_pairs"] == 4
    assert fitted["lowp_matmul_efficiency"]["fp8"] == pytest.approx(0.7, rel=1e-3)


def test_speedups_name_what_each_column_includes(tmp_path):
    low = gk.speedups(gk.load_points(_table(tmp_path / "g.yaml")))
    assert set(low.with_act_quant) == {"no", "yes"} and set(low.regime) == {"M <= 256", "M >= 1024"}
    big = low[(low.m == 8192) & (low.with_act_quant == "no")].iloc[0]
    assert big.published == pytest.approx(2 * 0.7, rel=1e-3)  # the table's own efficiency on the 2x peak
    assert big.simulated == pytest.approx(2 * get_hardware("h100").lowp_matmul_efficiency["fp8"], rel=1e-3)


@pytest.mark.parametrize("runs, field", [
    ([{"id": "a", "device": "h100", "unit": "ms", "points": []}], "unit"),
    ([{"id": "a", "device": "h100", "unit": "us", "points": [{"m": 1, "n": 2, "k": 3, "dtype": "fp3",
                                                             "kernel": "x", "value": 1.0}]}], "points[0]"),
    ([{"id": "a", "unit": "us", "points": []}], "device"),
    ([{"id": "a", "device": "tpu", "unit": "us", "points": []}], "device"),  # was a traceback after the load
    ([{"id": "a", "device": "h100", "unit": "us", "points": None}], "points"),
    ([{"id": "a", "device": "h100", "unit": "us", "points": []}], "points"),
    ([{"id": "a", "device": "h100", "unit": "tflops", "points": [{"m": 1, "n": 2, "k": 3, "dtype": "bf16",
                                                                 "kernel": "x", "value": 1e308}]}], "points[0].value"),
])
def test_bad_files_name_the_field(tmp_path, runs, field):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"runs": runs}))
    with pytest.raises(LabError, match=field.replace("[", r"\[").replace("]", r"\]")):
        gk.load_points(path)


def test_cli(tmp_path, capsys):
    assert gk.main(["--file", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "--file" in capsys.readouterr().err
    assert gk.main(["--fit", "--out", str(tmp_path / "o")]) == 0  # the shipped table
    for name in ("gemm_kernels.csv", "gemm_kernels.md", "gemm_fit.json"):
        assert (tmp_path / "o" / name).is_file()


def test_fit_recovers_the_marlin_efficiency_of_weight_only_points(tmp_path):
    """Weight-only int4 (Marlin) points at M >= 1024 timed at 0.55 of the bf16 rate of the same shape give
    marlin_efficiency 0.55 for their card; the w8a8 / w4a4 fits do not see them; the cost model then prices the
    weight-only GEMM at that fraction."""
    a100 = get_hardware("a100-80g").model_copy(update={"marlin_efficiency": None})
    points = []
    for m in (1, 2048, 8192):
        bf16 = gk.sim_seconds(a100, m, 8192, 8192, "bf16") * 1e6
        marlin = gk.sim_seconds(a100, m, 8192, 8192, "int4_w4a16") * 1e6
        points += [{"m": m, "n": 8192, "k": 8192, "dtype": "bf16", "kernel": "torch-bf16", "value": bf16},
                   {"m": m, "n": 8192, "k": 8192, "dtype": "int4_w4a16", "kernel": "marlin",
                    "value": marlin / 0.55 if m >= 1024 else marlin}]
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"runs": [{"id": "w4a16", "url": "https://example.org", "device": "a100-80g",
                                              "unit": "us", "points": points}]}))
    fitted = gk.fit(gk.load_points(path))
    assert fitted["marlin_efficiency"] == {"a100-80g": pytest.approx(0.55, rel=1e-3)}
    assert fitted["marlin_points"] == {"a100-80g": 2} and fitted["lowp_matmul_efficiency"] == {}
    assert gk.sim_seconds(a100, 1, 8192, 8192, "int4_w4a16") < gk.sim_seconds(a100, 1, 8192, 8192, "bf16") / 3
    priced = a100.model_copy(update={"marlin_efficiency": 0.55})
    assert gk.sim_seconds(priced, 8192, 8192, 8192, "int4_w4a16") == pytest.approx(
        gk.sim_seconds(a100, 8192, 8192, 8192, "bf16") / 0.55, rel=1e-3)


def test_the_shipped_marlin_table_gives_the_a100_presets_value():
    fitted = gk.fit(gk.load_points(gk.DEFAULT_FILE))
    assert fitted["marlin_efficiency"]["a100-40g"] == pytest.approx(get_hardware("a100-40g").marlin_efficiency, abs=0.01)
    assert get_hardware("a100-80g").marlin_efficiency == get_hardware("a100-40g").marlin_efficiency


def test_the_shipped_mamf_table_gives_the_amd_presets_mfu():
    """The AMD sheets' mfu is the H100's serving mfu at the ratio of bf16 MAMF fractions (sim.gemm_kernels --fit);
    the H100 maps to itself."""
    fitted = gk.fit(gk.load_points(gk.DEFAULT_FILE))
    assert fitted["mfu_from_mamf"]["h100"] == pytest.approx(get_hardware("h100").mfu)
    assert fitted["mamf_fraction"]["h100"] == pytest.approx(794.5 / 989.4, abs=1e-3)
    for card in ("mi300x", "mi325x", "mi355x"):
        assert get_hardware(card).mfu == pytest.approx(fitted["mfu_from_mamf"][card], abs=0.006), card


@pytest.mark.parametrize("run", [
    {"id": "m", "device": "h100", "unit": "tflops", "mamf": "yes",
     "points": [{"m": 1, "n": 1, "k": 1, "dtype": "bf16", "kernel": "k", "value": 1}]},
    {"id": "m", "device": "h100", "unit": "tflops", "mamf": True,
     "points": [{"m": 1, "n": 1, "k": 1, "dtype": "fp8_w8a8", "kernel": "k", "value": 1}]},
])
def test_a_bad_mamf_run_names_the_field(tmp_path, run):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"runs": [run]}))
    with pytest.raises(LabError, match=r"runs\[0\]\.mamf"):
        gk.load_points(path)
