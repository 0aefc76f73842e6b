"""decode.time_budget_s: evaluate splits its budget over the groups and says how many prompts ran."""
import json
import types
from pathlib import Path

import pytest

from lab.config import load_config
from lab.report import budget_lines
from real import evaluate
from real.decode import DecodeResult

SMOKE = Path(__file__).parents[2] / "experiments" / "smoke.yaml"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(evaluate.time, "monotonic", fake.monotonic)
    return fake


def fake_group(tmp_path, monkeypatch, clock, seconds_per_prompt: float):
    cfg = load_config(SMOKE, overrides=["decode.anchors=false"])
    tokenizer = types.SimpleNamespace(batch_decode=lambda rows: [str(r[0]) for r in rows])
    target = types.SimpleNamespace(device="cpu", name="t", tokenizer=tokenizer)

    def fake_decode(*args, **kwargs):
        clock.now += seconds_per_prompt
        return DecodeResult(tokens=[1, 2], prefill_ms=1.0, decode_ms=1.0)

    monkeypatch.setattr(evaluate, "autoregressive_decode", fake_decode)
    ctx = types.SimpleNamespace(cfg=cfg, run_id="r", show_progress=False, path=lambda *p: tmp_path.joinpath(*p))
    prompts = [types.SimpleNamespace(prompt_id=f"p{i}", turns=["a prompt"]) for i in range(5)]
    return ctx, target, prompts, [[5, 6, 7]] * 5


def test_a_group_stops_before_the_prompt_that_would_overrun(tmp_path, monkeypatch, clock):
    ctx, target, prompts, encoded = fake_group(tmp_path, monkeypatch, clock, 10.0)
    deadline = clock.now + 25.0  # room for two 10 s prompts, not a third
    assert evaluate.evaluate_group(ctx, target, [], "d", prompts, encoded, 1.0, deadline) == 2
    assert evaluate.evaluate_group(ctx, target, [], "d", prompts, encoded, 1.0, clock.now - 1) == 1  # always one
    assert evaluate.evaluate_group(ctx, target, [], "d", prompts, encoded, 1.0, None) == 5


def test_the_budget_left_is_shared_by_the_groups_left(clock):
    start = clock.now
    assert evaluate.group_deadline(start, None, 3) is None
    assert evaluate.group_deadline(start, 90.0, 3) == pytest.approx(start + 30.0)
    clock.now += 60.0  # the first group took 60 of 90 s: the other two share the 30 s left
    assert evaluate.group_deadline(start, 90.0, 2) == pytest.approx(clock.now + 15.0)
    clock.now += 100.0  # overrun: no time left, the next group still decodes its first prompt
    assert evaluate.group_deadline(start, 90.0, 1) == pytest.approx(clock.now)


def test_report_says_when_the_budget_cut_prompts(tmp_path):
    ctx = types.SimpleNamespace(path=lambda *p: tmp_path.joinpath(*p))
    assert budget_lines(ctx) == []
    groups = {"a__T0": {"dataset": "a", "temperature": 0.0, "prompts": 1, "available": 3},
              "a__T1": {"dataset": "a", "temperature": 1.0, "prompts": 3, "available": 3}}
    (tmp_path / "evaluate.json").write_text(json.dumps({"time_budget_s": 300, "groups": groups}))
    text = "\n".join(budget_lines(ctx))
    assert "4 of 6 prompts" in text and "a T=0: 1/3" in text and "300" in text
    groups["a__T0"]["prompts"] = 3
    (tmp_path / "evaluate.json").write_text(json.dumps({"time_budget_s": 300, "groups": groups}))
    assert budget_lines(ctx) == []  # nothing was cut: nothing to say
