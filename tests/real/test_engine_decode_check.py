"""A plain server's decode points check that the streamed chunks show the engine's steps (real/engine/step_profile.py,
_decode_gaps; fast: the in-process fake engine and synthetic batches).

    PYTHONPATH=. python -m pytest -q tests/real/test_engine_decode_check.py
"""
import math

import numpy as np
import pytest

from lab.config_engine import StepProfileSpec
from real.engine import step_profile
from real.engine.loadgen import RandomTokens, StreamRecord
from tests.real.fake_engine import FakeEngine

TOKENS = RandomTokens(vocab_size=5000)


def _profile(batches: list[int], context_lens: list[int], output_tokens: int, repeats: int, **engine):
    """A decode-only profile of the fake engine (its options: `engine`): rows, decode_checks, the engine."""
    spec = StepProfileSpec(batches=batches, query_tokens=[1], context_lens=context_lens, output_tokens=output_tokens,
                           repeats=repeats)
    checks: list = []
    with FakeEngine(count_decode_steps=True, **engine) as fake:
        rows = step_profile.measure_step_profile(fake.base_url, spec, TOKENS, show_progress=False,
                                                 decode_checks=checks)
    return rows, checks, fake


def test_a_decode_batch_whose_chunks_came_bunched_is_sent_again():
    """A loaded API server delivered a whole batch's chunks within 0.5 ms: their gaps are ~0, not the engine's
    steps. The fake engine runs a 50 ms decode step and holds back the chunks of its first 3 decode batches (the
    warm-up, then two tries of the point's first batch) to the end; the profiler reads the engine's step count
    (8 steps) against the one step those chunks show, and sends the batch again until they agree."""
    rows, checks, engine = _profile([2], [0], output_tokens=8, repeats=2, step_s=0.05, bunch_first_batches=3)
    assert 40 < rows[0]["step_ms"] < 100  # the engine's 50 ms step (bunched gaps: well under 1 ms)
    assert engine.decode_batches == 1 + 2 + 2  # the warm-up, two bunched tries, then one batch per repeat
    assert rows[0]["repeats"] == 2 * 2 * 6  # 2 repeats x 2 requests x (7 gaps, the first dropped)
    assert checks == [{"batch": 2, "context_len": 0, "resent": 2, "unseen": 0}]


def test_a_decode_batch_whose_chunks_never_show_the_steps_is_kept_and_said(capsys):
    rows, checks, engine = _profile([1], [0], output_tokens=8, repeats=1, step_s=0.02, bunch_first_batches=100)
    assert engine.completions == 1 + step_profile.DECODE_TRIES  # the warm-up, then every try
    assert checks == [{"batch": 1, "context_len": 0, "resent": step_profile.DECODE_TRIES - 1, "unseen": 1}]
    assert rows[0]["step_ms"] < 10 and rows[0]["repeats"] == 6  # the last try's bunched gaps, as they came
    err = capsys.readouterr().err
    assert (f"a decode batch of 1 x 0 tokens ran 8 engine steps but its chunks showed 1 (delivered bunched) in each "
            f"of {step_profile.DECODE_TRIES} tries") in err


def test_a_server_whose_chunks_show_its_steps_sends_each_decode_batch_once():
    rows, checks, engine = _profile([1, 3], [0, 16], output_tokens=6, repeats=2, step_s=0.03)
    assert engine.completions == 1 + 2 * 2 * (1 + 3)  # the warm-up, then 2 repeats of every point's batch
    assert all(c["resent"] == 0 and c["unseen"] == 0 for c in checks) and len(checks) == 4
    assert all(20 < r["step_ms"] < 80 for r in rows)  # the fake's 30 ms step
    assert [r["repeats"] for r in rows] == [2 * b * 4 for b in (1, 1, 3, 3)]  # 6 tokens: 5 gaps, first dropped


@pytest.mark.parametrize("counts_steps", [True, False])
def test_decode_rows_are_the_gaps_of_the_batches_sent_where_the_chunks_agree(monkeypatch, counts_steps):
    """Where the chunks show the engine's steps (or the engine counts none), a decode row is exactly what it was
    before the check: the median and p90 of every batch's decode_gaps_ms, one batch per repeat."""
    rng = np.random.default_rng(3)
    counter = {"steps": 0.0}
    sent: list[list[StreamRecord]] = []

    async def fake_batch(client, base_url, model, prompts, max_tokens, t0=None):
        steps = 0.1 + np.cumsum(rng.uniform(0.015, 0.025, max_tokens))  # [max_tokens] the steps' ends (s)
        records = [StreamRecord(f"p{i}", len(p), 0.0, list(steps + 0.0005 * i), list(range(1, max_tokens + 1)),
                                max_tokens) for i, p in enumerate(prompts)]
        counter["steps"] += max_tokens
        sent.append(records)
        return records

    monkeypatch.setattr(step_profile, "_batch", fake_batch)
    monkeypatch.setattr(step_profile, "engine_steps", lambda url: counter["steps"] if counts_steps else math.nan)
    spec = StepProfileSpec(batches=[1, 3], query_tokens=[1], context_lens=[0, 16], output_tokens=10, repeats=2)
    rows = step_profile.measure_step_profile("http://x", spec, TOKENS, show_progress=False)
    batches = sent[1:]  # after the warm-up
    assert len(batches) == 4 * spec.repeats
    expected = []
    for i, (b, c) in enumerate([(1, 0), (1, 16), (3, 0), (3, 16)]):
        gaps = [g for records in batches[2 * i:2 * i + 2] for g in step_profile.decode_gaps_ms(records)]
        expected.append(step_profile._row(b, 1, c, gaps))
    assert rows == expected
