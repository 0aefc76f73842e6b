"""Acceptance plots of an evaluated run: per-position conditional and survival curves (PNG).

    python -m real.plots runs/<name>/<run_id>
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lab.io import atomic_path
from lab.metrics import conditional_rates, survival
from lab.trace import read_traces


def plot_positions(run_dir: Path) -> list[Path]:
    traces = read_traces(run_dir / "traces")
    rounds = traces[traces["table"] == "rounds"]
    written = []
    for temperature, by_t in rounds.groupby("temperature"):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        lines, names = [], []
        for method, group in by_t.groupby("method"):
            cond, surv = conditional_rates(group), survival(group)
            positions = range(1, len(cond) + 1)
            lines += axes[0].plot(positions, cond, marker="o")
            axes[1].plot(positions, surv, marker="o", color=lines[-1].get_color())
            names.append(method)
        axes[0].set(title=f"conditional acceptance c_j (T={temperature:g})", xlabel="draft position j",
                    ylabel="P(acc >= j | acc >= j-1)", ylim=(0, 1.02))
        axes[1].set(title=f"survival s_j (T={temperature:g})", xlabel="draft position j",
                    ylabel="P(accepted >= j | a draft)", ylim=(0, 1.02))
        # labels given to legend() itself: a label= starting with "_" (a drafter named _ng2) is left out
        axes[0].legend(lines, names)
        fig.tight_layout()
        path = run_dir / f"acceptance_T{temperature:g}.png"
        with atomic_path(path) as tmp:  # never half a PNG where a finished one stood (Ctrl-C, full disk)
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in plot_positions(Path(sys.argv[1])):
        print(p)
