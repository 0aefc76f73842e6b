"""Analytic checks: AR on one single-slot replica is a FIFO single-server queue.

M/D/1: identical requests -> deterministic service S; mean wait Wq = rho S / (2 (1 - rho)) (Pollaczek-Khinchine).
M/G/1 and M/M/1: output lengths from a table of exponential quantiles -> service with CV^2 ~ 1; the mean
wait matches P-K with the service moments, and the sojourn matches M/M/1's 1 / (mu - lambda).
"""
import numpy as np
import pandas as pd

from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim


def _queue_sim(tmp_path, rate, lengths, duration):
    sim = make_sim(engine={"max_num_seqs": 1, "max_num_batched_tokens": 4096},
                   workload={"kind": "poisson", "rate": rate, "duration_s": duration, "warmup_s": duration * 0.05,
                             "lengths": lengths, "drain": True, "drain_limit_s": 1e5})
    inputs = prepare_inputs(sim)
    res = simulate(inputs, "ar", None, seed=0)
    f = res.requests.sort_values("arrival_s").reset_index(drop=True)
    assert f["finish_s"].notna().all()
    # single server FIFO: service starts at max(arrival, previous finish)
    start = np.maximum(f["arrival_s"].to_numpy(), np.r_[0.0, f["finish_s"].to_numpy()[:-1]])
    service = f["finish_s"].to_numpy() - start
    wait = start - f["arrival_s"].to_numpy()
    return f, service, wait


def test_md1_pollaczek_khinchine(tmp_path):
    lengths = {"source": "fixed", "prompt_tokens": 64, "output_tokens": 4}
    # one request alone gives the deterministic service time
    _, s1, _ = _queue_sim(tmp_path, 0.001, lengths, 2000)
    S = float(np.median(s1))
    assert np.allclose(s1, S, rtol=1e-9)
    rho = 0.6
    _, service, wait = _queue_sim(tmp_path, rho / S, lengths, 20000 * S / rho)
    assert np.allclose(service, S, rtol=1e-9)
    expected = rho * S / (2 * (1 - rho))
    assert abs(wait.mean() - expected) / expected < 0.08, (wait.mean(), expected)
    # and the M/M/1 formula would be clearly wrong here (twice the wait): the test can tell them apart
    assert abs(wait.mean() - rho * S / (1 - rho)) / expected > 0.5


def test_mg1_and_mm1(tmp_path):
    n = 2000
    q = (np.arange(n) + 0.5) / n
    out = np.maximum(1, np.round(-12 * np.log(1 - q))).astype(int)  # ~exponential, mean ~12 tokens
    csv = tmp_path / "lengths.csv"
    pd.DataFrame({"num_prefill_tokens": 8, "num_decode_tokens": out}).to_csv(csv, index=False)
    lengths = {"source": "csv", "csv_path": str(csv)}
    _, s1, _ = _queue_sim(tmp_path, 0.0005, lengths, 40000)
    es = float(s1.mean())
    rho = 0.5
    f, service, wait = _queue_sim(tmp_path, rho / es, lengths, 12000 * es / rho)
    es, es2 = service.mean(), (service**2).mean()
    lam = len(f) / f["arrival_s"].max()
    pk = lam * es2 / (2 * (1 - lam * es))
    assert abs(wait.mean() - pk) / pk < 0.12, (wait.mean(), pk)
    cv2 = service.var() / es**2
    assert 0.85 < cv2 < 1.15
    sojourn = (f["finish_s"] - f["arrival_s"]).mean()
    mm1 = 1 / (1 / es - lam)
    assert abs(sojourn - mm1) / mm1 < 0.12, (sojourn, mm1)
