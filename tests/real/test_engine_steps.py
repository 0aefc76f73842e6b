"""real/engine/steps.py: vLLM's steps reconstructed from streamed chunks, priced by the simulator (fast)."""
import pandas as pd
import pytest


def two_requests():
    """(requests, chunks): a arrives at an idle engine, b while a decodes, then both decode."""
    requests = pd.DataFrame({"request_id": ["a", "b"], "arrival_s": [0.0, 0.5], "input_tokens": [100, 50],
                             "output_tokens": [4, 3]})
    chunks = pd.DataFrame({"request_id": ["a", "a", "a", "b", "a", "b", "b"],
                           "t_s": [0.4, 0.6, 0.9, 0.902, 1.1, 1.101, 1.3],
                           "output_tokens": [1, 2, 3, 1, 4, 2, 3]})
    return requests, chunks


def test_engine_steps_are_reconstructed_from_streamed_chunks_and_priced_by_the_simulator():
    """Chunks within a few ms are one engine step; a request's first chunk ends its prefill. a arrives at an
    idle engine (a prefill step from its arrival), b arrives while a decodes (a mixed step, timed from the
    step before), then both decode; the simulator prices each step at what it held."""
    from real.engine.steps import by_kind, engine_steps, price_steps

    steps = engine_steps(*two_requests())
    assert steps["kind"].tolist() == ["prefill after idle", "decode", "mixed", "decode", "decode"]
    assert steps["vllm_s"].tolist() == pytest.approx([0.4, 0.2, 0.302, 0.199, 0.199])
    assert steps["decodes"].tolist() == [0, 1, 1, 2, 1] and steps["prefill_tokens"].tolist() == [100, 0, 50, 0, 0]
    assert steps["decode_kv"].tolist() == [0, 100, 101, 102 + 50, 51]  # KV before each step
    assert steps["merged"].sum() == 0

    class Cost:  # records what each step is priced at
        def __init__(self):
            self.calls = []

        def step_time(self, tokens, kv_sum, n_reqs, spec, drafts=0, attn_ctx=None):
            self.calls.append((tokens, kv_sum, n_reqs, spec, drafts))
            return 0.1 * n_reqs

    cost = Cost()
    steps["sim_s"] = price_steps(steps, cost)
    assert cost.calls[2] == (1 + 50, 102 + 50, 2, False, 0.0)  # a's decode (KV 101 + its token) + b's prompt
    table = by_kind(steps)
    assert table.loc["mixed", "sim_over_vllm"] == pytest.approx(0.2 / 0.302)
    assert table.loc["all", "steps"] == 5
    # speculative: a row that accepted drafts drafted (k tokens at vLLM's mean length), the others share the rest
    cost.calls.clear()
    price_steps(steps.assign(accepting=[0, 1, 0, 0, 0]), cost, k=4, drafts=3, draft_tokens=12)
    drafts = [c[4] for c in cost.calls]
    assert drafts[1] == pytest.approx(4.0) and sum(drafts) == pytest.approx(12.0)


def test_steps_priced_off_the_profiles_grid_are_named_by_axis(tmp_path):
    """A 100-token prompt prefilled alone on a grid measured up to 64 query tokens: that step is extrapolated
    (query_tokens above), the decodes and the mixed step (2 rows x 25.5 tokens) lie inside."""
    from real.engine.steps import by_kind, engine_steps, price_steps, profile_reach
    from sim.cost import CostModel
    from tests.sim.conftest import make_sim
    from tests.sim.test_profile_coverage import write_profile_grid

    steps = engine_steps(*two_requests())
    profile = write_profile_grid(tmp_path, (1, 8), (1, 64), (0, 1024))
    cost = CostModel.from_config(make_sim(hardware={"preset": "rtx-4090"}, cost={"profile": str(profile)}))
    steps["sim_s"] = price_steps(steps, cost)
    steps["reach"] = profile_reach(steps, cost)
    assert steps["reach"].tolist() == ["query_tokens above", "inside", "inside", "inside", "inside"]
    table = by_kind(steps)
    assert table.loc["prefill after idle | query_tokens above", "steps"] == 1
    assert table.loc["outside the grid", "vllm_s"] == pytest.approx(0.4)
    assert table.loc["inside the grid", "steps"] == 4 and table.loc["all", "steps"] == 5


def test_steps_entry_point_refuses_what_it_cannot_read(tmp_path, capsys):
    """Not a run directory, or a run recorded before chunks were kept: one error line, exit 2."""
    import yaml

    from real.engine.steps import main

    assert main([str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "name": "old", "stages": ["engine", "fidelity"],
        "engine": {"variants": [{"name": "nospec"}], "loads": [{"name": "low"}]}}))
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "chunks.parquet: missing" in err and err.count("\n") == 1
