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
