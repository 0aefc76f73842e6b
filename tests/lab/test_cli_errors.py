"""Bad inputs: one clear error line naming the field or file, exit code 2, existing results untouched."""
import contextlib
import hashlib
import importlib
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
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


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def in_process(main, args, cwd) -> Finished:
    """main(args) in this process as `python -m` runs it: its exit status (a SystemExit's too), stdout and
    stderr; the working directory, the environment and torch's thread count are restored after. (As one
    subprocess each, the table's cases spent most of their time importing pandas, pydantic and torch again.)
    An exception that escapes main fails the test as a traceback would; test_entry_points_print_the_same_line
    runs some rows through the real `python -m` entry points."""
    out, err = io.StringIO(), io.StringIO()
    env, here = dict(os.environ), os.getcwd()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else os.cpu_count() or 1
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's errors, and `sys.exit(main())` of the tools
                code = exc.code
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(env)
        if "torch" in sys.modules:  # `lab run` sets the thread count (lab/threads.py)
            sys.modules["torch"].set_num_threads(threads)
    return Finished(code, out.getvalue(), err.getvalue())


def lab(args, cwd) -> Finished:
    """`lab ARGS` in `cwd` (in this process, see in_process)."""
    from lab.cli import main

    return in_process(main, args, cwd)


def lab_process(args, cwd):
    """`python -m lab.cli ARGS` as a subprocess: the real entry point."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "lab.cli", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          env=env, timeout=300)


def assert_one_error_line(result, fragment: str) -> str:
    """Exit status 2, exactly one `error:` line on stderr and it holds `fragment`, no traceback; the line."""
    assert result.returncode == 2, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and fragment in error_lines[0], result.stderr
    assert "Traceback" not in result.stderr
    return error_lines[0]


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
    (tmp_path / "trace.csv").write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1.5,20,8\n")
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


def make_dir(workdir, name):
    (workdir / name).mkdir()
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
    ("a vLLM flag's name for a sim key",
     lambda w: ["validate", write(w, "v.yaml", yaml.safe_dump({"name": "v", "stages": ["sim"],
                                                               "sim": {"workload": {"num_prompts": 10}}}))],
     "sim.workload.num_prompts: unknown key (vLLM's --num-prompts is sim.workload.max_requests here)"),
    ("a vLLM release that is not a number",
     lambda w: ["validate", write(w, "r.yaml", yaml.safe_dump({"name": "r", "stages": ["sim"],
                                                               "sim": {"engine": {"vllm_version": "latest"}}}))],
     "sim.engine.vllm_version: Value error, 'latest' is not a vLLM release: give its number"),
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
    # a folder of shards without a row printed "0 rows" and an empty table, exit status 0
    ("traces without a row", lambda w: ["traces", empty_traces(w)],
     "empty: the trace files hold no rows (no verify step recorded): nothing to summarize"),
    ("traces of two runs in one folder", lambda w: ["traces", mixed_traces(w)],
     "mixed: shards of 2 runs mixed: run_id 'a' in rounds__a.parquet; run_id 'b' in rounds__b.parquet"),
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
    # session 37 audit: a Latin-1 file ran with U+FFFD in its prompts; a lone surrogate escape was a
    # TypeError traceback from the tokenizer mid-evaluate; a directory was "not found"
    *[(f"{label} at {command}",
       lambda w, command=command, name=name, data=data: [
           command, "good.yaml", "--set", f"prompts.datasets.0.path={write_bytes(w, name, data)}"], fragment)
      for command in ("validate", "run")
      for label, name, data, fragment in [
          ("Latin-1 prompt file", "l1.jsonl", '{"turns": ["ok"]}\n{"turns": ["caf\u00e9"]}\n'.encode("latin-1"),
           "l1.jsonl:2: not UTF-8 text (byte 0xe9 at column 16)"),
          ("lone surrogate escape", "s.jsonl", b'{"turns": ["fine", "lone \\ud800 half"]}\n',
           "s.jsonl:1: turns[1] holds a lone surrogate (\\ud800 at character 5)"),
          # session 39, unseen prompts: a whitespace-only prompt (tab, ideographic space) is empty too; Windows
          # PowerShell's `>` writes UTF-16 (it was "byte 0xff ... iconv -f latin1"); an OpenAI-style
          # "messages" line; a "system" turn that is not text (a string one is read: tests/real/test_unseen_prompts.py)
          ("whitespace-only first turn", "w.jsonl", b'{"turns": ["ok"]}\r\n\r\n{"turns": [" \\t\\n\\u3000"]}\r\n',
           "w.jsonl:3: the first turn is empty"),
          ("UTF-16 prompt file", "u16.jsonl", '{"turns": ["hi"]}\n'.encode("utf-16"),
           "u16.jsonl: UTF-16 text (byte-order mark 0xff 0xfe), not UTF-8; convert the file, e.g. iconv -f utf-16"),
          ("chat messages line", "m.jsonl",
           b'{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}\n',
           'm.jsonl:1: a chat "messages" list is not read; write {"system": "...", "turns": ["first user turn", ...]}'),
          ("system turn not a string", "st.jsonl", b'{"turns": ["ok"]}\n{"system": ["be brief"], "turns": ["hi"]}\n',
           'st.jsonl:2: "system" must be a string (the system turn), not list'),
          ("lone surrogate in the system turn", "ss.jsonl", b'{"system": "x\\udc00", "turns": ["hi"]}\n',
           "ss.jsonl:1: system holds a lone surrogate (\\udc00 at character 1)")]],
    # tiny-qwen3's context is 4096 positions: a longer prompt + reply ran on, on positions it never saw
    ("prompt and reply past the target's context",
     lambda w: ["run", "good.yaml", "--set", "prompts.max_prompt_tokens=4090", "--set", "decode.max_new_tokens=16"],
     "prompts.max_prompt_tokens + decode.max_new_tokens = 4106 tokens exceeds the context of target tiny-qwen3 (4096"),
    ("regenerated prompt and reply past the target's context",
     lambda w: ["run", "good.yaml", "--stages", "prepare", "--set", "prepare.max_prompt_tokens=4000",
                "--set", "prepare.max_new_tokens=200"],
     "prepare.max_prompt_tokens + prepare.max_new_tokens = 4200 tokens exceeds the context of target tiny-qwen3"),
    # training sequences cut to more tokens than the target's context: features of positions it never saw
    ("training length past the target's context",
     lambda w: ["run", "good.yaml", "--stages", "train", "--set", "drafters=[{name: d, method: dspark}]",
                "--set", "train.max_length=4097"],
     "train.max_length = 4097 tokens exceeds the context of target tiny-qwen3 (4096, its max_position_embeddings); "
     "lower it"),
    # at the context itself the check passes: the stage goes on to its prepared data (none in this run)
    ("training length at the target's context",
     lambda w: ["run", "good.yaml", "--stages", "train", "--set", "drafters=[{name: d, method: dspark}]",
                "--set", "train.max_length=4096"],
     "data: no prepared data (manifest.json missing); run the prepare stage first"),
    # a dataset without a path that no package ships (gsm8k is the paper's): validate said ok, and the
    # evaluate stage stopped at it, after prepare and train had run
    *[(f"{label} at {command}", validate_with(override) if command == "validate" else
       lambda w, override=override: ["run", "good.yaml", "--stages", "prepare,evaluate", "--set", override], fragment)
      for command in ("validate", "run")
      for label, override, fragment in [
          ("unshipped prompt set", "prompts.datasets=[{name: gsm8k}]",
           "good.yaml: prompts.datasets[0].name 'gsm8k': no such PyPI-shipped prompt set"),
          ("unshipped training set", "prepare={datasets: [{name: gsm8k}]}",
           "good.yaml: prepare.datasets[0].name 'gsm8k': no such PyPI-shipped prompt set")]],
    ("prompt path that is a directory",
     lambda w: ["validate", "good.yaml", "--set", f"prompts.datasets.0.path={make_dir(w, 'p.jsonl')}"],
     "prompts.datasets[0].path: 'p.jsonl' is a directory"),
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
    # an engine load's arrival CSV was read only when the load started, after vLLM's server had come up (minutes)
    *[(f"engine trace load {label}", validate_with(
        f"engine.loads=[{{name: t, kind: trace, trace_path: {path}, prompt_tokens: 64, output_tokens: 16}}]"),
       fragment) for label, path, fragment in [
          ("missing", "no/such.csv", "good.yaml: engine.loads[0].trace_path: no/such.csv does not exist"),
          ("a directory", ".", "engine.loads[0].trace_path: . is a directory, not a CSV file"),
          ("without its columns", "garbage.parquet", "engine.loads[0].trace_path: garbage.parquet lacks columns")]],
    ("engine trace load past its rows", validate_with(
        "engine.loads=[{name: t, kind: trace, trace_path: trace.csv, trace_offset: 2, prompt_tokens: 64, "
        "output_tokens: 16}]"), "engine.loads[0].trace_offset: 2 is beyond the trace's 2 rows"),
    # Python's path calls raise ValueError at a NUL character: a traceback where validate resolved the path
    ("a path holding a NUL character", validate_with('sim={workload: {kind: trace, trace_path: "a\\0b.csv"}}'),
     "sim.workload.trace_path: Value error, 'a\\x00b.csv': a path cannot hold a NUL character"),
    ("an output_dir holding a NUL character", validate_with('output_dir="r\\0uns"'),
     "output_dir: Value error, 'r\\x00uns': a path cannot hold a NUL character"),
    # more arrivals or users than one point can hold: numpy's "Maximum allowed dimension exceeded" / "Unable to
    # allocate 6.94 EiB" tracebacks mid-sweep, after validate had passed the file
    *[(f"sim {label}", validate_with(f"sim={{workload: {workload}, acceptance: {{source: parametric}}, "
                                     f"policies: [{{kind: ar}}]{sweep}}}"), fragment)
      for label, workload, sweep, fragment in [
          ("rate past what a point draws", "{kind: poisson, rate: 1e300}", "",
           ("sim.workload: 1e+300 req/s over 600 s is ~6e+302 arrivals, more than the simulator draws for one point "
            "(50,000,000)")),
          ("swept rate past what a point draws", "{kind: gamma, rate: 2, duration_s: 60}",
           ", sweep: {axis: rate, values: [1, 1e12]}", "sim.workload: 2e+12 req/s over 60 s is ~1.2e+14 arrivals"),
          ("bounded run past what a point draws", "{kind: poisson, rate: 2, max_requests: 1000000000000000}", "",
           "sim.workload: 2 req/s over 1.5e+15 s"),
          ("closed loop past the users a point runs", "{kind: closed_loop, concurrency: 1000000000000000000}", "",
           ("sim: Value error, workload.concurrency: 1,000,000,000,000,000,000 closed-loop users, more than the "
            "simulator runs at once (1,000,000")),
          # a closed loop of 10^18 s ran until its cut at 10^9 simulated seconds: hours of steps, no error
          ("closed loop that would not end", "{kind: closed_loop, duration_s: 1e18}", "",
           ("sim.workload.duration_s: 1e+18 s of a closed loop on 1 replica(s) is up to 1.28e+11 engine steps of at "
            "least 7.81 ms (one token, no KV), more than the simulator runs for one point (50,000,000)")),
          ("closed loop of more requests than a point runs", "{kind: closed_loop, max_requests: 1000000000000000}", "",
           ("sim.workload.max_requests: 1,000,000,000,000,000 requests in a closed loop, more than the simulator "
            "runs for one point (50,000,000)")),
          ("swept users past what a point runs", "{kind: closed_loop}", ", sweep: {values: [8, 2000000]}",
           "sim: Value error, sweep.values: 2,000,000 closed-loop users"),
          # 1e300 GiB is infinite bytes: the KV budget NaN, int(NaN) a ValueError
          ("an activation reserve of 1e300 GiB", "{kind: closed_loop}", ", engine: {activation_reserve_gib: 1e300}",
           "sim: model qwen3-8b on 1 x h100 does not fit: weights (15.3 GiB) and activations (inf GiB per GPU)"),
          ("a fractional concurrency", "{kind: closed_loop}", ", sweep: {values: [0.5, 2]}",
           "sim: Value error, sweep.values 0.5: a concurrency is a whole number of requests")]],
    ("no stage at all", validate_with("stages=[]"), "good.yaml: stages: Value error, empty; name at least one of"),
    ("a stage listed twice", validate_with("stages=[evaluate, report, evaluate]"),
     "good.yaml: stages: Value error, evaluate listed twice; each stage once"),
    ("a stage given twice to --stages", lambda w: ["run", "good.yaml", "--stages", "evaluate,evaluate"],
     "--stages: evaluate listed twice; each stage once"),
    # pydantic's words named its classes ("a valid dictionary or instance of DecodeSection") and read `key:` with
    # nothing after it as though a string were expected
    ("a section that is a number", validate_with("decode=5"),
     "good.yaml: decode: expected a mapping of keys, not the number 5"),
    ("a list entry that is null", validate_with("drafters.0="), "drafters.0: expected a mapping of keys, not null"),
    ("a required value left empty", validate_with("name="),
     "good.yaml: name: Input should be a valid string, not null (`key:` with nothing after it, or `--set key=`)"),
    # a check across sections names its own fields: the line said "good.yaml: <root>: Value error, ..."
    ("a check across sections", validate_with("drafters=[{name: a, method: ngram}, {name: a, method: ngram}]"),
     "good.yaml: Value error, drafter names must be unique, repeated: ['a']"),
    # trace files are <table>__<drafter>__<dataset>__T<t>.parquet: a name holding "__" split wrongly (the Live
    # ablation page kept every shard); names differing only by case are one file on macOS' or Windows' disk
    ("a dataset name holding the trace file's separator", validate_with("prompts.datasets.0.name=a__b"),
     ("good.yaml: prompts.datasets: Value error, [0].name 'a__b' holds '__', which separates the parts of a trace "
      "file's name")),
    ("a drafter name holding the trace file's separator", validate_with("drafters.0.name=ng__x"),
     "good.yaml: drafters.0.name: Value error, 'ng__x' holds '__'"),
    ("datasets that differ only by case",
     validate_with("prompts.datasets=[{name: NA, path: p.jsonl}, {name: na, path: p.jsonl}]"),
     "good.yaml: prompts.datasets: Value error, 'NA' and 'na' differ only by case: on a case-insensitive filesystem"),
    ("a dataset given twice", validate_with("prompts.datasets=[{name: humaneval}, {name: humaneval, cap: 2}]"),
     "good.yaml: prompts.datasets: Value error, 'humaneval' is given twice; each dataset once"),
    ("drafters that differ only by case", validate_with("drafters=[{name: ng, method: ngram}, {name: NG, method: ngram}]"),
     "good.yaml: Value error, drafters: 'ng' and 'NG' differ only by case"),
    # acceptance.source run replays the traces evaluate writes (a method per drafter name): a name outside them
    # stopped the sim stage after prepare, train and evaluate had run
    *[(f"sim replaying {label}", validate_with("stages=[evaluate, sim]", f"sim={{acceptance: {{source: run{acc}}}, "
                                               f"policies: [{{kind: ar{policy}}}]}}", *more), fragment)
      for label, acc, policy, more, fragment in [
          ("a method no drafter is", ", method: dspark", "", (),
           ("good.yaml: sim.acceptance.method 'dspark': not a drafter of this experiment, whose traces the sim "
            "replays (drafters: ngram)")),
          ("a policy method no drafter is", "", ", method: mtp", (),
           "sim.policies[0].method 'mtp': not a drafter of this experiment"),
          ("several drafters unnamed", "", "", ("drafters=[{name: a, method: ngram}, {name: b, method: ngram}]",),
           "sim.acceptance.method: the traces will hold several drafters (a, b); name the one to replay"),
          ("a dataset no prompt set is", ", datasets: {gsm8k: 1.0}", "", (),
           "sim.acceptance.datasets: ['gsm8k'] are not prompt sets of this experiment (prompts.datasets: humaneval)"),
          ("a temperature not decoded", ", temperature: 0.7", "", (),
           "sim.acceptance.temperature 0.7: not one of decode.temperatures [0.0]")]],
    # the engine stage ran (vLLM started) and the fidelity stage then ended in pandas' "No objects to concatenate"
    ("fidelity over no engine loads", validate_with("stages=[engine, fidelity]", "engine={loads: []}"),
     "good.yaml: engine.loads: empty; stage 'fidelity' compares the simulator with the engine on them"),
    ("fidelity over no engine loads, by --stages", lambda w: [
        "run", "good.yaml", "--stages", "fidelity", "--set", "engine={loads: []}"], "engine.loads: empty"),
    ("an empty vllm serve argument", validate_with('engine={extra_args: ["--enforce-eager", ""]}'),
     "engine.extra_args.1: String should have at least 1 character"),
    ("engine port not loopback-safe", lambda w: ["validate", "good.yaml", "--set", "engine.port=80"], "engine.port"),
    ("engine host not loopback", lambda w: ["validate", "good.yaml", "--set", "engine.host=0.0.0.0"], "engine.host"),
    ("engine drafter with a method that does not export", lambda w: [
        "validate", "good.yaml", "--set", "engine.variants=[{name: d, speculative: {method: ngram, drafter: ngram}}]"],
     "speculative.drafter: only methods eagle3 and dflash export"),
    ("block_layout vllm on a drafter that is not dflash",
     validate_with("drafters=[{name: d, method: dspark, block_layout: vllm}]"),
     "block_layout 'vllm': only dflash drafters have a vllm block layout, not dspark"),
    ("block_layout that does not exist", validate_with("drafters=[{name: d, method: dflash, block_layout: gpu}]"),
     "drafters.0.block_layout"),
    ("engine dflash drafter in the lab block layout", validate_with(
        "drafters=[{name: f, method: dflash, block_size: 4}]",
        "engine.variants=[{name: e, speculative: {method: dflash, drafter: f}}]"),
     "speculative.drafter 'f' has block_layout 'lab'; only block_layout vllm exports"),
    ("engine dflash drafter served at another k than its block", validate_with(
        "drafters=[{name: f, method: dflash, block_size: 5, block_layout: vllm}]",
        "engine.variants=[{name: e, speculative: {method: dflash, drafter: f, num_speculative_tokens: 4}}]"),
     "speculative.num_speculative_tokens 4 != drafter 'f' block_size 5"),
    ("engine dflash drafter that is not a dflash drafter of the run", lambda w: [
        "validate", "good.yaml", "--set", "engine.variants=[{name: d, speculative: {method: dflash, drafter: ngram}}]"],
     "speculative.drafter 'ngram' must name a dflash drafter of this experiment (a ngram drafter)"),
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
    ("engine rounds zero", validate_with("engine.rounds=0"), "engine.rounds: Input should be greater than or equal to 1"),
    ("engine rounds not a number", validate_with("engine.rounds=x"), "engine.rounds: Input should be a valid integer"),
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
    ("negative front-end request cost", lambda w: ["validate", sim_yaml(w, {"frontend": {"request_ms": -1}})],
     "sim.frontend.request_ms"),
    ("negative front-end latency", lambda w: ["validate", sim_yaml(w, {"frontend": {"latency_ms": -5}})],
     "sim.frontend.latency_ms: Input should be greater than or equal to 0"),
    ("front-end latency infinite", lambda w: ["validate", sim_yaml(w, {"frontend": {"latency_ms": float("inf")}})],
     "sim.frontend.latency_ms: Input should be a finite number"),
    ("front-end token cost not a number", lambda w: ["validate", sim_yaml(w, {"frontend": {"output_token_ms": "x"}})],
     "sim.frontend.output_token_ms"),
    ("front-end token cost infinite", lambda w: ["validate", sim_yaml(w, {"frontend": {"output_token_ms": float("inf")}})],
     "sim.frontend.output_token_ms"),
    ("front-end intake unknown", lambda w: ["validate", sim_yaml(w, {"frontend": {"request_ms": 5, "intake": "lifo"}})],
     "sim.frontend.intake: Input should be 'fifo' or 'shared'"),
    ("front end streaming beside disaggregated prefill", lambda w: ["validate", sim_yaml(w, {
        "frontend": {"output_token_ms": 0.1}, "engine": {"disaggregated_prefill": True}})],
     "sim.frontend.output_token_ms with sim.engine.disaggregated_prefill"),
    ("engine given under both names", lambda w: ["validate", sim_yaml(w, {"engine": {}, "batching": {}})],
     "give sim.engine only"),
    # the session's new engine and interconnect fields
    ("async scheduling not a boolean", lambda w: ["validate", sim_yaml(w, {"engine": {"async_scheduling": "maybe"}})],
     "sim.engine.async_scheduling: Input should be a valid boolean"),
    ("negative autotune time", lambda w: ["validate", sim_yaml(w, {"engine": {"linear_attn_autotune_s": -1}})],
     "sim.engine.linear_attn_autotune_s: Input should be greater than or equal to 0"),
    ("huge autotune time", lambda w: ["validate", sim_yaml(w, {"engine": {"linear_attn_autotune_s": 1e300}})],
     "sim.engine.linear_attn_autotune_s: Input should be less than or equal to 3600"),
    # max_bytes is a number or a mapping tp -> bytes: a tp key below 2 said "max_bytes.int: Input should be a valid
    # integer (+1 more)", the arm the mapping was never meant for
    ("custom all-reduce tp key below 2", lambda w: ["validate", sim_yaml(w, {"hardware": {"preset": "h100", "interconnect": {
        "kind": "nvlink", "bandwidth_gbs": 300, "custom_allreduce": {"latency_us": 5, "bandwidth_gbs": 100,
                                                                     "max_bytes": {1: 8}}}}})],
     "sim.hardware.interconnect.custom_allreduce.max_bytes: key 1: Input should be greater than or equal to 2"),
    ("symmetric-memory tp key below 2", lambda w: ["validate", sim_yaml(w, {"hardware": {"preset": "h100", "interconnect": {
        "kind": "nvlink", "bandwidth_gbs": 300, "symm_mem_allreduce": {"latency_us": 5, "bandwidth_gbs": 100,
                                                                       "max_bytes": {0: 8}}}}})],
     "sim.hardware.interconnect.symm_mem_allreduce.max_bytes: key 0: Input should be greater than or equal to 2"),
    ("custom all-reduce without P2P", lambda w: ["validate", sim_yaml(w, {"hardware": {"preset": "h100", "interconnect": {
        "kind": "ethernet", "bandwidth_gbs": 300, "custom_allreduce": {"latency_us": 5, "bandwidth_gbs": 100,
                                                                       "max_bytes": 8388608}}}})],
     "custom_allreduce needs GPU peer-to-peer on one node; kind ethernet has none"),
    ("symmetric memory over PCIe", lambda w: ["validate", sim_yaml(w, {"hardware": {"preset": "h100", "interconnect": {
        "kind": "pcie", "bandwidth_gbs": 30, "symm_mem_allreduce": {"latency_us": 5, "bandwidth_gbs": 100,
                                                                    "max_bytes": {4: 8}}}}})],
     "symm_mem_allreduce needs NVLink multicast; kind pcie has none"),
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
    # session 17 bad-input audit: each of these was a traceback, a wrong exit status or a silently wrong run
    ("experiment path is a directory", lambda w: ["run", "runs"],
     "runs: is a directory, not an experiment file"),
    ("empty experiment file", lambda w: ["validate", write(w, "e.yaml", "# nothing yet\n")],
     "e.yaml: empty; an experiment needs at least `name:`"),
    ("NaN time budget", validate_with("decode.time_budget_s=.nan"), "decode.time_budget_s: Input should be a finite number"),
    ("NaN temperature", validate_with("decode.temperatures=[0, .nan]"), "decode.temperatures.1: Input should be a finite"),
    ("repeated temperature", validate_with("decode.temperatures=[0, 1, 0.0]"),
     "decode.temperatures: Value error, temperature 0 is given twice"),
    ("infinite learning rate", validate_with("train.lr=.inf"), "train.lr: Input should be a finite number"),
    # pydantic's lax mode read a YAML true / false in a number field as 1 / 0
    ("true for a whole number", validate_with("prompts.datasets.0.cap=true"),
     "good.yaml: prompts.datasets.0.cap: expected a number, not true"),
    # --request-rate inf is a poisson / gamma workload's rate .inf (every request at once); a closed loop has no rate
    ("infinite rate of a closed loop", validate_with("sim.workload.rate=.inf"),
     ("sim.workload: Value error, workload.rate .inf (--request-rate inf) applies to kind poisson / gamma, not "
      "'closed_loop'")),
    ("infinite rate without a count", validate_with("sim.workload.kind=poisson", "sim.workload.rate=.inf"),
     ("workload.rate .inf sends every request at once: give workload.max_requests (--num-prompts) or "
      "workload.max_concurrency")),
    ("NaN arrival rate", validate_with("sim.workload.kind=poisson", "sim.workload.rate=.nan"),
     "sim.workload.rate: Value error, Input should be a number of requests/s > 0, or .inf, not NaN"),
    ("rate sweep of an infinite rate", validate_with("sim.workload.kind=poisson", "sim.workload.rate=.inf",
                                                     "sim.workload.max_requests=10", "sim.sweep.axis=rate"),
     "sim: Value error, sweep.axis 'rate' cannot scale workload.rate .inf"),
    # --max-concurrency beside --request-rate: workload.max_concurrency, a poisson / gamma workload's
    ("max_concurrency 0", validate_with("sim.workload.kind=poisson", "sim.workload.max_concurrency=0"),
     "sim.workload.max_concurrency: Input should be greater than or equal to 1"),
    ("max_concurrency a word", validate_with("sim.workload.kind=poisson", "sim.workload.max_concurrency=many"),
     "sim.workload.max_concurrency: Input should be a valid integer"),
    ("max_concurrency of a closed loop", validate_with("sim.workload.max_concurrency=4"),
     ("workload.max_concurrency (--max-concurrency beside --request-rate) applies to kind poisson / gamma, not "
      "'closed_loop'; a closed loop's users are workload.concurrency")),
    ("NaN sweep value",
     lambda w: ["run", sim_yaml(w, {"sweep": {"axis": "concurrency", "values": [1, float("nan")]}})],
     "sim.sweep.values.1: Input should be a finite number"),
    ("NaN in a hardware spec sheet", lambda w: ["validate", sim_yaml(w, {"hardware": {"spec": write(
        w, "card.yaml", "name: c\npeak_tflops: {bf16: .nan}\nmem_bw_tbs: 1\nmem_gib: 8\n")}})],
     "sim.hardware.spec: Value error, spec file 'card.yaml': peak_tflops.bf16: Input should be a finite number"),
    # a spec FILE's field is named in the file (the error named sim.hardware.spec.<field>, not card.yaml)
    *[(f"spec file with {label}", lambda w, text=text: ["validate", sim_yaml(w, {"hardware": {"spec": write(
        w, "card.yaml", "name: c\npeak_tflops: {bf16: 100, fp8: 200}\nmem_bw_tbs: 1\nmem_gib: 8\n" + text)}})],
       fragment) for label, text, fragment in [
        ("moe_lowp_efficiency 0", "moe_lowp_efficiency: 0\n",
         "spec file 'card.yaml': moe_lowp_efficiency: Input should be greater than 0"),
        ("moe_lowp_efficiency above 1", "moe_lowp_efficiency: 1.5\n",
         "spec file 'card.yaml': moe_lowp_efficiency: Input should be less than or equal to 1"),
        ("moe_lowp_efficiency a word", "moe_lowp_efficiency: high\n",
         "spec file 'card.yaml': moe_lowp_efficiency: Input should be a valid number"),
        ("a misspelt key", "moe_lowp_eff: 0.5\n", "spec file 'card.yaml': moe_lowp_eff: unknown key"),
        ("usable memory above its size", "usable_mem_gib: 9\n",
         "spec file 'card.yaml': <root>: Value error, usable_mem_gib 9 is more than mem_gib 8"),
        # session 39's sheet fields (h131 / h132 / h125): each bound, named on its one line
        ("a step's host time past a second", "step_host_ms: 1e300\n",
         "spec file 'card.yaml': step_host_ms: Input should be less than or equal to 1000"),
        ("a negative step host time", "step_host_ms: -0.1\n",
         "spec file 'card.yaml': step_host_ms: Input should be greater than or equal to 0"),
        ("a NaN step host time", "step_host_ms: .nan\n", "spec file 'card.yaml': step_host_ms: Input should be a finite"),
        ("an overlap past all of it", "compute_memory_overlap: 1.5\n",
         "spec file 'card.yaml': compute_memory_overlap: Input should be less than or equal to 1"),
        ("a negative overlap", "compute_memory_overlap: -0.2\n",
         "spec file 'card.yaml': compute_memory_overlap: Input should be greater than or equal to 0"),
        ("a one-row decode tile", "mixed_decode_tile_rows: 1\n",
         "spec file 'card.yaml': mixed_decode_tile_rows: Input should be greater than or equal to 2"),
        ("a decode tile past any kernel's", "mixed_decode_tile_rows: 100000\n",
         "spec file 'card.yaml': mixed_decode_tile_rows: Input should be less than or equal to 256"),
        # the fixed host / launch terms took 1e300 (h140; inf was already refused as not finite): at most bench_profile's fit ranges
        ("a step overhead past a second", "step_overhead_ms: 1e300\n",
         "spec file 'card.yaml': step_overhead_ms: Input should be less than or equal to 1000"),
        ("a layer overhead past 0.1 s", "layer_overhead_us: 100001\n",
         "spec file 'card.yaml': layer_overhead_us: Input should be less than or equal to 100000"),
        ("a request overhead past a second", "request_overhead_us: 1e300\n",
         "spec file 'card.yaml': request_overhead_us: Input should be less than or equal to 1000000")]],
    ("cost override of the step overhead past a second",
     lambda w: ["validate", sim_yaml(w, {"cost": {"step_overhead_ms": 1e300}})],
     "sim.cost.step_overhead_ms: Input should be less than or equal to 1000"),
    ("cost override of the request overhead past a second",
     lambda w: ["validate", sim_yaml(w, {"cost": {"request_overhead_us": 2e6}})],
     "sim.cost.request_overhead_us: Input should be less than or equal to 1000000"),
    ("cost override of the layer overhead past 0.1 s",
     lambda w: ["validate", sim_yaml(w, {"cost": {"layer_overhead_us": 1e6}})],
     "sim.cost.layer_overhead_us: Input should be less than or equal to 100000"),
    ("a max_model_len of 10**12 tokens", lambda w: ["validate", sim_yaml(w, {"engine": {"max_model_len": 10**12}})],
     "sim.engine.max_model_len: Input should be less than or equal to 16777216"),
    ("engine stage max_model_len of 10**12 tokens", validate_with("engine.max_model_len=1000000000000"),
     "engine.max_model_len: Input should be less than or equal to 16777216"),
    # 1e300 TFLOP/s was a ZeroDivisionError traceback mid-run; 1e300 GiB "does not fit ... in inf GiB"
    *[(f"spec file with {label}", lambda w, text=text: ["validate", sim_yaml(w, {"hardware": {"spec": write(
        w, "card.yaml", text)}})], fragment) for label, text, fragment in [
        ("a peak past any device", "name: c\npeak_tflops: {bf16: 1e300}\nmem_bw_tbs: 1\nmem_gib: 8\n",
         "spec file 'card.yaml': <root>: Value error, peak_tflops values must be positive and at most 1,000,000 TFLOP/s"),
        ("memory past any device", "name: c\npeak_tflops: {bf16: 100}\nmem_bw_tbs: 1\nmem_gib: 1e300\n",
         "spec file 'card.yaml': mem_gib: Input should be less than or equal to 1000000"),
        ("bandwidth past any device", "name: c\npeak_tflops: {bf16: 100}\nmem_bw_tbs: 1e300\nmem_gib: 8\n",
         "spec file 'card.yaml': mem_bw_tbs: Input should be less than or equal to 1000"),
        ("a negative bandwidth", "name: c\npeak_tflops: {bf16: 100}\nmem_bw_tbs: -1\nmem_gib: 8\n",
         "spec file 'card.yaml': mem_bw_tbs: Input should be greater than 0"),
        ("a word for a size", "name: c\npeak_tflops: {bf16: 100}\nmem_bw_tbs: 1\nmem_gib: twenty\n",
         "spec file 'card.yaml': mem_gib: Input should be a valid number"),
        ("a list", "- 1\n", "spec file 'card.yaml' must hold one mapping of HardwareSheet fields")]],
    ("spec file without a required key", lambda w: ["validate", sim_yaml(w, {"hardware": {"spec": write(
        w, "card.yaml", "name: c\npeak_tflops: {bf16: 1}\nmem_gib: 8\n")}})],
     "spec file 'card.yaml': mem_bw_tbs: required key is missing"),
    ("inline spec's moe_lowp_efficiency 0", lambda w: ["validate", sim_yaml(w, {"hardware": {"spec": {
        "name": "c", "peak_tflops": {"bf16": 1}, "mem_bw_tbs": 1, "mem_gib": 8, "moe_lowp_efficiency": 0}}})],
     "sim.hardware.spec.moe_lowp_efficiency: Input should be greater than 0"),
    ("negative seed", validate_with("seed=-1"), "seed: Input should be greater than or equal to 0"),
    ("seed of 32 bits", validate_with("seed=2147483648"), "seed: Input should be less than 2147483648"),
    ("negative sweep seed", lambda w: ["run", sim_yaml(w, {"sweep": {"axis": "none", "seeds": [-1]}})],
     "sim.sweep.seeds.0: Input should be greater than or equal to 0"),
    ("negative shuffle seed", validate_with("prompts.shuffle_seed=-5"), "prompts.shuffle_seed: Input should be greater"),
    ("SLA of zero tok/s", lambda w: ["run", sim_yaml(w, {"sla": {"tok_s_per_user": [40, 0]}})],
     "sim.sla.tok_s_per_user.1: Input should be greater than 0"),
    ("a result file's place taken by a directory", lambda w: report_into_a_directory(w),
     "runs/cli/rd/REPORT.md: is a directory, a file is needed here"),
    # the command line itself: argparse's usage block and `lab: error:` were two lines and another form
    ("unknown command", lambda w: ["quickstart"], "error: lab: argument command: invalid choice: 'quickstart'"),
    ("lab run without a file", lambda w: ["run"], "error: lab run: the following arguments are required: config"),
    ("unknown option", lambda w: ["validate", "good.yaml", "--sett", "seed=1"], "unrecognized arguments: --sett"),
]


def report_into_a_directory(workdir) -> list[str]:
    """The report stage of a run whose REPORT.md is a directory (an IsADirectoryError traceback before)."""
    run = workdir / "runs" / "cli" / "rd"
    (run / "REPORT.md").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({**GOOD, "run_id": "rd"}))
    return ["run", "good.yaml", "--set", "run_id=rd", "--stages", "report"]


def sim_yaml(workdir, sim: dict) -> str:
    """An experiment with only the sim stage and this sim: section."""
    data = {**GOOD, "stages": ["sim"], "sim": {"sweep": {"axis": "none", "workers": 1}, **sim}}
    return write(workdir, "sim.yaml", yaml.safe_dump(data))


@pytest.mark.parametrize("label, make_args, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_and_exit_2(workdir, label, make_args, fragment):
    existing = workdir / "runs" / "cli" / "existing"
    before = snapshot(existing)
    result = lab(make_args(workdir), workdir)
    assert_one_error_line(result, fragment)
    assert snapshot(existing) == before


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_cuda_here(), reason="checks a CPU-only machine's answer to a CUDA experiment")
def test_a_cuda_experiment_on_a_cpu_machine(workdir):
    """`lab run` stops before the run directory (it was created, then the stage failed); `lab validate` passes the
    file and says in a note what this machine lacks (a GPU experiment may be checked on a laptop)."""
    result = lab(["run", "good.yaml", "--set", "target.device=cuda", "--set", "run_id=gpu"], workdir)
    assert_one_error_line(result, "good.yaml: target.device 'cuda': CUDA is not available on this machine")
    assert not (workdir / "runs" / "cli" / "gpu").exists()
    result = lab(["validate", "good.yaml", "--set", "target.device=cuda"], workdir)
    assert result.returncode == 0, result.stderr
    assert "note: target.device 'cuda': CUDA is not available on this machine; `lab run` of its evaluate" in result.stdout
    result = lab(["validate", "good.yaml", "--set", "target.device=cuda", "--set", "stages=[sim]",
                  "--set", "sim={sweep: {axis: none}}"], workdir)
    assert "note" not in result.stdout  # a sim-only experiment loads no target


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


def mixed_traces(workdir, name="mixed") -> str:
    """A traces folder holding shards of two runs (one copied in from another run); its name."""
    for run_id in ("a", "b"):
        write_shard([StepRecord(run_id, "ngram", "t", "d", "p", "rounds", 0.0, 0, 5, 2, 1, [1.0, 0.0], [1.0, 1.0])],
                    workdir / name / f"rounds__{run_id}.parquet")
    return name


def empty_traces(workdir, name="empty") -> str:
    """A traces folder whose one shard is valid and holds no row; its name."""
    write_shard([], workdir / name / "rounds__ngram__d__T0.parquet")
    return name


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
    ("step profile with a p90 below its median",  # a 90th percentile under the median was priced as measured
     lambda w: profiled(step_profile(w, "p", PROFILE_HEADER + "1,1,0,5.0,6.0,3\n2,1,0,7.0,2.5,3\n")),
     ("sim.cost.profile: p/step_profile.csv: row 2 (batch=2 query_tokens=1 context_len=0): step_ms_p90 2.5 is below "
      "its median step_ms 7; a 90th percentile is never below the median")),
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
    ("acceptance traces of two runs in one folder", lambda w: replayed_traces([mixed_traces(w)]),
     "mixed: shards of 2 runs mixed: run_id 'a' in rounds__a.parquet; run_id 'b' in rounds__b.parquet"),
    ("calibration file not JSON",
     lambda w: replayed_traces(["runs/cli/existing/traces"], calibration_path=write(w, "cal.json", "{")),
     "cal.json: calibration file is not valid JSON"),
    ("lengths CSV without its columns",
     lambda w: {"workload": {"lengths": {"source": "csv", "csv_path": write(w, "l.csv", "x,y\n1,2\n")}}},
     "sim.workload.lengths.csv_path:"),
    ("lengths CSV with a negative length", lambda w: {"workload": {"lengths": {
        "source": "csv", "csv_path": write(w, "l.csv", "prompt_tokens,output_tokens\n12,3\n-1,2\n")}}},
     "sim.workload.lengths.csv_path: l.csv line 3: prompt_tokens / output_tokens must be whole numbers"),
    # 1e300 passed as a whole number, was cast to int64 (a negative count) and clipped to a 1-token prompt
    ("lengths CSV with a length past any token count", lambda w: {"workload": {"lengths": {
        "source": "csv", "csv_path": write(w, "l.csv", "prompt_tokens,output_tokens\n12,3\n1e300,2\n")}}},
     "l.csv line 3: prompt_tokens / output_tokens must be whole numbers in 0 .. 2,147,483,647, got [1e+300, 2.0]"),
    ("arrival trace with a prompt past any token count", lambda w: {"workload": {"kind": "trace", "trace_path": write(
        w, "a.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,9223372036854775808,5\n")}},
     ("sim.workload.trace_path: a.csv line 3: num_prefill_tokens / num_decode_tokens must be whole numbers in 0 .. "
      "2,147,483,647")),
    ("arrival trace with a fractional token count", lambda w: {"workload": {"kind": "trace", "trace_path": write(
        w, "a.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10.5,5\n")}},
     "a.csv line 2: num_prefill_tokens / num_decode_tokens must be whole numbers"),
    ("request log with a token count past any", lambda w: {"workload": {"kind": "replay_log", "log_path": write(
        w, "log.csv", "request_id,arrival_s,input_tokens,output_tokens,first_token_s,finish_s\n"
        "a,0,1e300,4,0.1,0.5\n")}}, "log.csv column input_tokens must hold whole numbers in 0 .. 2,147,483,647"),
    ("ShareGPT lengths never tabled", lambda w: {"workload": {"lengths": {"source": "sharegpt", "tokenizer": "nope"}}},
     "sim.workload.lengths.tokenizer: no ShareGPT length table for 'nope'"),
    ("missing arrival trace", lambda w: {"workload": {"kind": "trace", "trace_path": "no/arrivals.csv"}},
     "sim.workload.trace_path:"),
    ("corrupt request log", lambda w: {"workload": {"kind": "replay_log", "log_path": "garbage.parquet"}},
     "sim.workload.log_path:"),
    # session 17 bad-input audit
    ("model config with a word for KV heads", lambda w: {"model": {"config": write(w, "config.json", json.dumps(
        {**TINY_CONFIG, "num_key_value_heads": "eight"}))}},
     "config.json 'num_key_value_heads' must be a positive integer, not 'eight'"),
    ("MoE config with a word for its sparse step", lambda w: {"model": {"config": write(w, "config.json", json.dumps(
        {**TINY_CONFIG, "num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": "two"}))}},
     "config.json 'decoder_sparse_step' must be a positive integer, not 'two'"),
    ("DeepSeek config with an expert layer frequency of 0", lambda w: {"model": {"config": write(
        w, "config.json", json.dumps({**TINY_CONFIG, "n_routed_experts": 4, "num_experts_per_tok": 2,
                                      "moe_layer_freq": 0}))}},
     "config.json 'moe_layer_freq' must be a positive integer, not 0"),
    ("model config with more heads than width", lambda w: {"model": {"config": write(w, "config.json", json.dumps(
        {**TINY_CONFIG, "num_attention_heads": 128}))}}, "num_attention_heads 128 exceeds hidden_size 64"),
    # session 23: quantized checkpoints (sim/quant.py)
    ("quantized config with a word for its bits", lambda w: {"model": {"config": write(w, "config.json", json.dumps(
        {**TINY_CONFIG, "quantization_config": {"quant_method": "awq", "bits": "four"}}))}},
     "quantization_config 'bits' must be a number, not 'four'"),
    ("quantized config of a method the simulator does not read", lambda w: {"model": {"config": write(
        w, "config.json", json.dumps({**TINY_CONFIG, "quantization_config": {"quant_method": "hqq"}}))}},
     "quant_method 'hqq' is not one the simulator reads"),
    ("compressed-tensors config without its groups", lambda w: {"model": {"config": write(
        w, "config.json", json.dumps({**TINY_CONFIG, "quantization_config": {"quant_method": "compressed-tensors"}}))}},
     "compressed-tensors quantization_config has no config_groups"),
    # session 31: architectures the simulator would price wrong (sim/models.py UNSUPPORTED_KEYS)
    ("hybrid Mamba config", lambda w: {"model": {"config": write(w, "config.json", json.dumps(
        {**TINY_CONFIG, "attn_layer_period": 8, "mamba_d_state": 16}))}},
     "config.json 'attn_layer_period' describes Jamba-style interleaved Mamba layers"),
    ("MLX checkpoint config", lambda w: {"model": {"config": write(w, "config.json", json.dumps(
        {**TINY_CONFIG, "quantization": {"group_size": 64, "bits": 4}}))}},
     "config.json 'quantization' is an MLX checkpoint's"),
    ("calibration file that is a list",
     lambda w: replayed_traces(["runs/cli/existing/traces"], calibration_path=write(w, "cal.json", "[1]")),
     "cal.json: expected a JSON object, found list"),
    ("calibration with an infinite temperature",
     lambda w: replayed_traces(["runs/cli/existing/traces"], calibration_path=write(
         w, "cal.json", '{"methods": {"m": {"temperatures": [1e999]}}}')),
     "cal.json: methods.m.temperatures is not a non-empty list of positive numbers"),
    ("calibration file of binary bytes",
     lambda w: replayed_traces(["runs/cli/existing/traces"], calibration_path=write_bytes(w, "cal.json", b"\xff\x00")),
     "cal.json: calibration file is not valid JSON"),
    ("request log with a negative arrival", lambda w: replay_log(w, "r1,-3,10,5,1,2\n"),
     "log.csv column arrival_s must hold finite seconds >= 0"),
    ("request log with an infinite arrival", lambda w: replay_log(w, "r1,inf,10,5,1,2\n"),
     "log.csv column arrival_s must hold finite seconds >= 0"),
    ("request log with negative tokens", lambda w: replay_log(w, "r1,0,10,-5,1,2\n"),
     "log.csv column output_tokens must hold whole numbers in 0 .. 2,147,483,647"),
    # times out of order gave negative TTFTs / E2Es in sim/fidelity.csv without a word
    ("request log with a first token before its arrival", lambda w: replay_log(w, "r1,5,10,5,1,6\n"),
     "log.csv row 2: first_token_s 1 is before its arrival_s 5"),
    ("request log finished before its first token", lambda w: replay_log(w, "r1,0,10,5,3,2\n"),
     "log.csv row 2: finish_s 2 is before its first_token_s 3"),
    ("request log with a word for a time", lambda w: replay_log(w, "r1,0,10,5,soon,2\n"),
     "log.csv column first_token_s holds values that are not numbers"),
    ("lengths CSV with an empty cell", lambda w: {"workload": {"lengths": {"source": "csv", "csv_path": write(
        w, "l.csv", "num_prefill_tokens,num_decode_tokens\n10,\n")}}}, "l.csv line 2: num_prefill_tokens / num_decode_tokens must be whole numbers in 0 .. 2,147,483,647"),
    # session 31: a tensor-parallel size vLLM refuses for the model (sim/cost.py check_tp_split)
    ("tensor-parallel size that does not split the heads", lambda w: {
        "hardware": {"preset": "h100", "tp": 3}, "model": {"config": write(w, "config.json", json.dumps(TINY_CONFIG))}},
     "sim.hardware.tp 3: the model's 4 attention heads"),
    ("tensor-parallel size that splits the KV heads unevenly", lambda w: {
        "hardware": {"preset": "h100", "tp": 4}, "model": {"config": write(w, "config.json", json.dumps(
            {**TINY_CONFIG, "num_attention_heads": 8, "num_key_value_heads": 6, "head_dim": 8}))}},
     "sim.hardware.tp 4: the model's 6 KV heads"),
    ("model that leaves no KV memory on the card", lambda w: {
        "hardware": {"preset": "rtx-4090"}, "model": {"config": write(w, "config.json", json.dumps(
            {**TINY_CONFIG, "hidden_size": 8192, "num_hidden_layers": 64, "num_attention_heads": 64}))}},
     "does not fit: weights"),
    # session 37: a checkpoint directory is taken for its config.json; one without it is named
    ("model directory without config.json", lambda w: {"model": {"config": make_dir(w, "ckpt")}},
     "model.config 'ckpt' not found (no config.json in the directory)"),
    ("arrival trace pandas cannot parse (its message has a line break)", lambda w: {
        "workload": {"kind": "trace", "trace_path": write(w, "r.csv", "a\n1\n2,3\n")},
        "sweep": {"axis": "none", "workers": 1}}, "r.csv is not a readable CSV"),
    # vLLM's server refuses a request whose prompt + output pass max_model_len: a workload of nothing else served none
    # (and a closed loop of them resent at once forever)
    ("every request past the model's context", lambda w: {
        "model": {"config": write(w, "config.json", json.dumps({**TINY_CONFIG, "max_position_embeddings": 256}))},
        "workload": {"lengths": {"source": "fixed", "prompt_tokens": 512, "output_tokens": 8}}},
     "sim.workload.lengths: every request is longer than max_model_len 256 (the shortest 520 tokens, prompt + output)"),
    ("every replayed request past --max-model-len", lambda w: {
        "engine": {"max_model_len": 12}, "workload": {"kind": "trace", "trace_path": write(w, "a.csv", ARRIVALS)}},
     "sim.workload.trace_path: every request is longer than max_model_len 12 (the shortest 15 tokens"),
    ("arrival trace with a negative time", lambda w: {
        "workload": {"kind": "trace", "trace_path": write(w, "a.csv", ARRIVALS + "-5,10,5\n")},
        "sweep": {"axis": "none", "workers": 1}}, "sim.workload.trace_path: a.csv: columns"),
]

TINY_CONFIG = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 99}
ARRIVALS = "arrived_at,num_prefill_tokens,num_decode_tokens\n1,10,5\n"
REQUEST_LOG = "request_id,arrival_s,input_tokens,output_tokens,first_token_s,finish_s\nr0,0,10,5,1,2\n"


def replay_log(workdir, rows: str) -> dict:
    """A sim section replaying log.csv: a good request, then these rows."""
    return {"workload": {"kind": "replay_log", "log_path": write(workdir, "log.csv", REQUEST_LOG + rows)},
            "sweep": {"axis": "none", "workers": 1}}


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
    after = result.stderr.split(error_lines[0], 1)[1]
    assert not after.strip(), f"the error continues past its line: {after!r}"
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

def test_validate_says_what_the_simulator_will_serve(workdir):
    """`lab validate` of a sim YAML prints the model, its KV cache and the engine limits (vLLM's defaults for the card
    where the YAML leaves them out: 1024 / 8192 on an H100), to hold against the served engine's log."""
    config = write(workdir, "qwen3-4b.json", json.dumps({**TINY_CONFIG, "torch_dtype": "bfloat16"}))
    result = lab(["validate", sim_yaml(workdir, {"hardware": {"preset": "h100"}, "model": {"config": config}})], workdir)
    assert result.returncode == 0, result.stderr
    line = result.stdout.splitlines()[-1]
    assert line.startswith("  sim: 1 x h100 (tp 1), qwen3-4b: ") and "tokens per replica" in line, result.stdout
    assert "max_num_seqs 1024, max_num_batched_tokens 8192" in line
    result = lab(["validate", sim_yaml(workdir, {"hardware": {"preset": "h100"}, "model": {"config": config},
                                                 "engine": {"max_num_seqs": 64}})], workdir)
    assert "max_num_seqs 64, max_num_batched_tokens 8192" in result.stdout


def test_second_lab_run_of_a_run_id_stops_at_once(workdir):
    """Two `lab run` of one run id both did all the work and train_log.csv got every step twice."""
    code = ("import time; from lab.config import load_config; from lab.runs import open_run; "
            "ctx = open_run(load_config('good.yaml', ['run_id=busy'])); print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = lab_process(["run", "good.yaml", "--set", "run_id=busy"], workdir)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"error: runs/cli/busy: in use by pid {holder.pid}"
    assert "starting" not in result.stdout


def test_a_prompt_file_with_a_byte_order_mark_validates(workdir):
    """A UTF-8 file saved by a Windows editor starts with a BOM: read, not 'malformed JSON' at line 1."""
    name = write_bytes(workdir, "bom.jsonl", b'\xef\xbb\xbf{"turns": ["caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd"]}\n')
    result = lab(["validate", "good.yaml", "--set", f"prompts.datasets.0.path={name}"], workdir)
    assert result.returncode == 0 and "good.yaml: ok" in result.stdout, result.stderr
    from lab.prompt_files import read_jsonl_turns
    assert read_jsonl_turns(workdir / name) == [["caf\u00e9 \u4f60\u597d"]]


def test_traces_of_a_run_directory_reads_its_traces(workdir):
    """`lab traces runs/x/<id>` (the run, not its traces/): its decode/ and sim/ Parquet files are not traces."""
    run = workdir / "runs" / "cli" / "existing"
    (run / "decode").mkdir()
    pq.write_table(pa.table({"method": ["ngram"]}), run / "decode" / "d__T0.parquet")
    result = lab(["traces", str(run)], workdir)
    assert result.returncode == 0 and result.stdout.startswith("1 rows"), result.stderr


def test_traces_into_a_closed_pipe_is_one_line(workdir):
    """`lab traces ... | head` gave a BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-m", "lab.cli", "traces", "runs/cli/existing/traces"], cwd=workdir,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    child.stdout.close()  # the reader is gone before anything is written
    stderr = child.stderr.read()
    assert child.wait(timeout=120) == 2, stderr
    assert stderr.strip() == "error: <stdout>: closed by the reader before the output was written (broken pipe)"


def tool(workdir, module: str, *args: str) -> Finished:
    """`python -m MODULE ARGS` in `workdir` (in this process, see in_process)."""
    return in_process(importlib.import_module(module).main, args, workdir)


def tool_process(workdir, module: str, *args: str):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=workdir, capture_output=True, text=True,
                          check=False, env=env, timeout=300)


def public_row_file(workdir, extra: dict | None = None, **reported) -> str:
    """A public_check data file of one Qwen3.5-9B row on an H100 reporting `reported` (keys of `extra` set on
    the row)."""
    row = {"id": "r", "source": "https://example.org/r", "gpu": "h100", "gpu_reported": "H100", "model": "Qwen3.5-9B",
           "model_config": "sim/validation/configs/qwen3.5-9b.json", "vllm": "0.17.1",
           "bench": {"input_tokens": 100, "output_tokens": 50, "num_prompts": 4, "request_rate": 1.0},
           "reported": reported, **(extra or {})}
    return write(workdir, "rows.yaml", yaml.safe_dump({"rows": [row]}))


def tp_series_file(workdir, tp: int) -> str:
    """sim/validation/tp_growth.yaml's first series with one more point, at `tp` (a copy of its tp 2 point)."""
    run = yaml.safe_load((ROOT / "sim" / "validation" / "tp_growth.yaml").read_text())["runs"][0]
    run["points"][tp] = run["points"][2]
    return write(workdir, "tp.yaml", yaml.safe_dump({"runs": [run]}))


LAMBDA_70B = [f"lambda-{n}xh100-tp{n}-llama-3-70b-sharegpt-10" for n in (2, 4, 8)]  # one model, one card, 3 tps


def public_csv(workdir, batch="4.0", ids=LAMBDA_70B) -> list[str]:
    """The tp_growth_check arguments reading a public_check.csv of the Lambda 70B H100 rows (their first row's
    mean decode batch `batch`)."""
    lines = ["id,reported_tpot_mean_ms,sim_tpot_mean_ms,sim_mean_decode_batch,sim_mean_input,sim_mean_output"]
    lines += [f"{rid},20.0,19.0,{batch if i == 0 else '4.0'},200.0,300.0" for i, rid in enumerate(ids)]
    return ["--public-csv", write(workdir, "pc.csv", "\n".join(lines) + "\n"), "--rows", ",".join(LAMBDA_70B)]


def arrivals(workdir) -> str:
    """A two-request arrival CSV of sim.bench's --trace."""
    return write(workdir, "arrivals.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n0,10,5\n1,10,5\n")


def engine_run(workdir) -> str:
    """A run directory of experiments/fidelity_vllm.yaml whose engine stage has not run (no engine/ results)."""
    run = workdir / "runs" / "fid" / "x"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text((ROOT / "experiments" / "fidelity_vllm.yaml").read_text())
    return "runs/fid/x"


# the `python -m ...` tools a user runs beside `lab`: the same rule (one line, exit 2, nothing damaged)
TOOL_CASES = [
    ("public_check: unknown option", lambda w: ["sim.public_check", "--bogus", "x"],
     "error: python -m sim.public_check: unrecognized arguments: --bogus x"),
    ("public_check: --out is a file", lambda w: ["sim.public_check", "--out", "good.yaml"],
     "good.yaml: is a file, a directory is needed here"),
    ("bench_profile: NaN peaks", lambda w: ["sim.bench_profile", step_profile(w, "p"), "--model", "qwen3-8b",
                                            "--peaks", "nan,10"], "--peaks: 'nan,10': both must be positive finite"),
    ("bench_profile: infinite peaks", lambda w: ["sim.bench_profile", step_profile(w, "p"), "--model", "qwen3-8b",
                                                 "--peaks", "100,inf"], "--peaks: '100,inf': both must be positive"),
    ("bench_profile: --out is a file", lambda w: ["sim.bench_profile", step_profile(w, "p"), "--model", "qwen3-8b",
                                                  "--peaks", "100,10", "--out", "good.yaml"],
     "good.yaml: is a file, a directory is needed here"),
    ("bench_profile: a profile of one row", lambda w: ["sim.bench_profile", step_profile(
        w, "p", PROFILE_HEADER + "1,1,0,5.0,6.0,3\n"), "--model", "qwen3-8b", "--peaks", "100,10"],
     "p/step_profile.csv: 1 row; the fit needs at least 2 (even rows fit, odd rows held out)"),
    ("bench_profile: model config that is a list",
     lambda w: ["sim.bench_profile", step_profile(w, "p"), "--model-config", write(w, "config.json", "[1]")],
     "config.json: config.json must hold a JSON object, not list"),
    ("cpu_linear: rows not numbers", lambda w: ["real.cpu_linear", "--rows", "4,many"],
     "argument --rows: 'many' is not an integer"),
    ("cpu_linear: zero rows", lambda w: ["real.cpu_linear", "--rows", "0"], "argument --rows: '0': must be at least 1"),
    ("cpu_linear: a shape past memory", lambda w: ["real.cpu_linear", "--model-shapes", "99999999999x99999999"],
     "argument --model-shapes: '99999999999x99999999': more than 2147483648 weights"),  # was torch's overflow
    ("cpu_linear: shape not OUTxIN", lambda w: ["real.cpu_linear", "--model-shapes", "2048"],
     "argument --model-shapes: '2048' is not OUTxIN"),
    ("drafter_check: negative prompt count", lambda w: ["real.engine.drafter_check", "runs/cli/existing", "--prompts", "-1"],
     "argument --prompts: '-1': must be at least 1"),
    ("export_vllm: --target-out is a file", lambda w: ["real.export_vllm", "runs/cli/existing", "--target-out", "good.yaml"],
     "--target-out good.yaml: is a file, a directory is needed here"),
    ("engine fidelity: unknown option", lambda w: ["real.engine.fidelity", "runs/cli/existing", "--bogus"],
     "error: python -m real.engine.fidelity: unrecognized arguments: --bogus"),
    ("engine steps: no run named", lambda w: ["real.engine.steps"],
     "error: python -m real.engine.steps: the following arguments are required: run"),
    ("sharegpt_lengths: unknown option", lambda w: ["real.sharegpt_lengths", "--bogus"],
     "error: python -m real.sharegpt_lengths: unrecognized arguments: --bogus"),
    ("sim.bench: unknown option", lambda w: ["sim.bench", "hour", "--trace", "t.csv", "--bogus"],
     "error: python -m sim.bench: unrecognized arguments: --bogus"),
    # session 34's features: tpot_mean_of without the TPOT it qualifies was accepted and ignored; a tp_growth series
    # point at a tp that does not split the heads was priced with fractional heads; a bad --public-csv was a pandas
    # traceback (empty, not UTF-8, no id column, a repeated id) or a table of nan (a nan / zero batch)
    ("public_check: tpot_mean_of without tpot_mean_ms", lambda w: [
        "sim.public_check", "--file", public_row_file(w, tpot_mean_of="totals", ttft_mean_ms=30.0), "--out", "pc"],
     "rows[0].reported: Value error, tpot_mean_of says how tpot_mean_ms was derived"),
    ("tp_growth_check: a tp whose heads do not split", lambda w: [
        "sim.tp_growth_check", "--file", tp_series_file(w, 3), "--out", "tg"],
     "tp.yaml: runs[0].points.3: tp 3: the model's 32 attention heads"),
    ("tp_growth_check: empty --public-csv", lambda w: [
        "sim.tp_growth_check", "--public-csv", write(w, "pc.csv", ""), "--rows", "a", "--out", "tg"],
     "--public-csv: pc.csv is not a CSV table"),
    ("tp_growth_check: --public-csv not UTF-8", lambda w: [
        "sim.tp_growth_check", "--public-csv", write_bytes(w, "pc.csv", b"\xff\xfe\x00"), "--rows", "a"],
     "--public-csv: pc.csv is not a CSV table"),
    ("tp_growth_check: --public-csv without ids", lambda w: [
        "sim.tp_growth_check", "--public-csv", write(w, "pc.csv", "a,b\n1,2\n"), "--rows", "a"],
     "--public-csv: pc.csv has no column 'id'"),
    ("tp_growth_check: --public-csv repeats a row", lambda w: [
        "sim.tp_growth_check", *public_csv(w, ids=LAMBDA_70B + LAMBDA_70B[:1]), "--out", "tg"],
     f"--public-csv: pc.csv: id '{LAMBDA_70B[0]}' on more than one line"),
    ("tp_growth_check: --public-csv nan batch", lambda w: [
        "sim.tp_growth_check", *public_csv(w, batch="nan"), "--out", "tg"],
     f"row {LAMBDA_70B[0]} sim_mean_decode_batch 'nan' is not a positive finite number"),
    ("tp_growth_check: --public-csv zero batch", lambda w: ["sim.tp_growth_check", *public_csv(w, batch="0")],
     "sim_mean_decode_batch '0.0' is not a positive finite number"),
    ("ttft_breakdown: --csv a directory", lambda w: ["sim.ttft_breakdown", "--csv", "runs"],
     "--csv: runs is a directory, a file is needed here"),  # it said "does not exist (write it with: ...)"
    ("tp_growth_check: --public-csv a directory", lambda w: [
        "sim.tp_growth_check", "--public-csv", "runs", "--rows", "a"], "--public-csv: runs is a directory"),
    ("tp_growth_check: --rows of no ids", lambda w: [
        "sim.tp_growth_check", "--public-csv", write(w, "pc.csv", "id\n"), "--rows", ","], "--rows: no row ids"),
    # a directory as model_config said "'...' not found under <repo>"; an unknown key in a data file said
    # pydantic's "Extra inputs are not permitted" where `lab validate` says "unknown key"
    ("public_check: model_config a directory", lambda w: [
        "sim.public_check", "--file", public_row_file(w, {"model_config": "sim/validation/configs"}, tpot_mean_ms=9.0),
        "--out", "pc"], "rows.yaml: rows[0].model_config: Value error, "
                        f"{ROOT / 'sim' / 'validation' / 'configs'} is a directory, a file is needed here"),
    ("public_check: unknown key in a row", lambda w: [
        "sim.public_check", "--file", public_row_file(w, {"gpu_count": 1}, tpot_mean_ms=9.0), "--out", "pc"],
     "rows.yaml: rows[0].gpu_count: unknown key"),
    # session 38 (h119): flags the sim section refuses were a pydantic traceback (sim.bench); a run directory without
    # an engine section, an unknown --load, a missing summary.json were tracebacks (real.engine.bench); --rows ""
    # (an unset shell variable) ran every row for minutes; an --out under a file failed after minutes of tokenizing
    ("sim.bench: --replicas 0", lambda w: ["sim.bench", "azure", "--trace", arrivals(w), "--replicas", "0"],
     "error: python -m sim.bench: --replicas: replicas: Input should be greater than or equal to 1"),
    ("sim.bench: unknown --policy", lambda w: ["sim.bench", "azure", "--trace", arrivals(w), "--policy", "fast"],
     "error: python -m sim.bench: --policy: policies.0.kind: Input should be"),
    ("sim.bench: --async-scheduling neither on nor off",
     lambda w: ["sim.bench", "azure", "--trace", arrivals(w), "--async-scheduling", "true"],
     "error: python -m sim.bench: argument --async-scheduling: invalid choice: 'true' (choose from 'on', 'off')"),
    ("engine bench: a run without an engine section", lambda w: ["real.engine.bench", "runs/cli/existing"],
     "config.yaml: no engine section"),
    ("engine bench: an unknown --load", lambda w: ["real.engine.bench", engine_run(w), "--load", "peak"],
     "--load: 'peak' is not one of the run's loads ['low', 'mid', 'high', 'azure']"),
    ("engine bench: no summary.json", lambda w: ["real.engine.bench", engine_run(w)],
     "engine/nospec/high/summary.json: not found"),
    ("public_check: a row's vllm that is no release", lambda w: [
        "sim.public_check", "--file", public_row_file(w, {"vllm": "latest"}, tpot_mean_ms=9.0), "--out", "pc"],
     "row r: as a sim section, engine.vllm_version: Value error, 'latest' is not a vLLM release"),
    ("step_breakdown: a row's vllm that is no release", lambda w: [
        "sim.step_breakdown", "r", "--batch", "1", "--context", "10",
        "--file", public_row_file(w, {"vllm": "latest"}, tpot_mean_ms=9.0)], "'latest' is not a vLLM release"),
    ("public_check: --rows of no ids", lambda w: ["sim.public_check", "--rows", "", "--out", "pc"],
     "--rows: '' names no row id"),
    ("sharegpt_lengths: --out under a file", lambda w: ["real.sharegpt_lengths", "--out", "good.yaml/lengths.csv"],
     "good.yaml: is a file, a directory is needed here"),
    # the bench scripts built their lab sections from the flags unguarded: pydantic / LabError tracebacks, a
    # --block-size 0 that never ended, a --cpu-linear mode found after the target loaded
    ("real.bench: --dtypes float7", lambda w: ["real.bench", "--target", "tiny-qwen3", "--dtypes", "float7"],
     "error: python -m real.bench: dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
    ("real.bench: --block-size 0", lambda w: ["real.bench", "--target", "tiny-qwen3", "--block-size", "0"],
     "error: python -m real.bench: argument --block-size: '0': must be at least 1"),
    ("real.bench_step: a target not embedded", lambda w: ["real.bench_step", "--target", "nope"],
     "error: python -m real.bench_step: the flags: Value error, target.name 'nope' is not embedded"),
    ("real.bench_step: --cpu-linear of no mode", lambda w: ["real.bench_step", "--target", "tiny-qwen3",
                                                            "--cpu-linear", "fast"],
     "error: python -m real.bench_step: argument --cpu-linear: 'fast': comma-separated modes of auto, on, off"),
    ("real.bench_regen: --batch 0", lambda w: ["real.bench_regen", "--target", "tiny-qwen3", "--batch", "0"],
     "error: python -m real.bench_regen: argument --batch: '0': must be at least 1"),
    ("real.bench_train: --only no drafter", lambda w: ["real.bench_train", "--only", "medusa", "--out", "bt"],
     "error: python -m real.bench_train: <config>: Value error, stages ['evaluate'] need at least one drafter"),
    ("real.bench_busy: an unknown policy", lambda w: ["real.bench_busy", "--policies", "old,spin", "--out", "bb"],
     "error: python -m real.bench_busy: argument --policies: 'old,spin': comma-separated policies of old, passive2, new"),
    ("bench_live_ablation: a directory without traces", lambda w: ["dashboards.bench_live_ablation", "runs/cli"],
     "runs/cli: not a run directory with traces/"),
    ("export_vllm: --target-out a directory of other files",
     lambda w: ["real.export_vllm", "runs/cli/existing", "--target-out", "runs/cli"],
     "--target-out runs/cli: a directory that holds no config.json"),
]


@pytest.mark.parametrize("label, make_args, fragment", TOOL_CASES, ids=[c[0] for c in TOOL_CASES])
def test_bad_tool_input_gives_one_line_and_exit_2(workdir, label, make_args, fragment):
    args = make_args(workdir)
    before = snapshot(workdir)  # the run directory and the case's own input files
    result = tool(workdir, *args)
    assert_one_error_line(result, fragment)
    assert snapshot(workdir) == before  # nothing written, nothing changed


END_TO_END = {"unknown command": "lab", "binary YAML": "lab", "missing step profile": "lab",
              "cpu_linear: zero rows": "real.cpu_linear", "bench_profile: NaN peaks": "sim.bench_profile"}


@pytest.mark.parametrize("label", list(END_TO_END))
def test_entry_points_print_the_same_line(workdir, label):
    """Some rows through the real `python -m` entry points (the tables above call main in-process): the same
    one line on stderr and exit status 2 from a fresh interpreter, and nothing else on stderr that says error."""
    cases = {c[0]: c for c in CASES + TOOL_CASES}
    _, make_args, fragment = cases[label]
    args = make_args(workdir)
    if END_TO_END[label] == "lab":
        result = lab_process(args, workdir)
    else:
        result = tool_process(workdir, *args)
    assert_one_error_line(result, fragment)


def test_sim_replaying_this_experiments_own_names_validates(workdir):
    """The names check_replayed_names refuses outside the drafters, prompt sets and temperatures pass inside them."""
    result = lab(validate_with("stages=[evaluate, sim]", "sim={acceptance: {source: run, method: ngram, datasets: "
                               "{humaneval: 1.0}, temperature: 0}, policies: [{kind: ar}, {kind: fixed_k, k: 2, "
                               "method: ngram}]}")(workdir), workdir)
    assert result.returncode == 0, result.stderr
