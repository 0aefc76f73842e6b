"""Shared page furniture: the sidebar (runs root + run picker, kept across pages), error display, charts.

root, run = ui.page("Acceptance")      # sets the page config, draws the sidebar, returns the picked run
with ui.guard(): ...                   # a LabError (corrupt file, bad knob) becomes one st.error line, page stops
tau = ui.attempt(data.tau_csv, run, m) # the same, but the page goes on (None when the read failed)

Charts are Altair, drawn by Streamlit with Vega's SVG renderer (RENDER_OPTIONS), so what is drawn is in
the page's DOM (tests/dashboards/test_browser.py counts the marks).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data
from lab.errors import LabError

# Vega-embed options Streamlit passes through: SVG, so a browser test (and a user's "save as SVG") sees marks
RENDER_OPTIONS = {"embedOptions": {"renderer": "svg"}}


def page(title: str, pick_run: bool = True, needs_runs: bool = True) -> tuple[str, Path | None]:
    """Page config, title and the sidebar; needs_runs False: a page that reads no run (no error without runs)."""
    st.set_page_config(page_title=f"DSpark Lab · {title}", layout="wide")
    st.title(title)
    return sidebar(pick_run, needs_runs)


def sidebar(pick_run: bool = True, needs_runs: bool = True) -> tuple[str, Path | None]:
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
    if not needs_runs:
        return root, None
    if not runs:
        why = "does not exist" if not Path(root).exists() else "has no run directories (<name>/<run_id>/manifest.json)"
        st.error(f"{root}: runs root {why}. Make a run with `lab run experiments/smoke.yaml`, or change the "
                 "runs root in the sidebar.")
        return root, None
    if not pick_run:
        return root, None
    return root, run_picker(runs, root, "Run", "run", st.sidebar)


def run_picker(runs: list[Path], root: str, label: str, key: str, where, default: int = 0) -> Path:
    """A run selectbox (newest first, with its opening time), kept in session state under `key`."""
    ss = st.session_state
    labels = {data.run_label(r, root): r for r in runs}
    if ss.get(key) not in labels:
        ss[key] = list(labels)[min(default, len(labels) - 1)]
    ss[key] = ss[key]
    opened = {name: pd.Timestamp(data.opened_at(r), unit="s").strftime("%Y-%m-%d %H:%M") for name, r in labels.items()}
    choice = where.selectbox(label, list(labels), key=key, format_func=lambda name: f"{name} · {opened[name]}",
                             help="newest first (manifest opened_at)")
    return labels[choice]


@contextlib.contextmanager
def guard():
    """Show a user-caused error (LabError) as one line and stop the page, as the CLI does."""
    try:
        yield
    except LabError as exc:
        st.error(str(exc))
        st.stop()


def attempt(fn, *args, seen: set[str] | None = None, **kwargs):
    """fn(*args) or, when it raises LabError (a file that cannot be read), one red line and None. With
    `seen` (the messages this page run has shown so far) a file read twice is still one red line."""
    try:
        return fn(*args, **kwargs)
    except LabError as exc:
        if seen is None or str(exc) not in seen:
            st.error(str(exc))
        if seen is not None:
            seen.add(str(exc))
        return None


def skipped_shards(problems: list[str]) -> None:
    for p in problems:
        st.warning(f"Skipped a trace shard: {p}. The other shards are shown.")


def filters(cover: pd.DataFrame, key: str, multi_drafter: bool = True, default_table: str = "rounds"):
    """Drafter(s), dataset(s), temperature and table pickers over a coverage frame (data.coverage).
    Defaults: every drafter (or dspark when one is picked), every dataset, the lowest temperature, rounds."""
    c1, c2, c3, c4 = st.columns(4)
    methods = sorted(cover["method"].unique())
    if multi_drafter:
        drafters = c1.multiselect("Drafters", methods, default=methods, key=f"{key}_drafters")
    else:
        drafters = [c1.selectbox("Drafter", methods, index=data.pick_default(methods), key=f"{key}_drafter")]
    datasets_all = sorted(cover["dataset"].unique())
    datasets = c2.multiselect("Datasets", datasets_all, default=datasets_all, key=f"{key}_datasets")
    temps = sorted(float(t) for t in cover["temperature"].unique())
    temperature = c3.selectbox("Temperature", temps, format_func="{:g}".format, key=f"{key}_temperature")
    tables = sorted(cover["table"].unique())
    table = c4.selectbox(
        "Trace table",
        tables,
        index=tables.index(default_table) if default_table in tables else 0,
        key=f"{key}_table",
        help="rounds: what decoding did; anchors: a draft at every output position (greedy only)",
    )
    return drafters, datasets, temperature, table


def _svg(chart):
    return chart.properties(usermeta=RENDER_OPTIONS)


def frontier_chart(front: pd.DataFrame, slas=(), percentile: int = 50) -> alt.Chart:
    """Per-user tok/s (x) vs output tok/s per GPU (y), one line per policy, labelled dotted rules at the SLAs."""
    f = front.replace([float("inf"), float("-inf")], float("nan")).dropna(
        subset=["tok_s_user", "throughput_per_gpu"]
    )
    base = alt.Chart(f).encode(
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
    layers = [base.mark_line(), base.mark_point(filled=True, size=50)]
    if len(slas):
        rules = alt.Chart(pd.DataFrame({"sla": [float(s) for s in slas]})).encode(x="sla:Q")
        layers.append(rules.mark_rule(strokeDash=[3, 3], color="grey"))
        layers.append(
            rules.transform_calculate(label="'SLA ' + datum.sla + ' tok/s/user'")
            .mark_text(align="left", baseline="top", dx=4, dy=4, color="grey", y=0)
            .encode(text="label:N")
        )
    return _svg(alt.layer(*layers).properties(height=380))


def curve_chart(frame: pd.DataFrame, y: str, color: str, title: str, n: str, n_title: str,
                size_by_n: bool = False) -> alt.Chart:
    """One line per series over draft positions, a point per position with its sample count n in the
    tooltip (and as the point's size when size_by_n)."""
    base = alt.Chart(frame).encode(
        x=alt.X("position:O", title="draft position j", axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{y}:Q", title=title, scale=alt.Scale(domain=[0, 1])),
        color=alt.Color(f"{color}:N", title=None, legend=alt.Legend(orient="bottom", columns=1, labelLimit=500)),
        tooltip=[color, "position", alt.Tooltip(f"{y}:Q", format=".3f"), alt.Tooltip(f"{n}:Q", title=n_title)],
    )
    point = base.mark_point(filled=True, opacity=1)
    if size_by_n:
        point = point.encode(size=alt.Size(f"{n}:Q", title=n_title, scale=alt.Scale(range=[15, 250])))
    else:
        point = point.encode(size=alt.value(50))
    return _svg((base.mark_line() + point).properties(height=320))


def reliability_chart(points: pd.DataFrame) -> alt.Chart:
    """The diagonal, one line per variant through its bins, and a separate point layer sized by bin count
    (a size encoding on the line itself would split it into one-point lines that draw nothing)."""
    diag = (
        alt.Chart(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(strokeDash=[3, 3], color="grey")
        .encode(x="x:Q", y="y:Q")
    )
    base = alt.Chart(points).encode(
        x=alt.X(
            "mean_confidence:Q",
            title="predicted P(accepted >= k) (prefix product)",
            scale=alt.Scale(domain=[0, 1]),
        ),
        y=alt.Y("accept_rate:Q", title="observed accept-prefix rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("variant:N", title="confidence"),
    )
    line = base.mark_line()
    pts = base.mark_circle(opacity=0.85).encode(
        size=alt.Size("count:Q", title="rows in bin", scale=alt.Scale(range=[20, 400])),
        tooltip=[
            "variant",
            alt.Tooltip("count:Q", title="rows in bin (n)"),
            alt.Tooltip("mean_confidence:Q", format=".3f"),
            alt.Tooltip("accept_rate:Q", format=".3f"),
        ],
    )
    return _svg((diag + line + pts).properties(height=380))


def number_formats(frame: pd.DataFrame, decimals: dict[str, int]) -> dict:
    """st.column_config for fixed decimals (so 6e-22 shows as 0.000), for the columns present."""
    return {c: st.column_config.NumberColumn(format=f"%.{d}f") for c, d in decimals.items() if c in frame}


def sla_points(sla: pd.DataFrame | None) -> tuple[list[float], int]:
    """(SLA points, TPOT percentile) of an sla.csv frame (([], 50) without one)."""
    if sla is None or not len(sla):
        return [], 50
    percentile = int(sla["percentile"].iloc[0]) if "percentile" in sla else 50
    return sorted(float(s) for s in sla["sla_tok_s_user"].unique()), percentile


def frontier_section(results: pd.DataFrame | None, sla: pd.DataFrame | None, slas=None, percentile=None) -> None:
    """The frontier chart of a results frame, the SLA points labelled, coinciding policies named."""
    if results is None or not len(results):
        return
    found, pct = sla_points(sla)
    slas, percentile = (found if slas is None else slas), (pct if percentile is None else percentile)
    front = data.frontier(results, percentile)
    st.subheader("Frontier")
    st.altair_chart(frontier_chart(front, slas, percentile), width="stretch")
    for group in data.coinciding(front):
        names = f"{', '.join(group[:-1])} and {group[-1]}"
        st.info(f"{names} coincide: identical points at every sweep value, so one line hides the other"
                + ("s." if len(group) > 2 else "."))
    acc = ", ".join(sorted(map(str, results["acceptance"].unique()))) if "acceptance" in results else "?"
    exact = bool(results["exact_replay"].all()) if "exact_replay" in results else False
    st.caption(
        f"Acceptance: {acc} ({'exact anchor replay' if exact else 'approximate or parametric'}); "
        f"{len(results)} points; dotted lines: the SLA points (per-user tok/s)."
    )
    with st.expander("Frontier points (sim.sweep.frontier)"):
        st.dataframe(front, hide_index=True, width="stretch")


def load_chart(front: pd.DataFrame) -> alt.Chart:
    """Verify tokens per request per step (y) against the sweep's concurrency (x, log), one line per policy."""
    base = alt.Chart(front).encode(
        x=alt.X("value:Q", title="concurrency", scale=alt.Scale(type="log")),
        y=alt.Y("verify_per_req_step:Q", title="verify tokens / request / step"),
        color="policy:N",
        tooltip=["policy", "value", alt.Tooltip("verify_per_req_step:Q", format=".2f")],
    )
    return _svg(base.mark_line() + base.mark_point(filled=True, size=50))


SIDE_COLORS = alt.Scale(domain=["vLLM", "simulator"], range=["#4c78a8", "#f58518"])


def ecdf_chart(frame: pd.DataFrame, title: str) -> alt.Chart:
    """Empirical CDF per side (data.ecdf): a step line and a point per request."""
    base = alt.Chart(frame).encode(
        x=alt.X("value:Q", title=title),
        y=alt.Y("fraction:Q", title="fraction of requests", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("side:N", title=None, scale=SIDE_COLORS, legend=alt.Legend(orient="bottom")),
        tooltip=["side", alt.Tooltip("value:Q", title=title, format=".3f"), alt.Tooltip("fraction:Q", format=".2f")],
    )
    return _svg((base.mark_line(interpolate="step-after") + base.mark_point(filled=True, size=30)).properties(height=260))


def timeline_chart(phases: pd.DataFrame, end_s: float, ticks: pd.DataFrame | None = None) -> alt.Chart:
    """One row per request (arrival order): a thin rule from arrival to the first token, a thick one from the
    first token to the finish (data.timeline); optional ticks at each streamed chunk (t_s, request)."""
    n = int(phases["request"].max()) if len(phases) else 1
    # quantitative, first arrival at the top: an ordinal axis shared by a rule and a tick layer drew every
    # request on one row
    y = alt.Y("request:Q", title="request (arrival order)", scale=alt.Scale(domain=[n + 0.5, 0.5], nice=False),
              axis=alt.Axis(tickMinStep=1, format="d"))
    x_scale = alt.Scale(domain=[0, end_s])
    rules = alt.Chart(phases).mark_rule().encode(
        x=alt.X("start_s:Q", title="seconds since the run's start", scale=x_scale),
        x2="end_s:Q",
        y=y,
        color=alt.Color("phase:N", title=None, scale=alt.Scale(domain=["to first token", "decoding"],
                                                               range=["#bab0ac", "#54a24b"]),
                        legend=alt.Legend(orient="bottom")),
        strokeWidth=alt.StrokeWidth("phase:N", scale=alt.Scale(domain=["to first token", "decoding"], range=[2, 5]),
                                    legend=None),
        tooltip=["request", "request_id", "phase", alt.Tooltip("start_s:Q", format=".2f"),
                 alt.Tooltip("end_s:Q", format=".2f"), alt.Tooltip("ttft_s:Q", format=".3f"),
                 alt.Tooltip("tpot_ms:Q", format=".1f"), "output_tokens"],
    )
    layers = [rules]
    if ticks is not None and len(ticks):
        layers.append(alt.Chart(ticks).mark_tick(color="black", thickness=1, size=8, opacity=0.6).encode(
            x=alt.X("t_s:Q", scale=x_scale), y=y, tooltip=["request", alt.Tooltip("t_s:Q", format=".3f"), "output_tokens"]))
    # the height includes the axis and the legend below the plot (Streamlit fits the whole chart into it)
    return _svg(alt.layer(*layers).properties(height=140 + 16 * n))


def step_profile_chart(rows: pd.DataFrame) -> alt.FacetChart:
    """Median step ms (y) against query tokens per request (x, log), one line per context length, one
    panel per batch size; the P90 and repeats in the tooltip."""
    base = alt.Chart(rows).encode(
        x=alt.X("query_tokens:Q", title="query tokens per request", scale=alt.Scale(type="log")),
        y=alt.Y("step_ms:Q", title="step ms (median)"),
        color=alt.Color("context_len:O", title="context length", scale=alt.Scale(scheme="category10"),
                        legend=alt.Legend(orient="bottom")),
        tooltip=["batch", "query_tokens", "context_len", alt.Tooltip("step_ms:Q", format=".1f"),
                 alt.Tooltip("step_ms_p90:Q", format=".1f"), "repeats"],
    )
    chart = base.mark_line(point=alt.OverlayMarkDef(filled=True, size=40)).properties(width=260, height=240)
    return _svg(chart.facet(column=alt.Column("batch:O", title="batch (requests in the step)")))
