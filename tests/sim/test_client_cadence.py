"""sim.client_cadence: vLLM bench's TTFT / TPOT / ITL statistics and peak output throughput of a simulated run, by
hand on a three-request log; simulate(record_tokens=True) logs one chunk per decoding request and step (preempted
requests' recomputed tokens too) at the client's time and changes nothing else; the command line prints the table
or exits 2 with one line on a bad row, key or value."""
import numpy as np
import pandas as pd
import pytest

from sim import client_cadence as cc
from sim.simulate import prepare_inputs, simulate
from tests.sim.conftest import make_sim

BURST_ROW = "gpustack-h100-tp8-qwen3-235b-a22b-sharegpt-rate-inf"


def test_statistics_by_hand():
    # three requests sent at 0, 0 and 0.5 s; the third never finishes (vLLM bench counts successes only)
    requests = pd.DataFrame({"arrival_s": [0.0, 0.0, 0.5], "first_token_s": [1.0, 1.5, 2.0],
                             "finish_s": [3.0, 2.0, np.nan], "output_tokens": [3, 2, 5]})
    token_log = [(2.0, np.array([0, 1, 2])), (3.0, np.array([0, 2]))]
    stats = cc.client_stats(requests, token_log)
    # request 0: chunks at 1.0, 2.0, 3.0 (ITLs 1.0, 1.0); request 1: 1.5, 2.0 (ITL 0.5)
    assert stats["itl_mean_ms"] == pytest.approx(2500 / 3)
    assert stats["itl_median_ms"] == pytest.approx(1000.0)
    assert stats["itl_p99_ms"] == pytest.approx(np.percentile([1000.0, 1000.0, 500.0], 99))
    # chunk times 1.0, 1.5 | 2.0, 2.0 | 3.0: two in each of the first two 1-s buckets from the first send
    assert stats["peak_output_tok_s"] == 2.0
    assert stats["ttft_mean_ms"] == pytest.approx(1250.0) and stats["ttft_median_ms"] == pytest.approx(1250.0)
    # TPOT = (E2E - TTFT) / (n - 1): 1.0 s for request 0 ((3 - 1) / 2), 0.5 s for request 1
    assert stats["tpot_mean_ms"] == pytest.approx(750.0) and stats["tpot_p99_ms"] == pytest.approx(995.0)
    assert set(stats) == set(cc.STATS)
    with pytest.raises(cc.LabError, match="record_tokens"):
        cc.client_stats(requests, None)


def _burst(record_tokens, **sections):
    wl = {"kind": "closed_loop", "concurrency": 24, "max_requests": 48, "duration_s": 1000, "warmup_s": 0,
          "lengths": {"prompt_tokens": 300, "output_tokens": 40}}
    return simulate(prepare_inputs(make_sim(workload=wl, **sections)), "ar", record_tokens=record_tokens)


@pytest.mark.parametrize("sections", [{}, {"frontend": {"request_ms": 2.0, "output_token_ms": 0.5}},
                                      {"engine": {"kv_capacity_tokens": 3000}}],
                         ids=["engine", "streaming front end", "preempting"])
def test_every_later_token_is_one_chunk_at_the_clients_time(sections):
    run = _burst(True, **sections)
    plain = _burst(False, **sections)
    pd.testing.assert_frame_equal(run.requests, plain.requests)  # recording changes nothing
    assert plain.token_log is None
    if "engine" in sections:
        assert run.summary["preemptions"] > 0  # recomputed requests emit their next token when the recompute ends
    per = run.requests
    rid, t = cc.chunk_times(per, run.token_log)
    itl = cc.inter_token_latencies(rid, t)
    assert len(itl) == int((per["output_tokens"] - 1).sum())  # one chunk per token (no drafts)
    last = pd.Series(t).groupby(rid).max()
    assert last.to_numpy() == pytest.approx(per["finish_s"].to_numpy()[last.index], abs=1e-12)
    # pooled ITLs are the token-weighted TPOT: sum(E2E - TTFT) / sum(n - 1)
    weighted = float((per["finish_s"] - per["first_token_s"]).sum() / (per["output_tokens"] - 1).sum())
    assert float(itl.mean()) == pytest.approx(weighted, rel=1e-9)
    assert (itl >= 0).all()


def test_command_line(capsys):
    assert cc.main([BURST_ROW, "--set", "request_overhead_us=4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| row | ttft_mean_ms |") and BURST_ROW in out
    for argv, needle in [(["no-such-row"], "no row 'no-such-row'"),
                         ([BURST_ROW, "--set", "mfu"], "expected KEY=VALUE"),
                         ([BURST_ROW, "--set", "weights=1"], "expected KEY=VALUE"),
                         ([BURST_ROW, "--set", "mfu=fast"], "is not a number"),
                         ([BURST_ROW, "--set", "request_overhead_us=-1"],
                          "request_overhead_us: Input should be greater than or equal to 0"),
                         ([BURST_ROW, "--set", "mfu=nan"], "a finite value"),
                         # the field's own bounds: these were pydantic tracebacks (exit 1) once the row was built
                         ([BURST_ROW, "--set", "mfu=0"], "mfu: Input should be greater than 0"),
                         ([BURST_ROW, "--set", "mfu=2"], "mfu: Input should be less than or equal to 1"),
                         ([BURST_ROW, "--set", "eager_penalty=0.5"],
                          "eager_penalty: Input should be greater than or equal to 1")]:
        assert cc.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: sim.client_cadence:") and needle in err and err.count("\n") == 1
