"""dashboards.data's helpers on literal cases: the guarded read, round spans of a decode, coinciding series."""

import json

import numpy as np
import pandas as pd
import pytest

from dashboards import data
from lab.errors import LabError


def test_guarded_read_missing_is_none_and_bad_is_one_line(tmp_path):
    assert data.guarded_read(tmp_path / "absent.csv", pd.read_csv, "CSV table") is None
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LabError, match=r"empty\.csv: empty file"):
        data.guarded_read(tmp_path / "empty.csv", pd.read_csv, "CSV table")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LabError, match=r"bad\.json: not valid JSON"):
        data.guarded_read(tmp_path / "bad.json", lambda p: json.loads(p.read_text()), "JSON")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 but not really")
    with pytest.raises(LabError, match=r"bad\.parquet: not a readable Parquet table \(Arrow"):
        data.guarded_read(tmp_path / "bad.parquet", pd.read_parquet, "Parquet table")


def test_round_spans_follow_the_decode_loop():
    # prefill token, then rounds accepting 2, 0, 3 drafts each followed by the target's token; cut at 9 tokens
    spans = data.round_spans(9, [2, 0, 3])
    assert spans == [(0, 1, -1, "prefill"), (1, 3, 0, "draft"), (3, 4, 0, "target"), (4, 5, 1, "target"),
                     (5, 8, 2, "draft"), (8, 9, 2, "target")]
    # max_new_tokens cut the last round's drafts short
    assert data.round_spans(4, [5]) == [(0, 1, -1, "prefill"), (1, 4, 0, "draft")]
    assert data.round_spans(0, [1]) == []


def test_coinciding_series():
    front = pd.DataFrame({
        "policy": ["a", "a", "b", "b", "c", "c"],
        "value": [1, 8, 1, 8, 1, 8],
        "tok_s_user": [100.0, 50.0, 100.0, 50.0, 100.0, 51.0],
        "throughput_per_gpu": [100.0, 400.0, 100.0, 400.0, 100.0, 400.0],
    })
    assert data.coinciding(front) == [["a", "b"]]
    assert data.coinciding(front[front["policy"] != "b"]) == []


def test_sts_temperatures_only_at_the_fitted_temperature():
    cal = {"methods": {"dspark": {"temperatures": [1.2, 1.1], "sampling_temperature": 0.0}}}
    assert data.sts_temperatures(cal, "dspark", 0.0) == ([1.2, 1.1], "")
    temps, why = data.sts_temperatures(cal, "dspark", 1.0)
    assert temps is None and "fitted at sampling temperature T=0" in why
    assert data.sts_temperatures(cal, "mtp", 0.0)[0] is None
    assert data.sts_temperatures(None, "dspark", 0.0)[0] is None


def test_runs_are_newest_first(tmp_path):
    for name, opened in [("a/a-1", 3.0), ("b/b-1", 1.0), ("c/c-1", 2.0)]:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "manifest.json").write_text(json.dumps({"opened_at": opened}))
    assert [r.parent.name for r in data.run_dirs(tmp_path)] == ["a", "c", "b"]
    assert np.isclose(data.opened_at(tmp_path / "c" / "c-1"), 2.0)


def test_name_keyed_csvs_keep_names_pandas_reads_as_missing_or_numbers(tmp_path):
    """A policy, engine variant or load named NA, None or 007 stays that name in the dashboards' tables
    (plain pd.read_csv made NA and None missing values and 007 the number 7), as tau.csv's datasets."""
    from dashboards import validation

    names = ["NA", "None", "007", "nan"]
    (tmp_path / "sim").mkdir()
    pd.DataFrame({"sla_tok_s_user": [50.0] * 4, "policy": names, "throughput_per_gpu": [1.0, 2.0, 3.0, 4.0],
                  "gain_vs_baseline": [float("nan")] * 4, "gain_vs_best_fixed_k": [0.1] * 4}).to_csv(
        tmp_path / "sim" / "sla.csv", index=False)
    sla = data.sim_sla(str(tmp_path), 0.0)
    assert sla["policy"].tolist() == names and sla["gain_vs_baseline"].isna().all()
    wide = data.gains_wide(sla)  # one SLA point, each policy's throughput a column of it
    assert [f"{n} throughput_per_gpu" in wide.columns for n in names] == [True] * 4
    (tmp_path / "engine").mkdir()
    pd.DataFrame({"variant": names, "load": names[::-1], "metric": ["tpot_mean_ms"] * 4, "sim": [1.0] * 4,
                  "log": [1.1] * 4, "rel_error": [-0.09] * 4}).to_csv(tmp_path / "engine" / "fidelity.csv",
                                                                    index=False)
    fidelity = data.fidelity(str(tmp_path), 0.0)
    assert fidelity["variant"].tolist() == names and fidelity["load"].tolist() == names[::-1]
    pd.DataFrame({"run": names, "device": ["h100"] * 4, "tokens": [1, 2, 3, 4], "measured_us": [1.0] * 4,
                  "sim_us": [1.0] * 4, "rel_err": [0.0] * 4, "cached": [False] * 4}).to_csv(
        tmp_path / "moe_kernels.csv", index=False)
    assert validation.moe_kernels(str(tmp_path), 0.0)["run"].tolist() == names
