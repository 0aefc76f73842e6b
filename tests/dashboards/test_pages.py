"""Each dashboard page runs headless (streamlit.testing.v1.AppTest) against a run built in tmp_path and
shows the numbers lab.metrics / sim compute; a broken page fails here."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from lab.metrics import ece
from tests.dashboards.conftest import ACCEPTED, dspark_confidence, find

DASH = Path(__file__).resolve().parents[2] / "dashboards"
PAGES = {p.stem.split("_", 1)[1]: p for p in (DASH / "pages").glob("*.py")}


def _run(page: Path, root, timeout=30) -> AppTest:
    at = AppTest.from_file(str(page), default_timeout=timeout)
    at.session_state["runs_root"] = str(root)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_home_counts_runs(runs_root):
    at = _run(DASH / "app.py", runs_root["root"])
    assert at.metric[0].value == "2"


def test_runs_page(runs_root):
    at = _run(PAGES["Runs"], runs_root["root"])
    table = find(at, "run_id")
    assert table["run_id"].tolist() == ["demo-0001", "zzz-0001"]  # newest first
    assert table["directory"].tolist() == ["demo/demo-0001", "zzz/zzz-0001"]
    assert bool(table["sim"].iloc[0]) and bool(table["calibration"].iloc[0])
    assert {m.label: m.value for m in at.metric}["seed"] == "7"
    assert any("Report body marker 4242" in m.value for m in at.markdown)


def test_acceptance_page(runs_root):
    at = _run(PAGES["Acceptance"], runs_root["root"])
    t1 = find(at, "macro")
    row = t1[t1["method"] == "dspark"].iloc[0]
    assert (row["gsm8k"], row["humaneval"], row["macro"]) == pytest.approx((2.5, 4.0, 3.25))
    by_table = find(at, "draft_acceptance_rate")
    rounds = by_table[(by_table["method"] == "dspark")].set_index("dataset")
    assert rounds.loc["gsm8k", "tau"] == pytest.approx(2.5) and rounds.loc[
        "humaneval", "tau"
    ] == pytest.approx(4.0)
    pos = find(at, "survival").set_index(["method", "dataset", "position"])
    assert pos.loc[("dspark", "gsm8k", 1), "survival"] == pytest.approx(0.75)
    assert pos.loc[("dspark", "gsm8k", 3), "conditional"] == pytest.approx(0.5)
    assert pos.loc[("dspark", "gsm8k", 3), "reached"] == 2  # n behind c_3: rounds with accepted >= 2
    assert pos.loc[("dspark", "gsm8k", 3), "drafts"] == 4  # n behind s_3: every draft
    counters = find(at, "num_drafts")
    g = counters[(counters["dataset"] == "gsm8k") & (counters["method"] == "dspark")].iloc[0]
    assert (g["num_drafts"], g["num_draft_tokens"], g["num_accepted_tokens"]) == (4, 12, 6)
    assert g["num_accepted_tokens_per_pos"] == "3, 2, 1"
    assert len(at.get("vega_lite_chart")) == 2  # conditional and survival curves


def test_calibration_page(runs_root):
    at = _run(PAGES["Calibration"], runs_root["root"])
    per_pos = find(at, "ece (raw)").set_index("position")
    # dspark rows of both datasets: accepted and per-position confidence (0.9 at step 0, 0.6 after); the
    # prediction at position k is the prefix product conf^k against the outcome accepted >= k
    accepted = np.array(ACCEPTED["gsm8k"] + ACCEPTED["humaneval"])
    conf = np.array([dspark_confidence(i) for i in range(4)] * 2)
    rates = [np.mean(accepted > k) for k in range(3)]
    expected = [ece(conf ** (k + 1), accepted > k, 10) for k in range(3)]
    assert per_pos["ece (raw)"].tolist() == pytest.approx(expected, abs=1e-6)
    assert per_pos["accept_rate (raw)"].tolist() == pytest.approx(rates)
    assert "ece (STS)" in per_pos.columns
    assert len(at.get("vega_lite_chart")) == 1  # the reliability diagram
    sts = find(at, "ece_after (held out)")
    assert sts["temperature"].tolist() == [1.5, 1.2, 1.0]
    assert sts["ece_after (held out)"].tolist() == [0.03, 6e-22, 0.01]


def test_throughput_page(runs_root):
    at = _run(PAGES["Throughput_vs_SLA"], runs_root["root"])
    sla = find(at, "gain_vs_baseline")
    expected = runs_root["sla"]
    assert sla["policy"].tolist() == expected["policy"].tolist()
    assert sla["throughput_per_gpu"].to_numpy() == pytest.approx(
        expected["throughput_per_gpu"].to_numpy(), nan_ok=True
    )
    front = find(at, "tok_s_user")
    assert set(front["policy"]) == {"mtp1", "fixed_k2", "prefix"}
    assert len(at.get("vega_lite_chart")) >= 1


@pytest.mark.parametrize("source", ["parametric", "run traces"])
def test_live_ablation_runs_the_simulator(runs_root, source):
    at = _run(PAGES["Live_ablation"], runs_root["root"])
    at.radio[0].set_value(source)
    next(s for s in at.slider if s.label == "Simulated seconds").set_value(5)
    next(s for s in at.slider if s.label == "Block size (max verify length)").set_value(3)
    at.button[0].click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    sla = find(at, "gain_vs_baseline")
    assert set(sla["policy"]) == {"mtp1", "fixed_k2", "fixed_k3", "prefix"}
    points = find(at, "tpot_ms_p50")
    assert len(points) == 4 * 3 and (points["throughput_per_gpu"] > 0).all()
    acc = "parametric" if source == "parametric" else "dspark:anchors:exact"
    assert all(acc in c.value for c in at.caption if "acceptance" in c.value) and any(
        acc in c.value for c in at.caption
    )


def test_empty_root_renders_every_page(tmp_path):
    for page in [DASH / "app.py", *PAGES.values()]:
        at = AppTest.from_file(str(page), default_timeout=30)
        at.session_state["runs_root"] = str(tmp_path)
        at.run()
        assert not at.exception, (page.name, [e.message for e in at.exception])


def test_dashboards_never_import_torch():
    code = (
        "import sys, dashboards.data, dashboards.ui, sim.simulate, sim.sweep\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('torch', 'transformers')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_reliability_bins_match_lab_ece():
    from dashboards.data import reliability_bins

    rng = np.random.default_rng(0)
    scores = rng.random(500)
    outcomes = (rng.random(500) < scores**2).astype(float)
    b = reliability_bins(scores, outcomes, 10)
    weighted = float((b["count"] / b["count"].sum() * (b["mean_confidence"] - b["accept_rate"]).abs()).sum())
    assert weighted == pytest.approx(ece(scores, outcomes, 10))
