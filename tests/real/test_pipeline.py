"""The whole pipeline through the CLI on experiments/smoke.yaml, shrunk: prepare -> train -> evaluate ->
calibrate -> sim -> report on the tiny random Qwen3 in fp32, then check what each stage left behind."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from lab.trace import read_traces

ROOT = Path(__file__).resolve().parents[2]
SHRINK = ["prompts.datasets=[{name: humaneval, cap: 2}]", "decode.max_new_tokens=16",
          "prepare.datasets=[{name: sharegpt, cap: 8}]", "prepare.max_new_tokens=16", "train.steps=4",
          "train.save_every=4", "sim.workload.duration_s=5", "sim.workload.warmup_s=1",
          "sim.sweep.values=[1, 4]"]


def lab_run(tmp_path, *extra):
    args = [sys.executable, "-m", "lab.cli", "run", str(ROOT / "experiments" / "smoke.yaml"), "--quiet",
            "--set", f"output_dir={tmp_path}", "--set", "run_id=e2e", *extra]
    for item in SHRINK:
        args += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900, check=False)


def test_smoke_pipeline_end_to_end(tmp_path):
    done = lab_run(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "smoke" / "e2e"

    traces = read_traces(run / "traces")  # validates the schema of every shard
    assert set(traces["method"]) == {"ngram", "dspark", "dflash", "eagle3", "mtp"}
    assert set(traces["table"]) == {"rounds", "anchors"}
    assert (traces[traces["table"] == "anchors"]["temperature"] == 0).all()

    counts = json.loads((run / "evaluate.json").read_text())
    assert counts["time_budget_s"] is None and len(counts["groups"]) == 2
    assert all(g["prompts"] == g["available"] == 2 for g in counts["groups"].values())

    decoded_rows = pd.read_parquet(run / "decode" / "humaneval__T1.parquet")
    # the prompt viewer's inputs: the prompt text and one text piece per emitted token
    assert (decoded_rows["token_text"].map(len) == decoded_rows["n_tokens"]).all()
    assert (decoded_rows["prompt"].str.len() > 0).all()

    summary = pd.read_csv(run / "tau.csv")
    assert set(summary["temperature"]) == {0.0, 1.0}
    greedy = summary[summary["temperature"] == 0]
    assert (greedy["identical_to_ar"] == 1.0).all()  # fp32: lossless, token for token
    assert (summary["tau"] >= 1.0).all() and (summary["tau_break_even"] > 0).all()

    report = (run / "REPORT.md").read_text()
    for section in ("Training (on the training batches", "Acceptance length tau", "Where the time goes", "dspark against each drafter", "Greedy identity", "Per-position acceptance",
                    "Confidence calibration", "Serving simulation"):
        assert section in report, section
    assert list(run.glob("*.png")) and (run / "sim").is_dir()
    assert "finished in" in done.stdout and "[report]" in done.stdout

    # a second run skips every finished stage; --force redoes the listed ones
    decoded = run / "decode" / "humaneval__T0.parquet"
    before = decoded.stat().st_mtime_ns
    again = lab_run(tmp_path)
    assert again.returncode == 0 and again.stdout.count("done already") == 6
    assert decoded.stat().st_mtime_ns == before
    forced = lab_run(tmp_path, "--stages", "evaluate", "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert decoded.stat().st_mtime_ns != before
