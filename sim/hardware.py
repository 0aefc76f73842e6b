"""Accelerator profiles as data: peak FLOPs, memory bandwidth, memory size, achievable fractions.

    hw = get_hardware("h100")          # built-in profiles: h100, h200, a100-80g, b200, cpu
    load_profile_csv(path)             # measured step times (columns tokens, step_ms) for the table cost model

Numbers are vendor dense BF16 peaks; mfu and bw_eff are the achievable fractions (BLIS uses MFU 0.30-0.45,
Vidur's Llama-2-7B H100 profile implies ~70% of peak bandwidth; see shared/reference/serving_sim.md).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lab.errors import LabError


@dataclass(frozen=True)
class Hardware:
    name: str
    peak_tflops: float  # dense BF16
    mem_bw_tbs: float  # TB/s
    mem_gib: float
    mfu: float = 0.45  # achievable fraction of peak FLOPs
    bw_eff: float = 0.70  # achievable fraction of peak bandwidth
    link_gbs: float = 450.0  # tensor-parallel all-reduce bandwidth per GPU (NVLink), GB/s
    link_latency_us: float = 8.0  # per all-reduce


HARDWARE: dict[str, Hardware] = {
    "h100": Hardware("h100", 989.5, 3.35, 80, link_gbs=450),
    "h200": Hardware("h200", 989.5, 4.8, 141, link_gbs=450),
    "a100-80g": Hardware("a100-80g", 312.0, 2.039, 80, link_gbs=300),
    "b200": Hardware("b200", 2250.0, 8.0, 180, link_gbs=900),
    # a many-core CPU socket, for comparing with measured CPU runs of the tiny targets
    "cpu": Hardware("cpu", 2.0, 0.1, 64, mfu=0.5, bw_eff=0.6, link_gbs=50, link_latency_us=20),
}


def get_hardware(name: str, mfu: float | None = None, bw_eff: float | None = None) -> Hardware:
    if name not in HARDWARE:
        raise LabError(f"sim.hardware.name: unknown hardware {name!r}; built in: {sorted(HARDWARE)}")
    hw = HARDWARE[name]
    if mfu is not None:
        hw = replace(hw, mfu=mfu)
    if bw_eff is not None:
        hw = replace(hw, bw_eff=bw_eff)
    return hw


def load_profile_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a measured step-time profile: returns (tokens[int, increasing], step_ms[float])."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise LabError(f"sim.hardware.profile_csv: {path} does not exist")
    try:
        frame = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise LabError(f"{path}: not a readable CSV ({exc})") from None
    missing = {"tokens", "step_ms"} - set(frame.columns)
    if missing:
        raise LabError(f"{path}: profile CSV needs columns tokens, step_ms (missing {sorted(missing)})")
    frame = frame.groupby("tokens", as_index=False)["step_ms"].mean().sort_values("tokens")
    tokens = frame["tokens"].to_numpy(dtype=np.int64)
    step_ms = frame["step_ms"].to_numpy(dtype=np.float64)
    if len(tokens) < 1 or tokens[0] < 1 or np.any(step_ms <= 0) or not np.all(np.isfinite(step_ms)):
        raise LabError(f"{path}: profile needs tokens >= 1 and positive finite step_ms")
    return tokens, step_ms
