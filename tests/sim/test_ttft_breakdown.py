"""sim.ttft_breakdown on small synthetic public_check tables: the distributions, the shares, the load shapes, the
bursts' TTFT against their throughput, the falling open-loop series, and one error line on bad input."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from sim.ttft_breakdown import (
    annotate,
    breakdown,
    burst_relation,
    falling_series,
    group_table,
    load_shape,
    main,
    read_table,
    source_repo,
    summarize,
)

GH = "https://github.com/acme/bench/blob/0123/results/{}.md"


def line(id, ttft_rep, ttft_sim, rate=math.inf, concurrency=None, prompts=100, half="held-out", thr_err=None,
         total_err=None, source=None, gpu="h100", tp=1, model="Qwen/Qwen3-0.6B", frontend=""):
    """One public_check.csv row (only the columns sim.ttft_breakdown reads)."""
    return {"id": id, "half": half, "gpu": gpu, "model": model, "tp": tp, "dp": 1, "ep": 1, "input": 512,
            "output": 128, "prompts": prompts, "rate": rate,
            "concurrency": np.nan if concurrency is None else concurrency, "frontend": frontend,
            "source": source or GH.format(id), "reported_ttft_mean_ms": ttft_rep, "sim_ttft_mean_ms": ttft_sim,
            "rel_err_ttft_mean_ms": ttft_sim / ttft_rep - 1,
            "rel_err_output_throughput_tok_s": np.nan if thr_err is None else thr_err,
            "rel_err_total_throughput_tok_s": np.nan if total_err is None else total_err}


def write(tmp_path, lines, name="public_check.csv"):
    """The lines as a public_check.csv, and a data file naming their ids (for the metadata)."""
    csv = tmp_path / name
    pd.DataFrame(lines).to_csv(csv, index=False)
    rows = [{"id": x["id"], "source": x["source"], "gpu": "h100", "gpu_reported": "H100", "model": x["model"],
             "model_config": "real/presets/qwen3-0.6b.json", "vllm": "0.10.0",
             "bench": {"input_tokens": 512, "output_tokens": 128, "num_prompts": int(x["prompts"]),
                       "request_rate": float(x["rate"])},
             "reported": {"ttft_mean_ms": x["reported_ttft_mean_ms"]}} for x in lines]
    data = tmp_path / "rows.yaml"
    data.write_text(yaml.safe_dump({"rows": rows}))
    return csv, data


def test_summary_is_a_distribution_and_the_shares_add_up(tmp_path):
    # errors +300%, -50%, 0%, -20%: the mean is the one tail row, the median and geometric mean are not
    lines = [line("a", 100, 400), line("b", 100, 50, rate=2.0), line("c", 100, 100, concurrency=1),
             line("d", 100, 80, concurrency=8, source="https://example.org/blog/post")]
    rows, _ = breakdown(*write(tmp_path, lines))
    s = summarize(rows, float(rows["rel_err_ttft_mean_ms"].sum()))
    assert s["rows"] == 4 and s["within_10pct"] == 1
    assert s["mean_signed"] == pytest.approx((3 - 0.5 + 0 - 0.2) / 4)
    assert s["median_signed"] == pytest.approx((-0.2 + 0) / 2)
    assert s["geomean_ratio_minus_1"] == pytest.approx((4 * 0.5 * 1 * 0.8) ** 0.25 - 1)
    assert rows["share"].sum() == pytest.approx(1.0)
    assert rows.set_index("id").loc["a", "share"] == pytest.approx(3 / 2.3)
    groups = group_table(rows, "source")
    assert groups["share_of_sum"].sum() == pytest.approx(1.0)
    assert groups.iloc[0]["source"] == "acme/bench" and groups.iloc[0]["rows"] == 3  # largest signed sum first
    assert set(groups["source"]) == {"acme/bench", "example.org"}


def test_load_shapes_follow_vllm_bench_flags():
    assert load_shape(math.inf, 1, 100) == "single-user"
    assert load_shape(math.inf, np.nan, 1) == "single-user"
    assert load_shape(math.inf, 8, 100) == "closed-loop"
    assert load_shape(4.0, np.nan, 100) == "open-loop"
    assert load_shape(math.inf, np.nan, 100) == "burst"
    assert load_shape(math.inf, 100, 100) == "burst"  # --max-concurrency >= --num-prompts: all at once


def test_burst_with_throughput_twice_too_high_expects_half_the_ttft(tmp_path):
    lines = [line("fast", 1000, 500, thr_err=1.0),    # throughput 2x, TTFT 0.5x: the inverse exactly
             line("slow", 1000, 2000, thr_err=-0.5),  # throughput 0.5x, TTFT 2x
             line("extra", 1000, 3000, thr_err=0.0),  # throughput right, TTFT 3x: not the queue
             line("open", 1000, 500, rate=4.0, thr_err=1.0)]  # not a burst: no burst columns
    rows, _ = breakdown(*write(tmp_path, lines))
    r = rows.set_index("id")
    assert r.loc["fast", "inverse_throughput_ratio"] == pytest.approx(0.5)
    assert r.loc["fast", "burst_residual"] == pytest.approx(1.0)
    assert r.loc["slow", "burst_residual"] == pytest.approx(1.0)
    assert r.loc["extra", "burst_residual"] == pytest.approx(3.0)
    assert math.isnan(r.loc["open", "burst_residual"])
    rel = burst_relation(rows)
    assert rel["rows"] == 3 and rel["within_25pct_of_inverse"] == 2
    assert rel["median_abs_log2_residual"] == pytest.approx(0.0)


def test_burst_relation_on_exact_inverses_is_slope_one():
    thr = np.array([2.0, 0.5, 1.25, 0.8, 3.0])
    table = pd.DataFrame([line(f"b{i}", 1000, 1000 / t, thr_err=t - 1) for i, t in enumerate(thr)])
    rel = burst_relation(annotate(table))
    assert rel["corr_log"] == pytest.approx(1.0)
    assert rel["slope_log"] == pytest.approx(1.0)
    assert rel["within_25pct_of_inverse"] == 5


def test_total_throughput_stands_in_where_output_is_missing():
    table = pd.DataFrame([line("t", 1000, 2500, total_err=-0.2), line("o", 1000, 900, thr_err=0.1, total_err=5.0)])
    r = annotate(table).set_index("id")
    assert r.loc["t", "throughput_metric"] == "total" and r.loc["t", "throughput_ratio"] == pytest.approx(0.8)
    assert r.loc["o", "throughput_metric"] == "output" and r.loc["o", "throughput_ratio"] == pytest.approx(1.1)
    assert r.loc["t", "burst_residual"] == pytest.approx(2.5 * 0.8)


def test_half_keeps_its_rows_and_drops_rows_without_ttft():
    table = pd.DataFrame([line("h", 100, 150), line("f", 100, 400, half="fit"), line("n", 100, 100)])
    table.loc[2, "rel_err_ttft_mean_ms"] = np.nan
    assert list(annotate(table)["id"]) == ["h"]
    assert list(annotate(table, "fit")["id"]) == ["f"]
    assert sorted(annotate(table, "all")["id"]) == ["f", "h"]


def test_falling_series_is_flagged_and_a_rising_one_is_not():
    src = "https://github.com/acme/bench/blob/0/results/x.json"
    falls = [line(f"f{r}", rep, sim, rate=r, source=src, tp=4, half="fit" if i % 2 else "held-out")
             for i, (r, rep, sim) in enumerate([(1.0, 4000, 40), (4.0, 600, 45), (8.0, 120, 50), (16.0, 300, 80)])]
    rises = [line(f"r{r}", rep, rep, rate=r, source=src, tp=1)
             for r, rep in [(1.0, 40), (4.0, 45), (8.0, 60), (16.0, 200)]]
    table = pd.DataFrame(falls + rises).assign(dataset="sharegpt")
    series = falling_series(table)
    assert len(series) == 1
    s = series.iloc[0]
    assert s["tp"] == 4 and s["falls_from_rate"] == 1.0 and s["falls_to_rate"] == 8.0
    assert s["fall_ratio"] == pytest.approx(120 / 4000)
    assert s["rates"] == "1 4 8 16"  # both halves: a sweep's rates alternate between them


def test_source_repo_is_the_publisher():
    assert source_repo("https://github.com/gpustack/gpustack/blob/abc/docs/x.md") == "gpustack/gpustack"
    assert source_repo("https://www.databasemart.com/blog/vllm-gpu-benchmark-a40") == "www.databasemart.com"


def test_main_writes_the_report_and_the_plot(tmp_path, capsys):
    lines = [line("a", 100, 400, thr_err=-0.7), line("b", 100, 50, rate=2.0), line("c", 100, 100, concurrency=1)]
    csv, data = write(tmp_path, lines)
    out = tmp_path / "out"
    assert main(["--csv", str(csv), "--file", str(data), "--by", "load", "--out", str(out)]) == 0
    md = (out / "ttft_breakdown.md").read_text()
    assert "## By load" in md and "| burst | 1 |" in md and "| open-loop | 1 |" in md
    assert "+83.3%" in md  # the mean of +300%, -50%, 0%
    assert (out / "ttft_breakdown.png").stat().st_size > 0
    written = pd.read_csv(out / "ttft_breakdown_rows.csv")
    assert written["share"].sum() == pytest.approx(1.0) and set(written["vllm"]) == {"0.10.0"}


@pytest.mark.parametrize("case, needle", [
    ("missing", "does not exist"),
    ("column", "no column 'rel_err_ttft_mean_ms'"),
    ("by", "--by"),
    ("id", "has no row 'ghost'"),
    ("text", "'fast' is not a number"),
    # a header alone raised pandas' merge ValueError (a traceback); a reported TTFT of 0 printed numpy's
    # RuntimeWarning (three lines) and a report; inf or a negative time passed into the ratios
    ("header", "has a header but no rows"),
    ("zero", "column 'reported_ttft_mean_ms' row 1: 0 is not a positive finite time"),
    ("inf", "column 'reported_ttft_mean_ms' row 0: inf is not a positive finite time"),
    ("negative", "column 'sim_ttft_mean_ms' row 1: -5 is not a positive finite time"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case, needle):
    csv, data = write(tmp_path, [line("a", 100, 400), line("b", 100, 50, rate=2.0)])
    table = pd.read_csv(csv)
    argv = ["--csv", str(csv), "--file", str(data), "--out", str(tmp_path / "out")]
    if case == "missing":
        argv[1] = str(tmp_path / "nope.csv")
    elif case == "column":
        table.drop(columns=["rel_err_ttft_mean_ms"]).to_csv(csv, index=False)
    elif case == "by":
        argv += ["--by", "colour"]
    elif case == "id":
        table.assign(id=["a", "ghost"]).to_csv(csv, index=False)
    elif case == "text":
        table.assign(rate=["inf", "fast"]).to_csv(csv, index=False)
    elif case == "header":
        table.head(0).to_csv(csv, index=False)
    elif case == "zero":
        table.assign(reported_ttft_mean_ms=[100, 0]).to_csv(csv, index=False)
    elif case == "inf":
        table.assign(reported_ttft_mean_ms=["inf", 100]).to_csv(csv, index=False)
    elif case == "negative":
        table.assign(sim_ttft_mean_ms=[400, -5]).to_csv(csv, index=False)
    if case == "by":  # argparse's choices: the parser's one line, then SystemExit(2)
        with pytest.raises(SystemExit) as raised:
            main(argv)
        code = raised.value.code
    else:
        code = main(argv)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not (tmp_path / "out").exists()


def test_read_table_accepts_a_table_without_dp_ep(tmp_path):
    csv, _ = write(tmp_path, [line("a", 100, 400)])
    pd.read_csv(csv).drop(columns=["dp", "ep"]).to_csv(csv, index=False)
    table = read_table(csv)
    assert list(table["dp"]) == [1] and list(table["ep"]) == [1]
