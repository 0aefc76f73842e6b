"""Benchmark: the Live ablation page's default sweep, end to end (page script + simulator, cache cleared),
in trace mode (the run's traces) and parametric mode. Prints wall and process CPU seconds per repeat and
the median; BENCHMARKS.md records the numbers.

    python -m dashboards.bench_live_ablation runs/smoke/<run_id> --repeats 3
    python dashboards/bench_live_ablation.py <run dir> --pages <other checkout>/dashboards   # another version

The run directory must be the only run under its runs root's <name>/ level (the page picks the newest).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path


def time_sweep(page: Path, root: Path, source: str) -> tuple[float, float]:
    """(wall s, CPU s) from pressing Run simulation to the page's last element, default knobs."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()
    at = AppTest.from_file(str(page), default_timeout=600)
    at.session_state["runs_root"] = str(root)
    at.run()
    at.radio[0].set_value(source).run()
    button = next(b for b in at.button if b.label == "Run simulation")
    wall, cpu = time.perf_counter(), time.process_time()
    button.click().run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if at.exception or at.error:
        raise SystemExit(f"the page failed: {[e.message for e in at.exception] + [e.value for e in at.error]}")
    return wall, cpu


def main(argv=None) -> None:
    from lab.arguments import ArgumentParser, positive_int  # after __main__'s sys.path entry

    parser = ArgumentParser(prog="python -m dashboards.bench_live_ablation", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory runs/<name>/<run_id>")
    parser.add_argument("--repeats", type=positive_int, default=3)
    parser.add_argument("--pages", type=Path, default=Path(__file__).resolve().parent,
                        help="the dashboards/ directory whose page is timed")
    args = parser.parse_args(argv)
    if not (args.run / "traces").is_dir():  # the page's "run traces" source lists only runs that have them
        parser.error(f"{args.run}: not a run directory with traces/ (runs/<name>/<run_id> of a finished evaluate)")
    page = next((args.pages / "pages").glob("*_Live_ablation.py"))
    root = args.run.resolve().parents[1]
    for source in ("run traces", "parametric"):
        times = [time_sweep(page, root, source) for _ in range(args.repeats)]
        walls, cpus = [t[0] for t in times], [t[1] for t in times]
        print(f"{source:10s} wall {' '.join(f'{w:.2f}' for w in walls)} s (median {statistics.median(walls):.2f}); "
              f"CPU {' '.join(f'{c:.2f}' for c in cpus)} s (median {statistics.median(cpus):.2f})", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
