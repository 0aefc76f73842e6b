"""The calibrate and sim stages end to end on synthetic traces in a run directory; STS; sweeps; SLA math."""
import json

import numpy as np
import pandas as pd
import pytest

from lab.config import config_from_dict
from lab.runs import open_run
from sim.calibrate import ece, fit_sts, per_position_ece
from sim.simulate import prepare_inputs
from sim.sweep import run_sweep, sla_table, throughput_at
from tests.sim.conftest import make_sim


def test_sts_recovers_overconfidence():
    rng = np.random.default_rng(0)
    n, g = 20000, 4
    true = rng.beta(4, 1.5, size=(n, g))
    ok = rng.random((n, g)) < true
    accepted = np.cumprod(ok, axis=1).sum(axis=1)
    z = np.log(true / (1 - true))
    conf = 1 / (1 + np.exp(-2.5 * z))  # overconfident drafter: logits 2.5x too large
    kcap = np.full(n, g)
    temps = fit_sts(conf, kcap, accepted, np.geomspace(0.25, 4, 61), bins=20)
    assert temps[0] == pytest.approx(2.5, rel=0.15)
    before = per_position_ece(conf, kcap, accepted, np.ones(g), 20)
    after = per_position_ece(conf, kcap, accepted, temps, 20)
    assert all(a < b / 2 for a, b in zip(after, before))
    assert ece(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.0)
    assert ece(np.array([0.9, 0.9]), np.array([0, 0])) == pytest.approx(0.9)


def _experiment(tmp_path, sim):
    data = {"name": "simtest", "output_dir": str(tmp_path / "runs"), "stages": ["calibrate", "sim"],
            "prompts": {"datasets": [{"name": "gsm8k"}]}, "drafters": [{"name": "dspark", "method": "dspark"}],
            "sim": sim}
    return config_from_dict(data)


def test_calibrate_and_sim_stages_on_run_traces(tmp_path, trace_dir, capsys):
    from sim import stages

    sim = {"replicas": 1, "model": {"name": "llama-2-7b"},
           "workload": {"kind": "closed_loop", "duration_s": 15, "warmup_s": 2,
                        "lengths": {"source": "fixed", "prompt_tokens": 128, "output_tokens": 64}},
           "acceptance": {"source": "run", "method": "dspark"},
           "policies": [{"kind": "mtp", "method": "mtp"}, {"kind": "fixed_k", "k": 2}, {"kind": "prefix"}],
           "sweep": {"axis": "concurrency", "values": [1, 8], "workers": 1},
           "sla": {"tok_s_per_user": [50, 100]}}
    ctx = open_run(_experiment(tmp_path, sim), show_progress=False)
    trace_dir.rename(ctx.path("traces"))
    stages.run_calibrate(ctx)
    cal = json.loads(ctx.path("calibration.json").read_text())
    assert set(cal["methods"]) == {"dspark", "mtp"}
    assert len(cal["methods"]["dspark"]["temperatures"]) == 7
    assert ctx.path("reliability.png").stat().st_size > 1000
    capsys.readouterr()
    stages.run_sim(ctx)
    printed = capsys.readouterr().out  # the points under vLLM bench's names, on the terminal as in summary.md
    assert "As `vllm bench serve` prints them, over the requests arriving in [2, 15] s" in printed
    assert printed.count("| prefix | ") == 2 and "| Mean TPOT (ms) |" in printed
    out = ctx.path("sim")
    res = pd.read_parquet(out / "results.parquet")
    assert len(res) == 3 * 2 and set(res["policy"]) == {"mtp1", "fixed_k2", "prefix"}
    assert res.loc[res["policy"] == "prefix", "exact_replay"].all()
    sla = pd.read_csv(out / "sla.csv")
    assert set(sla["sla_tok_s_user"]) == {50, 100}
    for png in ("fig7_sla.png", "fig8_budget.png"):
        assert (out / png).stat().st_size > 1000
    text = (out / "summary.md").read_text()
    assert "calibrated" in text and "| SLA tok/s/user |" in text
    assert ctx.stage_done("sim") and ctx.stage_done("calibrate")
    mtime = (out / "results.parquet").stat().st_mtime_ns
    stages.run_sim(ctx)  # resumable: a finished stage is skipped
    assert (out / "results.parquet").stat().st_mtime_ns == mtime


def test_a_plain_servers_prediction_has_no_gains_acceptance_or_policy_plots(tmp_path):
    """`policies: [{kind: ar}]` (a vLLM server without --speculative-config, README's bench-serve example): no
    "vs mtp1" SLA table, no acceptance line and no fig7 / fig8 in summary.md and REPORT.md; sla.csv keeps its
    columns for the dashboards. Two policies without the SLA baseline say how to get the gains."""
    from lab.report import run_stage as run_report
    from sim import stages

    sim = {"hardware": {"preset": "l40s"}, "model": {"name": "llama-2-7b"},
           "workload": {"kind": "closed_loop", "concurrency": 4, "max_requests": 12,
                        "lengths": {"source": "fixed", "prompt_tokens": 64, "output_tokens": 16}},
           "acceptance": {"source": "parametric"}, "policies": [{"kind": "ar"}]}

    def run(sim, name):
        cfg = config_from_dict({"name": name, "output_dir": str(tmp_path / "runs"), "stages": ["sim", "report"],
                                "sim": sim})
        ctx = open_run(cfg, show_progress=False)
        stages.run_sim(ctx)
        run_report(ctx)
        return ctx.path("sim"), ctx.path("REPORT.md").read_text()

    out, report = run(sim, "plain")
    summary = (out / "summary.md").read_text()
    for text in (summary, report):
        assert "| ar | - | 12 |" in text  # the point, under vLLM bench's names
        assert "Acceptance:" not in text and "SLA tok/s/user" not in text and "mtp1" not in text
        assert "fig7" not in text and "fig8" not in text
    assert not (out / "fig7_sla.png").exists() and not (out / "fig8_budget.png").exists()
    sla_columns = {"sla_tok_s_user", "policy", "throughput_per_gpu", "gain_vs_baseline", "gain_vs_best_fixed_k"}
    assert sla_columns <= set(pd.read_csv(out / "sla.csv").columns)  # dashboards/data.py SLA_COLUMNS
    out, report = run({**sim, "policies": [{"kind": "ar"}, {"kind": "prefix"}]}, "nobase")
    summary = (out / "summary.md").read_text()
    assert "Acceptance: parametric" in summary and "SLA tok/s/user" not in summary
    assert "the SLA baseline mtp1 is not among the policies (set sim.sla.baseline to one of them)" in summary
    out, report = run({**sim, "policies": [{"kind": "ar"}, {"kind": "prefix"}], "sla": {"baseline": "ar"}}, "based")
    assert "| SLA tok/s/user |" in (out / "summary.md").read_text() and (out / "fig7_sla.png").exists()
    assert "![fig8_budget](sim/fig8_budget.png)" in report


def test_sim_stage_without_traces_is_a_lab_error(tmp_path):
    from lab.errors import LabError
    from sim import stages

    ctx = open_run(_experiment(tmp_path, {"acceptance": {"source": "run"}}), show_progress=False)
    with pytest.raises(LabError, match="evaluate"):
        stages.run_sim(ctx)
    with pytest.raises(LabError, match="evaluate"):
        stages.run_calibrate(ctx)


def test_parallel_sweep_matches_serial():
    sim = make_sim(acceptance={"source": "parametric", "parametric": {"concentration": 4}},
                   workload={"kind": "closed_loop", "duration_s": 8, "warmup_s": 1,
                             "lengths": {"source": "fixed", "prompt_tokens": 64, "output_tokens": 64}},
                   policies=[{"kind": "mtp"}, {"kind": "prefix"}],
                   sweep={"axis": "concurrency", "values": [2, 16], "seeds": [0, 1], "workers": 2})
    inputs = prepare_inputs(sim)
    par = run_sweep(inputs).drop(columns=["wall_s"])
    ser = run_sweep(inputs, workers=1).drop(columns=["wall_s"])
    pd.testing.assert_frame_equal(par, ser)
    assert len(par) == 8


def test_throughput_at_sla_interpolates_the_frontier():
    speed = np.array([200.0, 100.0, 50.0, 20.0])  # falling as concurrency grows
    thr = np.array([100.0, 300.0, 500.0, 600.0])
    assert throughput_at(speed, thr, 100.0) == pytest.approx(300.0)
    assert throughput_at(speed, thr, 75.0) == pytest.approx(400.0)
    assert throughput_at(speed, thr, 10.0) == pytest.approx(600.0)
    assert np.isnan(throughput_at(speed, thr, 250.0))
    rows = []
    for policy, kind, scale in (("mtp1", "mtp", 1.0), ("fixed_k3", "fixed_k", 1.5), ("prefix", "prefix", 2.0)):
        for v, s, t in zip((1, 4, 16, 64), speed, thr):
            rows.append({"policy": policy, "kind": kind, "value": v, "tpot_ms_p50": 1000 / (s * scale),
                         "throughput_per_gpu": t, "verify_per_req_step": 1.0, "tau": 2.0})
    sim = make_sim(sla={"tok_s_per_user": [150.0, 300.0]})
    table = sla_table(pd.DataFrame(rows), sim).set_index(["sla_tok_s_user", "policy"])
    # prefix doubles every point's speed: at 150 tok/s/user it reads the 75 tok/s point of the base curve
    assert table.loc[(150.0, "prefix"), "throughput_per_gpu"] == pytest.approx(400.0)
    assert table.loc[(150.0, "prefix"), "gain_vs_baseline"] == pytest.approx(400.0 / 200.0 - 1)
    assert np.isinf(table.loc[(300.0, "prefix"), "gain_vs_baseline"])  # baseline cannot reach 300


def test_ray_backend_without_ray_is_a_clear_error():
    import importlib.util

    from lab.errors import LabError

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here")
    sim = make_sim(sweep={"axis": "none", "backend": "ray"})
    with pytest.raises(LabError, match="pip install"):
        run_sweep(prepare_inputs(sim))


def test_summary_says_what_was_swept():
    from sim.sweep import summary_markdown

    sim = make_sim(workload={"kind": "closed_loop", "duration_s": 4, "warmup_s": 1,
                             "lengths": {"source": "fixed", "prompt_tokens": 32, "output_tokens": 32}})
    res = run_sweep(prepare_inputs(sim), workers=1)
    text = summary_markdown(res, sla_table(res, sim), sim, [])
    assert "one point (no sweep)" in text and "[1, 4, 16, 64]" not in text and "none" not in text
    assert "nan" not in text  # the one point's row says "-" where a sweep names its value
    swept = make_sim(workload=sim.workload.model_dump(), sweep={"axis": "concurrency", "values": [2, 16]})
    res = run_sweep(prepare_inputs(swept), workers=1)
    assert "sweep concurrency [2, 16]." in summary_markdown(res, sla_table(res, swept), swept, [])


def test_summary_names_a_config_model_by_its_config_not_the_default_preset():
    from sim.sweep import summary_markdown

    config = "real/presets/qwen3-32b.json"
    sim = make_sim(model={"name": None, "config": config}, workload={"kind": "closed_loop", "duration_s": 2, "warmup_s": 0,
                                                       "lengths": {"source": "fixed", "prompt_tokens": 32,
                                                                   "output_tokens": 8}})
    res = run_sweep(prepare_inputs(sim), workers=1)
    text = summary_markdown(res, sla_table(res, sim), sim, [])
    assert f"model {config}," in text and "qwen3-8b" not in text
    named = make_sim(model={"config": config, "name": "my-32b"})
    assert named.model.label == "my-32b" and make_sim(model={"name": "qwen3-8b"}).model.label == "qwen3-8b"


def test_policy_names_with_a_leading_underscore_keep_their_legend_entries(tmp_path, monkeypatch):
    """matplotlib leaves a label= that starts with "_" out of the legend: policies _ar and _pre had none in
    fig7_sla.png and fig8_budget.png."""
    import matplotlib.pyplot as plt

    from sim import stages

    sim = {"hardware": {"preset": "l40s"}, "model": {"name": "llama-2-7b"},
           "workload": {"kind": "closed_loop", "concurrency": 4, "max_requests": 12,
                        "lengths": {"source": "fixed", "prompt_tokens": 64, "output_tokens": 16}},
           "acceptance": {"source": "parametric"},
           "policies": [{"kind": "ar", "name": "_ar"}, {"kind": "prefix", "name": "_pre"}], "sla": {"baseline": "_ar"}}
    cfg = config_from_dict({"name": "underscore", "output_dir": str(tmp_path / "runs"), "stages": ["sim"], "sim": sim})
    figures = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (figures.append(fig), real_close(fig)))
    stages.run_sim(open_run(cfg, show_progress=False))
    legends = [[t.get_text() for t in fig.axes[0].get_legend().get_texts()] for fig in figures
               if fig is not None and fig.axes and fig.axes[0].get_legend() is not None]
    assert legends.count(["_ar", "_pre"]) == 2  # fig7 and fig8
