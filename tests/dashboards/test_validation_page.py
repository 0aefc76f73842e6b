"""Simulator validation page: the numbers of sim.public_check / sim.moe_kernels outputs, a hint when they are
absent, one red line when a file is damaged."""
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from sim import kernel_roofline, moe_kernels, public_check

PAGE = Path(__file__).resolve().parents[2] / "dashboards" / "pages" / "9_Simulator_validation.py"
ROWS = "gpustack-h100-qwen3-8b-c1,gpustack-h200-qwen3.5-35b-a3b-sharegpt-rate-1"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    assert public_check.main(["--rows", ROWS, "--lengths", "mean", "--out", str(out / "pc")]) == 0
    assert moe_kernels.main(["--fit", "--out", str(out / "mk")]) == 0
    assert kernel_roofline.main(["--fit", "--out", str(out / "kr")]) == 0
    return out


def _run(runs_root, public_dir, kernel_dir, measured_dir=None) -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=60)
    at.session_state["runs_root"] = str(runs_root)
    at.session_state["public_check_dir"] = str(public_dir)
    at.session_state["moe_kernels_dir"] = str(kernel_dir)
    at.session_state["kernel_roofline_dir"] = str(measured_dir or Path(kernel_dir).with_name("absent"))
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_page_shows_the_tools_numbers(outputs, tmp_path):
    at = _run(tmp_path, outputs / "pc", outputs / "mk", outputs / "kr")
    assert not at.error, [e.value for e in at.error]
    table = pd.read_csv(outputs / "pc" / "public_check.csv")
    metrics = {m.label: m.value for m in at.metric}
    held = table[table.half == "held-out"]
    assert metrics["held-out rows"] == str(len(held))
    within = int((held.rel_err_tpot_mean_ms.abs() <= 0.10).sum())
    assert metrics["TPOT within 10%"] == f"{within} of {len(held)}"
    frames = [d.value for d in at.dataframe]
    kinds, cards = [f for f in frames if "kind" in f.columns][:2]
    assert set(kinds["kind"]) == set(held.sim_model_kind)
    assert set(cards["kind"]) == {f"{g}, tp {t}" for g, t in zip(held.gpu, held.tp)}  # the table by card
    points = next(f for f in frames if "err_pct" in f.columns)
    assert sorted(points["id"]) == sorted(table.id)
    summary = next(f for f in frames if "median_abs_err_pct" in f.columns and "run" in f.columns)
    kernels = pd.read_csv(outputs / "mk" / "moe_kernels.csv")
    assert set(summary["run"]) == set(kernels.loc[~kernels.cached, "run"])
    assert any("fit" in f.columns for f in frames)
    implied = next(f for f in frames if "implied_min" in f.columns)
    terms = pd.read_csv(outputs / "kr" / "implied.csv").dropna(subset=["implied"])
    assert set(zip(implied.device, implied.term)) == set(zip(terms.device, terms.term))
    mfu = implied[(implied.device == "h100") & (implied.term == "gemm mfu")].iloc[0]
    h100 = terms[(terms.device == "h100") & (terms.term == "gemm mfu")].implied
    assert (mfu.implied_min, mfu.implied_max) == (round(h100.min(), 3), round(h100.max(), 3))


def test_absent_outputs_say_how_to_make_them(tmp_path):
    at = _run(tmp_path, tmp_path / "nope", tmp_path / "nope2")
    infos = " ".join(i.value for i in at.info)
    assert "python -m sim.public_check --out" in infos and "python -m sim.moe_kernels --fit --out" in infos
    assert "python -m sim.kernel_roofline --fit --out" in infos


def test_a_damaged_table_is_one_red_line(outputs, tmp_path):
    bad = tmp_path / "pc"
    bad.mkdir()
    (bad / "public_check.csv").write_text("id,half\nx,fit\n")
    at = _run(tmp_path, bad, outputs / "mk")
    assert len(at.error) == 1 and "missing columns" in at.error[0].value
