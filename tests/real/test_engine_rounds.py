"""engine.rounds: the profile and the loads measured several times, interleaved, and compared as means
(real/engine/rounds.py; fast: the fake engine, no vLLM)."""
import json

import numpy as np
import pandas as pd
import pytest

from lab.config import config_from_dict
from lab.errors import LabError
from real.engine.loadgen import RandomTokens, plan_requests
from real.engine.rounds import aggregate_rounds, combine_profiles, load_dirs
from sim.step_profile import read_profile, write_profile

META = {"source": "vllm", "model": "fake", "dtype": "float32", "device": "cpu", "hardware": "test",
        "cpu_capability": None, "threads": 1, "versions": {}, "created": "2026-01-01T00:00:00Z"}


def _profile(tmp_path, name, steps):
    rows = [{"batch": b, "query_tokens": q, "context_len": 0, "step_ms": s, "step_ms_p90": s * 1.1, "repeats": 2}
            for (b, q), s in zip([(1, 1), (1, 8), (2, 1), (2, 8)], steps)]
    return write_profile(tmp_path / name, rows, META)


def test_combined_profile_is_the_per_point_median_of_the_rounds(tmp_path):
    paths = [_profile(tmp_path, f"r{k}", steps) for k, steps in
             enumerate([[10, 50, 12, 90], [20, 40, 13, 80], [15, 60, 30, 85]])]
    out = combine_profiles(paths, tmp_path / "combined")
    combined = read_profile(out).frame().sort_values(["batch", "query_tokens"])
    assert combined["step_ms"].tolist() == [15, 50, 13, 85]
    assert combined["repeats"].tolist() == [6, 6, 6, 6]
    meta = json.loads((tmp_path / "combined" / "step_profile.json").read_text())
    assert meta["round_spread_max"] == pytest.approx(30 / 12, rel=1e-3) and meta["round_spread_max_point"] == [2, 1, 0]
    assert len(meta["rounds"]) == 3


def test_rounds_on_different_grids_are_refused(tmp_path):
    first = _profile(tmp_path, "a", [1, 2, 3, 4])
    rows = [{"batch": 1, "query_tokens": 1, "context_len": 0, "step_ms": 1.0, "step_ms_p90": 1.0, "repeats": 1}]
    other = write_profile(tmp_path / "b", rows, META)
    with pytest.raises(LabError, match="grid differs"):
        combine_profiles([first, other], tmp_path / "c")


def test_aggregate_is_the_error_between_means_with_the_engines_spread():
    tables = [pd.DataFrame({"metric": ["tpot_mean_ms", "ttft_mean_s"], "sim": [100.0, 1.0], "log": [l, 2.0],
                            "rel_error": [100 / l - 1, -0.5]}) for l in (90.0, 110.0)]
    table = aggregate_rounds(tables).set_index("metric")
    assert table.loc["tpot_mean_ms", "log"] == 100 and table.loc["tpot_mean_ms", "rel_error"] == 0
    assert table.loc["tpot_mean_ms", "log_spread"] == pytest.approx(np.std([90, 110], ddof=1) / 100)
    assert table.loc["ttft_mean_s", "log_spread"] == 0 and (table["rounds"] == 2).all()


def test_load_dirs_keep_round_zero_where_one_round_writes(tmp_path):
    assert load_dirs(tmp_path, "v", "l", 1) == [tmp_path / "v" / "l"]
    assert load_dirs(tmp_path, "v", "l", 3)[1:] == [tmp_path / "v" / "l" / "round1", tmp_path / "v" / "l" / "round2"]


def test_a_later_round_sends_the_same_arrivals_and_lengths_with_other_prompts():
    load = config_from_dict({"name": "x", "stages": ["engine"], "engine": {"loads": [
        {"name": "p", "kind": "poisson", "rate": 2, "prompt_tokens": 12, "output_tokens": 5, "max_requests": 6}]}}
    ).engine.loads[0]
    tokens = RandomTokens(5000)
    first, again, second = plan_requests(load, tokens), plan_requests(load, tokens), plan_requests(load, tokens, text_round=1)
    assert [r.prompt for r in first] == [r.prompt for r in again]  # round 0: what one round always sent
    assert [(r.arrival_s, len(r.prompt), r.max_tokens) for r in second] == [
        (r.arrival_s, len(r.prompt), r.max_tokens) for r in first]
    assert all(a.prompt != b.prompt for a, b in zip(first, second))  # not served from the prefix cache


def _two_round_experiment(name: str, venv, model, variants: list[dict], max_requests: int, **engine) -> dict:
    """An engine + fidelity experiment on the fake engine: 2 rounds, one fast Poisson load, a 2 x 2 profile grid."""
    return {"name": name, "stages": ["engine", "fidelity"],
            "engine": {"venv": str(venv), "model": str(model), "startup_timeout_s": 30, "rounds": 2, **engine,
                       "variants": variants,
                       "loads": [{"name": "low", "kind": "poisson", "rate": 50, "prompt_tokens": 6,
                                  "output_tokens": 4, "max_requests": max_requests}],
                       "step_profile": {"batches": [1, 2], "query_tokens": [1, 4], "context_lens": [0],
                                        "output_tokens": 5, "repeats": 1}}}


def test_engine_stage_with_rounds_interleaves_profiles_and_loads_and_compares_means(tmp_path, capsys):
    from tests.real.test_engine_server import fake_engine_venv, fake_model, run_engine_experiment

    venv, model = fake_engine_venv(tmp_path), fake_model(tmp_path)
    experiment = _two_round_experiment("rounds", venv, model, [{"name": "nospec"}], max_requests=4)
    status, out, _port = run_engine_experiment(tmp_path, capsys, experiment)
    assert status == 0
    engine = next((out / "rounds").iterdir()) / "engine"
    rounds = [read_profile(engine / "profile_rounds" / f"round{k}" / "step_profile.csv").frame() for k in (0, 1)]
    combined = read_profile(engine / "step_profile.csv").frame()
    assert np.allclose(combined["step_ms"], np.median([r["step_ms"] for r in rounds], axis=0))
    for folder in (engine / "nospec" / "low", engine / "nospec" / "low" / "round1"):
        assert len(pd.read_parquet(folder / "requests.parquet")) == 4
    assert pd.read_csv(engine / "summary.csv")["round"].tolist() == [0, 1]
    fidelity = pd.read_csv(engine / "fidelity.csv")
    assert (fidelity["rounds"] == 2).all() and fidelity["log_spread"].notna().all()
    assert (engine / "fidelity" / "nospec" / "low" / "round1" / "sim_requests.parquet").exists()
    assert "vLLM sd" in (engine / "fidelity.md").read_text()


def test_every_variant_profiles_its_own_server_each_round_and_prices_its_own_loads(tmp_path, capsys):
    from real.engine.fidelity import main as fidelity_main
    from tests.real.test_engine_server import fake_engine_venv, fake_model, run_engine_experiment

    venv, model = fake_engine_venv(tmp_path, "--draft-on-repeats --step-s 0.03"), fake_model(tmp_path)
    experiment = _two_round_experiment(
        "own", venv, model, [{"name": "nospec"},
                             {"name": "ngram", "speculative": {"method": "ngram", "num_speculative_tokens": 2}}],
        max_requests=3, profile_every_variant=True)
    status, out, _port = run_engine_experiment(tmp_path, capsys, experiment)
    assert status == 0
    run = next((out / "own").iterdir())
    engine = run / "engine"
    own = engine / "ngram" / "profile"
    rounds = [read_profile(own / "profile_rounds" / f"round{k}" / "step_profile.csv") for k in (0, 1)]
    combined = read_profile(own / "step_profile.csv")
    assert np.allclose(combined.frame()["step_ms"], np.median([r.frame()["step_ms"] for r in rounds], axis=0))
    assert combined.meta["server"] == "ngram"
    assert all(r.meta["spec_counters"]["num_drafts"] == 0 for r in rounds)  # random ids: nothing to draft
    assert read_profile(engine / "step_profile.csv").meta["server"] == "nospec"
    fidelity = pd.read_csv(engine / "fidelity.csv")
    priced = fidelity.drop_duplicates("variant").set_index("variant")["priced_by"].to_dict()
    assert priced == {"nospec": ".", "ngram": "ngram/profile"}
    assert "ngram priced by its own server" in (engine / "fidelity.md").read_text()
    # the A/B on the same recording: every variant priced by the first server's profile
    assert fidelity_main([str(run), "--out", str(tmp_path / "first"), "--profiles", "first"]) == 0
    first = pd.read_csv(tmp_path / "first" / "fidelity.csv")
    assert set(first["priced_by"]) == {"."}
    assert "ngram priced by the first variant" in (tmp_path / "first" / "fidelity.md").read_text()
    # ... and every round's log by the profile its own server measured in that round
    assert fidelity_main([str(run), "--out", str(tmp_path / "round"), "--profiles", "round"]) == 0
    by_round = pd.read_csv(tmp_path / "round" / "fidelity.csv")
    assert set(by_round["priced_by"]) == {"./profile_rounds/round<k>", "ngram/profile/profile_rounds/round<k>"}
    assert "engine/ngram/profile/profile_rounds/round<k>/step_profile.csv" in (tmp_path / "round" / "fidelity.md").read_text()


def test_round_profile_is_that_rounds_own_else_the_median(tmp_path):
    from real.engine.fidelity import round_profile

    median = tmp_path / "step_profile.csv"
    own = tmp_path / "profile_rounds" / "round1" / "step_profile.csv"
    own.parent.mkdir(parents=True)
    own.write_text("x")
    assert round_profile(median, 1) == own
    assert round_profile(median, 2) == median  # a run that kept no such round's profile


def test_a_speculative_server_is_profiled_on_the_runs_text_or_on_random_tokens(tmp_path):
    from real.engine.loadgen import TextTokens
    from real.engine.stage import _profile_tokens

    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"vocab_size": 500}}))
    text = TextTokens(list(range(40)) * 3)
    cfg = config_from_dict({"name": "x", "stages": ["engine"], "engine": {"variants": [
        {"name": "nospec"}, {"name": "ngram", "speculative": {"method": "ngram"}}]}})
    nospec, ngram = cfg.engine.variants
    assert _profile_tokens(text, nospec, tmp_path) is text
    assert cfg.engine.speculative_profile_prompts == "text"
    assert _profile_tokens(text, ngram, tmp_path, cfg.engine.speculative_profile_prompts) is text
    assert _profile_tokens(text, nospec, tmp_path, "random") is text  # a plain server: always the run's prompts
    drawn = _profile_tokens(text, ngram, tmp_path, "random")
    assert isinstance(drawn, RandomTokens) and drawn.high == 500


def test_profile_every_variant_needs_a_step_profile():
    with pytest.raises(Exception, match="profile_every_variant: needs engine.step_profile"):
        config_from_dict({"name": "x", "stages": ["engine"], "engine": {"profile_every_variant": True}})
