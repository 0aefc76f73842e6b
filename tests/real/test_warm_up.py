"""evaluate warms up every timed path -- plain decoding and each drafter -- at each temperature before it
measures anything (an unwarmed first path made impossible speedups on a GPU)."""
import types

from real import evaluate


def test_warm_up_runs_plain_and_every_drafter_at_the_temperature(monkeypatch):
    calls = []
    monkeypatch.setattr(evaluate, "autoregressive_decode",
                        lambda target, ids, n, temperature, gen, stop: calls.append(("ar", temperature)))
    monkeypatch.setattr(evaluate, "speculative_decode",
                        lambda target, d, ids, n, temperature, gen, stop: calls.append((d.name, temperature)))
    target = types.SimpleNamespace(device="cpu")
    drafters = [types.SimpleNamespace(name=n, block_size=4) for n in ("dspark", "ngram")]
    evaluate.warm_up(target, drafters, list(range(100)), 1.0, seed=0)
    assert calls == [("ar", 1.0), ("dspark", 1.0), ("ngram", 1.0)]
