"""One figure for the checks against published timings (sim.moe_kernels, sim.allreduce_check): per card, each run's
measured points (dots) beside the cost model's price (a line), log-log.

    plot_measured_vs_priced(points, path, x="tokens", xlabel=..., ylabel=..., title=...)

`points` has columns device, run, measured_us, sim_us and the x column; the png is written atomically.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lab.io import atomic_path


def plot_measured_vs_priced(points: pd.DataFrame, path: Path, x: str, xlabel: str, ylabel: str, title: str,
                            label=lambda run, f: run[:38], marker=lambda f: "o") -> None:
    """label(run, frame) names a run's line; marker(frame) its dots' marker (e.g. "x" for points not fitted)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    devices = sorted(points.device.unique())
    fig, axes = plt.subplots(1, len(devices), figsize=(5.5 * len(devices), 4.2), squeeze=False)
    for ax, device in zip(axes[0], devices):
        for run, f in points[points.device == device].groupby("run"):
            line, = ax.plot(f[x], f.measured_us, marker(f), ms=3)
            ax.plot(f[x], f.sim_us, "-", color=line.get_color(), lw=1, label=label(run, f))
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=device)
        ax.legend(fontsize=5)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
