"""A speculative server's decode rows from its steps and the drafts they verified (real/engine/spec_rows.py;
fast: synthetic steps and the in-process fake engine)."""
import asyncio

import numpy as np
import pandas as pd
import pytest

from lab.errors import LabError
from real.engine.loadgen import StreamRecord
from real.engine.spec_rows import decode_point_steps, decode_rows
from real.engine.steps import step_gap_s, steps_agree
from sim.step_profile import axis_weights
from tests.real.fake_engine import FakeEngine

BATCHES = [1, 4, 16]
TRUE_ROWS = np.array([100.0, 110.0, 160.0])  # ms at batch 1, 4, 16 (context 128)


def _steps(batch: int, drafted: np.ndarray, rng) -> pd.DataFrame:
    """Steps of `batch` requests verifying `drafted` draft tokens each, timed as the simulator prices them
    (the true rows interpolated at batch + drafts, extended above 16) with +-2% noise."""
    rows = batch + drafted
    t = axis_weights(BATCHES, rows) @ TRUE_ROWS * rng.uniform(0.98, 1.02, len(rows))
    return pd.DataFrame({"step_ms": t, "rows": rows})


def test_decode_rows_recover_the_rows_the_drafts_hide():
    rng = np.random.default_rng(0)
    points = {(1, 128): _steps(1, rng.choice([0, 0, 0, 4], 40), rng),
              (4, 128): _steps(4, rng.choice([0, 4, 8], 40), rng),
              (16, 128): _steps(16, rng.choice([0, 4, 8, 12, 16], 40), rng)}  # hardly a step without drafts
    solved = decode_rows(points, BATCHES)
    values = np.array([solved[(b, 128)][0] for b in BATCHES])
    assert np.allclose(values, TRUE_ROWS, rtol=0.02)
    raw = np.array([np.median(points[(b, 128)]["step_ms"]) for b in BATCHES])
    assert raw[2] > 1.2 * TRUE_ROWS[2]  # what the gaps' median would have said at batch 16
    assert all(solved[(b, 128)][2] == 40 for b in BATCHES)
    assert solved[(16, 128)][1] >= values[2]  # p90 of the corrected steps


def test_points_without_drafts_get_their_medians_and_contexts_are_solved_apart():
    points = {(1, 0): pd.DataFrame({"step_ms": [10.0, 11.0, 30.0], "rows": [1.0, 1.0, 1.0]}),
              (4, 0): pd.DataFrame({"step_ms": [20.0, 21.0, 22.0], "rows": [4.0, 4.0, 4.0]}),
              (1, 256): pd.DataFrame({"step_ms": [50.0, 52.0, 51.0], "rows": [1.0, 1.0, 1.0]})}
    solved = decode_rows(points, [1, 4])
    assert solved[(1, 0)][0] == pytest.approx(11.0, abs=1e-3) and solved[(4, 0)][0] == pytest.approx(21.0, abs=1e-3)
    assert solved[(1, 256)][0] == pytest.approx(51.0, abs=1e-3)


def test_a_point_without_full_decode_steps_is_refused():
    with pytest.raises(LabError, match="no decode steps of 4 requests at context 0"):
        decode_rows({(4, 0): pd.DataFrame({"step_ms": [], "rows": []})}, [4])


def test_step_gap_follows_short_steps():
    fast = [StreamRecord("a", 4, 0.0, chunk_s=[0.01 * i for i in range(6)], chunk_tokens=list(range(1, 7)))]
    slow = [StreamRecord("a", 4, 0.0, chunk_s=[0.2 * i for i in range(6)], chunk_tokens=list(range(1, 7)))]
    assert step_gap_s(fast) == pytest.approx(0.003)
    assert step_gap_s(slow) == pytest.approx(0.03)
    # chunks bunched at the end (the client saw none of the steps): the engine's step count still gives them
    bunched = [StreamRecord("a", 4, 0.0, chunk_s=[1.0 + 1e-5 * i for i in range(10)], chunk_tokens=list(range(1, 11)))]
    assert step_gap_s(bunched) < 1e-5
    assert step_gap_s(bunched, counted=10) == pytest.approx(0.03)


def test_a_batch_whose_steps_the_chunks_do_not_show_is_refused():
    assert steps_agree(10, 11) and steps_agree(30, 35) and steps_agree(3, float("nan"))
    assert not steps_agree(2, 10) and not steps_agree(30, 40)


def test_decode_point_steps_count_the_drafts_each_step_verified():
    async def run(engine):
        import httpx

        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            return await decode_point_steps(client, engine.base_url, "target", [[5, 6, 7], [8, 9, 10]], 9, k=3)

    with FakeEngine(step_s=0.03, tokens_per_step=2, k=3) as engine:  # every step: a 3-token draft, 1 accepted
        steps = asyncio.run(run(engine))
    assert len(steps) >= 2
    # each request in a step verifies a 3-token draft: 2 + 2 x 3 rows with both requests in it; on a loaded box
    # (CI beside other jobs) the second request may join the fake engine's batch a step late: 1 + 3 then
    assert set(steps["rows"]) <= {1 + 3, 2 + 2 * 3}
    assert steps["step_ms"].between(20, 200).all()


def test_a_speculative_servers_decode_points_are_sent_again_until_they_hold_enough_steps():
    from lab.config_engine import StepProfileSpec
    from real.engine.loadgen import RandomTokens
    from real.engine.step_profile import SPEC_DECODE_MAX_BATCHES, measure_step_profile

    spec = StepProfileSpec(batches=[1, 2], query_tokens=[1], context_lens=[0], output_tokens=6, repeats=1)
    steps: list = []
    with FakeEngine(step_s=0.03, tokens_per_step=2, k=3) as engine:  # 3 steps per request: few full steps
        rows = measure_step_profile(engine.base_url, spec, RandomTokens(5000), show_progress=False, speculative_k=3,
                                    spec_steps_out=steps)
        sent = engine.completions
    assert sent == 1 + SPEC_DECODE_MAX_BATCHES * (1 + 2)  # the warm-up, then every point sent 4 times
    assert [r["repeats"] for r in rows] == [len(f) for f in steps]
    # each request in a step verified a 3-token draft: batch x (1 + 3) rows; on a loaded box (CI beside other jobs)
    # a request may join the fake engine's batch a step late, so a step holds 1..batch requests' rows
    assert all(f["rows"].isin([n * (1 + 3) for n in range(1, int(f["batch"].iloc[0]) + 1)]).all() for f in steps)
    assert any(f["rows"].eq(f["batch"] * (1 + 3)).any() for f in steps if int(f["batch"].iloc[0]) > 1)


def test_a_speculative_point_whose_batches_all_came_bunched_is_said_and_refused(capsys):
    from lab.config_engine import StepProfileSpec
    from lab.errors import LabError
    from real.engine.loadgen import RandomTokens
    from real.engine.step_profile import SPEC_DECODE_MAX_BATCHES, measure_step_profile

    spec = StepProfileSpec(batches=[1], query_tokens=[1], context_lens=[0], output_tokens=8, repeats=1)
    with FakeEngine(step_s=0.02, tokens_per_step=2, k=3, count_decode_steps=True, bunch_first_batches=100) as engine, \
            pytest.raises(LabError, match="arrived bunched"):
        measure_step_profile(engine.base_url, spec, RandomTokens(5000), show_progress=False, speculative_k=3)
    err = capsys.readouterr().err
    assert (f"speculative decode point 1 x 0 tokens: {SPEC_DECODE_MAX_BATCHES} of {SPEC_DECODE_MAX_BATCHES} batches "
            "dropped") in err
