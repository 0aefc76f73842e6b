"""Training step time on a busy machine: thread / wait policies side by side, idle vs one busy neighbour.

    python -m real.bench_busy --target gemma3-270m --dtype bfloat16 --prompts 4 --max-new-tokens 32 --steps 4
    python -m real.bench_busy --policies old,passive2,new --repeats 2 -- --vocab 4096 --anchors 16

Each measurement is one fresh `python -m real.bench_train ... --only dspark` child process (prepare + train
of the quickstart's DSpark drafter); the child's own train_log.csv gives the seconds per training step
(drafter update + target features, the first step left out as warm-up). Policies:
  old       torch's defaults: one thread per usable core, OpenMP threads spin while waiting
  passive2  one thread per usable core, OMP_WAIT_POLICY=PASSIVE KMP_BLOCKTIME=0
  new       lab/threads.py: passive waits, threads = the cores free right now (what `lab run` does)
"busy" starts one neighbour (`python -c "while True: pass"`) before the child and stops it after. The
order is interleaved (idle/busy x policies per repeat) so that drift in the machine's other load hits all
cells alike; the load average and each child's CPU time are printed beside the wall times.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab.arguments import ArgumentParser, positive_int
from lab.threads import WAIT_POLICY_ENV, choose_threads, usable_cpus

POLICY_ENV_KEYS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *WAIT_POLICY_ENV)


def child_env(policy: str) -> tuple[dict, int]:
    env = {k: v for k, v in os.environ.items() if k not in POLICY_ENV_KEYS}
    if policy == "old":
        return env, len(usable_cpus())
    env.update(WAIT_POLICY_ENV)
    if policy == "passive2":
        return env, len(usable_cpus())
    return env, choose_threads("auto").threads


def step_seconds(out: Path) -> tuple[float, float]:
    """(median train-step s, median feature s) over the logged steps after the first, from train_log.csv."""
    log = next(out.rglob("drafters/dspark/train_log.csv"))
    rows = list(csv.DictReader(log.open()))[1:]
    totals = sorted(float(r["seconds"]) + float(r["feature_seconds"]) for r in rows)
    feats = sorted(float(r["feature_seconds"]) for r in rows)
    return totals[len(totals) // 2], feats[len(feats) // 2]


def measure(policy: str, busy: bool, bench_args: list[str], out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    env, threads = child_env(policy)
    neighbour = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(1.0 if busy else 0.0)  # let the scheduler see the neighbour before threads are chosen
        if busy and policy == "new":
            env, threads = child_env(policy)
        load_before = os.getloadavg()[0]
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "real.bench_train", *bench_args, "--only", "dspark",
                        "--threads", str(threads), "--out", str(out)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    step, feature = step_seconds(out)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return {"policy": policy, "load": "busy" if busy else "idle", "threads": threads, "step_s": step,
            "feature_s": feature, "child_wall_s": wall, "child_cpu_s": cpu, "loadavg_1m": load_before}


POLICIES = ("old", "passive2", "new")  # child_env's


def _policies(text: str) -> list[str]:
    """An argparse `type`: comma-separated policies of POLICIES (an unknown name ran as `new`)."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names or any(p not in POLICIES for p in names):
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated policies of {', '.join(POLICIES)}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m real.bench_busy", description=__doc__.splitlines()[0])
    ap.add_argument("--policies", type=_policies, default="old,passive2,new")
    ap.add_argument("--repeats", type=positive_int, default=1)
    ap.add_argument("--out", default="/tmp/dspark-bench-busy")
    args, bench_args = ap.parse_known_args(argv)
    bench_args = [a for a in bench_args if a != "--"]
    import torch  # only to print the capability the numbers were taken on

    print(f"cpu capability {torch.backends.cpu.get_cpu_capability()}, usable cores {len(usable_cpus())}, "
          f"bench_train args {' '.join(bench_args)}", flush=True)
    print("| repeat | load | policy | threads | s/step | features s/step | child wall s | child CPU s | "
          "load avg 1 min |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for repeat in range(args.repeats):
        for busy in (False, True):
            for policy in args.policies:
                out = Path(args.out) / f"{repeat}-{policy}-{'busy' if busy else 'idle'}"
                try:
                    row = measure(policy, busy, bench_args, out)
                except subprocess.CalledProcessError as exc:
                    print(f"error: python -m real.bench_busy: python -m real.bench_train {' '.join(bench_args)} failed "
                          f"(exit {exc.returncode}); run it alone to see why", file=sys.stderr)
                    return 2
                rows.append(row)
                print(f"| {repeat} | {row['load']} | {policy} | {row['threads']} | {row['step_s']:.2f} | "
                      f"{row['feature_s']:.2f} | {row['child_wall_s']:.0f} | {row['child_cpu_s']:.0f} | "
                      f"{row['loadavg_1m']:.2f} |", flush=True)
    print("\n| policy | idle s/step | busy s/step | busy / idle |\n|---|---|---|---|")
    for policy in args.policies:
        idle = [r["step_s"] for r in rows if r["policy"] == policy and r["load"] == "idle"]
        busy = [r["step_s"] for r in rows if r["policy"] == policy and r["load"] == "busy"]
        print(f"| {policy} | {sum(idle) / len(idle):.2f} | {sum(busy) / len(busy):.2f} | "
              f"{sum(busy) / len(busy) / (sum(idle) / len(idle)):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
