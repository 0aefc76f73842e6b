"""sim.bench_profile: the fit recovers the achievable fractions and overheads behind a synthetic profile."""
import numpy as np
import pytest

from sim.bench_profile import fit_sheet, machine_sheet, predict_ms
from sim.models import get_model

MACHINE = {"matmul_n": 512, "flops_per_s": 200e9, "copy_mib": 64, "copy_bytes_per_s": 20e9}


def test_fit_recovers_a_known_sheet():
    model = get_model("gemma3-270m")
    truth = machine_sheet(MACHINE, "bf16", mfu=0.4, bw_efficiency=0.6, step_overhead_ms=3.0,
                          request_overhead_us=200.0)
    b, q, c = (np.array(x) for x in zip(*[(b, q, c) for b in (1, 4, 16) for q in (1, 4, 8) for c in (128, 512)]))
    rows = {"batch": b, "query_tokens": q, "context_len": c, "step_ms": predict_ms(truth, model, b, q, c)}
    train = np.arange(len(b)) % 2 == 0
    fitted = fit_sheet(MACHINE, "bf16", model, rows, train)
    assert predict_ms(fitted, model, b, q, c) == pytest.approx(rows["step_ms"], rel=1e-3)
    plain = predict_ms(machine_sheet(MACHINE, "bf16"), model, b, q, c)
    assert np.all(plain < rows["step_ms"])  # peaks and no overheads: the plain roofline is a lower bound
