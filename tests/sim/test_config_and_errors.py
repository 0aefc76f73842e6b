"""Bad sim configs give one-line LabErrors naming the field (exit code 2 through the CLI)."""
import pytest

from lab.config import config_from_dict
from lab.errors import LabError
from sim.simulate import prepare_inputs
from tests.sim.conftest import make_sim

BASE = {"name": "t", "prompts": {"datasets": [{"name": "gsm8k"}]},
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
    ({"workload": {"lengths": {"source": "csv"}}}, "sim.workload.lengths"),
    ({"acceptance": {"source": "traces"}}, "sim.acceptance"),
    ({"acceptance": {"parametric": {"kind": "curve"}}}, "sim.acceptance.parametric"),
    ({"acceptance": {"parametric": {"alpha": 1.5}}}, "sim.acceptance.parametric.alpha"),
    ({"hardware": {"name": "tpu9"}}, "sim.hardware"),
    ({"cost": {"cuda_graph_buckets": [8, 4]}}, "sim.cost"),
    ({"sweep": {"values": []}}, "sim.sweep"),
    ({"sla": {"percentile": 75}}, "sim.sla.percentile"),
    ({"workload": {"kind": "poisson"}, "sweep": {"axis": "concurrency"}}, "sim"),
    ({"sweep": {"axis": "rate"}}, "sim"),
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
    with pytest.raises(LabError, match="does not fit"):
        from sim.simulate import simulate

        simulate(prepare_inputs(make_sim(model={"name": "qwen3-32b"}, hardware={"name": "a100-80g"},
                                         batching={"gpu_mem_util": 0.5})), "ar")
    corrupt = tmp_path / "c.parquet"
    corrupt.write_bytes(b"not parquet")
    with pytest.raises(LabError, match="not a readable Parquet"):
        prepare_inputs(make_sim(acceptance={"source": "traces", "paths": [str(corrupt)]}))


def test_trace_method_errors(trace_dir):
    with pytest.raises(LabError, match="eagle3"):
        prepare_inputs(make_sim(acceptance={"source": "traces", "paths": [str(trace_dir)], "method": "eagle3"}))
