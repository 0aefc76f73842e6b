"""Async scheduling (engine.async_scheduling; vLLM's default from 0.14.0, PR 27614): the engine core's per-request
host time (cost.request_overhead_us x the step's requests) overlaps the GPU's time instead of adding to it, and the
public rows take the setting from their vLLM release (sim.vllm_versions.vllm_async_scheduling)."""
import numpy as np
import pytest

from sim.cost import CostModel
from sim.hardware import engine_with_defaults
from sim.public_check import REPO_ROOT, load_rows, row_sim_config
from sim.simulate import _cost_model
from sim.step_breakdown import HOST_TERM, decode_terms
from sim.vllm_versions import (
    ASYNC_SCHEDULING_SINCE,
    engine_async_scheduling,
    vllm_async_scheduling,
    vllm_version_defaults,
)
from tests.sim.conftest import make_sim

ROWS = REPO_ROOT / "sim" / "validation" / "public_vllm.yaml"
QWEN3_06B = str(REPO_ROOT / "real/presets/qwen3-0.6b.json")


@pytest.mark.parametrize("version, on", [
    ("0.6.0", False),  # V0
    ("0.8.5", False), ("0.9.2", False), ("0.10.2", False), ("0.11.0", False), ("0.13.0", False),  # opt-in only
    ("0.14.0", True), ("0.17.1", True), ("0.19.2rc1.dev8", True),  # the v0.14.0 release notes: on by default
    (None, True),  # a run that does not say: the current release's default, as its all2all and symm-mem all-reduce
])
def test_the_release_sets_the_default(version, on):
    assert ASYNC_SCHEDULING_SINCE == (0, 14, 0)
    assert vllm_async_scheduling(version) is on
    if version is not None:
        assert vllm_version_defaults(version)["async_scheduling"] is on


def _cost(async_scheduling: bool, **engine) -> CostModel:
    sim = make_sim(hardware={"preset": "h100"}, model={"config": QWEN3_06B},
                   engine={"async_scheduling": async_scheduling, **engine})
    return _cost_model(sim, None, lambda p: False)


def test_the_request_overhead_overlaps_the_gpu_time_under_async_scheduling():
    sync, overlap = _cost(False), _cost(True)
    assert not sync.async_scheduling and overlap.async_scheduling
    n, kv = 256, 256 * 600.0
    host = sync.step_host_s + n * sync.request_overhead_s  # the sheet's step host time + the requests' (h100: 0.66 ms)
    assert host > 0
    t_sync, t_async = sync.step_time(n, kv, n, False), overlap.step_time(n, kv, n, False)
    # the GPU's part outlasts the host's here: async hides all of it
    assert t_sync - host > host
    assert t_async == pytest.approx(t_sync - host, rel=1e-12)
    # the default (sync) prices as the cost model's own default did: the term added
    bare = CostModel(hw=sync.hw, model=sync.model)
    assert t_sync == pytest.approx(bare.step_time(n, kv, n, False), rel=1e-12)


def test_a_host_bound_step_lasts_the_host_time():
    # 1 ms per request (a what-if far above the sheets'): 256 requests' host time outlasts a 0.6B model's step
    sim = make_sim(hardware={"preset": "h100"}, model={"config": QWEN3_06B}, engine={"async_scheduling": True},
                   cost={"request_overhead_us": 1000.0})
    cm = _cost_model(sim, None, lambda p: False)
    assert cm.step_time(256, 256 * 600.0, 256, False) == pytest.approx(0.256, rel=1e-12)


def test_the_vectorised_step_agrees():
    overlap = _cost(True)
    tokens = np.array([64, 256, 1024])
    vec = overlap.step_time_vec(tokens, 64 * 600.0, 64, False)
    one = [overlap.step_time(int(t), 64 * 600.0, 64, False) for t in tokens]
    assert vec == pytest.approx(one, rel=1e-12)


def test_the_step_breakdown_adds_up_under_async_scheduling():
    overlap = _cost(True)
    terms = decode_terms(overlap, 256, 600.0)  # raises if its terms do not add up to step_time
    assert terms[HOST_TERM] == 0.0  # hidden under the GPU's time
    assert decode_terms(_cost(False), 256, 600.0)[HOST_TERM] > 0.0


def test_the_public_rows_take_it_from_their_release():
    rows = {r.id: r for r in load_rows(ROWS)}
    assert row_sim_config(rows["gpustack-h100-qwen3-14b-2k-rate-inf"]).engine.async_scheduling is False  # 0.11.0
    assert row_sim_config(rows["kvcached-h100-qwen3-0.6b-rate-inf"]).engine.async_scheduling is True  # 0.19.0
    # a source that states --async-scheduling on an older release is priced with it
    row = rows["gpustack-h100-qwen3-14b-2k-rate-inf"]
    stated = row.model_copy(update={"engine": row.engine.model_copy(update={"async_scheduling": True})})
    stated._frontend = row._frontend
    assert row_sim_config(stated).engine.async_scheduling is True


def test_a_yaml_naming_its_release_is_priced_with_that_release_s_default():
    # the cost model is built from the section as written, before engine_with_defaults fills it in: a YAML's
    # engine.vllm_version 0.15.0 without async_scheduling was priced in series (the README says the version sets it)
    def cost(hardware="h100", **engine):
        sim = make_sim(hardware={"preset": hardware}, model={"config": QWEN3_06B}, engine=engine)
        return _cost_model(sim, None, lambda p: False)

    assert cost(vllm_version="0.15.0").async_scheduling is True
    assert cost(vllm_version="0.13.0").async_scheduling is False
    assert cost().async_scheduling is True  # no release named: the current release's default
    assert engine_with_defaults(make_sim().engine, cost().hw, cost().model).async_scheduling is True
    assert cost(vllm_version="0.15.0", async_scheduling=False).async_scheduling is False  # the YAML's own word
    assert cost(vllm_version="0.11.0", async_scheduling=True).async_scheduling is True
    # the CPU backend runs no async scheduling by default (PR 31998), here and in the engine section's defaults
    assert cost("cpu", vllm_version="0.15.0").async_scheduling is False
    assert vllm_async_scheduling("0.15.0", "cpu") is False
    sim = make_sim(hardware={"preset": "cpu"}, model={"config": QWEN3_06B}, engine={"vllm_version": "0.15.0"})
    cm = _cost_model(sim, None, lambda p: False)
    assert engine_with_defaults(sim.engine, cm.hw, cm.model).async_scheduling is False


def test_the_schema_default_is_the_release_s_and_null_says_the_same():
    """The schema's default is None, "the release's default" (it read false while a run leaving the field out got
    the release's; h140): a YAML's explicit `async_scheduling: null` is priced and filled in as one that leaves it
    out, not in series."""
    from lab.config_sim import EngineSpec

    assert EngineSpec.model_fields["async_scheduling"].default is None
    for version, on in (("0.15.0", True), ("0.13.0", False), (None, True)):
        sim = make_sim(hardware={"preset": "h100"}, model={"config": QWEN3_06B},
                       engine={"vllm_version": version, "async_scheduling": None})
        cm = _cost_model(sim, None, lambda p: False)
        assert cm.async_scheduling is on
        assert engine_with_defaults(sim.engine, cm.hw, cm.model).async_scheduling is on


def test_the_sheets_step_host_time_is_in_series_without_async_scheduling_and_beside_the_gpu_with_it():
    """step_host_ms (a sheet field, default 0; session 39's byte / layer split trial fitted 0.66 ms on gpustack's vLLM
    0.11 Qwen3-8B one-user row): the engine core's host time a step beyond the per-request term. Without async
    scheduling it adds to the step; with it the step lasts the longer of GPU and host time; at 0 nothing moves."""
    sync, overlap = _cost(False), _cost(True)
    assert sync.step_host_s == 0.0  # no preset sets it
    hw = sync.hw.model_copy(update={"step_host_ms": 0.66})
    on_sync = CostModel(hw=hw, model=sync.model)
    on_async = CostModel(hw=hw, model=sync.model, async_scheduling=True)
    t_bare, t_sync, t_async = (c.step_time(1, 600.0, 1, False) for c in (sync, on_sync, on_async))
    assert t_sync - t_bare == pytest.approx(0.66e-3, rel=1e-9)
    assert t_async == pytest.approx(overlap.step_time(1, 600.0, 1, False), rel=1e-12)  # hidden beside the GPU's
    assert t_sync - t_async == pytest.approx(0.66e-3 + sync.request_overhead_s, rel=1e-9)
    # a host-bound async step lasts the host time: 0.6B at one request is ~1 ms of GPU, 5 ms of host
    slow = CostModel(hw=sync.hw.model_copy(update={"step_host_ms": 5.0}), model=sync.model, async_scheduling=True)
    assert slow.step_time(1, 600.0, 1, False) == pytest.approx(5e-3 + sync.request_overhead_s, rel=1e-12)
    # the closed-form SPS curve (sync, plain roofline) carries the same term as step_time_vec
    b = np.array([1, 8, 64])
    closed, vec = on_sync.sps_curve(0, 600.0, 1), 1.0 / on_sync.step_time_vec(b, 600.0, 1, True, b - 1)
    assert closed(b) == pytest.approx(vec, rel=1e-9)


@pytest.mark.parametrize("async_on", [False, True])
def test_step_breakdown_holds_the_sheets_step_host_time(async_on):
    """sim.step_breakdown's terms add up to step_time on a sheet with step_host_ms: its host term is the engine core's
    whole host time (CostModel.host_s), in series or what outlasts the GPU's (decode_terms raised 'the terms add up
    to ...' when it held the per-request part alone)."""
    base = _cost(async_on)
    cm = CostModel(hw=base.hw.model_copy(update={"step_host_ms": 5.0}), model=base.model, async_scheduling=async_on)
    for batch, chunk in ((1, 0), (64, 0), (8, 512)):
        terms = decode_terms(cm, batch, 600.0, chunk)  # raises unless its terms add up to step_time
        host = 5e-3 + (batch + (1 if chunk else 0)) * cm.request_overhead_s  # the chunk's request too
        if async_on:  # 5 ms of host work outlasts a 0.6B model's GPU step: the step is the host time
            assert terms["total"] == pytest.approx(host, rel=1e-12) and 0 < terms[HOST_TERM] < host
        else:
            assert terms[HOST_TERM] == pytest.approx(host, rel=1e-12)


def test_sim_bench_flag_sets_async_scheduling_or_leaves_the_release_default(tmp_path):
    """python -m sim.bench --async-scheduling on / off writes engine.async_scheduling; left out, the section does not
    set it, so the release default prices the run (no release named: on)."""
    from types import SimpleNamespace

    from sim.bench import bench_config

    trace = tmp_path / "arrivals.csv"
    trace.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,10,5\n")
    flags = {"hardware": "a100-80g", "model": "llama-2-7b", "replicas": 1, "trace": str(trace), "time_scale": 1.0,
             "alpha": 0.8, "traces": None, "policy": "prefix"}

    def engine(flag):
        return bench_config(SimpleNamespace(**flags, async_scheduling=flag), 60.0).engine

    assert (engine_async_scheduling(engine("on")), engine_async_scheduling(engine("off"))) == (True, False)
    unset = engine(None)
    assert "async_scheduling" not in unset.model_fields_set and engine_async_scheduling(unset) is True
