"""Simulator validation page: how far the serving simulator is from real engines, by model kind.

Shows the output of `python -m sim.public_check --out DIR` (published vLLM GPU runs, each simulated through
the public interface: held-out rows by model kind, reported vs simulated TPOT per row) and of `python -m
sim.moe_kernels --fit --out DIR` (published fused-MoE kernel timings vs the cost model's MoE terms) and of
`python -m sim.kernel_roofline --fit --out DIR` (GPU kernels measured on the card: a decode step added up from them
beside the cost model's, and the achievable fractions they imply beside the sheet's). The directories are picked
in the page (defaults public_check/, moe_kernels/ and kernel_roofline/, where the tools write).

    python -m sim.public_check --out public_check/ && python -m sim.moe_kernels --fit --out moe_kernels/
    python -m sim.kernel_roofline --fit --out kernel_roofline/
    streamlit run dashboards/app.py          # then "Simulator validation"
"""

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import altair as alt
import streamlit as st

from dashboards import ui, validation

ui.page("Simulator validation", pick_run=False, needs_runs=False)
left, middle, right = st.columns(3)
public_dir = left.text_input("public_check output directory", value="public_check", key="public_check_dir",
                             help="what `python -m sim.public_check --out DIR` wrote")
kernel_dir = middle.text_input("moe_kernels output directory", value="moe_kernels", key="moe_kernels_dir",
                              help="what `python -m sim.moe_kernels --fit --out DIR` wrote")
measured_dir = right.text_input("kernel_roofline output directory", value="kernel_roofline", key="kernel_roofline_dir",
                                help="what `python -m sim.kernel_roofline --fit --out DIR` wrote")



def read_or_hint(reader, directory: str, name: str, command: str):
    """reader(directory) or None: one red line when the file is damaged, how to make it when it is absent."""
    frame = ui.attempt(reader, directory, validation.stamp(directory, name))
    if frame is None and not (Path(directory) / name).exists():
        st.info(f"No {Path(directory) / name}: run `{command} --out {directory}`.")
    return frame


def against_diagonal(data, x: str, y: str, x_title: str, y_title: str, color, shape, tooltip) -> alt.LayerChart:
    """A log-log scatter of y against x with the diagonal and a gray band of +-10% around it."""
    low = float(min(data[x].min(), data[y].min()))
    high = float(max(data[x].max(), data[y].max()))
    scale = alt.Scale(type="log", domain=[low * 0.8, high * 1.25])
    dots = alt.Chart(data).mark_circle(size=60).encode(
        x=alt.X(f"{x}:Q", scale=scale, title=x_title), y=alt.Y(f"{y}:Q", scale=scale, title=y_title),
        color=color, shape=shape, tooltip=tooltip)
    band = alt.Chart(alt.Data(values=[{"r": low * 0.8}, {"r": high * 1.25}])).transform_calculate(
        lo="datum.r * 0.9", hi="datum.r * 1.1")
    return (band.mark_area(opacity=0.15, color="gray").encode(x="r:Q", y="lo:Q", y2="hi:Q")
            + band.mark_line(color="gray").encode(x="r:Q", y="r:Q") + dots)


st.subheader("Published vLLM serving runs")
frame = read_or_hint(validation.public_check, public_dir, "public_check.csv", "python -m sim.public_check")
if frame is not None:
    for col, (label, value) in zip(st.columns(4), validation.headline(frame).items()):
        col.metric(label, value)
    st.markdown("Held-out rows by model kind (no simulator value was fitted on them):")
    st.dataframe(validation.kinds(frame), hide_index=True, width="stretch")
    st.markdown("Held-out rows by card and tensor-parallel size:")
    st.dataframe(validation.kinds(frame, "card"), hide_index=True, width="stretch")
    points = validation.tpot_points(frame)
    kinds = sorted(points["sim_model_kind"].unique())
    chosen = st.multiselect("model kinds", kinds, default=kinds, key="validation_kinds")
    points = points[points["sim_model_kind"].isin(chosen)]
    if len(points):
        st.altair_chart(against_diagonal(
            points, "reported_tpot_mean_ms", "sim_tpot_mean_ms", "reported TPOT mean, ms", "simulated TPOT mean, ms",
            alt.Color("sim_model_kind:N", title="model kind"), alt.Shape("half:N"),
            ["id", "gpu", "model", "tp", "reported_tpot_mean_ms", "sim_tpot_mean_ms", "err_pct"]), width="stretch")
        st.caption("Gray band: within 10% of the reported TPOT.")
        st.dataframe(points.sort_values("err_pct"), hide_index=True, width="stretch")

st.subheader("Published fused-MoE kernel timings")
kernels = read_or_hint(validation.moe_kernels, kernel_dir, "moe_kernels.csv", "python -m sim.moe_kernels --fit")
if kernels is not None:
    st.dataframe(validation.kernel_summary(kernels), hide_index=True, width="stretch")
    served = kernels[~kernels["cached"].astype(bool)]
    line = alt.Chart(served).encode(
        x=alt.X("tokens:Q", scale=alt.Scale(type="log"), title="tokens in the step"),
        color=alt.Color("run:N", legend=alt.Legend(labelLimit=320)))
    chart = (line.mark_circle().encode(y=alt.Y("measured_us:Q", scale=alt.Scale(type="log"),
                                                title="one MoE layer, us"), tooltip=["run", "tokens", "measured_us"])
             + line.mark_line().encode(y="sim_us:Q", tooltip=["run", "tokens", "sim_us"]))
    st.altair_chart(chart.facet(column="device:N").resolve_scale(y="independent"))
    st.caption("Dots: published; lines: the cost model. Points faster than HBM allows (served from cache in the "
               "benchmark's replays) are left out.")
    fits = ui.attempt(validation.moe_fit, kernel_dir, validation.stamp(kernel_dir, "moe_fit.csv"))
    if fits is not None:
        st.markdown("Fitted MoE terms (pooled over the cards, and each card's own; `left_out`: each card / run "
                    "priced by a fit without it):")
        st.dataframe(fits, hide_index=True, width="stretch")

st.subheader("GPU kernels measured on the card")
steps = read_or_hint(validation.kernel_steps, measured_dir, "steps.csv", "python -m sim.kernel_roofline --fit")
if steps is not None:
    st.altair_chart(against_diagonal(
        steps, "kernel_sum_ms", "roofline_with_overheads_ms", "decode step from the measured kernels, ms",
        "cost model's step on the card's sheet, ms", alt.Color("model:N"), alt.Shape("device:N"),
        ["run", "batch", "context", "kernel_sum_ms", "roofline_with_overheads_ms"]), width="stretch")
    st.caption("Each point: one decode step (batch x context) of a model, as layers x (four GEMMs + attention) + "
               "the LM head timed one kernel at a time, against the cost model's step with the sheet's overheads. "
               "Gray band: within 10%.")
    implied = ui.attempt(validation.kernel_implied, measured_dir, validation.stamp(measured_dir, "implied.csv"))
    if implied is not None:
        st.markdown("What the kernels imply, per card (range over its tables), beside the sheet:")
        st.dataframe(validation.implied_by_card(implied), hide_index=True, width="stretch")
