"""CPU threads and OpenMP wait policy for a machine that is never idle.

    lab run x.yaml                    # threads: auto (the default): chosen from free cores, passive waits
    lab run x.yaml --set threads=2    # a fixed count (OMP_NUM_THREADS in the environment works too)
    python -m lab.threads             # prints what `auto` picks right now and why

torch's default is one intra-op thread per core, and its OpenMP threads spin while they wait for each
other. With another busy process on the same cores, each parallel region then waits for a thread the
kernel has descheduled, and a 3 s training step took 72-105 s on 2 cores (BENCHMARKS.md, "Busy machine").
The policy: OMP_WAIT_POLICY=PASSIVE and KMP_BLOCKTIME=0 (waiting threads sleep instead of spinning), set
before torch is imported, and as many threads as the cores left free by other processes right now
(per-core busy time from /proc/stat over a short window, within os.sched_getaffinity), at least one.
lab never imports torch: the count goes to OMP_NUM_THREADS, which torch reads when it is imported, and
to torch.set_num_threads only when torch is already loaded.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

WAIT_POLICY_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
SAMPLE_SECONDS = 0.3


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str


def usable_cpus() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_times(cpus: list[int]) -> dict[int, tuple[int, int]] | None:
    """cpu -> (busy jiffies, total jiffies) from /proc/stat, or None where there is no /proc."""
    try:
        with open("/proc/stat") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}": c for c in cpus}
    times = {}
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            idle = values[3] + values[4]
            times[wanted[fields[0]]] = (sum(values) - idle, sum(values))
    return times or None


def busy_cores(cpus: list[int], seconds: float = SAMPLE_SECONDS) -> float:
    """How many of `cpus` other processes keep busy, measured over `seconds` (load average as fallback)."""
    first = _cpu_times(cpus)
    if first is None:
        try:
            return min(float(len(cpus)), os.getloadavg()[0])
        except OSError:
            return 0.0
    time.sleep(seconds)
    second = _cpu_times(cpus) or first
    busy = 0.0
    for cpu, (busy0, total0) in first.items():
        busy1, total1 = second.get(cpu, (busy0, total0))
        if total1 > total0:
            busy += (busy1 - busy0) / (total1 - total0)
    return busy


def choose_threads(setting: int | str = "auto") -> ThreadChoice:
    """The intra-op thread count: an explicit setting, else OMP_NUM_THREADS, else the free cores now."""
    cpus = usable_cpus()
    if setting != "auto":
        return ThreadChoice(int(setting), "threads setting")
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), "OMP_NUM_THREADS")
    busy = busy_cores(cpus)
    free = max(1, min(len(cpus), math.floor(len(cpus) - busy + 0.5)))
    return ThreadChoice(free, f"auto: {len(cpus)} usable cores, {busy:.1f} busy with other work")


def apply_thread_policy(setting: int | str = "auto") -> ThreadChoice:
    """Set the wait policy (unless the environment sets one) and the thread count for this process."""
    for key, value in WAIT_POLICY_ENV.items():
        os.environ.setdefault(key, value)
    choice = choose_threads(setting)
    os.environ["OMP_NUM_THREADS"] = str(choice.threads)
    torch = sys.modules.get("torch")
    if torch is not None:  # already imported by the caller: too late for the environment
        torch.set_num_threads(choice.threads)
    return choice


if __name__ == "__main__":
    picked = choose_threads()
    print(f"threads {picked.threads} ({picked.reason}); wait policy "
          + " ".join(f"{k}={os.environ.get(k, v)}" for k, v in WAIT_POLICY_ENV.items()))
