"""Ctrl-C during a sweep on worker processes: the parent stops at once and leaves no worker running (before,
leaving the pool waited for every queued point, and after `lab run` exited its workers ran on for minutes)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import multiprocessing, os, signal, threading, time
from tests.sim.conftest import make_sim
from sim.simulate import prepare_inputs
from sim.sweep import sweep_points
sim = make_sim(workload={"duration_s": 3000, "concurrency": 4},
               sweep={"axis": "concurrency", "values": [8, 16, 32, 64], "workers": 2})
inputs = prepare_inputs(sim, None, 0)
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell starts us with SIGINT ignored
def children():
    count = 0
    for entry in os.listdir("/proc"):
        try:
            count += entry.isdigit() and open(f"/proc/{entry}/stat").read().split(") ")[1].split()[1] == str(os.getpid())
        except (OSError, IndexError):
            pass  # a process that ended meanwhile
    return count
def interrupt():  # once both workers run (pool start-up takes seconds on a loaded box), then 2 s into the points
    deadline = time.time() + 120
    while children() < 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2)
    os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C sends
threading.Thread(target=interrupt, daemon=True).start()
start = time.time()
try:
    sweep_points(inputs, workers=2)
    print("finished")
except KeyboardInterrupt:
    stopped = time.time() - start
    deadline = time.time() + 5  # a terminated worker may take a moment to be reaped (CI: 1 of 2 still listed)
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.05)
    print(f"interrupted {stopped:.1f} {len(multiprocessing.active_children())}")
"""


def test_ctrl_c_stops_the_sweep_workers_at_once():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    word, seconds, alive = done.stdout.split()
    assert word == "interrupted" and alive == "0", done.stdout
    assert float(seconds) < 30, done.stdout  # each point simulates 3000 s: minutes of CPU per point
    assert "Traceback" not in done.stderr, done.stderr
