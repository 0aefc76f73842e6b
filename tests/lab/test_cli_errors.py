"""Bad inputs: one clear error line naming the field or file, exit code 2, existing results untouched."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

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
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "inconsistent.parquet")
    table = table.set_column(table.schema.get_field_index("accepted"), "accepted",
                             __import__("pyarrow").array([3], __import__("pyarrow").int16()))
    pq.write_table(table, tmp_path / "inconsistent.parquet")
    return tmp_path


def write(workdir, name, text):
    (workdir / name).write_text(text)
    return name


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
    ("corrupt Parquet", lambda w: ["traces", "garbage.parquet"], "not a readable Parquet trace"),
    ("inconsistent Parquet", lambda w: ["traces", "inconsistent.parquet"], "accepted=3 outside 0..k=2"),
    ("missing trace path", lambda w: ["traces", "no/such/dir"], "trace path does not exist"),
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
