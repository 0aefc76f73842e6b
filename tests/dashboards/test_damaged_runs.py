"""Damaged copies of the demo run (conftest.py): each bad file is one red line in the main area naming the
file and what is wrong, the rest of the page still works; a bad trace shard is a warning and is skipped.
Also the pages' choices: defaults (newest run, dspark), filters, STS only at its fitted temperature,
absent drafters named, coinciding policies named, the Live ablation's MTP baseline and controls, the two
new pages."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboards.conftest import find

DASH = Path(__file__).resolve().parents[2] / "dashboards"
PAGES = {p.stem.split("_", 1)[1]: p for p in (DASH / "pages").glob("*.py")}


def _open(page: str, root, timeout=60) -> AppTest:
    at = AppTest.from_file(str(PAGES[page] if page != "app" else DASH / "app.py"), default_timeout=timeout)
    at.session_state["runs_root"] = str(root)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


@pytest.fixture
def copy_run(runs_root, tmp_path):
    """A fresh copy of the demo run alone under a new root; returns (root, run)."""
    run = tmp_path / "root" / "demo" / "demo-0001"
    shutil.copytree(runs_root["run"], run)
    return tmp_path / "root", run


def _one_error(at, *parts):
    assert len(at.error) == 1, [e.value for e in at.error]
    for part in parts:
        assert part in at.error[0].value, at.error[0].value


def test_empty_tau_csv_is_one_line_and_traces_still_shown(copy_run):
    root, run = copy_run
    (run / "tau.csv").write_text("")
    at = _open("Acceptance", root)
    _one_error(at, str(run / "tau.csv"), "empty file")
    assert "draft_acceptance_rate" in find(at, "draft_acceptance_rate").columns
    assert len(at.get("vega_lite_chart")) == 2


def test_truncated_results_parquet_is_one_line_and_sla_still_shown(copy_run):
    root, run = copy_run
    path = run / "sim" / "results.parquet"
    path.write_bytes(path.read_bytes()[:300])
    at = _open("Throughput_vs_SLA", root)
    _one_error(at, str(path), "not a readable Parquet table")
    assert "gain_vs_baseline" in find(at, "gain_vs_baseline").columns


def test_malformed_calibration_json_is_named_not_called_missing(copy_run):
    root, run = copy_run
    (run / "calibration.json").write_text('{"methods": {"dspark": ')
    at = _open("Calibration", root)
    _one_error(at, str(run / "calibration.json"), "not valid JSON")
    assert not any("No calibration.json" in i.value for i in at.info)
    assert "ece (raw)" in find(at, "ece (raw)").columns and "ece (STS)" not in find(at, "ece (raw)").columns
    assert len(at.get("vega_lite_chart")) == 1


@pytest.mark.parametrize("page, name, content, message", [
    ("Acceptance", "tau.csv", "a,b\n1,2\n", "tau.csv: missing columns ['method', 'dataset', 'temperature', 'tau']"),
    ("Calibration", "calibration.json", '{"methods": {"dspark": {"temperatures": "hot"}}}',
     "methods.dspark.temperatures is not a non-empty list of positive numbers"),
    ("Prompt_viewer", "decode/humaneval__T0.parquet", "PAR1 truncated", "not a readable Parquet decode file"),
    ("Live_ablation", "config.yaml", "- just\n- a list\n", "config.yaml: expected a YAML mapping, found list"),
    # the lab's YAML loader: a repeated key was silently the last one
    ("Live_ablation", "config.yaml", "name: a\nname: b\n", "config.yaml: duplicate key 'name' at line 2"),
    ("Calibration", "calibration.json", '{"methods": {"dspark": {"temperatures": [1e999]}}}',
     "methods.dspark.temperatures is not a non-empty list of positive numbers"),  # JSON's 1e999 is infinity
])
def test_wrong_content_is_named(copy_run, page, name, content, message):
    root, run = copy_run
    (run / name).write_text(content)
    _one_error(_open(page, root), message)


@pytest.mark.parametrize("page", ["Acceptance", "Calibration", "Live_ablation", "Compare_runs", "Prompt_viewer"])
def test_truncated_trace_shard_is_skipped_with_a_warning(copy_run, runs_root, page):
    root, run = copy_run
    if page == "Compare_runs":  # needs a second run
        shutil.copytree(runs_root["old"], root / "zzz" / "zzz-0001")
    shard = run / "traces" / "rounds__dspark__gsm8k__T0.parquet"
    shard.write_bytes(shard.read_bytes()[:200])
    at = _open(page, root)
    assert not at.error, [e.value for e in at.error]
    warnings = [w.value for w in at.warning if "Skipped a trace shard" in w.value]
    assert len(warnings) == 1 and str(shard) in warnings[0] and "not a readable Parquet trace" in warnings[0]
    if page == "Acceptance":
        by_table = find(at, "draft_acceptance_rate")
        assert {"mtp", "ngram"} <= set(by_table["method"])  # the other methods are still there
        assert set(by_table[by_table["method"] == "dspark"]["dataset"]) == {"humaneval"}
    if page == "Live_ablation":  # parametric mode still runs
        at.radio[0].set_value("parametric").run()
        next(s for s in at.slider if s.label == "Simulated seconds").set_value(5)
        at.button[0].click().run()
        assert not at.exception and not at.error
        assert set(find(at, "gain_vs_baseline")["policy"]) == {"mtp1", "fixed_k2", "fixed_k3", "prefix"}


@pytest.mark.parametrize("page", ["app", "Runs", "Acceptance", "Calibration", "Throughput_vs_SLA",
                                  "Live_ablation", "Compare_runs", "Prompt_viewer", "Engine_fidelity"])
def test_empty_runs_root_is_one_red_line(tmp_path, page):
    at = _open(page, tmp_path)
    _one_error(at, str(tmp_path), "no run directories")


def test_a_run_whose_drafter_never_drafted_shows_its_pages(copy_run):
    """Every round k = 0 (an n-gram drafter on prompts without repeats, or a too-short output): the
    Acceptance page says so instead of a KeyError 'method' from an empty positions table."""
    from lab.trace import shard_name, write_shard
    from tests.dashboards.conftest import record

    root, run = copy_run
    shutil.rmtree(run / "traces")
    write_shard([record("ngram", "gsm8k", "rounds", 0.0, step, 0, 0) for step in range(3)],
                run / "traces" / shard_name("ngram", "gsm8k", "rounds", 0.0))
    (run / "tau.csv").unlink()
    at = _open("Acceptance", root)
    assert any("none drafted a token (k = 0)" in w.value for w in at.warning), [w.value for w in at.warning]
    assert find(at, "num_drafts")["num_drafts"].tolist() == [0]


def test_malformed_manifest_is_named_on_the_runs_page(copy_run):
    root, run = copy_run
    (run / "manifest.json").write_text("{not json")
    at = _open("Runs", root)
    _one_error(at, str(run / "manifest.json"), "not valid JSON")
    assert find(at, "problem")["problem"].iloc[0].startswith(str(run / "manifest.json"))


def test_defaults_are_the_newest_run_and_dspark(runs_root):
    at = _open("Calibration", runs_root["root"])
    assert at.sidebar.selectbox[0].value == "demo/demo-0001"  # newest, although zzz/ sorts last
    assert next(s for s in at.selectbox if s.label == "Drafter").value == "dspark"
    at = _open("Live_ablation", runs_root["root"])
    assert next(s for s in at.selectbox if s.label == "Trace method").value == "dspark"


def test_survival_is_per_draft_and_absent_drafters_are_named(runs_root):
    at = _open("Acceptance", runs_root["root"])
    pos = find(at, "survival")
    ngram = pos[pos["method"] == "ngram"].sort_values("position")
    # rounds drafted k = 1, 1, 1, 4, 0 and accepted 0, 0, 0, 4, 0: one draft in four reaches every position
    assert ngram["survival"].tolist() == pytest.approx([0.25] * 4)
    assert ngram["drafts"].tolist() == [4] * 4
    assert ngram["reached"].tolist() == [4, 1, 1, 1]
    next(s for s in at.selectbox if s.label == "Temperature").set_value(1.0).run()
    assert any("ngram: 3 rounds rows at T=1, none drafted a token" in w.value for w in at.warning)
    assert "ngram" not in set(find(at, "survival")["method"])


def test_acceptance_filters(runs_root):
    at = _open("Acceptance", runs_root["root"])
    next(m for m in at.multiselect if m.label == "Drafters").set_value(["mtp"]).run()
    next(m for m in at.multiselect if m.label == "Datasets").set_value(["humaneval"]).run()
    by_table = find(at, "draft_acceptance_rate")
    assert by_table[["method", "dataset"]].values.tolist() == [["mtp", "humaneval"]]
    next(s for s in at.selectbox if s.label == "Trace table").set_value("anchors").run()
    assert set(find(at, "draft_acceptance_rate")["table"]) == {"anchors"}


def test_sts_only_at_its_fitted_temperature(runs_root):
    at = _open("Calibration", runs_root["root"])
    assert "ece (STS)" in find(at, "ece (raw)").columns
    next(s for s in at.selectbox if s.label == "Temperature").set_value(1.0).run()
    assert "ece (STS)" not in find(at, "ece (raw)").columns
    assert any("fitted at sampling temperature T=0; not applied at T=1" in i.value for i in at.info)


def test_coinciding_policies_are_named(copy_run):
    root, run = copy_run
    path = run / "sim" / "results.parquet"
    results = pd.read_parquet(path)
    twin = results[results["policy"] == "prefix"].assign(policy="prefix_twin")
    pd.concat([results, twin], ignore_index=True).to_parquet(path)
    at = _open("Throughput_vs_SLA", root)
    assert any("prefix and prefix_twin coincide" in i.value for i in at.info)


def test_gains_are_percentages_like_summary_md(runs_root):
    from sim.sweep import _pct

    at = _open("Throughput_vs_SLA", runs_root["root"])
    shown = find(at, "gain_vs_baseline")
    assert shown["gain_vs_baseline"].tolist() == [_pct(v) for v in runs_root["sla"]["gain_vs_baseline"]]
    assert any(v.endswith("%") for v in shown["gain_vs_baseline"])


def test_live_ablation_replays_the_runs_mtp_traces_and_hides_parametric_knobs(runs_root):
    at = _open("Live_ablation", runs_root["root"])
    assert at.radio[0].value == "run traces"
    labels = {s.label for s in at.slider}
    assert "Parametric alpha (per-position rate)" not in labels and "MTP-1 alpha (parametric)" not in labels
    next(s for s in at.slider if s.label == "Simulated seconds").set_value(5)
    next(s for s in at.slider if s.label == "Block size (max verify length)").set_value(3)
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    points = find(at, "tpot_ms_p50")
    caption = " ".join(c.value for c in at.caption)
    assert "mtp:" in caption and "dspark:" in caption  # each policy's acceptance source is named
    assert len(points) == 4 * 3
    at.radio[0].set_value("parametric").run()
    assert "Parametric alpha (per-position rate)" in {s.label for s in at.slider}


def test_compare_runs_side_by_side(runs_root):
    at = _open("Compare_runs", runs_root["root"])
    assert not at.error
    tau = find(at, "tau B - A").set_index(["method", "dataset"])
    assert tau.loc[("dspark", "humaneval"), "tau A"] == pytest.approx(4.0)
    assert tau.loc[("dspark", "humaneval"), "tau B"] == pytest.approx(2.0)
    assert tau.loc[("dspark", "humaneval"), "tau B - A"] == pytest.approx(-2.0)
    assert len(at.get("vega_lite_chart")) == 5  # two curves per run, A's frontier (B has no sim/)
    assert any("No sim/ outputs" in i.value for i in at.info)


def test_prompt_viewer_marks_accepted_spans_and_tau_per_prompt(runs_root):
    at = _open("Prompt_viewer", runs_root["root"])
    html = next(m.value for m in at.markdown if 'class="decoded"' in m.value)
    drafts = html.split('class="draft"')[1:]
    assert len(drafts) == 2 and ">w1 w2 w3 </span>" in drafts[0] and ">w5 w6 w7 </span>" in drafts[1]
    assert 'title="round 1: the target' in html and ">w4 </span>" in html
    per_prompt = find(at, "prompt_id").set_index("prompt_id")
    assert per_prompt.loc["p0", "dspark"] == pytest.approx(4.0) and per_prompt.loc["p1", "mtp"] == pytest.approx(2.0)
    assert any(t.value == "Write a function <f>." for t in at.text)


# ---- Engine fidelity: each damaged file of an engine run is one red line naming it; the rest is drawn --------
ENGINE_DAMAGE = {
    # several independent files at once: one line each; the profile chart and the fidelity table go
    "tables": ([("engine/fidelity.csv", "variant,load\nnospec,low\n", "fidelity.csv: missing columns"),
                ("engine/ngram/low/spec_counters.json", '{"delta": {"num_drafts": -1}}',
                 "delta.num_drafts is not a non-negative integer"),
                ("engine/nospec/low/reference.json", "{", "reference.json: not valid JSON"),
                ("engine/step_profile.json", '{"source": "vllm"}', "step profile meta needs 'model'")],
               6),  # 2 ECDFs, 2 timelines, survival + conditional of ngram/high; no profile chart
    # engine.json unreadable: loads by name, so ngram/high is the default load, and its vLLM log is damaged:
    # one line although the page reads it twice (its load section and the counters' drafted-steps share)
    "vllm_log": ([("engine/engine.json", "[1, 2]", "engine.json: expected a JSON object, found list"),
                  ("engine/ngram/high/requests.parquet", b"PAR1 truncated", "is not a readable Parquet file")],
                 6),  # the simulator's ECDFs and timeline, the two curves, the profile
    "simulator_log": ([("engine/fidelity/nospec/low/sim_requests.parquet", b"PAR1 truncated",
                        "is not a readable Parquet file"),
                       ("engine/nospec/low/chunks.parquet", b"PAR1 truncated", "not a readable Parquet table")],
                      6),  # vLLM's ECDFs and timeline (without chunk ticks), the two curves, the profile
}


@pytest.mark.parametrize("case", list(ENGINE_DAMAGE))
def test_damaged_engine_files_are_one_line_each(engine_root, tmp_path, case):
    damage, charts = ENGINE_DAMAGE[case]
    run = tmp_path / "root" / "fid" / "fid-0001"
    shutil.copytree(engine_root["run"], run)
    for name, content, _ in damage:
        (run / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    at = _open("Engine_fidelity", tmp_path / "root")
    errors = [e.value for e in at.error]
    assert len(errors) == len(damage), errors
    for name, _, message in damage:
        assert len([e for e in errors if str(run / name) in e and message in e]) == 1, (name, errors)
    assert len(at.get("vega_lite_chart")) == charts
    counters = find(at, "num_accepted_tokens_per_pos")
    assert "ngram · high · vLLM" in set(counters["source"])


@pytest.mark.parametrize("page", ["Acceptance", "Live_ablation"])
def test_another_runs_shard_copied_in_is_left_out_with_a_warning(copy_run, runs_root, page):
    """A shard of zzz-0001 copied into demo-0001's traces/ (same method, dataset, table, another name) mixed
    its rows into the page's tau silently: it is named and left out; the run's own shards are shown."""
    root, run = copy_run
    foreign = run / "traces" / "copied__dspark__gsm8k.parquet"
    shutil.copy(runs_root["old"] / "traces" / "rounds__dspark__gsm8k__T0.parquet", foreign)
    at = _open(page, root)
    assert not at.error, [e.value for e in at.error]
    warnings = [w.value for w in at.warning if "Skipped a trace shard" in w.value]
    assert len(warnings) == 1 and str(foreign) in warnings[0], warnings
    assert "run_id 'zzz-0001', not this run's 'demo-0001'" in warnings[0]
    if page == "Acceptance":
        tau = find(at, "draft_acceptance_rate")
        gsm8k = tau[(tau["method"] == "dspark") & (tau["dataset"] == "gsm8k") & (tau["table"] == "rounds")]
        assert gsm8k["tau"].tolist() == pytest.approx([2.5])  # its own rows only (zzz's would pull it to 1.5)
