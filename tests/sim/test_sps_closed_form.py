"""The SPS curve a policy maximises tau x SPS over (CostModel.sps_curve, its closed form RooflineSps) is the step's
price: 1 / (step_time + the autotune run() adds) at every verify length, for a dense model (on an Ada sheet too,
whose compute_memory_overlap < 1 leaves the closed form), a MoE and a Gated DeltaNet hybrid, with async scheduling on and off, with and without prefill chunks -- host overlap, the hybrid's
state copies, FlashInfer's GDN prefill kernel and the one-off autotune included. The closed form stays on under
async scheduling. The replica's curve (CostModel.step_sps_curve, what sim/cluster.Replica._choose hands the policy)
is the step the replica then builds at each verify length b: the prefill chunks the budget leaves beside b tokens
(running prefills, queued admissions, the last one cut), priced with run()'s attn_ctx, the A100's padded FA2 decode
tiles (chunk_kv / chunk_reqs), state copies, GDN terms and autotune; end to end, at every speculative step's chosen
length, it is 1 / the step's seconds."""
import dataclasses
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from sim.cost import CostModel, RooflineSps
from sim.hardware import get_hardware
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
            if getattr(sps, "values", None) is not None:  # its plain-Python values, at each b, the same floats
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


@pytest.mark.parametrize("async_on", [False, True])
def test_ada_sps_charges_the_compute_the_weight_stream_leaves_unhidden(async_on):
    """The Ada sheets hide only compute_memory_overlap of the shorter of a step's compute and memory time (h132):
    RooflineSps has no such term, so the curve is step_time_vec's, 1 / step_time with the unhidden share in it."""
    cm = _cost(DENSE, async_on, hardware="rtx-4090")
    assert cm._serial > 0
    rows = _grid(cm, None)
    assert not any(closed for *_, closed, _ in rows)
    _check(rows)


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
    linear_attn_autotune_s to step_time): the curve of that step holds it, through step_time_vec for both the MoE
    hybrid (Qwen3-Next) at tp 1 and the dense one -- the latter in closed form until the card's FA2 mixed kernel
    re-read each decode's KV per query head (mixed_kv_reread, session 39 h138: a kernel after the GEMMs, no closed
    form, as on the A100)."""
    assert get_hardware("rtx-pro-6000").mixed_kv_reread
    for model, closed in ((HYBRID, False), ({"config": str(CONFIGS / "qwen3-next-80b-a3b-instruct.json")}, False)):
        cm = _cost(model, async_on, hardware="rtx-pro-6000", vllm_version="0.17.0")
        rows = _grid(cm, "unified", once_s=11.0)
        assert all(c == closed for *_, c, _ in rows)
        _check(rows)


@pytest.mark.parametrize("async_on", [False, True])
@pytest.mark.parametrize("hardware", ["a100-80g", "rtx-4090", "rtx-pro-6000"])
def test_fa2_mean_context_values_are_the_array_curve(hardware, async_on):
    """Off the closed form on a GPU roofline (the A100's GEMM-rate curve and FA2 verify tiles / KV re-reads, an Ada
    card's unhidden share), MeanContextSps.values -- step_time_vec's floats in plain Python, what the prefix policy
    reads for small batches -- is the numpy curve bit for bit over whole ranges of b, and 1 / step_time."""
    cm = _cost(DENSE, async_on, hardware=hardware)
    assert not cm._closed_sps
    rows = _grid(cm, None)  # asserts values == the array curve at each b
    _check(rows)
    for p0, kv, n, own in ((0, 900.0, 1, 1), (0, 40_000.0, 1, 1), (0, 3e6, 64, 64), (37, 5e5, 9, 8)):
        sps = cm.sps_curve(p0, kv, n, own)
        assert sps.values is not None
        lo = own
        assert sps.values(lo, lo + 600) == sps(np.arange(lo, lo + 600)).tolist()


def test_mean_context_memo_returns_the_curve_it_stored(monkeypatch):
    """MeanContextSps.values' memo (per curve and range) hands back the same floats, a fresh list each time, and
    starts over once full."""
    import sim.cost as cost_module
    monkeypatch.setattr(cost_module, "MEAN_VALUES_MEMO", 3)
    cm = _cost(DENSE, False, hardware="a100-80g")
    for kv in (900.0, 1800.0, 2700.0, 3600.0, 900.0):
        sps = cm.sps_curve(0, kv, 1, 1)
        first = sps.values(1, 9)
        first.append(0.0)  # the caller's own list
        assert sps.values(1, 9) == sps(np.arange(1, 9)).tolist()
        assert len(cm._mean_values) <= 3


def test_mean_context_values_hold_tensor_parallel_and_sliding_terms():
    """The scalar path keeps step_time_vec's all-reduces (tp 2) and a sliding-window model's capped context."""
    for model, hw, tp in ((DENSE, "a100-80g", 2), ({"config": str(CONFIGS / "gemma-3-12b-it.json")}, "a100-80g", 1)):
        cm = CostModel.from_config(make_sim(model=model, hardware={"name": hw, "tp": tp}))
        for kv, n in ((900.0, 1), (2e6, 48)):
            sps = cm.sps_curve(0, kv, n, n)
            assert sps.values(n, n + 300) == sps(np.arange(n, n + 300)).tolist()


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


# ---- the curve of the step a replica plans (CostModel.step_sps_curve, Replica._choose) -----------------------------
BUDGET = 8192  # max_num_batched_tokens
# the prefills beside the decodes, in the scheduler's order: (tokens to compute, tokens cached before, stops)
OUTLOOKS = (
    ((3000, 0, False),),  # one running prompt, whole up to b = 5192, then cut
    ((1, 700, False), (37, 0, True), (9000, 256, True)),  # a one-token chunk, a short admission, a long one cut
    ((300, 1200, False), (5000, 0, False), (2500, 4096, True)),  # three, the last whole only for small b
)
SLIDING = {"name": "gemma3-12b"}  # sliding-window layers: the mean context per request, step_time_vec's path


def _fill(left: int, outlook, chunked: bool):
    """The chunks the scheduler hands out in `left` tokens as Replica._step takes them, [(Prefill, tokens)]: the
    one fill (sim.prefill_outlook.fill, on the rule Replica._chunk shares), not restated here; its pieces are checked
    against it at every b (test_prefill_pieces_are_the_scheduler_fill_at_every_b) and it against the scheduler's
    own chunks (test_fill_is_what_the_scheduler_hands_out)."""
    from sim.cluster import Prefill
    from sim.prefill_outlook import fill

    whole, _, part = fill(left, outlook, chunked)
    chunks = [(Prefill(i, need, 0, 0, 0, i, None, done), need) for i, (need, done) in enumerate(whole)]
    if part is not None:
        done, before, need = part
        chunks.append((Prefill(len(whole), need, 0, 0, 0, len(whole), None, done), left - before))
    return chunks


def _run_step_time(cm: CostModel, r: int, decode_kv: float, b: int, outlook, chunked: bool, mixed, once_s: float):
    """1 / the seconds Replica.run charges the step Replica._step builds for r decodes verifying b tokens and the
    chunks the scheduler fits beside them (its attn_ctx, state copies, chunk keywords, the autotune)."""
    from types import SimpleNamespace

    from sim.cluster import Replica, _chunk_kw

    chunks = _fill(BUDGET - b, outlook, chunked)
    rep = SimpleNamespace(kv_dec=decode_kv, n_active=0, sum_running=0, peak_running=0, linear_mixed=mixed,
                          _decodes_wait=False)
    tokens, kv_read, n_req, spec, _, _, n_spec, _, attn, copies = Replica._step(rep, r, b - r, True, None, None,
                                                                                 chunks)
    dt = cm.step_time(tokens, kv_read, n_req, spec, n_spec, attn, state_copies=copies, **_chunk_kw(chunks))
    return 1.0 / (dt + (once_s if any(c > 1 for _, c in chunks) else 0.0))


def _verify_lengths(r: int, outlook) -> list[int]:
    """b from r: every drafts-per-request step, and each side of where a chunk is cut or dropped."""
    bs = {r * (1 + d) for d in DRAFTS}
    edge = BUDGET
    for need, _, _ in outlook:
        edge -= need
        bs |= {edge - 2, edge - 1, edge, edge + 1, edge + 2}
    bs |= {BUDGET - 1, BUDGET - 2, BUDGET - 3}
    return sorted(b for b in bs if r <= b <= BUDGET)


PLANS = [  # (model, hardware, mixed mode, engine settings, closed form expected)
    (DENSE, "a100-80g", None, {}, False),  # FA2: 64-row tiles, KV re-reads after the GEMMs, GEMMs by rows (h130)
    (DENSE, "h200", None, {}, True),
    (DENSE, "l40s", None, {}, False),  # FA2 tiles and Ada's unhidden compute (compute_memory_overlap < 1)
    (MOE, "a100-80g", None, {}, False),
    (SLIDING, "h200", None, {}, False),
    (HYBRID, "h200", "unified", {}, True),  # FlashInfer's GDN prefill kernel, state copies
    (HYBRID, "h200", "split", {}, True),
    # + the first chunked step's autotune; FA2's per-head KV re-reads there (mixed_kv_reread, h138): no closed form
    (HYBRID, "rtx-pro-6000", "unified", {"vllm_version": "0.17.0"}, False),
]


@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("async_on", [False, True])
@pytest.mark.parametrize("plan", PLANS, ids=lambda p: f"{p[1]}-{next(iter(p[0].values())).split('/')[-1]}-{p[2]}")
def test_plan_curve_is_the_step_run_prices(plan, async_on, chunked):
    """At every verify length b the curve is 1 / (step_time + autotune) of the step the replica builds: the
    decodes' b tokens first, then the prefill chunks in the budget left (fewer as b grows, the last one cut), priced
    with run()'s attn_ctx, chunk_kv / chunk_reqs (the A100's padded decode tiles), state copies and GDN terms."""
    model, hardware, mixed, engine, closed = plan
    cm = _cost(model, async_on, hardware=hardware, host_us=250.0 if mixed else 100.0, **engine)
    once = 11.0 if engine else 0.0
    for r in BATCHES:
        for outlook in OUTLOOKS:
            decode_kv = 300.0 * r
            sps = cm.step_sps_curve(r, decode_kv, list(outlook), BUDGET, chunked, mixed, once)
            assert (type(sps).__name__ == "PiecewiseSps") == closed
            bs = _verify_lengths(r, outlook)
            got = np.asarray(sps(np.array(bs)), dtype=np.float64)
            one_by_one = [sps.values(b, b + 1)[0] for b in bs]
            run = [sps.values(bs[0], bs[-1] + 1)[b - bs[0]] for b in bs]
            want = np.array([_run_step_time(cm, r, decode_kv, b, outlook, chunked, mixed, once) for b in bs])
            for curve in (got, np.array(one_by_one), np.array(run)):
                worst = float(np.max(np.abs(curve / want - 1.0)))
                assert worst <= REL, f"r {r}, {outlook}: off 1 / step_time by {worst:.3g}"


def test_a100_curve_holds_the_padded_decode_tiles_and_the_chunks_context():
    """On an A100 (FA2's 64-row tiles, mixed_decode_rows) the mean-context curve misses what a prefill chunk beside
    long decodes costs: the decodes' padded tiles, the chunk's own causal context instead of the decodes' mean.
    The step's curve holds them, and the prefill it prices shrinks as b grows (tokens stay at the budget)."""
    cm = _cost(DENSE, False, hardware="a100-80g")
    assert cm._pad_rows == 64
    r, decode_kv = 16, 16 * 20_000.0  # long decodes beside a fresh 6,000-token prompt
    outlook = [(6000, 0, True)]
    plan = cm.step_sps_curve(r, decode_kv, outlook, BUDGET)
    b = np.array([r, 2 * r, 4 * r, 8 * r])
    want = [_run_step_time(cm, r, decode_kv, int(x), outlook, True, None, 0.0) for x in b]
    assert np.allclose(plan(b), want, rtol=REL, atol=0)
    mean = cm.sps_curve(6000, decode_kv + 6000, r + 1, r)  # the old curve: every token at the mean context
    assert np.all(np.abs(mean(b) / plan(b) - 1) > 0.05)
    before = dataclasses.replace(cm, mixed_decode_rows=0)  # no FA2 tiles: what run() paid before h125
    no_tile = [1.0 / before.step_time(int(x) + 6000, decode_kv + 6000, r + 1, True, int(x) - r,
                                      decode_kv * x / r + 6000 * 6001 / 2) for x in b]
    assert np.all(plan(b) < np.array(no_tile) * 0.95)


def test_prefill_pieces_are_the_scheduler_fill_at_every_b():
    """sim/prefill_outlook.prefill_pieces: at every b the piece's chunks are what the scheduler hands out in
    budget - b tokens (chunked and not), for random prefill lists."""
    from sim.prefill_outlook import prefill_pieces

    rng = np.random.default_rng(7)
    budget = 600
    for _ in range(200):
        outlook = [(int(rng.integers(1, 300)), int(rng.integers(0, 50)), bool(rng.integers(0, 2)))
                   for _ in range(int(rng.integers(1, 6)))]
        for chunked in (True, False):
            r = int(rng.integers(1, 40))
            pieces = prefill_pieces(outlook, budget, chunked, r)
            assert pieces[0].lo == -np.inf and pieces[-1].hi == np.inf
            assert all(a.hi == b.lo for a, b in pairwise(pieces))
            for b in range(r, budget + 2):
                p = next(p for p in pieces if p.lo < b <= p.hi)
                chunks = [(item.done, c) for item, c in _fill(budget - b, outlook, chunked)]
                got = [(done, c) for c, done in p.whole]
                if p.part_top is not None:
                    got.append((p.part_done, p.part_top - b))
                    assert p.part_big == (p.part_top - b > 1)
                assert got == chunks


def _scheduler_chunks(left: int, running, queued, chunked: bool, r: int = 1):
    """[(done, tokens)] Replica._schedule_prefill itself hands out in `left` tokens beside r decodes: `running`
    prefills [(tokens to compute, done)], then the queue's requests [(tokens to compute, cached prefix)], with KV,
    sequence slots and prefix lookups that never refuse (fill's outlook holds only what they would admit)."""
    from collections import deque
    from types import SimpleNamespace

    from sim.cluster import Prefill, Replica

    prompts = [need + hit for need, hit in queued]
    kv = SimpleNamespace(paged=True, grow=lambda held, *_: held + 1, fits_ever=lambda _: True,
                         lookup=lambda chain, todo: queued[chain[0][0]][1], admit=lambda *_a: 1)
    req = SimpleNamespace(prompt_len=np.array(prompts, dtype=np.int64), output_len=np.full(len(queued), 10),
                          replica=np.zeros(len(queued), dtype=np.int64))
    cl = SimpleNamespace(req=req, disaggregated=False, acceptance_slot=lambda rid: (0, 0, None))
    rep = SimpleNamespace(kv=kv, cl=cl, chunked=chunked, queue=deque(range(len(queued))), resume={}, n_active=0,
                          max_seqs=10**6, lookahead=0, idx=0, _preempted=False, _adm=0,
                          prefilling=[Prefill(-1 - i, need, 0, 0, 0, i, None, done)
                                      for i, (need, done) in enumerate(running)])
    for name in ("_chunk", "_admit", "_next_adm"):
        setattr(rep, name, getattr(Replica, name).__get__(rep))
    return [(item.done, c) for item, c in Replica._schedule_prefill(rep, left, r)]


def test_fill_is_what_the_scheduler_hands_out():
    """sim/prefill_outlook.fill on an outlook (running prefills, then queued requests that stop the admissions) is
    the chunks Replica._schedule_prefill / _admit give, chunked and not, for random lists and budgets: the oracle of
    _fill and of every piece above is the scheduler itself."""
    from sim.prefill_outlook import fill

    rng = np.random.default_rng(11)
    for _ in range(300):
        running = [(int(rng.integers(1, 300)), int(rng.integers(0, 50))) for _ in range(int(rng.integers(0, 4)))]
        queued = [(int(rng.integers(1, 300)), int(rng.integers(0, 50))) for _ in range(int(rng.integers(0, 4)))]
        outlook = [(need, done, False) for need, done in running] + [(need, hit, True) for need, hit in queued]
        for chunked in (True, False):
            left = int(rng.integers(1, 700))
            whole, _, part = fill(left, outlook, chunked)
            want = [(done, need) for need, done in whole]
            if part is not None:
                want.append((part[0], left - part[1]))
            assert _scheduler_chunks(left, running, queued, chunked) == want, (left, outlook, chunked)


def _source(rng_seed: int = 0):
    """A parametric acceptance source the replica can draw from: confidences U(0.3, 0.98), accepted = a random
    prefix of each verify length."""
    from types import SimpleNamespace

    rng = np.random.default_rng(rng_seed)
    return SimpleNamespace(kind="parametric", new_request=lambda _rng: (0, 0, 100),
                           draw=lambda r, *_: (rng.uniform(0.3, 0.98, (r, 7)), None, None),
                           accept=lambda _state, lengths, _rng: rng.integers(0, np.asarray(lengths) + 1),
                           advance_by_tokens=False)


@pytest.mark.parametrize("hardware,async_on,caching", [("a100-80g", False, True), ("a100-80g", True, False),
                                                       ("h200", False, True)])
def test_choose_prices_the_step_the_replica_runs(hardware, async_on, caching):
    """End to end: a replica under the prefix policy (A100: FA2's padded tiles) with decodes, running prefills
    and queued admissions side by side; at every speculative step the curve _choose handed the policy, at the verify
    length it chose, is 1 / the seconds run() charged the step (its prefill chunks, admissions included, as the
    scheduler then fitted them; the prefix cache's hits after a preemption-free warm start)."""
    import simpy

    from sim.cluster import Cluster
    from sim.policies import make_policy

    sim = make_sim(model=DENSE, hardware={"name": hardware}, policies=[{"kind": "prefix"}],
                   engine={"async_scheduling": async_on, "max_num_batched_tokens": 2048, "max_num_seqs": 12,
                           "prefix_caching": caching})
    cm = CostModel.from_config(sim)
    env = simpy.Environment()
    cl = Cluster(env, cm, lambda: make_policy(sim.policies[0], 7), _source(), 1, sim.engine,
                 np.random.default_rng(0), kv_capacity=400_000)
    rep = cl.replicas[0]
    if caching:  # requests 0..3 ran before: their prompts' blocks are cached
        cl.warm_prefix_cache([3000, 1500, 800, 5000], [100] * 4)
    curves, checked = [], []
    choose, finish = rep._choose, rep.finish_step

    def recording_choose(dec, r):
        out = choose(dec, r)
        curves.append(rep.policy_curve)
        return out

    def checking_finish(step, dt):
        _, _, n_req, spec, _, _, n_spec, chunks, _, _ = step
        if spec:
            r = n_req - len(chunks)
            got = float(np.asarray(curves[-1](np.array([r + n_spec])))[0])
            checked.append((got * dt, bool(chunks)))
        finish(step, dt)

    policy_choose = rep.policy.choose

    def keep_curve(conf, n, budget, sps):
        rep.policy_curve = sps
        return policy_choose(conf, n, budget, sps)

    rep.policy.choose = keep_curve
    rep._choose, rep.finish_step = recording_choose, checking_finish
    rng = np.random.default_rng(1)

    def arrivals():
        for i in range(24):
            cl.submit(int([3000, 1500, 800, 5000][i] if i < 4 else rng.integers(200, 4000)), int(rng.integers(20, 120)))
            yield env.timeout(float(rng.exponential(0.08)))

    env.process(arrivals())
    env.run(until=60.0)
    assert np.isfinite(cl.req.finish[:24]).all()
    mixed = [x for x, with_chunks in checked if with_chunks]
    assert len(mixed) >= 20 and len(checked) > len(mixed)  # steps with a prefill beside the decodes, and without
    assert rep.n_preemptions == 0
    worst = max(abs(x - 1.0) for x, _ in checked)
    assert worst <= REL, f"the chosen step's SPS is off 1 / its step time by {worst:.3g}"


@pytest.mark.parametrize("async_on", [False, True])
def test_curves_carry_the_sheets_per_step_host_time(async_on):
    """A sheet's step_host_ms (host time per step, in series without async scheduling, a floor with it) is in both
    curves as step_time charges it: the mean-context sps_curve and the planned step's step_sps_curve."""
    cm = _cost(DENSE, async_on)
    cm.step_host_s = 0.7e-3
    _check(_grid(cm, None))
    model, hardware, mixed, engine, _ = PLANS[0]
    cm = _cost(model, async_on, hardware=hardware, host_us=250.0 if mixed else 100.0, **engine)
    cm.step_host_s = 0.7e-3
    once = 11.0 if engine else 0.0
    for r in BATCHES:
        for outlook in OUTLOOKS:
            sps = cm.step_sps_curve(r, 300.0 * r, list(outlook), BUDGET, True, mixed, once)
            bs = _verify_lengths(r, outlook)
            want = np.array([_run_step_time(cm, r, 300.0 * r, b, outlook, True, mixed, once) for b in bs])
            got = np.asarray(sps(np.array(bs)), dtype=np.float64)
            assert float(np.max(np.abs(got / want - 1.0))) <= REL, f"r {r}, {outlook}"
