"""Bad sim configs give one-line LabErrors naming the field (exit code 2 through the CLI)."""
import pytest

from lab.config import config_from_dict
from lab.errors import LabError
from sim.simulate import prepare_inputs
from tests.sim.conftest import make_sim

BASE = {"name": "t", "prompts": {"datasets": [{"name": "humaneval"}]},
        "drafters": [{"name": "dspark", "method": "dspark"}], "stages": ["sim"]}


def cfg(sim: dict):
    return config_from_dict({**BASE, "sim": sim}, "x.yaml")


def test_defaults_validate():
    c = cfg({})
    assert c.sim.policies[0].label() == "mtp1"
    assert LabError.exit_code == 2


@pytest.mark.parametrize("sim,field", [
    ({"replicas": 0}, "sim.replicas"),
    ({"nope": 1}, "sim.nope"),
    ({"router": "random"}, "sim.router"),
    ({"policies": [{"kind": "fixed_k"}]}, "sim.policies.0"),
    ({"policies": [{"kind": "threshold"}]}, "sim.policies.0"),
    ({"policies": [{"kind": "warp"}]}, "sim.policies.0.kind"),
    ({"policies": [{"kind": "prefix"}, {"kind": "prefix"}]}, "sim"),
    ({"workload": {"kind": "trace"}}, "sim.workload"),
    ({"workload": {"duration_s": 10, "warmup_s": 20}}, "sim.workload"),
    ({"workload": {"kind": "closed_loop", "client_seed": 0}}, "sim.workload"),
    ({"workload": {"kind": "poisson", "client_seed": -1}}, "sim.workload.client_seed"),
    ({"workload": {"lengths": {"source": "csv"}}}, "sim.workload.lengths"),
    ({"acceptance": {"source": "traces"}}, "sim.acceptance"),
    ({"acceptance": {"parametric": {"kind": "curve"}}}, "sim.acceptance.parametric"),
    ({"acceptance": {"parametric": {"alpha": 1.5}}}, "sim.acceptance.parametric.alpha"),
    ({"acceptance": {"parametric": {"draft_probability": 0}}}, "sim.acceptance.parametric.draft_probability"),
    ({"acceptance": {"assign": "sorted"}}, "sim.acceptance.assign"),
    ({"hardware": {"name": "tpu9"}}, "sim.hardware"),
    ({"cost": {"cuda_graph_buckets": [8, 4]}}, "sim.cost"),
    ({"sweep": {"values": []}}, "sim.sweep"),
    ({"sla": {"percentile": 75}}, "sim.sla.percentile"),
    ({"workload": {"kind": "poisson"}, "sweep": {"axis": "concurrency"}}, "sim"),
    ({"sweep": {"axis": "rate"}}, "sim"),
    ({"engine": {"vllm_version": 0.10}}, "sim.engine.vllm_version: Value error, 0.1 is a number: quote the release"),
    ({"engine": {"vllm_version": "banana"}}, "sim.engine.vllm_version"),
])
def test_bad_configs_name_the_field(sim, field):
    with pytest.raises(LabError) as err:
        cfg(sim)
    msg = str(err.value)
    assert msg.startswith(f"x.yaml: {field}") and "\n" not in msg


def test_missing_files_and_inconsistent_setups(tmp_path):
    with pytest.raises(LabError, match="does not exist"):
        prepare_inputs(make_sim(acceptance={"source": "traces", "paths": [str(tmp_path / "none")]}))
    with pytest.raises(LabError, match="traces.*does not exist"):
        prepare_inputs(make_sim(acceptance={"source": "run"}), run_root=tmp_path)
    with pytest.raises(LabError, match="csv_path"):
        prepare_inputs(make_sim(workload={"lengths": {"source": "csv", "csv_path": str(tmp_path / "x.csv")}}))
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(LabError, match="lacks columns"):
        prepare_inputs(make_sim(workload={"kind": "trace", "trace_path": str(bad)}, sweep={"axis": "rate"}))
    with pytest.raises(LabError, match="no KV memory"):
        from sim.simulate import simulate

        simulate(prepare_inputs(make_sim(model={"name": "qwen3-32b"}, hardware={"name": "a100-80g"},
                                         engine={"gpu_memory_utilization": 0.5})), "ar")
    corrupt = tmp_path / "c.parquet"
    corrupt.write_bytes(b"not parquet")
    with pytest.raises(LabError, match="not a readable Parquet"):
        prepare_inputs(make_sim(acceptance={"source": "traces", "paths": [str(corrupt)]}))


def test_trace_method_errors(trace_dir):
    with pytest.raises(LabError, match="eagle3"):
        prepare_inputs(make_sim(acceptance={"source": "traces", "paths": [str(trace_dir)], "method": "eagle3"}))


def test_cli_exit_code_2_on_bad_sim_config(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    data = yaml.safe_load((root / "experiments" / "fig8_budget.yaml").read_text())
    data["sim"]["policies"] = [{"kind": "fixed_k"}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    out = subprocess.run([sys.executable, "-m", "lab.cli", "validate", str(bad)], cwd=root,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "sim.policies.0" in out.stderr and "needs k" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_sim_experiments_validate():
    from pathlib import Path

    from lab.config import load_config

    root = Path(__file__).resolve().parents[2]
    for name in ("fig7_sla", "fig8_budget", "sim_azure_bench"):
        cfg = load_config(root / "experiments" / f"{name}.yaml")
        assert cfg.sim is not None and "sim" in cfg.stages


def test_engine_settings_and_the_old_batching_name():
    c = cfg({"batching": {"max_batched_tokens": 4096, "gpu_mem_util": 0.5, "chunked_prefill": False}})
    e = c.sim.engine
    assert (e.max_num_batched_tokens, e.gpu_memory_utilization, e.enable_chunked_prefill) == (4096, 0.5, False)
    assert e.kv_policy == "paged" and e.block_size == 16
    with pytest.raises(LabError, match="sim.engine.max_batched_tokens"):
        cfg({"engine": {"max_batched_tokens": 4096}})  # the new section takes vLLM's names only
    wl = cfg({}).sim.workload
    assert (wl.warmup, wl.duration) == (30.0, 600.0)
    wl = cfg({"workload": {"kind": "replay_log", "log_path": "x.parquet"}, "sweep": {"axis": "none"}}).sim.workload
    assert (wl.warmup, wl.duration) == (0.0, float("inf"))


@pytest.mark.parametrize("sim, message", [
    ({"hardware": {"preset": "cpu"}, "cost": {"profile": "run"}}, "run the profile stage first"),
    ({"workload": {"kind": "replay_log", "log_path": "engine/nospec/low/requests.parquet"}, "sweep": {"axis": "none"}},
     "sim.workload.log_path: engine/nospec/low/requests.parquet does not exist"),
    ({"acceptance": {"source": "run"}}, "sim.acceptance.source 'run': .*traces does not exist"),
])
def test_files_a_stage_before_sim_writes_into_the_run_are_left_to_the_run(tmp_path, monkeypatch, sim, message):
    """`lab run`/`lab validate` check sim inputs before the run starts; the run's own step profile, traces or
    engine log are written by earlier stages of the same run, so they are checked only when none runs first."""
    from lab.preflight import check_inputs

    monkeypatch.chdir(tmp_path)
    c = cfg(sim)
    check_inputs(c, ["evaluate", "profile", "engine", "sim"], "x.yaml")  # earlier stages write them
    with pytest.raises(LabError, match=message):
        check_inputs(c, ["sim"], "x.yaml")
    assert not (tmp_path / "runs").exists()
