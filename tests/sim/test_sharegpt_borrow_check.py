"""sim/sharegpt_borrow_check.py: a table scaled onto another's means, against that one's own rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.sharegpt_borrow_check import main, sample_mean_sd
from sim.workload import sharegpt_table_path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "lengths").mkdir(parents=True)
    return tmp_path / "cache"


def write(name: str, prompts, outputs) -> None:
    pd.DataFrame({"conversation": range(len(prompts)), "prompt_tokens": prompts, "output_tokens": outputs}
                 ).to_csv(sharegpt_table_path(name), index=False)


def test_a_proportional_tokenizer_is_matched_and_a_different_shape_is_not(cache, tmp_path, capsys):
    rng = np.random.default_rng(1)
    prompts, outputs = rng.lognormal(4.5, 1.0, 3000).astype(int) + 4, rng.lognormal(4.8, 0.8, 3000).astype(int) + 4
    write("a", prompts, outputs)
    write("b", np.rint(prompts * 1.3).astype(int), np.rint(outputs * 0.8).astype(int))  # proportional counts
    write("c", np.full(3000, 120), np.full(3000, 90))  # every conversation one length: not proportional
    assert main(["--out", str(tmp_path / "o")]) == 0
    got = pd.read_csv(tmp_path / "o" / "sharegpt_borrow_check.csv").set_index(["source", "target"])
    assert got.loc[("a", "b"), "ks_prompt"] < 0.02 and got.loc[("a", "b"), "ks_output"] < 0.02
    assert got.loc[("b", "a"), "per_conversation_prompt_p05_p50_p95"].split()[1] == "0.769"  # 1 / 1.3
    assert got.loc[("a", "c"), "ks_prompt"] > 0.5 and got.loc[("a", "b"), "ks_prompt_at_mean"] > 0.3
    assert "worst KS over all pairs" in capsys.readouterr().out


def test_fewer_than_two_tables_is_one_error_line(cache, tmp_path, capsys):
    write("a", [10, 20], [30, 40])
    assert main(["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "1 ShareGPT table(s) ['a']; two or more are needed" in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_the_sample_means_spread_is_the_finite_population_one():
    values = np.arange(10, dtype=float)
    assert sample_mean_sd(values, 10) == 0.0  # the whole table: one mean
    assert sample_mean_sd(values, 1) == pytest.approx(values.std())
