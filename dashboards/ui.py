"""Shared page furniture: the sidebar (runs root + run picker, kept across pages), error guard, charts.

root, run = ui.page("Acceptance")      # sets the page config, draws the sidebar, returns the picked run
with ui.guard(): ...                   # a LabError (corrupt trace, bad knob) becomes one st.error line
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data
from lab.errors import LabError


def page(title: str, pick_run: bool = True) -> tuple[str, Path | None]:
    st.set_page_config(page_title=f"DSpark Lab · {title}", layout="wide")
    st.title(title)
    return sidebar(pick_run)


def sidebar(pick_run: bool = True) -> tuple[str, Path | None]:
    ss = st.session_state
    if "runs_root" not in ss:
        ss["runs_root"] = data.default_root()
    ss["runs_root"] = ss["runs_root"]  # re-assigning keeps a widget's value when another page is shown
    root = st.sidebar.text_input(
        "Runs root",
        key="runs_root",
        help=f"a directory of runs/<name>/<run_id>/ (default ./runs or ${data.RUNS_ENV})",
    )
    runs = data.run_dirs(root)
    if not runs:
        st.sidebar.warning(f"No run directories (*/*/manifest.json) under {root}")
        return root, None
    if not pick_run:
        return root, None
    labels = {_label(r, root): r for r in runs}
    if ss.get("run") not in labels:
        ss["run"] = list(labels)[-1]
    ss["run"] = ss["run"]
    choice = st.sidebar.selectbox("Run", list(labels), key="run")
    return root, labels[choice]


def _label(run: Path, root: str) -> str:
    try:
        return run.relative_to(root).as_posix() or run.name
    except ValueError:
        return run.as_posix()


@contextlib.contextmanager
def guard():
    """Show a user-caused error (LabError) as one line and stop the page, as the CLI does."""
    try:
        yield
    except LabError as exc:
        st.error(str(exc))
        st.stop()


def frontier_chart(front: pd.DataFrame, slas=(), percentile: int = 50) -> alt.Chart:
    """Per-user tok/s (x) vs output tok/s per GPU (y), one line per policy, dotted rules at the SLA points."""
    f = front.replace([float("inf"), float("-inf")], float("nan")).dropna(
        subset=["tok_s_user", "throughput_per_gpu"]
    )
    lines = (
        alt.Chart(f)
        .mark_line(point=True)
        .encode(
            x=alt.X("tok_s_user:Q", title=f"per-user tok/s (1000 / TPOT P{percentile})"),
            y=alt.Y("throughput_per_gpu:Q", title="output tok/s per GPU"),
            color=alt.Color("policy:N"),
            tooltip=[
                "policy",
                "value",
                alt.Tooltip("tok_s_user:Q", format=".1f"),
                alt.Tooltip("throughput_per_gpu:Q", format=",.0f"),
                alt.Tooltip("tau:Q", format=".2f"),
            ],
        )
    )
    if len(slas):
        rules = (
            alt.Chart(pd.DataFrame({"sla": list(slas)}))
            .mark_rule(strokeDash=[3, 3], color="grey")
            .encode(x="sla:Q")
        )
        return (lines + rules).properties(height=380)
    return lines.properties(height=380)


def curve_chart(frame: pd.DataFrame, y: str, color: str, title: str) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("position:O", title="draft position j"),
            y=alt.Y(f"{y}:Q", title=title, scale=alt.Scale(domain=[0, 1])),
            color=f"{color}:N",
            tooltip=[color, "position", alt.Tooltip(f"{y}:Q", format=".3f")],
        )
        .properties(height=300)
    )


def reliability_chart(points: pd.DataFrame) -> alt.Chart:
    diag = (
        alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(strokeDash=[3, 3], color="grey")
        .encode(x="x:Q", y="y:Q")
    )
    pts = (
        alt.Chart(points)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "mean_confidence:Q",
                title="predicted P(accepted >= k) (prefix product)",
                scale=alt.Scale(domain=[0, 1]),
            ),
            y=alt.Y("accept_rate:Q", title="observed accept-prefix rate", scale=alt.Scale(domain=[0, 1])),
            color="variant:N",
            size=alt.Size("count:Q", legend=None),
            tooltip=[
                "variant",
                "count",
                alt.Tooltip("mean_confidence:Q", format=".3f"),
                alt.Tooltip("accept_rate:Q", format=".3f"),
            ],
        )
    )
    return (diag + pts).properties(height=380)
