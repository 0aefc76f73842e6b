"""Thread and wait policy for a busy machine (lab/threads.py): explicit settings win, auto stays in range,
and `lab` sets a passive OpenMP wait policy before anything imports torch."""
import os
import subprocess
import sys
from pathlib import Path

from lab.threads import WAIT_POLICY_ENV, busy_cores, choose_threads, usable_cpus

ROOT = Path(__file__).resolve().parents[2]


def test_explicit_setting_then_environment_then_free_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(5).threads == 5
    assert choose_threads("auto").threads == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    auto = choose_threads("auto")
    assert 1 <= auto.threads <= len(usable_cpus()) and auto.reason.startswith("auto:")


def test_busy_cores_sees_a_spinning_neighbour():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cores(usable_cpus(), seconds=0.5) >= 0.5  # at least most of one core
    finally:
        spinner.kill()
        spinner.wait()


def test_cli_sets_a_passive_wait_policy_before_torch(tmp_path):
    """The OpenMP runtime reads its wait policy once, when torch loads it: the CLI must set it first."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_POLICY_ENV and k != "OMP_NUM_THREADS"}
    code = ("import os, sys; from lab import cli; sys.argv = ['lab', 'validate', 'x.yaml']; "
            "rc = cli.main(['validate', 'x.yaml']); "
            "print(rc, os.environ.get('OMP_WAIT_POLICY'), os.environ.get('KMP_BLOCKTIME'), 'torch' in sys.modules)")
    (tmp_path / "x.yaml").write_text("name: x\nstages: [sim]\nsim: {}\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**env, "PYTHONPATH": str(ROOT)}).stdout.split()[-4:]
    assert out == ["0", "PASSIVE", "0", "False"]
