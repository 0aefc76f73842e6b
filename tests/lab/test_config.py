"""The experiment schema: strict keys, dotted overrides re-validated, every shipped YAML validates."""
import json
from pathlib import Path

import pytest

from lab.config import apply_override, config_from_dict, load_config
from lab.errors import LabError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = {"name": "t", "prompts": {"datasets": [{"name": "humaneval"}]},
           "drafters": [{"name": "ngram", "method": "ngram"}]}


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_every_experiment_validates(path):
    cfg = load_config(path)
    assert cfg.name and cfg.stages


def test_defaults_and_run_id_are_stable():
    a, b = config_from_dict(MINIMAL), config_from_dict(MINIMAL)
    assert a.target.name == "gemma3-270m" and a.decode.temperatures == [0.0]
    assert a.resolved_run_id() == b.resolved_run_id()
    c = config_from_dict(MINIMAL, overrides=["decode.max_new_tokens=7"])
    assert c.decode.max_new_tokens == 7 and c.resolved_run_id() != a.resolved_run_id()


def test_overrides_reach_lists_and_parse_yaml_values():
    cfg = config_from_dict(MINIMAL, overrides=["drafters.0.block_size=3", "decode.temperatures=[0, 1.0]"])
    assert cfg.drafters[0].block_size == 3 and cfg.decode.temperatures == [0, 1.0]


def test_on_and_off_are_words_not_yaml_booleans():
    """YAML 1.1 reads unquoted on / off as true / false; a switch setting takes them as the words written."""
    assert config_from_dict(MINIMAL, overrides=["target.cpu_linear=on"]).target.cpu_linear == "on"
    assert config_from_dict(MINIMAL, overrides=["target.cpu_linear=off"]).target.cpu_linear == "off"
    assert config_from_dict({**MINIMAL, "target": {**MINIMAL.get("target", {}), "cpu_linear": False}}).target.cpu_linear == "off"
    with pytest.raises(LabError, match=r"target\.cpu_linear"):
        config_from_dict(MINIMAL, overrides=["target.cpu_linear=7"])


# pydantic's lax int and float read a YAML true / false as 1 / 0: `cap: true` kept one prompt, `lr: true` trained
# at 1.0; every number field of the schema refuses it, naming the field (and the item of a list)
@pytest.mark.parametrize("override, message", [
    ("prompts.datasets.0.cap=true", "prompts.datasets.0.cap: expected a number, not true"),
    ("train.max_length=yes", "train.max_length: expected a number, not true"),
    ("train.lr=false", "train.lr: expected a number, not false"),
    ("seed=true", "seed: expected a number, not true"),
    ("threads=on", "threads: expected a number or 'auto', not true"),  # int | 'auto': it said "a number" alone
    ("sim={engine: {cuda_graph_memory: true}}",
     "sim.engine.cuda_graph_memory: expected a number, 'estimate' or 'none', not true"),
    ("sim={sla: {percentile: true}}", "sim.sla.percentile: expected 50, 90 or 99, not true"),
    ("target.tap_layers=[1, false]", "target.tap_layers: expected a number, not false (item [1])"),
    ("decode.temperatures=[0, true]", "decode.temperatures: expected a number, not true (item [1])"),
    ("sim={workload: {kind: closed_loop, concurrency: true}}", "sim.workload.concurrency: expected a number, not true"),
    ("sim={sweep: {values: [1, true]}}", "sim.sweep.values: expected a number, not true (item [1])"),
    ("sim={acceptance: {datasets: {humaneval: true}}}",
     "sim.acceptance.datasets: expected a number, not true (item [humaneval])"),
])
def test_a_boolean_is_not_a_number(override, message):
    with pytest.raises(LabError) as err:
        config_from_dict(MINIMAL, overrides=[override])
    assert str(err.value).endswith(message)


# a union field none of whose members took the value: pydantic's first member alone read as though it were all that
# is allowed (`cuda_graph_memory: -1` said "Input should be 'estimate' or 'none'", at a field named
# "cuda_graph_memory.literal['estimate','none']"); every member's complaint now, at the field's own name
@pytest.mark.parametrize("override, message", [
    ("sim={engine: {cuda_graph_memory: -1}}",
     "sim.engine.cuda_graph_memory: Input should be 'estimate' or 'none', or greater than or equal to 0"),
    ("sim={engine: {cuda_graph_memory: lots}}",
     ("sim.engine.cuda_graph_memory: Input should be 'estimate' or 'none', or a valid number, unable to parse string "
      "as a number")),
    ("sim={cost: {profile: 5}}", "sim.cost.profile: Input should be a valid string, or 'run'"),
    ("threads=2.5", "threads: Value error, 2.5: expected a number of threads >= 1, or auto"),
    ("threads=[2]", "threads: Value error, [2]: expected a number of threads >= 1, or auto"),
])
def test_a_union_field_says_every_form_it_takes(override, message):
    with pytest.raises(LabError) as err:
        config_from_dict(MINIMAL, overrides=[override])
    assert str(err.value).endswith(message)


def test_booleans_still_reach_boolean_fields():
    """Boolean fields (plain and optional) and on / off switches take true / false as before."""
    cfg = config_from_dict(MINIMAL, overrides=["decode.baseline=false", "prompts.chat_template=no",
                                               "drafters.0.confidence_head=off", "train.autocast=off",
                                               "sim={engine: {enable_chunked_prefill: false}, plots: off}"])
    assert (cfg.decode.baseline, cfg.prompts.chat_template, cfg.drafters[0].confidence_head) == (False, False, False)
    assert cfg.train.autocast == "off" and cfg.sim.engine.enable_chunked_prefill is False and cfg.sim.plots is False
    assert config_from_dict(MINIMAL, overrides=["prompts.datasets.0.cap=3"]).prompts.datasets[0].cap == 3


@pytest.mark.parametrize("override, fragment", [
    ("decode.max_new_tokens=-1", "decode.max_new_tokens"),
    ("decode.bogus=1", "decode.bogus: unknown key"),
    ("drafters.5.block_size=3", "not an index"),
    ("target.dtype=float8", "target.dtype"),
    ("novalue", "expected KEY.PATH=VALUE"),
])
def test_bad_overrides_name_the_field(override, fragment):
    with pytest.raises(LabError, match=fragment.replace(".", r"\.")):
        config_from_dict(MINIMAL, overrides=[override])


def test_unknown_top_level_key_and_missing_section():
    with pytest.raises(LabError, match="surprise: unknown key"):
        config_from_dict({**MINIMAL, "surprise": 1})
    with pytest.raises(LabError, match="need at least one drafter"):
        config_from_dict({k: v for k, v in MINIMAL.items() if k != "drafters"})
    with pytest.raises(LabError, match="name: required key is missing"):
        config_from_dict({k: v for k, v in MINIMAL.items() if k != "name"})
    sim_only = config_from_dict({"name": "s", "stages": ["sim"]})
    assert sim_only.prompts is None and sim_only.drafters == []
    with pytest.raises(LabError, match="needs the experiment's prompts"):
        sim_only.require_real_inputs("evaluate")


def test_apply_override_creates_missing_mappings():
    data = {"a": {"x": [1, 2]}}
    assert apply_override(data, "a.b.c=3") == {"a": {"x": [1, 2], "b": {"c": 3}}}
    assert apply_override(data, "a.x.1=5") == {"a": {"x": [1, 5]}}
    assert data == {"a": {"x": [1, 2]}}  # copy-on-write: the loaded document is never changed


def test_yaml_loader_is_libyaml_rejects_duplicates_and_keeps_merges():
    import yaml

    from lab.yaml_load import Loader, load_yaml_text

    if hasattr(yaml, "CSafeLoader"):
        assert Loader is yaml.CSafeLoader  # the pure-Python loader took 367 s on a 50 MB file
    with pytest.raises(LabError, match=r"x.yaml: duplicate key 'b' at line 3, column 3 \(first at line 2"):
        load_yaml_text("a:\n  b: 1\n  b: 2\n", "x.yaml")
    merged = load_yaml_text("base: &base {k: 1, v: 2}\nuse:\n  <<: *base\n  v: 3\n", "x.yaml")
    assert merged["use"] == {"k": 1, "v": 3}
    reused = load_yaml_text("a: &a [1, 2, 3]\nb: [*a, *a, *a]\n", "x.yaml")
    assert reused["b"] == [[1, 2, 3]] * 3
    with pytest.raises(LabError, match="YAML nested too deeply|malformed YAML"):
        load_yaml_text("[" * 100_000 + "]" * 100_000, "deep.yaml")


def test_alias_bomb_is_refused_before_it_expands():
    import time

    from lab.yaml_load import load_yaml_text

    bomb = "a: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
    start = time.perf_counter()
    with pytest.raises(LabError, match="YAML aliases expand to more than"):
        load_yaml_text(bomb, "bomb.yaml")
    assert time.perf_counter() - start < 5  # the count is memoised: no walk over 10**9 values


@pytest.mark.parametrize("field, value", [
    ("name", "../x"), ("name", ".hidden"), ("run_id", "../.."), ("run_id", "/abs"), ("run_id", "."),
    ("run_id", "a/b"), ("run_id", "a..b"), ("run_id", ""), ("drafters.0.name", "../../victim"),
    ("prompts.datasets.0.name", "x/y"), ("prepare.datasets.0.name", ".."),
])
def test_every_name_that_becomes_a_path_is_a_slug(field, value):
    data = {**MINIMAL, "prepare": {"datasets": [{"name": "ok"}]}}
    data = apply_override(data, f"{field}={json.dumps(value)}")
    with pytest.raises(LabError, match=rf"{field}: Value error, .* is not a slug"):
        config_from_dict(data)


def test_slugs_and_devices_that_are_fine():
    cfg = config_from_dict({**MINIMAL, "run_id": "run-1.v2_a", "target": {"name": "tiny-qwen3", "device": "cuda:3"}})
    assert cfg.resolved_run_id() == "run-1.v2_a"
    for device in ("cpu", "cuda", "mps"):
        assert config_from_dict({**MINIMAL, "target": {"name": "tiny-qwen3", "device": device}}).target.device == device
    for device in ("tpu", "cuda:", "cuda:-1", "CPU", "cpu "):
        with pytest.raises(LabError, match="is not a device"):
            config_from_dict({**MINIMAL, "target": {"name": "tiny-qwen3", "device": device}})


def test_threads_option_does_not_change_the_run_id():
    auto = config_from_dict(MINIMAL)
    assert auto.threads == "auto"
    assert config_from_dict({**MINIMAL, "threads": 1}).resolved_run_id() == auto.resolved_run_id()
    for bad in (0, "many"):
        with pytest.raises(LabError, match="threads: Value error, .* expected a number of threads >= 1, or auto"):
            config_from_dict({**MINIMAL, "threads": bad})


def test_engine_port_does_not_change_the_run_id():
    engine = {"loads": [{"name": "low", "prompt_tokens": 32}]}
    a = config_from_dict({**MINIMAL, "engine": {**engine, "port": 8765}})
    b = config_from_dict({**MINIMAL, "engine": {**engine, "port": 9123}})
    c = config_from_dict({**MINIMAL, "engine": {**engine, "port": 8765, "max_num_seqs": 3}})
    assert a.resolved_run_id() == b.resolved_run_id() != c.resolved_run_id()
    assert config_from_dict(MINIMAL).resolved_run_id() != a.resolved_run_id()


def test_the_default_block_layout_keeps_run_ids_from_before_the_key():
    """drafters[].block_layout: lab (the default) leaves the hash as it was without the key; vllm changes it."""
    import hashlib
    import json

    cfg = config_from_dict({**MINIMAL, "drafters": [{"name": "f", "method": "dflash"}]})
    payload = cfg.model_dump(mode="json", exclude={"run_id": True, "stages": True, "threads": True,
                                                   "engine": {"port"}})
    del payload["drafters"][0]["block_layout"]  # what the config dumped before the key existed
    before = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
    assert cfg.content_hash() == before
    vllm = config_from_dict({**MINIMAL, "drafters": [{"name": "f", "method": "dflash", "block_layout": "vllm"}]})
    assert vllm.content_hash() != before


@pytest.mark.parametrize("sweep, axis", [(None, "none"), ({"seeds": [0, 1]}, "none"), ({"values": [1, 2]}, "rate")])
def test_an_open_loop_workload_without_a_sweep_axis_runs_at_its_rate(sweep, axis):
    sim = {"workload": {"kind": "poisson", "rate": 2.0}, **({"sweep": sweep} if sweep else {})}
    cfg = config_from_dict({"name": "s", "stages": ["sim"], "sim": sim})
    assert cfg.sim.sweep.axis == axis
    closed = config_from_dict({"name": "s", "stages": ["sim"], "sim": {"workload": {"kind": "closed_loop"}}})
    assert closed.sim.sweep.axis == "concurrency"
    with pytest.raises(LabError, match="sweep.axis 'concurrency' has no concurrency to vary in a poisson workload "
                                       "without workload.max_concurrency"):
        config_from_dict({"name": "s", "stages": ["sim"], "sim": {**sim, "sweep": {"axis": "concurrency"}}})


def test_a_closed_loop_that_names_its_users_runs_at_them_unless_a_sweep_is_asked():
    """vLLM bench's --max-concurrency C is one point: the default sweep [1, 4, 16, 64] ran in its place before."""
    def axis(workload: dict, sweep: dict | None = None) -> str:
        sim = {"workload": workload, **({"sweep": sweep} if sweep is not None else {})}
        return config_from_dict({"name": "s", "stages": ["sim"], "sim": sim}).sim.sweep.axis

    assert axis({"kind": "closed_loop", "concurrency": 16}) == "none"
    assert axis({"kind": "closed_loop", "concurrency": 16}, {"seeds": [0, 1]}) == "none"
    assert axis({"kind": "closed_loop", "concurrency": 16}, {"values": [1, 8]}) == "concurrency"
    assert axis({"kind": "closed_loop", "concurrency": 16}, {"axis": "concurrency"}) == "concurrency"
    assert axis({"kind": "closed_loop"}) == "concurrency"  # no users named: the default sweep, as before


def test_bounded_runs_default_to_the_whole_run():
    """workload.max_requests (vLLM bench's --num-prompts): no warm-up, no cut, unless the YAML sets them."""
    def workload(**wl):
        return config_from_dict({"name": "s", "stages": ["sim"], "sim": {"workload": wl}}).sim.workload

    for kind in ("closed_loop", "poisson", "gamma"):
        bounded = workload(kind=kind, max_requests=50)
        assert bounded.bounded and bounded.warmup == 0.0 and bounded.duration == float("inf")
        unbounded = workload(kind=kind)
        assert not unbounded.bounded and (unbounded.warmup, unbounded.duration) == (30.0, 600.0)
    given = workload(kind="poisson", max_requests=50, warmup_s=5, duration_s=100)
    assert (given.warmup, given.duration) == (5.0, 100.0)


@pytest.mark.parametrize("written, preset", [("H100", "h100"), ("RTX PRO 6000", "rtx-pro-6000"),
                                             ("MI300X", "mi300x"), ("rtx_4090", "rtx-4090"), ("h20", "h20")])
def test_a_hardware_preset_as_the_sheet_spells_it(written, preset):
    cfg = config_from_dict({"name": "s", "stages": ["sim"], "sim": {"hardware": {"preset": written}}})
    assert cfg.sim.hardware.preset == preset
    with pytest.raises(LabError, match="hardware preset 'rtx4090' is not one of"):
        config_from_dict({"name": "s", "stages": ["sim"], "sim": {"hardware": {"preset": "rtx4090"}}})


@pytest.mark.parametrize("written, release", [("v0.9.2", "0.9.2"), ("V0.10.1", "0.10.1"), ("0.11.0", "0.11.0")])
def test_a_vllm_release_tag_reads_as_its_number(written, release):
    cfg = config_from_dict({"name": "s", "stages": ["sim"], "sim": {"engine": {"vllm_version": written}}})
    assert cfg.sim.engine.vllm_version == release


def test_a_spec_sheet_without_a_link_is_refused_over_several_gpus():
    """A hand-written spec's link defaults to none (1 GB/s): at tp 2 every all-reduce was priced on it, silently."""
    spec = {"name": "my-card", "peak_tflops": {"bf16": 100}, "mem_bw_tbs": 1.0, "mem_gib": 24}

    def hardware(**hw):
        return config_from_dict({"name": "s", "stages": ["sim"], "sim": {"hardware": {"spec": spec, **hw}}}).sim.hardware

    assert hardware(tp=1).tp == 1
    for bad in ({"tp": 2}, {"ep": 2}):
        with pytest.raises(LabError, match="hardware.spec gives none: set spec.interconnect"):
            hardware(**bad)
    link = {"kind": "pcie", "bandwidth_gbs": 25, "latency_us": 10}
    assert hardware(tp=2, interconnect=link).sheet().interconnect.kind == "pcie"
    assert config_from_dict({"name": "s", "stages": ["sim"], "sim": {"hardware": {
        "spec": {**spec, "interconnect": link}, "tp": 2}}}).sim.hardware.tp == 2


def test_a_custom_allreduce_pair_is_validated_where_a_spec_sheet_gives_it():
    """interconnect.custom_allreduce (vLLM's custom kernel below max_bytes): accepted on a P2P link, with one size
    or a size per tp; refused on a link without GPU peer-to-peer (ethernet, none) and with a size under 1 byte or
    a tp under 2, each error naming the field."""
    spec = {"name": "my-card", "peak_tflops": {"bf16": 100}, "mem_bw_tbs": 1.0, "mem_gib": 24}
    custom = {"latency_us": 10, "bandwidth_gbs": 150, "max_bytes": 8388608}

    def hardware(link):
        return config_from_dict({"name": "s", "stages": ["sim"], "sim": {"hardware": {
            "spec": {**spec, "interconnect": link}, "tp": 2}}}).sim.hardware

    nvlink = {"kind": "nvlink", "bandwidth_gbs": 100, "latency_us": 30}
    assert hardware({**nvlink, "custom_allreduce": custom}).sheet().interconnect.custom_allreduce.max_bytes == 8388608
    per_tp = hardware({**nvlink, "custom_allreduce": {**custom, "max_bytes": {2: 64 << 20, 8: 256 << 10}}})
    assert per_tp.sheet().interconnect.custom_allreduce.max_bytes == {2: 64 << 20, 8: 256 << 10}
    for link, field in (({**nvlink, "kind": "ethernet", "custom_allreduce": custom}, "custom_allreduce"),
                        ({**nvlink, "custom_allreduce": {**custom, "max_bytes": 0}}, "max_bytes"),
                        ({**nvlink, "custom_allreduce": {**custom, "max_bytes": {1: 1024}}}, "max_bytes"),
                        ({**nvlink, "custom_allreduce": {**custom, "bandwidth_gbs": 0}}, "bandwidth_gbs"),
                        ({**nvlink, "custom_allreduce": {"latency_us": 10, "bandwidth_gbs": 150}}, "max_bytes")):
        with pytest.raises(LabError, match=field):
            hardware(link)


def test_a_symmetric_memory_pair_is_validated_where_a_spec_sheet_gives_it():
    """interconnect.symm_mem_allreduce (torch symmetric memory from vLLM 0.11.0): accepted on NVLink with its
    per-tp sizes; refused on a link without NVLink multicast (PCIe), with an empty or sub-byte size table, a tp
    under 2 or a bandwidth of 0, each error naming the field."""
    spec = {"name": "my-card", "peak_tflops": {"bf16": 100}, "mem_bw_tbs": 1.0, "mem_gib": 24}
    symm = {"latency_us": 12, "bandwidth_gbs": 300, "max_bytes": {4: 32 << 20, 8: 64 << 20},
            "custom_max_bytes": {8: 256 << 10}}

    def hardware(link):
        return config_from_dict({"name": "s", "stages": ["sim"], "sim": {"hardware": {
            "spec": {**spec, "interconnect": link}, "tp": 2}}}).sim.hardware

    nvlink = {"kind": "nvlink", "bandwidth_gbs": 100, "latency_us": 30}
    sheet = hardware({**nvlink, "symm_mem_allreduce": symm}).sheet().interconnect.symm_mem_allreduce
    assert sheet.max_bytes == {4: 32 << 20, 8: 64 << 20} and sheet.custom_max_bytes == {8: 256 << 10}
    for link, field in (({**nvlink, "kind": "pcie", "symm_mem_allreduce": symm}, "symm_mem_allreduce"),
                        ({**nvlink, "symm_mem_allreduce": {**symm, "max_bytes": {}}}, "max_bytes"),
                        ({**nvlink, "symm_mem_allreduce": {**symm, "max_bytes": {8: 0}}}, "max_bytes"),
                        ({**nvlink, "symm_mem_allreduce": {**symm, "custom_max_bytes": {1: 1024}}}, "custom_max_bytes"),
                        ({**nvlink, "symm_mem_allreduce": {**symm, "bandwidth_gbs": 0}}, "bandwidth_gbs")):
        with pytest.raises(LabError, match=field):
            hardware(link)


def test_a_hub_id_as_model_config_says_to_save_its_config_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabError, match=r"'Qwen/Qwen3-8B' not found \(nothing is fetched from a model hub: save "
                                       r"https://huggingface.co/Qwen/Qwen3-8B/blob/main/config.json"):
        config_from_dict({"name": "s", "stages": ["sim"], "sim": {"model": {"config": "Qwen/Qwen3-8B"}}})
    (tmp_path / "configs").mkdir()
    with pytest.raises(LabError, match=r"'configs/x.json' not found$"):  # a local path: no hub hint
        config_from_dict({"name": "s", "stages": ["sim"], "sim": {"model": {"config": "configs/x.json"}}})


def test_a_lab_error_is_one_line():
    """A wrapped library message (pandas' CSV parser) with line breaks still prints as one `error:` line."""
    assert str(LabError("x.csv: not a readable CSV (Error tokenizing data.\n  saw 2\n)")) == \
        "x.csv: not a readable CSV (Error tokenizing data. saw 2 )"
