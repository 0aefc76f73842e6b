"""Prompt viewer page: one prompt of a decode/<dataset>__T<t>.parquet file -- the prompt, the text a
drafter decoded with the draft tokens accepted in each verify round marked (from the rounds trace), and
tau per prompt for every drafter.

    streamlit run dashboards/app.py        # then "Prompt viewer"

The decode file's `prompt` and `token_text` columns are written by real/evaluate.py; an older run without
them shows token ids instead of text.
"""

import html
import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import pandas as pd
import streamlit as st

from dashboards import data, ui
from lab.metrics import tau

ROUND_COLOURS = ["#b7e4c7", "#a9d6f5"]  # accepted drafts, alternating per round so that rounds stay apart

root, run = ui.page("Prompt viewer")
if run is None:
    st.stop()
files = data.decode_files(run)
if not files:
    st.info(f"No decode/*.parquet in {run}: run the evaluate stage.")
    st.stop()
mtime = data.stamp(run)
ui.skipped_shards(data.trace_problems(str(run), mtime))
c1, c2, c3 = st.columns(3)
path = c1.selectbox("Decode file", files, format_func=lambda p: p.name)
with ui.guard():
    frame = data.decode_frame(str(path), mtime)
if frame is None or frame.empty:
    st.info(f"{path}: no rows.")
    st.stop()
methods = sorted(frame["method"].unique())
method = c2.selectbox("Drafter", methods, index=data.pick_default(methods))
prompts = sorted(frame["prompt_id"].unique())
prompt_id = c3.selectbox("Prompt", prompts)
row = frame[(frame["method"] == method) & (frame["prompt_id"] == prompt_id)]
if row.empty:
    st.info(f"{method} has no row for prompt {prompt_id} in {path.name}.")
    st.stop()
row = row.iloc[0]
dataset, temperature = str(row["dataset"]), float(row["temperature"])

st.subheader("Prompt")
if "prompt" in frame:
    st.text(row["prompt"])
else:
    st.info(f"{path.name} has no prompt column (written by real/evaluate.py since this dashboard's prompt "
            "viewer): rerun `lab run <experiment.yaml> --stages evaluate --force`.")

tokens = list(row["tokens"])
pieces = list(row["token_text"]) if "token_text" in frame else [f"⟨{t}⟩" for t in tokens]
rounds = data.rounds_of(str(run), mtime, method, dataset, temperature, prompt_id)
st.subheader(f"Decoded by {method} ({len(tokens)} tokens, T={temperature:g})")
if method == "ar" or rounds.empty:
    why = "plain autoregressive decoding" if method == "ar" else "no rounds trace rows for this prompt"
    st.caption(f"{why}: no draft spans to mark.")
    st.markdown(f'<div class="decoded">{html.escape("".join(pieces))}</div>', unsafe_allow_html=True)
else:
    spans = data.round_spans(len(tokens), rounds["accepted"].astype(int).tolist())
    out = []
    for start, end, r, kind in spans:
        piece = html.escape("".join(pieces[start:end]))
        if kind == "draft":
            colour = ROUND_COLOURS[r % 2]
            title = f"round {r + 1}: {end - start} accepted draft token(s) of k={int(rounds['k'].iloc[r])}"
            out.append(f'<span class="draft" style="background:{colour}" title="{title}">{piece}</span>')
        elif kind == "target":
            out.append(f'<span class="target" title="round {r + 1}: the target\'s token">{piece}</span>')
        else:
            out.append(f'<span class="target" title="the prefill\'s token">{piece}</span>')
    st.markdown(
        '<style>.decoded{white-space:pre-wrap;font-family:monospace;line-height:1.7}'
        '.decoded .target{border-bottom:2px solid #999}</style>'
        f'<div class="decoded">{"".join(out)}</div>',
        unsafe_allow_html=True,
    )
    covered = spans[-1][1] if spans else 0
    st.caption(
        f"Shaded: draft tokens accepted in a round (colours alternate per round; hover for the round); "
        f"underlined: the target's own token (prefill, then one bonus or corrected token per round). "
        f"{len(rounds)} rounds, tau {tau(rounds):.2f}."
        + ("" if covered == len(tokens) else f" The rounds trace covers {covered} of {len(tokens)} tokens.")
    )
    with st.expander("Rounds"):
        table = pd.DataFrame(
            [{"round": r + 1, "kind": kind, "tokens": "".join(pieces[s:e])} for s, e, r, kind in spans if r >= 0]
        )
        table = table.merge(
            rounds.assign(round=range(1, len(rounds) + 1))[["round", "k", "accepted", "context_len"]], on="round"
        )
        st.dataframe(table, hide_index=True, width="stretch")

st.subheader(f"tau per prompt ({dataset}, T={temperature:g}, rounds table)")
per_prompt = data.prompt_tau(str(run), mtime, dataset, temperature)
if per_prompt.empty:
    st.info("No rounds trace rows for this dataset and temperature.")
else:
    st.dataframe(per_prompt, hide_index=True, width="stretch",
                 column_config=ui.number_formats(per_prompt, {c: 2 for c in per_prompt.columns if c != "prompt_id"}))
    st.caption(f"Selected: prompt {prompt_id}, drafter {method}.")
