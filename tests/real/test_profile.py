"""`lab profile`: the target's measured step times over the grid, in the shared format, used by the sim."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from lab.config import ProfileSection
from real.profile import device_meta, measure_profile
from sim.step_profile import read_profile

ROOT = Path(__file__).resolve().parents[2]


def test_measure_profile_grid(tiny_qwen3, one_thread):
    section = ProfileSection(batch=[1, 3], query_tokens=[1, 4], context_len=[0, 24], repeats=3, warmup=1)
    rows = measure_profile(tiny_qwen3, section, show_progress=False)
    assert {(r["batch"], r["query_tokens"], r["context_len"]) for r in rows} == {
        (b, q, c) for b in (1, 3) for q in (1, 4) for c in (0, 24)}
    assert all(0 < r["step_ms"] <= r["step_ms_p90"] and r["repeats"] == 3 for r in rows)
    meta = device_meta(tiny_qwen3, "tiny-qwen3")
    assert meta["device"] == "cpu" and meta["threads"] == 1 and meta["dtype"] == "float32"
    assert meta["hardware"].startswith("cpu ") and "torch" in meta["versions"]


def test_profile_times_the_targets_engine(tiny_qwen3, one_thread, monkeypatch):
    """A GPU profile of the eager engine measured its launch-bound 26 ms floor, not the graphs engine the
    decode loops use (BENCHMARKS.md, On an H200): the profile now steps through the target's own engine."""
    from real.static_step import StaticKV

    section = ProfileSection(batch=[1, 2], query_tokens=[1, 3], context_len=[0, 16], repeats=2, warmup=1)
    caches = []
    forward = tiny_qwen3.forward

    def spy(ids, cache=None, **kw):
        caches.append(type(cache))
        return forward(ids, cache, **kw)

    monkeypatch.setattr(tiny_qwen3, "forward", spy)
    tiny_qwen3.engine = "static"
    rows = measure_profile(tiny_qwen3, section, show_progress=False)
    assert len(rows) == 8 and all(r["step_ms"] > 0 for r in rows)
    assert set(caches) == {StaticKV}
    assert device_meta(tiny_qwen3, "tiny-qwen3")["engine"] == "static"
    tiny_qwen3.engine = "eager"
    caches.clear()
    measure_profile(tiny_qwen3, section, show_progress=False)
    assert StaticKV not in set(caches)


def test_lab_profile_then_sim_uses_it(tmp_path):
    experiment = {
        "name": "prof", "output_dir": str(tmp_path / "runs"), "stages": ["profile", "sim"],
        "target": {"name": "tiny-qwen3", "dtype": "float32"},
        "profile": {"batch": [1, 2], "query_tokens": [1, 3], "context_len": [8], "repeats": 2, "warmup": 1},
        "sim": {"hardware": {"preset": "cpu"}, "model": {"name": "gemma3-270m", "drafter_layers": 1},
                "cost": {"profile": "run"}, "acceptance": {"source": "parametric", "max_draft": 3},
                "workload": {"kind": "closed_loop", "concurrency": 2, "duration_s": 3, "warmup_s": 0.5,
                             "lengths": {"source": "fixed", "prompt_tokens": 8, "output_tokens": 4}},
                "policies": [{"kind": "ar"}], "sweep": {"axis": "none", "workers": 1}, "plots": False},
    }
    (tmp_path / "prof.yaml").write_text(yaml.safe_dump(experiment))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "lab.cli", "profile", "prof.yaml", "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    run_dir = next((tmp_path / "runs" / "prof").iterdir())
    profile = read_profile(run_dir)
    assert len(profile) == 4 and profile.meta["model"] == "tiny-qwen3" and profile.meta["source"] == "lab"
    result = subprocess.run([sys.executable, "-m", "lab.cli", "run", "prof.yaml", "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "[profile] done already" in result.stdout
    assert (run_dir / "sim").is_dir()
