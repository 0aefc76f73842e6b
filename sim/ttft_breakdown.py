"""Where the simulator's TTFT error on the public vLLM rows comes from: distributions, not one mean.

    python -m sim.public_check --out pc/                                        # the per-row errors first
    python -m sim.ttft_breakdown --csv pc/public_check.csv --out ttft/          # by source (the publisher)
    python -m sim.ttft_breakdown --csv pc/public_check.csv --by load --out ttft/
    python -m sim.ttft_breakdown --csv pc/public_check.csv --by page --half all --out ttft/

Reads sim.public_check's per-row CSV (rel_err_<metric> = sim / reported - 1) and the row metadata of its data file
(--file, sim/validation/public_vllm.yaml: the vLLM version and dataset of each row), keeps the rows of one --half
(held-out by default) that report a mean TTFT, and writes into --out:

- ttft_breakdown.md: the error summary (mean, median, geometric mean of sim / reported, within 10%), the same per
  group of --by (source = the publisher: a GitHub owner/repo or a site; page = the source file; frontend = the
  row's API-server model; hardware = the card and its tp / dp / ep; load = the load shape; dataset; vllm) with each
  group's share of the signed sum, the rows by load shape, the bursts' TTFT error against their throughput error,
  the open-loop series whose reported TTFT falls as the rate rises, and the rows that carry most of the signed sum;
- ttft_breakdown_rows.csv (every kept row with its load shape, share and burst columns),
  ttft_breakdown_groups.csv, ttft_breakdown_load.csv, ttft_breakdown_series.csv;
- ttft_breakdown.png: sim / reported TTFT per row by load shape, and the bursts' TTFT ratio against the inverse of
  their throughput ratio.

Load shapes (vllm bench serve's flags): single-user (--max-concurrency 1, or one prompt), closed-loop
(--max-concurrency c, 1 < c < prompts), open-loop (a finite --request-rate: Poisson arrivals), burst (--request-rate
inf with no --max-concurrency or one of at least --num-prompts: every prompt at once). In a burst most of a request's
TTFT is its wait behind the requests before it, and that wait is the work ahead of it over the throughput: the
simulator's TTFT ratio should be about the inverse of its throughput ratio (burst_residual = ttft ratio x throughput
ratio, 1 where it is exactly that). Output throughput is used, total throughput where a source gives only that.
A residual far from 1 is TTFT the throughput does not explain (a front end, a different TTFT definition).

Nothing is changed: no pricing, no row data. Bad input (a missing file, a CSV without a needed column, an id the
data file lacks) prints one `error:` line and exits 2 with nothing written.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from lab.arguments import ArgumentParser
from lab.errors import LabError
from lab.io import atomic_path, make_dirs, write_text_atomic
from lab.report import markdown_table
from sim.error_stats import burst_throughput, load_shape, pct, signed_stats
from sim.public_check import DEFAULT_FILE, card_label, load_rows, read_public_csv

GROUPINGS = ("source", "page", "frontend", "hardware", "load", "dataset", "vllm")
LOAD_SHAPES = ("single-user", "closed-loop", "open-loop", "burst")
HALVES = ("held-out", "fit", "all")
# the public_check.csv columns this reads (dp / ep are optional: older tables lack them)
NEEDED = ("id", "half", "gpu", "model", "tp", "input", "output", "prompts", "rate", "concurrency", "frontend", "source",
          "reported_ttft_mean_ms", "sim_ttft_mean_ms", "rel_err_ttft_mean_ms",
          "rel_err_output_throughput_tok_s", "rel_err_total_throughput_tok_s")
# an open-loop sweep: one setup at several rates (a ShareGPT run's mean lengths differ from rate to rate: its
# lengths key is the dataset, a random run's the asked input / output)
SERIES_KEYS = ("source_repo", "gpu", "tp", "dp", "model", "lengths", "prompts")
FALL = 0.5  # a series is flagged where its reported TTFT at some rate is below FALL x that at a lower rate
TOP_ROWS = 15


def read_table(csv_path: str | Path) -> pd.DataFrame:
    """public_check.csv as a DataFrame; LabError naming the file or the first missing column."""
    p = Path(csv_path)
    table = read_public_csv(p, "--csv", NEEDED)
    if table.empty:  # a header alone: the merge with the data file's ids raised a pandas traceback
        raise LabError(f"--csv: {p} has a header but no rows")
    for col in NEEDED:
        if col not in ("id", "half", "gpu", "model", "frontend", "source"):
            bad = pd.to_numeric(table[col], errors="coerce").isna() & table[col].notna()
            if bad.any():
                raise LabError(f"--csv: {p}: column {col!r} row {int(np.flatnonzero(bad)[0])}: "
                               f"{table[col][bad].iloc[0]!r} is not a number")
            table[col] = pd.to_numeric(table[col], errors="coerce")
    for col in ("reported_ttft_mean_ms", "sim_ttft_mean_ms"):  # a ratio's denominator: 0 divided by zero
        bad = ~(np.isfinite(table[col]) & (table[col] > 0)) & table[col].notna()
        if bad.any():
            raise LabError(f"--csv: {p}: column {col!r} row {int(np.flatnonzero(bad)[0])}: "
                           f"{float(table[col][bad].iloc[0]):g} is not a positive finite time")
    for col in ("dp", "ep"):
        if col not in table.columns:
            table[col] = 1
    table["frontend"] = ["" if pd.isna(x) else str(x) for x in table["frontend"]]
    return table


def row_metadata(file: str | Path, ids: pd.Series) -> pd.DataFrame:
    """The data file's vLLM version and dataset per id of `ids`; LabError naming an id the file lacks."""
    rows = {r.id: r for r in load_rows(file)}
    unknown = [x for x in ids if x not in rows]
    if unknown:
        raise LabError(f"--file: {file} has no row {unknown[0]!r} (the CSV is from another data file: pass it "
                       "with --file)")
    return pd.DataFrame({"id": list(ids), "vllm": [rows[x].vllm or "?" for x in ids],
                         "dataset": [rows[x].bench.dataset for x in ids]})


def source_repo(url: str) -> str:
    """The publisher of a source URL: a GitHub owner/repo, else the site."""
    parsed = urlparse(url)
    parts = [x for x in parsed.path.split("/") if x]
    if parsed.netloc.endswith("github.com") and len(parts) >= 2:
        return f"{parts[0]}/{parts[1]}"
    return parsed.netloc or url


def source_page(url: str) -> str:
    """The page of a source URL: its publisher and the last two parts of its path (the file a row is read from)."""
    parts = [x for x in urlparse(url).path.split("/") if x]
    return f"{source_repo(url)}: {'/'.join(parts[-2:])}" if parts else source_repo(url)


def annotate(table: pd.DataFrame, half: str = "held-out") -> pd.DataFrame:
    """The rows of `half` that report a mean TTFT, with ratio (sim / reported TTFT), load, source_repo, page,
    hardware, share (of the kept rows' signed sum of TTFT errors) and, for bursts, the throughput ratio used, its
    inverse and burst_residual (ttft ratio x throughput ratio)."""
    rows = table if half == "all" else table[table["half"] == half]
    rows = rows[rows["rel_err_ttft_mean_ms"].notna()].copy()
    err = rows["rel_err_ttft_mean_ms"].to_numpy(np.float64)
    rows["ttft_ratio"] = 1.0 + err
    rows["load"] = [load_shape(r.rate, r.concurrency, r.prompts) for r in rows.itertuples(index=False)]
    rows["source_repo"] = rows["source"].map(source_repo)
    rows["page"] = rows["source"].map(source_page)
    rows["hardware"] = [card_label(r) for r in rows.itertuples(index=False)]
    total = err.sum()
    rows["share"] = err / total if total != 0 else np.nan
    rows["throughput_ratio"], rows["throughput_metric"] = burst_throughput(rows, rows["load"])
    rows["inverse_throughput_ratio"] = 1.0 / rows["throughput_ratio"]
    rows["burst_residual"] = rows["ttft_ratio"] * rows["throughput_ratio"]
    return rows


def summarize(part: pd.DataFrame, total: float) -> dict:
    """The TTFT error of some rows: count, within 10%, mean / median signed, geometric mean of sim / reported - 1,
    median |error|, and their share of `total` (the signed sum of all kept rows)."""
    err = part["rel_err_ttft_mean_ms"].to_numpy(np.float64)
    if not err.size:
        return {"rows": 0}
    return {"rows": int(err.size), "within_10pct": int((np.abs(err) <= 0.10).sum()),
            "mean_signed": float(err.mean()), **signed_stats(err),
            "median_abs": float(np.median(np.abs(err))),
            "signed_sum": float(err.sum()), "share_of_sum": float(err.sum() / total) if total != 0 else np.nan}


def group_table(rows: pd.DataFrame, by: str) -> pd.DataFrame:
    """summarize() per value of `by` (a column of annotate's rows), largest share of the signed sum first."""
    column = {"source": "source_repo"}.get(by, by)
    total = float(rows["rel_err_ttft_mean_ms"].sum())
    keys = rows[column].replace("", "(none)")
    out = [{by: key, **summarize(part, total)} for key, part in rows.groupby(keys, sort=True)]
    frame = pd.DataFrame(out)
    return frame.sort_values("signed_sum", ascending=False, ignore_index=True) if len(frame) else frame


def burst_relation(rows: pd.DataFrame) -> dict:
    """The bursts with a throughput error: how well the inverse of the throughput ratio predicts the TTFT ratio
    (on logs: correlation, least-squares slope, median |log2 residual|, rows within 25% of the inverse)."""
    b = rows[rows["throughput_ratio"].notna()]
    if b.empty:
        return {"rows": 0}
    x = np.log(b["inverse_throughput_ratio"].to_numpy(np.float64))
    y = np.log(b["ttft_ratio"].to_numpy(np.float64))
    resid = b["burst_residual"].to_numpy(np.float64)
    spread = len(b) >= 3 and x.std() > 0 and y.std() > 0
    return {"rows": int(len(b)),
            "corr_log": float(np.corrcoef(x, y)[0, 1]) if spread else np.nan,
            "slope_log": float(np.polyfit(x, y, 1)[0]) if spread else np.nan,
            "median_abs_log2_residual": float(np.median(np.abs(np.log2(resid)))),
            "within_25pct_of_inverse": int((np.abs(resid - 1.0) <= 0.25).sum())}


def falling_series(table: pd.DataFrame) -> pd.DataFrame:
    """Open-loop sweeps (SERIES_KEYS alike, three or more rates) whose reported TTFT at some rate is below FALL x
    the reported TTFT at a lower rate: queueing only grows with the rate, so such a series measured something else
    at its low rates (a cold server, a warm-up left in the run). Every row of the table, whatever its half: this is
    about the source's measurements, and a sweep's rates alternate between the halves."""
    rows = table[np.isfinite(table["rate"]) & table["reported_ttft_mean_ms"].notna()].copy()
    rows["source_repo"] = rows["source"].map(source_repo)
    rows["lengths"] = [r.dataset if r.dataset == "sharegpt" else f"{r.input:g} / {r.output:g}"
                       for r in rows.itertuples(index=False)]
    keys = [k for k in SERIES_KEYS if k in rows.columns]
    out = []
    for key, part in rows.groupby(keys, sort=True, dropna=False):
        part = part.sort_values("rate")
        if len(part) < 3:
            continue
        rep = part["reported_ttft_mean_ms"].to_numpy(np.float64)
        running_max = np.maximum.accumulate(rep)
        drop = rep / running_max
        worst = int(np.argmin(drop))
        if drop[worst] >= FALL:
            continue
        peak = int(np.argmax(rep[:worst + 1]))
        rates = part["rate"].to_numpy(np.float64)
        sim = part["sim_ttft_mean_ms"].to_numpy(np.float64)
        out.append({**dict(zip(keys, key)), "rates": " ".join(f"{r:g}" for r in rates),
                    "reported_ttft_ms": " ".join(f"{v:.0f}" for v in rep),
                    "sim_ttft_ms": " ".join(f"{v:.0f}" for v in sim),
                    "falls_from_rate": rates[peak], "falls_to_rate": rates[worst],
                    "fall_ratio": float(drop[worst]),
                    "ids": " ".join(part["id"])})
    return pd.DataFrame(out)


def summary_lines(name: str, s: dict) -> str:
    if not s.get("rows"):
        return f"| {name} | 0 | - | - | - | - | - | - |"
    return (f"| {name} | {s['rows']} | {s['within_10pct']} | {pct(s['mean_signed'])} | {pct(s['median_signed'])} | "
            f"{pct(s['geomean_ratio_minus_1'])} | {100 * s['median_abs']:.1f}% | {pct(s['share_of_sum'])} |")


SUMMARY_HEAD = ("| rows | n | within 10% | mean signed | median signed | geometric mean - 1 | median abs | "
                "share of signed sum |\n|---|---|---|---|---|---|---|---|")


def report(rows: pd.DataFrame, by: str, half: str, series: pd.DataFrame, csv_name: str) -> str:
    """ttft_breakdown.md: the summary, the --by and load tables, the bursts, the falling series, the top rows."""
    total = float(rows["rel_err_ttft_mean_ms"].sum())
    text = [f"# TTFT error of the simulator on {csv_name} ({half} rows)", "",
            "Error = sim / reported - 1 per row; geometric mean - 1 = exp(mean log(sim / reported)) - 1; share = a "
            "group's sum of signed errors over all kept rows' (the shares add up to 100%).", "",
            SUMMARY_HEAD, summary_lines(f"all ({half})", summarize(rows, total)), "",
            f"## By {by}", "", group_md(group_table(rows, by), by), "",
            "## By load shape", "", group_md(group_table(rows, "load"), "load"), ""]
    rel = burst_relation(rows)
    text += ["## Bursts: TTFT error against throughput error", "",
             "TTFT ratio against the inverse of the throughput ratio, per burst row that reports both "
             "(residual = TTFT ratio x throughput ratio; 1 = the TTFT error is the throughput error's inverse).", ""]
    if rel["rows"]:
        text += [f"{rel['rows']} bursts: correlation of log TTFT ratio with log(1 / throughput ratio) "
                 f"{rel['corr_log']:.2f}, slope {rel['slope_log']:.2f}, median |log2 residual| "
                 f"{rel['median_abs_log2_residual']:.2f}, {rel['within_25pct_of_inverse']} within 25% of the "
                 "inverse.", ""]
        b = rows[rows["throughput_ratio"].notna()].sort_values("burst_residual", ascending=False)
        text.append(markdown_table(b[["id", "page", "ttft_ratio", "throughput_metric", "throughput_ratio",
                                      "inverse_throughput_ratio", "burst_residual"]], "{:.3f}"))
    else:
        text.append("No burst row reports both a mean TTFT and a throughput.")
    text += ["", f"## Open-loop series whose reported TTFT falls as the rate rises (below {FALL:g}x an "
             "earlier rate's; every row, both halves)", ""]
    text.append(markdown_table(series.drop(columns=["ids"]), "{:.2f}") if len(series) else "None.")
    top = rows.reindex(rows["share"].abs().sort_values(ascending=False).index).head(TOP_ROWS)
    text += ["", f"## The {len(top)} rows with the largest share of the signed sum", "",
             markdown_table(top[["id", "load", "reported_ttft_mean_ms", "sim_ttft_mean_ms", "rel_err_ttft_mean_ms",
                                 "share"]], "{:.3f}"), ""]
    return "\n".join(text)


def group_md(groups: pd.DataFrame, by: str) -> str:
    lines = [SUMMARY_HEAD.replace("| rows |", f"| {by} |")]
    lines += [summary_lines(str(g[by]), g.to_dict()) for _, g in groups.iterrows()]
    return "\n".join(lines)


def plot(rows: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, shape in enumerate(LOAD_SHAPES):
        part = rows[rows["load"] == shape]
        ratio = part["ttft_ratio"].to_numpy(np.float64)
        ratio = ratio[np.isfinite(ratio) & (ratio > 0)]
        jitter = np.linspace(-0.25, 0.25, len(ratio)) if len(ratio) > 1 else np.zeros(len(ratio))
        ax1.scatter(i + jitter, ratio, s=12, color=f"C{i}", alpha=0.7)
        if len(ratio):
            ax1.plot([i - 0.35, i + 0.35], [np.exp(np.log(ratio).mean())] * 2, "k-", lw=1.5)
    ax1.axhspan(0.9, 1.1, color="0.88", zorder=0)
    ax1.set_yscale("log")
    ax1.set_xticks(range(len(LOAD_SHAPES)),
                   [f"{s}\n({int((rows['load'] == s).sum())})" for s in LOAD_SHAPES])
    ax1.set_ylabel("sim / reported mean TTFT (bar: geometric mean)")
    ax1.set_title("TTFT ratio by load shape")
    b = rows[rows["throughput_ratio"].notna()]
    if len(b):
        x, y = b["inverse_throughput_ratio"].to_numpy(np.float64), b["ttft_ratio"].to_numpy(np.float64)
        lo, hi = min(x.min(), y.min()) / 1.3, max(x.max(), y.max()) * 1.3
        ax2.fill_between([lo, hi], [lo / 1.25, hi / 1.25], [lo * 1.25, hi * 1.25], color="0.88", zorder=0,
                         label="within 25% of the inverse")
        ax2.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        # one colour per source page: a burst's residual is a property of how that page measured
        cmap = plt.get_cmap("tab20")
        for j, page in enumerate(sorted(set(b["page"]))):
            sel = (b["page"] == page).to_numpy()
            ax2.scatter(x[sel], y[sel], s=16, color=cmap(j % 20), label=page.split(": ")[-1][:48])
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.legend(fontsize=5)
    ax2.set_xlabel("1 / (sim / reported throughput)")
    ax2.set_ylabel("sim / reported mean TTFT")
    ax2.set_title(f"Bursts ({len(b)} rows)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def breakdown(csv_path: str | Path, file: str | Path = DEFAULT_FILE, half: str = "held-out") -> tuple:
    """(annotated rows of `half`, falling open-loop series) of a public_check.csv with its data file's metadata."""
    table = read_table(csv_path)
    table = table.merge(row_metadata(file, table["id"]), on="id", how="left")
    rows = annotate(table, half)
    if rows.empty:
        raise LabError(f"--csv: {csv_path} has no {half} row with a reported mean TTFT")
    return rows, falling_series(table)


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.ttft_breakdown", description=__doc__.splitlines()[0])
    ap.add_argument("--csv", required=True, help="sim.public_check's per-row public_check.csv")
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="the data file the CSV was made from (row metadata)")
    ap.add_argument("--by", choices=GROUPINGS, default="source", help="the grouping of the main table")
    ap.add_argument("--half", choices=HALVES, default="held-out", help="which rows (public_check's halves)")
    ap.add_argument("--out", default="ttft_breakdown", help="output directory")
    args = ap.parse_args(argv)
    wall0 = time.perf_counter()
    try:
        rows, series = breakdown(args.csv, args.file, args.half)
        make_dirs(args.out)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    text = report(rows, args.by, args.half, series, Path(args.csv).name)
    keep = ["id", "half", "load", "source_repo", "page", "frontend", "hardware", "dataset", "vllm", "rate",
            "concurrency", "prompts", "reported_ttft_mean_ms", "sim_ttft_mean_ms", "rel_err_ttft_mean_ms",
            "ttft_ratio", "share", "throughput_metric", "throughput_ratio", "inverse_throughput_ratio",
            "burst_residual"]
    write_text_atomic(out / "ttft_breakdown_rows.csv", rows[keep].to_csv(index=False))
    write_text_atomic(out / "ttft_breakdown_groups.csv", group_table(rows, args.by).to_csv(index=False))
    write_text_atomic(out / "ttft_breakdown_load.csv", group_table(rows, "load").to_csv(index=False))
    write_text_atomic(out / "ttft_breakdown_series.csv", series.to_csv(index=False))
    write_text_atomic(out / "ttft_breakdown.md", text)
    plot(rows, out / "ttft_breakdown.png")
    print(text)
    print(f"wrote {out}/ttft_breakdown.{{md,png}} and *.csv (wall {time.perf_counter() - wall0:.1f} s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
