"""The SPS curve a policy maximises tau x SPS over (CostModel.sps_curve, its closed form RooflineSps) is the step's
price: 1 / (step_time + the autotune run() adds) at every verify length, for a dense model, a MoE and a Gated
DeltaNet hybrid, with async scheduling on and off, with and without prefill chunks -- host overlap, the hybrid's
state copies, FlashInfer's GDN prefill kernel and the one-off autotune included. The closed form stays on under
async scheduling. sim/cluster.Replica._choose hands the curve the terms its step will be charged."""
from pathlib import Path

import numpy as np
import pytest

from sim.cost import CostModel, RooflineSps
from sim.linear_attn import prefill_chunk_tokens, state_copies
from tests.sim.conftest import make_sim

CONFIGS = Path(__file__).resolve().parents[2] / "sim" / "validation" / "configs"
DENSE = {"name": "qwen3-4b"}
MOE = {"config": str(CONFIGS / "qwen3-30b-a3b.json")}
HYBRID = {"config": str(CONFIGS / "qwen3.5-9b.json")}  # dense Gated DeltaNet hybrid: 3 linear layers per full one
BATCHES = (1, 8, 64, 384)  # decoding requests r
DRAFTS = (0, 1, 3, 7)  # verify length b = r x (1 + drafts per request)
# each step's prefill: chunk token counts of the running prefills beside the decodes ((): a decode-only step)
PREFILLS = ((), (1,), (37,), (512, 1), (3000, 900))
REL = 1e-9


def _cost(model: dict, async_on: bool, hardware: str = "h200", host_us: float = 100.0, **engine) -> CostModel:
    # host_us of host work per request (the sheets: 4): at 384 requests the host floor binds under async scheduling
    return CostModel.from_config(make_sim(model=model, hardware={"name": hardware},
                                          engine={"async_scheduling": async_on, **engine},
                                          cost={"request_overhead_us": host_us}))


def _grid(cm: CostModel, mode: str | None, once_s: float = 0.0):
    """(sps_curve value, 1 / (step_time + once_s), is-closed-form, host floor binds) over the grid."""
    rows = []
    for r in BATCHES:
        for chunks in PREFILLS:
            p0 = sum(chunks)
            n_reqs = r + len(chunks)
            kv = 300.0 * r + p0
            longest, total = prefill_chunk_tokens(chunks)
            kw = {}
            if mode is not None:
                kw = {"state_copies": state_copies(r, list(chunks), True, mode), "chunk_max": longest,
                      "chunk_sum": total}
            once = once_s if longest > 1 else 0.0
            if once:
                kw["once_s"] = once
            sps = cm.sps_curve(p0, kv, n_reqs, r, **kw)
            kw.pop("once_s", None)
            b = np.array([r * (1 + d) for d in DRAFTS])
            got = np.asarray(sps(b), dtype=np.float64)
            if isinstance(sps, RooflineSps):  # its plain-Python values, at each b, the same floats
                assert [sps.values(int(x), int(x) + 1)[0] for x in b] == got.tolist()
            for x, g in zip(b.tolist(), got.tolist()):
                step = cm.step_time(x + p0, kv, n_reqs, True, x - r, **kw)
                host = n_reqs * cm.request_overhead_s
                rows.append((g, 1.0 / (step + once), isinstance(sps, RooflineSps),
                             cm.async_scheduling and step == pytest.approx(host, rel=1e-12)))
    return rows


def _check(rows):
    got = np.array([g for g, *_ in rows])
    want = np.array([w for _, w, *_ in rows])
    worst = float(np.max(np.abs(got / want - 1.0)))
    assert worst <= REL, f"sps_curve off 1 / step_time by {worst:.3g} (relative)"


@pytest.mark.parametrize("async_on", [False, True])
def test_dense_sps_is_the_step_time_in_closed_form(async_on):
    cm = _cost(DENSE, async_on)
    rows = _grid(cm, None)
    assert all(closed for *_, closed, _ in rows)  # the closed form, async scheduling or not
    _check(rows)
    assert any(binds for *_, binds in rows) == async_on  # the grid reaches the host floor under async


@pytest.mark.parametrize("async_on", [False, True])
def test_moe_sps_is_the_step_time(async_on):
    cm = _cost(MOE, async_on)
    rows = _grid(cm, None)
    assert not any(closed for *_, closed, _ in rows)  # the routed experts: step_time_vec's path
    _check(rows)
    assert any(binds for *_, binds in rows) == async_on


@pytest.mark.parametrize("mode", ["unified", "split"])
@pytest.mark.parametrize("async_on", [False, True])
def test_hybrid_sps_is_the_step_time_with_its_prefill_terms(async_on, mode):
    """On an H200 (FlashInfer's GDN prefill kernel, gdn_prefill_sms > 0): the state copies and the kernel's time
    of the step's chunks, its refunded recurrence FLOPs, in the closed form as in step_time."""
    cm = _cost(HYBRID, async_on, host_us=250.0)  # its recurrent states: a longer GPU step to reach
    assert cm._gdn_prefill and cm._t_state_copy > 0
    rows = _grid(cm, mode)
    assert all(closed for *_, closed, _ in rows)
    _check(rows)
    assert any(binds for *_, binds in rows) == async_on


@pytest.mark.parametrize("async_on", [False, True])
def test_hybrid_sps_holds_the_autotune_off_sm90(async_on):
    """On an RTX PRO 6000 at vLLM 0.17 the first chunked step also autotunes FLA's kernels (run() adds
    linear_attn_autotune_s to step_time): the curve of that step holds it; the MoE hybrid (Qwen3-Next) at tp 1
    through step_time_vec, the dense one in closed form."""
    for model, closed in ((HYBRID, True), ({"config": str(CONFIGS / "qwen3-next-80b-a3b-instruct.json")}, False)):
        cm = _cost(model, async_on, hardware="rtx-pro-6000", vllm_version="0.17.0")
        rows = _grid(cm, "unified", once_s=11.0)
        assert all(c == closed for *_, c, _ in rows)
        _check(rows)


def test_closed_form_keeps_its_floats_off_async():
    """Off async scheduling and without hybrid terms the closed form is the one it was: its host work in c, no floor,
    nothing beyond the step (so runs priced before this change choose the very same lengths)."""
    cm = _cost(DENSE, False)
    sps = cm.sps_curve(100, 50_000.0, 9, 8)
    assert (sps.h, sps.e) == (0.0, 0.0)
    on = _cost(DENSE, True).sps_curve(100, 50_000.0, 9, 8)
    assert on.h == 9 * cm.request_overhead_s and on.c == pytest.approx(sps.c - on.h, rel=1e-12)


def test_values_agree_with_the_array_curve_under_a_host_floor():
    """RooflineSps.values gives the numpy curve's floats where the host floor binds for small b and the roofline
    past it, and with the one-off seconds."""
    sps = RooflineSps(0, 1.0, 10.0, 0.5, h=14.0, e=3.0)  # floor 14 until max(b, 10) + 0.5 passes it (b = 14)
    assert sps.values(8, 17) == sps(np.arange(8, 17)).tolist()
    assert sps.values(8, 17) == [1 / 17.0] * 6 + [1 / 17.5, 1 / 18.5, 1 / 19.5]
    assert sps.values(1, 5) == [1 / 17.0] * 4  # memory-bound range: the floor


def _replica_like(lefts, mode: str, autotune_s: float, chunked: bool = True):
    """The parts of a Replica that _linear_terms reads: its running prefills (tokens left each), the mixed-step mode,
    the pending autotune, chunked prefill."""
    from types import SimpleNamespace

    from sim.cluster import Replica

    rep = SimpleNamespace(prefilling=[SimpleNamespace(left=n) for n in lefts], linear_mixed=mode,
                          autotune_s=autotune_s, chunked=chunked)
    rep._chunk = lambda need, left, r, chunks: Replica._chunk(rep, need, left, r, chunks)
    return lambda p0, r: Replica._linear_terms(rep, p0, r)


def test_choose_hands_the_curve_the_chunks_its_step_runs():
    """Replica._linear_terms: the running prefills' chunks FCFS in p0 (as _schedule_prefill), their state copies
    (a speculative step: unified copies the chunks' requests, split the prefills of more than one token), the
    longest / total chunk of more than one token, and the autotune only where a chunk runs the chunked kernel."""
    terms = _replica_like([300, 5000, 1], "unified", 11.0)
    assert terms(3000, 8) == {"state_copies": 2, "chunk_max": 2700, "chunk_sum": 3000, "once_s": 11.0}
    assert terms(5301, 8) == {"state_copies": 3, "chunk_max": 5000, "chunk_sum": 5300, "once_s": 11.0}
    split = _replica_like([300, 5000, 1], "split", 0.0)
    assert split(5301, 8) == {"state_copies": 2, "chunk_max": 5000, "chunk_sum": 5300, "once_s": 0.0}
    lone = _replica_like([1], "unified", 11.0)  # a one-token chunk: no chunked kernel, no autotune, no copy
    assert lone(1, 4) == {"state_copies": 0, "chunk_max": 0, "chunk_sum": 0, "once_s": 0.0}
    whole = _replica_like([300, 5000], "unified", 0.0, chunked=False)  # unchunked: a prompt past the budget waits
    assert whole(3000, 8) == {"state_copies": 1, "chunk_max": 300, "chunk_sum": 300, "once_s": 0.0}
