"""Run directories: config snapshot, manifest, resume under the same id, refusal of a changed config, the
run lock, leftover cleanup, file modes, --force semantics and stage freshness."""
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.config import config_from_dict
from lab.errors import LabError
from lab.freshness import stale_reason
from lab.io import FILE_MODE, write_text_atomic
from lab.runs import open_run

ROOT = Path(__file__).resolve().parents[2]

BASE = {"name": "r", "prompts": {"datasets": [{"name": "humaneval"}]},
        "drafters": [{"name": "ngram", "method": "ngram"}]}


def test_open_run_writes_config_and_manifest_and_resumes(tmp_path):
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path)})
    ctx = open_run(cfg, show_progress=False)
    manifest = json.loads(ctx.path("manifest.json").read_text())
    assert manifest["config_hash"] == cfg.content_hash() and manifest["seed"] == 0
    assert {"git_sha", "git_dirty", "packages", "hardware"} <= set(manifest)
    ctx.mark_done("evaluate", {"groups": 3})
    ctx.close()
    again = open_run(cfg, show_progress=False)
    assert again.root == ctx.root and again.stage_done("evaluate") and not again.stage_done("sim")


def test_same_run_id_with_another_config_is_refused(tmp_path):
    first = config_from_dict({**BASE, "output_dir": str(tmp_path), "run_id": "fixed"})
    open_run(first, show_progress=False)
    before = (tmp_path / "r" / "fixed" / "config.yaml").read_text()
    changed = config_from_dict({**BASE, "output_dir": str(tmp_path), "run_id": "fixed", "seed": 5})
    with pytest.raises(LabError, match="run_id exists with a different config"):
        open_run(changed, show_progress=False)
    assert (tmp_path / "r" / "fixed" / "config.yaml").read_text() == before


def test_second_open_of_a_run_is_refused_until_the_first_closes(tmp_path):
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path), "run_id": "locked"})
    first = open_run(cfg, show_progress=False)
    with pytest.raises(LabError, match=rf"r/locked: in use by pid {os.getpid()}$"):
        open_run(cfg, show_progress=False)
    first.close()
    open_run(cfg, show_progress=False).close()


def test_run_lock_dies_with_a_killed_process(tmp_path):
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path), "run_id": "killed"})
    code = ("import sys, time; from lab.config import config_from_dict; from lab.runs import open_run; "
            f"ctx = open_run(config_from_dict({json.dumps({**BASE, 'output_dir': str(tmp_path), 'run_id': 'killed'})})); "
            "print('locked', flush=True); time.sleep(120)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(LabError, match=f"in use by pid {child.pid}"):
            open_run(cfg, show_progress=False)
    finally:
        child.kill()  # SIGKILL: no cleanup code runs in the child
        child.wait()
    open_run(cfg, show_progress=False).close()


def test_open_run_sweeps_leftover_tmp_files_and_dirs(tmp_path):
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path), "run_id": "sweep"})
    root = tmp_path / "r" / "sweep"
    (root / "traces").mkdir(parents=True)
    (root / "traces" / ".rounds__x.parquet.ab12.tmp").write_text("half")
    (root / "drafters" / "d" / ".state-0000004.9f.tmp").mkdir(parents=True)
    (root / "drafters" / "d" / ".state-0000004.9f.tmp" / "model.safetensors").write_text("half")
    (root / "traces" / "keep.parquet").write_text("complete")
    open_run(cfg, show_progress=False).close()
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*tmp*")) == []
    assert (root / "traces" / "keep.parquet").read_text() == "complete"


def test_atomic_writes_get_ordinary_file_modes(tmp_path):
    write_text_atomic(tmp_path / "out.txt", "x")
    mode = stat.S_IMODE((tmp_path / "out.txt").stat().st_mode)
    assert mode == FILE_MODE and mode & stat.S_IRGRP  # 0644 under umask 022; mkstemp alone gives 0600


def test_a_directory_that_refuses_writes_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    """A run directory copied read-only: the stage's first write was a PermissionError traceback. (Root writes
    into a 0555 directory, so the OS's refusal is simulated where the write starts.)"""
    import lab.io

    write_text_atomic(tmp_path / "REPORT.md", "old")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(lab.io.tempfile, "mkstemp", refuse)
    with pytest.raises(LabError, match=r"cannot write REPORT.md here \(Permission denied\)$"):
        write_text_atomic(tmp_path / "REPORT.md", "new")
    assert (tmp_path / "REPORT.md").read_text() == "old"


def test_a_directory_where_a_result_file_goes_is_one_line(tmp_path):
    (tmp_path / "REPORT.md").mkdir()
    with pytest.raises(LabError, match=r"REPORT.md: is a directory, a file is needed here$"):
        write_text_atomic(tmp_path / "REPORT.md", "new")
    assert (tmp_path / "REPORT.md").is_dir() and not list(tmp_path.glob(".*.tmp"))


def test_output_dir_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path / "runs")})
    with pytest.raises(LabError, match=r"runs: is a file, a directory is needed here"):
        open_run(cfg, show_progress=False)


def test_manifest_is_written_once_and_then_only_when_a_stage_finishes(tmp_path):
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path), "run_id": "m"})
    ctx = open_run(cfg, show_progress=False)
    created = ctx.path("manifest.json").read_bytes()
    ctx.close()
    time.sleep(0.01)
    ctx = open_run(cfg, show_progress=False)  # a second invocation whose stage then fails: no rewrite
    assert ctx.path("manifest.json").read_bytes() == created
    ctx.mark_done("evaluate")
    manifest = json.loads(ctx.path("manifest.json").read_text())
    assert set(manifest["stages"]) == {"evaluate"} and "git_sha" in manifest["stages"]["evaluate"]
    assert manifest["created_at"] == json.loads(created)["created_at"]
    ctx.close()


def test_redo_keeps_the_marker_until_the_stage_finishes_again(tmp_path):
    ctx = open_run(config_from_dict({**BASE, "output_dir": str(tmp_path)}), show_progress=False)
    ctx.mark_done("train")
    ctx.redo("train")
    assert (ctx.root / ".stages" / "train.done").exists()  # a failed rerun leaves the stage as it was
    assert not ctx.stage_done("train")  # ...but the stage itself runs from scratch
    ctx.close()


def test_stage_is_stale_when_an_earlier_stage_ran_or_finished_after_it(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"turns": ["hi"]}\n')
    cfg = config_from_dict({**BASE, "output_dir": str(tmp_path),
                            "prompts": {"datasets": [{"name": "local", "path": str(prompts)}]}})
    ctx = open_run(cfg, show_progress=False)
    for stage in ("evaluate", "calibrate", "sim", "report"):
        ctx.mark_done(stage)
    assert all(stale_reason(ctx, s, set()) is None for s in ("evaluate", "calibrate", "sim", "report"))
    assert stale_reason(ctx, "report", {"evaluate"}) == "evaluate ran in this invocation"
    time.sleep(0.01)
    ctx.mark_done("evaluate")  # e.g. `--stages evaluate --force` yesterday
    for stage in ("calibrate", "sim", "report"):
        assert stale_reason(ctx, stage, set()) == "evaluate finished after it"
    for stage in ("calibrate", "sim", "report"):
        ctx.mark_done(stage)
    assert stale_reason(ctx, "report", set()) is None
    future = time.time() + 5
    os.utime(prompts, (future, future))  # the prompt file was edited after evaluate finished
    assert stale_reason(ctx, "evaluate", set()) == f"{prompts} changed after it"
    ctx.close()


@pytest.mark.parametrize("key", ["cost.profile", "cost.spec_profile", "model.config", "workload.trace_path",
                                 "workload.log_path", "workload.lengths.csv_path"])
def test_sim_is_stale_when_a_file_its_section_names_changed(tmp_path, key):
    """freshness looked for sim.hardware.profile_csv, a key the schema does not have: an edited step profile
    (or arrival trace, model config, request log) left the finished sim stage as it was."""
    named = tmp_path / "input.json"
    named.write_text(json.dumps({"hidden_size": 64}))  # what model.config needs at validation
    sim: dict = {"hardware": {"preset": "cpu"}, "cost": {"profile": "run"}, "workload": {"kind": "trace",
                 "trace_path": "t.csv", "log_path": "l.csv", "lengths": {"csv_path": "c.csv"}},
                 "sweep": {"axis": "none"}}
    *sections, field = key.split(".")
    node = sim
    for part in sections:
        node = node.setdefault(part, {})
    node[field] = str(named)
    if key == "cost.spec_profile":
        sim["cost"]["profile"] = str(tmp_path / "other")
    cfg = config_from_dict({"name": "fresh", "output_dir": str(tmp_path), "stages": ["sim"], "sim": sim})
    ctx = open_run(cfg, show_progress=False)
    ctx.mark_done("sim")
    assert stale_reason(ctx, "sim", set()) is None
    future = time.time() + 5
    os.utime(named, (future, future))
    assert stale_reason(ctx, "sim", set()) == f"{named} changed after it"
    ctx.close()


SIM_ONLY = """name: fresh
stages: [sim, report]
sim:
  workload: {kind: closed_loop, concurrency: 2, duration_s: 5, warmup_s: 1}
  acceptance: {source: parametric, max_draft: 3}
  policies: [{kind: mtp, alpha: 0.8}, {kind: prefix}]
  sweep: {axis: none, values: [1], seeds: [0]}
  plots: false
"""


def test_lab_run_reruns_a_report_made_before_its_inputs(tmp_path):
    """A finished REPORT.md stayed stale when an earlier stage was rerun (`--stages sim --force`)."""
    (tmp_path / "s.yaml").write_text(SIM_ONLY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}

    def lab(*args):
        result = subprocess.run([sys.executable, "-m", "lab.cli", "run", "s.yaml", "--quiet", *args], cwd=tmp_path,
                                capture_output=True, text=True, env=env, timeout=600, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    lab()
    report = next(tmp_path.rglob("REPORT.md"))
    first = report.stat().st_mtime_ns
    assert "[report] done already, skipped" in lab()  # nothing changed: nothing reruns
    assert "[report]" not in lab("--stages", "sim", "--force")
    out = lab()
    assert "[sim] done already, skipped" in out
    assert "[report] outputs are stale (sim finished after it)" in out and report.stat().st_mtime_ns > first
