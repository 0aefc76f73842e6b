"""Bad inputs: one clear error line naming the field or file, exit code 2, existing results untouched."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lab.trace import StepRecord, write_shard

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"name": "cli", "output_dir": "runs", "stages": ["evaluate"],
        "target": {"name": "tiny-qwen3", "dtype": "float32"},
        "prompts": {"datasets": [{"name": "humaneval", "cap": 1}]},
        "decode": {"max_new_tokens": 4},
        "drafters": [{"name": "ngram", "method": "ngram"}]}


def lab(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env=env, timeout=300)


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def workdir(tmp_path):
    """An experiment file plus an existing run directory with results that must survive every error."""
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD))
    run = tmp_path / "runs" / "cli" / "existing"
    write_shard([StepRecord("existing", "ngram", "t", "d", "p", "rounds", 0.0, 0, 5, 2, 1, [1.0, 0.0],
                            [1.0, 1.0])], run / "traces" / "rounds__ngram__d__T0.parquet")
    (run / "REPORT.md").write_text("# existing results\n")
    (run / "config.yaml").write_text(yaml.safe_dump({**GOOD, "run_id": "existing"}))
    (tmp_path / "garbage.parquet").write_bytes(b"PAR1 but not really")
    bad_trace = StepRecord("x", "m", "t", "d", "p", "rounds", 0.0, 0, 5, 2, 1, [1.0, 0.0], [1.0, 1.0])
    write_shard([bad_trace], tmp_path / "inconsistent.parquet")
    table = pq.read_table(tmp_path / "inconsistent.parquet")
    nulls = table.set_column(table.schema.get_field_index("accept_prob"), "accept_prob",
                             pa.array([None], pa.list_(pa.float32())))
    pq.write_table(nulls, tmp_path / "nulls.parquet")
    table = table.set_column(table.schema.get_field_index("accepted"), "accepted",
                             pa.array([3], pa.int16()))
    pq.write_table(table, tmp_path / "inconsistent.parquet")
    truncated = tmp_path / "runs" / "cli" / "trunc" / "drafters" / "dspark" / "model.safetensors"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": {\"dtype")  # cut off mid-header
    return tmp_path


def validate_with(*overrides: str):
    """The arguments of `lab validate good.yaml --set O1 --set O2 ...`, as a CASES entry builds them."""
    return lambda w: ["validate", "good.yaml", *[arg for item in overrides for arg in ("--set", item)]]


def write(workdir, name, text):
    (workdir / name).write_text(text)
    return name


def write_bytes(workdir, name, data):
    (workdir / name).write_bytes(data)
    return name


# 2 KB that expands to 10**9 strings (the probe's bomb took 110 s and then MemoryError)
ALIAS_BOMB = "name: bomb\na: &a [" + ",".join(["x"] * 10) + "]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
EMPTY_TURN = '{"turns": ["fine"]}\n{"turns": [""]}\n'


CASES = [
    ("malformed YAML", lambda w: ["validate", write(w, "m.yaml", "name: [unclosed\n")], "malformed YAML at line"),
    ("top level not a mapping", lambda w: ["validate", write(w, "l.yaml", "- 1\n- 2\n")], "top level must be a mapping"),
    ("unknown key", lambda w: ["validate", write(w, "u.yaml", yaml.safe_dump({**GOOD, "decoed": {}}))],
     "decoed: unknown key"),
    ("missing experiment file", lambda w: ["validate", "nope.yaml"], "nope.yaml: experiment file not found"),
    ("bad override type", lambda w: ["validate", "good.yaml", "--set", "decode.max_new_tokens=many"],
     "decode.max_new_tokens"),
    ("override of a missing list index", lambda w: ["validate", "good.yaml", "--set", "drafters.3.k=1"],
     "not an index"),
    ("unknown stage", lambda w: ["run", "good.yaml", "--stages", "evaluate,dance"], "unknown stage"),
    ("run id reused with another config",
     lambda w: ["run", "good.yaml", "--set", "run_id=existing", "--set", "decode.max_new_tokens=9"],
     "run_id exists with a different config"),
    ("missing model path", lambda w: ["run", "good.yaml", "--set", "target.path=/no/such/model"],
     "target.path '/no/such/model'"),
    ("missing prompt file", lambda w: ["run", "good.yaml", "--set", "prompts.datasets.0.path=missing.jsonl"],
     "missing.jsonl"),
    ("cuda asked on a CPU machine", lambda w: ["run", "good.yaml", "--set", "target.device=cuda"],
     "CUDA is not available"),
    ("unknown weights-free preset",
     lambda w: ["validate", "good.yaml", "--set", "target.name=qwen3-5b", "--set", "target.init=random"],
     "no preset for init: random"),
    ("CUDA graphs engine on a CPU target", lambda w: ["validate", "good.yaml", "--set", "target.engine=graphs"],
     "target.engine graphs needs a CUDA device"),
    ("corrupt Parquet", lambda w: ["traces", "garbage.parquet"], "not a readable Parquet trace"),
    ("inconsistent Parquet", lambda w: ["traces", "inconsistent.parquet"], "accepted=3 outside 0..k=2"),
    ("missing trace path", lambda w: ["traces", "no/such/dir"], "trace path does not exist"),
    # names that become paths are slugs (a drafter named ../../victim trained outside its run)
    ("run_id climbing out of output_dir", lambda w: ["validate", "good.yaml", "--set", "run_id=../.."],
     "run_id: Value error, '../..' is not a slug"),
    ("absolute run_id", lambda w: ["run", "good.yaml", "--set", "run_id=/tmp/elsewhere"], "'/tmp/elsewhere' is not a slug"),
    ("run_id '.'", lambda w: ["validate", "good.yaml", "--set", "run_id=."], "run_id: Value error, '.' is not a slug"),
    ("name with ..", lambda w: ["validate", "good.yaml", "--set", "name=a..b"], "name: Value error, 'a..b' is not"),
    ("drafter name with a path", lambda w: ["run", "good.yaml", "--set", "drafters.0.name=../../victim"],
     "drafters.0.name: Value error, '../../victim' is not a slug"),
    ("dataset name with a path", lambda w: ["validate", "good.yaml", "--set", "prompts.datasets.0.name=../x"],
     "prompts.datasets.0.name: Value error"),
    ("training dataset name with a path", lambda w: ["validate", "good.yaml", "--set", "prepare={datasets: [{name: a/b}]}"],
     "prepare.datasets.0.name: Value error"),
    ("policy label with a path",
     lambda w: ["validate", "good.yaml", "--set", "sim={policies: [{kind: prefix, name: ../p}]}"],
     "sim.policies.0.name: Value error"),
    # YAML that used to give tracebacks or wrong configs
    ("binary YAML", lambda w: ["validate", write_bytes(w, "b.yaml", bytes(range(256)) * 4)], "b.yaml: not a UTF-8 text file"),
    ("alias bomb YAML", lambda w: ["validate", write(w, "bomb.yaml", ALIAS_BOMB)], "bomb.yaml: YAML aliases expand"),
    ("duplicate YAML key", lambda w: ["validate", write(w, "d.yaml", "name: a\nseed: 1\nseed: 2\n")],
     "d.yaml: duplicate key 'seed' at line 3"),
    ("device that does not exist", lambda w: ["validate", "good.yaml", "--set", "target.device=tpu"],
     "target.device: 'tpu' is not a device: expected cpu, cuda, cuda:N or mps"),
    ("device with a bad index", lambda w: ["validate", "good.yaml", "--set", "target.device=cuda:x"], "is not a device"),
    ("threads below one", lambda w: ["validate", "good.yaml", "--set", "threads=0"],
     "threads: Value error, 0: expected a number of threads >= 1, or auto"),
    ("output_dir is a file", lambda w: ["run", "good.yaml", "--set", f"output_dir={write(w, 'afile', 'x')}"],
     "afile: is a file, a directory is needed here"),
    ("empty --stages", lambda w: ["run", "good.yaml", "--stages", ""], "--stages: empty"),
    ("empty --stages list", lambda w: ["run", "good.yaml", "--stages", " , "], "--stages: empty"),
    # input files checked at validate, and at run before any stage starts
    *[(f"{label} at {command}",
       lambda w, command=command, name=name, text=text: [
           command, "good.yaml", "--set", f"prompts.datasets.0.path={write(w, name, text)}"], fragment)
      for command in ("validate", "run")
      for label, name, text, fragment in [
          ("empty prompt file", "e.jsonl", "\n", "e.jsonl: no prompts in the file"),
          ("empty first turn", "t.jsonl", EMPTY_TURN, "t.jsonl:2: the first turn is empty")]],
    ("missing prompt file at validate",
     lambda w: ["validate", "good.yaml", "--set", "prompts.datasets.0.path=missing.jsonl"],
     "prompts.datasets[0].path: prompt file 'missing.jsonl' not found"),
    ("missing training prompt file at validate",
     lambda w: ["validate", "good.yaml", "--set", "prepare={datasets: [{name: own, path: missing.jsonl}]}"],
     "prepare.datasets[0].path: prompt file 'missing.jsonl' not found"),
    ("missing model path at validate", lambda w: ["validate", "good.yaml", "--set", "target.path=/no/such/model"],
     "target.path '/no/such/model': no config.json there"),
    ("null accept_prob list in a trace", lambda w: ["traces", "nulls.parquet"], "row 0 has no accept_prob list"),
    ("truncated drafter checkpoint at evaluate",
     lambda w: ["run", "good.yaml", "--stages", "evaluate", "--force", "--set", "run_id=trunc",
                "--set", "drafters.0={name: dspark, method: dspark, num_layers: 1, draft_vocab_size: 64}"],
     "drafters/dspark/model.safetensors: drafter 'dspark': unreadable checkpoint"),
    ("unknown engine", lambda w: ["engine", "setup", "sglang"], "engine 'sglang': unknown"),
    ("engine venv is a file", lambda w: ["engine", "setup", "vllm", "--device", "cpu", "--venv", "good.yaml"],
     "exists and is not a directory"),
    ("engine stage without an engine section", lambda w: ["run", "good.yaml", "--stages", "engine"],
     "stage 'engine' needs the engine: section"),
    ("fidelity stage without an engine section", lambda w: ["run", "good.yaml", "--stages", "fidelity"],
     "stage 'fidelity' needs the engine: section"),
    ("sim stage without a sim section", lambda w: ["run", "good.yaml", "--stages", "sim"],
     "stage 'sim' needs the sim: section"),
    ("engine environment missing", lambda w: ["run", "good.yaml", "--stages", "engine", "--set",
                                              "engine.venv=/no/such/venv"], "run `lab engine setup vllm`"),
    ("engine port not loopback-safe", lambda w: ["validate", "good.yaml", "--set", "engine.port=80"], "engine.port"),
    ("engine host not loopback", lambda w: ["validate", "good.yaml", "--set", "engine.host=0.0.0.0"], "engine.host"),
    ("engine drafter with a method that does not export", lambda w: [
        "validate", "good.yaml", "--set", "engine.variants=[{name: d, speculative: {method: dflash, drafter: ngram}}]"],
     "speculative.drafter: only method eagle3 exports"),
    ("engine drafter that is not an eagle3 drafter of the run", lambda w: [
        "validate", "good.yaml", "--set", "engine.variants=[{name: e, speculative: {method: eagle3, drafter: ngram}}]"],
     "speculative.drafter 'ngram' must name an eagle3 drafter of this experiment (a ngram drafter)"),
    ("engine drafter missing from the run", lambda w: [
        "validate", "good.yaml", "--set", "engine.variants=[{name: e, speculative: {method: eagle3, drafter: nope}}]"],
     "speculative.drafter 'nope' must name an eagle3 drafter of this experiment (not in drafters)"),
    ("engine drafter and model both", lambda w: [
        "validate", "good.yaml", "--set",
        "engine.variants=[{name: e, speculative: {method: eagle3, drafter: ngram, model: /m}}]"], "not both"),
    ("engine load longer than the model", lambda w: ["validate", "good.yaml", "--set",
                                                     "engine.loads=[{name: x, prompt_tokens: 4000}]"],
     "exceed max_model_len"),
    ("engine spec_step_profile not a boolean", validate_with("engine.spec_step_profile=sometimes"),
     "engine.spec_step_profile"),
    ("engine reference point off the profile grid",
     validate_with("engine.step_profile={batches: [1, 2]}", "engine.reference={points: [[3, 1, 7]]}"),
     "engine.reference.points [[3, 1, 7]]: not on engine.step_profile's grid"),
    ("engine reference without a step profile", validate_with("engine.reference={points: [[1, 1, 0]]}"),
     "engine.reference: needs engine.step_profile"),
    ("engine reference point not three numbers", validate_with("engine.reference={points: [[1, 1]]}"),
     "engine.reference.points"),
    ("unknown KV policy", lambda w: ["validate", sim_yaml(w, {"engine": {"kv_policy": "lru"}})],
     "sim.engine.kv_policy"),
    ("prefix caching not a boolean", lambda w: ["validate", sim_yaml(w, {"engine": {"prefix_caching": "sometimes"}})],
     "sim.engine.prefix_caching"),
    ("unknown engine key", lambda w: ["validate", sim_yaml(w, {"engine": {"prefix_cache": False}})],
     "sim.engine.prefix_cache"),
    ("engine given under both names", lambda w: ["validate", sim_yaml(w, {"engine": {}, "batching": {}})],
     "give sim.engine only"),
    ("draft length above max_draft", lambda w: ["validate", sim_yaml(w, {"acceptance": {
        "max_draft": 4, "parametric": {"draft_tokens_mean": 4.5}}})],
     "parametric.draft_tokens_mean 4.5 exceeds max_draft 4"),
    ("draft length below one token", lambda w: ["validate", sim_yaml(w, {"acceptance": {
        "parametric": {"draft_tokens_mean": 0.5}}})], "sim.acceptance.parametric.draft_tokens_mean"),
    ("replay_log without a log", lambda w: ["validate", sim_yaml(w, {"workload": {"kind": "replay_log"}})],
     "needs workload.log_path"),
    ("missing per-request log", lambda w: ["run", sim_yaml(w, {"workload": {"kind": "replay_log",
                                                                            "log_path": "no/requests.parquet"}})],
     "sim.workload.log_path: no/requests.parquet does not exist"),
    ("empty profile grid", lambda w: ["profile", "good.yaml", "--set", "profile.batch=[]"], "profile"),
    ("unknown hardware preset", lambda w: ["validate", write(w, "hw.yaml", yaml.safe_dump(
        {**GOOD, "sim": {"hardware": {"preset": "tpu9"}}}))], "sim.hardware"),
    ("unknown model name", lambda w: ["validate", write(w, "mo.yaml", yaml.safe_dump(
        {**GOOD, "sim": {"model": {"name": "gpt-9"}}}))], "sim.model"),
    ("missing step profile", lambda w: ["run", write(w, "sp.yaml", yaml.safe_dump(
        {"name": "sp", "stages": ["sim"], "sim": {"hardware": {"preset": "cpu"}, "cost": {"profile": "run"},
                                                  "acceptance": {"source": "parametric"}}}))],
     "run the profile stage first"),
]


def sim_yaml(workdir, sim: dict) -> str:
    """An experiment with only the sim stage and this sim: section."""
    data = {**GOOD, "stages": ["sim"], "sim": {"sweep": {"axis": "none", "workers": 1}, **sim}}
    return write(workdir, "sim.yaml", yaml.safe_dump(data))


@pytest.mark.parametrize("label, make_args, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(workdir, label, make_args, fragment):
    existing = workdir / "runs" / "cli" / "existing"
    before = snapshot(existing)
    result = lab(make_args(workdir), workdir)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and fragment in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(existing) == before


@pytest.mark.parametrize("stage", ["sim", "engine", "fidelity"])
def test_a_stage_without_its_section_leaves_no_run_directory(workdir, stage):
    runs_before = sorted(p.name for p in (workdir / "runs" / "cli").iterdir())
    result = lab(["run", "good.yaml", "--stages", stage], workdir)
    assert result.returncode == 2 and f"stage '{stage}' needs the" in result.stderr, result.stderr
    assert sorted(p.name for p in (workdir / "runs" / "cli").iterdir()) == runs_before


PROFILE_HEADER = "batch,query_tokens,context_len,step_ms,step_ms_p90,repeats\n"
PROFILE_ROWS = PROFILE_HEADER + "1,1,0,5.0,6.0,3\n2,1,0,7.0,8.0,3\n"
PROFILE_META = json.dumps({"source": "lab", "model": "m", "dtype": "float32", "device": "cpu",
                           "hardware": "cpu", "cpu_capability": None, "threads": 1, "versions": {},
                           "created": "2026-01-01T00:00:00"})


def step_profile(workdir, name, rows=PROFILE_ROWS, meta=PROFILE_META) -> str:
    """A directory holding step_profile.csv and step_profile.json with these texts; its name."""
    (workdir / name).mkdir()
    (workdir / name / "step_profile.csv").write_text(rows)
    (workdir / name / "step_profile.json").write_text(meta)
    return name


def profiled(profile: str, **cost) -> dict:
    return {"hardware": {"preset": "cpu"}, "cost": {"profile": profile, **cost}}


def replayed_traces(paths, **acceptance) -> dict:
    return {"acceptance": {"source": "traces", "paths": paths, **acceptance}, "policies": [{"kind": "ar"}]}


# files the sim section names, read at sim time: checked by `lab validate`, and by `lab run` before the run
# directory exists (the sim stage's own readers, one code path)
SIM_FILE_CASES = [
    ("missing step profile file", lambda w: profiled("no/step_profile.csv"),
     "sim.cost.profile: no/step_profile.csv: step profile file does not exist"),
    ("step profile with other columns", lambda w: profiled(step_profile(w, "p", "a,b\n1,2\n")),
     "sim.cost.profile: p/step_profile.csv: step profile needs columns"),
    ("step profile with words for numbers",
     lambda w: profiled(step_profile(w, "p", PROFILE_HEADER + "one,1,0,5.0,6.0,3\n")),
     "p/step_profile.csv: column batch must hold integers"),
    ("empty step profile", lambda w: profiled(step_profile(w, "p", "")),
     "p/step_profile.csv: not a readable CSV"),
    ("step profile without rows", lambda w: profiled(step_profile(w, "p", PROFILE_HEADER)),
     "p/step_profile.csv: step profile has no rows"),
    ("step profile with a gap in its grid",
     lambda w: profiled(step_profile(w, "p", PROFILE_ROWS + "1,4,0,9.0,9.5,3\n")), "rows must cover every"),
    ("step profile meta not JSON", lambda w: profiled(step_profile(w, "p", meta="{")),
     "sim.cost.profile: p/step_profile.json: not readable JSON"),
    ("step profile meta without a source",
     lambda w: profiled(step_profile(w, "p", meta=json.dumps({"model": "m"}))),
     "step profile meta needs 'source'"),
    ("missing spec profile", lambda w: profiled(step_profile(w, "p"), spec_profile="no/spec"),
     "sim.cost.spec_profile: no/spec: step profile directory does not exist"),
    ("spec profile of two query lengths",
     lambda w: profiled(step_profile(w, "p"), spec_profile=step_profile(
         w, "s", PROFILE_HEADER + "1,2,0,6.0,7.0,3\n1,3,0,6.5,7.5,3\n")),
     "sim.cost.spec_profile s: rows of one query_tokens value"),
    ("model config without layers",
     lambda w: {"model": {"config": write(w, "config.json", json.dumps({"hidden_size": 64}))}},
     "config.json: config.json has no 'num_hidden_layers'"),
    ("model config with a word for a size", lambda w: {"model": {"config": write(w, "config.json", json.dumps(
        {"hidden_size": 64, "num_hidden_layers": "two", "num_attention_heads": 4, "vocab_size": 99}))}},
     "config.json 'num_hidden_layers' must be a positive integer"),
    ("missing acceptance trace", lambda w: replayed_traces(["no/traces"]), "sim.acceptance.paths:"),
    ("corrupt acceptance trace", lambda w: replayed_traces(["garbage.parquet"]),
     "garbage.parquet: not a readable Parquet trace"),
    ("calibration file not JSON",
     lambda w: replayed_traces(["runs/cli/existing/traces"], calibration_path=write(w, "cal.json", "{")),
     "cal.json: calibration file is not valid JSON"),
    ("lengths CSV without its columns",
     lambda w: {"workload": {"lengths": {"source": "csv", "csv_path": write(w, "l.csv", "x,y\n1,2\n")}}},
     "sim.workload.lengths.csv_path:"),
    ("lengths CSV with a negative length", lambda w: {"workload": {"lengths": {
        "source": "csv", "csv_path": write(w, "l.csv", "prompt_tokens,output_tokens\n12,3\n-1,2\n")}}},
     "sim.workload.lengths.csv_path: l.csv line 3: prompt_tokens / output_tokens must be whole numbers"),
    ("ShareGPT lengths never tabled", lambda w: {"workload": {"lengths": {"source": "sharegpt", "tokenizer": "nope"}}},
     "sim.workload.lengths.tokenizer: no ShareGPT length table for 'nope'"),
    ("missing arrival trace", lambda w: {"workload": {"kind": "trace", "trace_path": "no/arrivals.csv"}},
     "sim.workload.trace_path:"),
    ("corrupt request log", lambda w: {"workload": {"kind": "replay_log", "log_path": "garbage.parquet"}},
     "sim.workload.log_path:"),
]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("label, make_sim, fragment", SIM_FILE_CASES, ids=[c[0] for c in SIM_FILE_CASES])
def test_bad_sim_input_file_stops_before_the_run_directory(workdir, command, label, make_sim, fragment):
    """These failed only in the sim stage, after config.yaml and manifest.json of a new run were written."""
    runs_before = sorted(p.relative_to(workdir) for p in (workdir / "runs").rglob("*") if p.is_dir())
    result = lab([command, sim_yaml(workdir, make_sim(workdir))], workdir)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and fragment in error_lines[0], result.stderr
    assert error_lines[0].startswith("error: sim.yaml: ") and "Traceback" not in result.stderr
    assert sorted(p.relative_to(workdir) for p in (workdir / "runs").rglob("*") if p.is_dir()) == runs_before


@pytest.mark.parametrize("sim, fragment", [
    (None, "calibrate: runs/cli/cli-"),  # the run's own traces, and no evaluate stage before it
    ({"acceptance": {"source": "traces", "paths": ["garbage.parquet"]}}, "garbage.parquet: not a readable Parquet"),
])
def test_calibrate_without_its_traces_stops_before_the_run_directory(workdir, sim, fragment):
    runs_before = sorted(p.relative_to(workdir) for p in (workdir / "runs").rglob("*") if p.is_dir())
    config = "good.yaml" if sim is None else sim_yaml(workdir, sim)
    result = lab(["run", config, "--stages", "calibrate"], workdir)
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and fragment in error_lines[0], result.stderr
    assert sorted(p.relative_to(workdir) for p in (workdir / "runs").rglob("*") if p.is_dir()) == runs_before

def test_good_sim_input_files_validate(workdir):
    spec_profile = step_profile(workdir, "s", PROFILE_HEADER + "1,3,0,6.0,7.0,3\n")
    sim = {**profiled(step_profile(workdir, "p"), spec_profile=spec_profile),
           **replayed_traces(["runs/cli/existing/traces"])}
    result = lab(["validate", sim_yaml(workdir, sim)], workdir)
    assert result.returncode == 0, result.stderr
    # the run's own profile (cost.profile: run) is written by the profile stage: validate leaves it to the run
    result = lab(["validate", sim_yaml(workdir, profiled("run"))], workdir)
    assert result.returncode == 0, result.stderr

def test_second_lab_run_of_a_run_id_stops_at_once(workdir):
    """Two `lab run` of one run id both did all the work and train_log.csv got every step twice."""
    code = ("import time; from lab.config import load_config; from lab.runs import open_run; "
            "ctx = open_run(load_config('good.yaml', ['run_id=busy'])); print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = lab(["run", "good.yaml", "--set", "run_id=busy"], workdir)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: runs/cli/busy: in use by pid {holder.pid}"
    assert "starting" not in result.stdout


def test_traces_into_a_closed_pipe_is_one_line(workdir):
    """`lab traces ... | head` gave a BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-m", "lab.cli", "traces", "runs/cli/existing/traces"], cwd=workdir,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    child.stdout.close()  # the reader is gone before anything is written
    stderr = child.stderr.read()
    assert child.wait(timeout=120) == 2, stderr
    assert stderr.strip() == "error: <stdout>: closed by the reader before the output was written (broken pipe)"
