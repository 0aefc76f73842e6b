"""The acceptance plot's survival and conditional curves, and REPORT.md's per-position table, on one
hand-made trace whose numbers are known."""
import pytest

from lab.metrics import vllm_counters
from lab.report import position_table
from lab.trace import StepRecord, read_traces, write_shard


def _round(step, k, accepted):
    return StepRecord("r", "ngram", "t", "gsm8k", "p0", "rounds", 0.0, step, 10 + step, k, accepted,
                      [1.0] * accepted + [0.0] * (k - accepted), [0.5] * k)


def test_survival_counts_drafts_not_rounds_so_s1_is_c1(tmp_path, monkeypatch):
    """An n-gram drafter that found no match in half the rounds (k = 0): over every round s1 was 0.3 beside
    c1 = 0.6 on the same plot; per draft (vLLM's num_accepted_tokens_per_pos / num_drafts) both are 0.6."""
    from real import plots

    # 5 rounds without a draft, 5 drafts of 2 tokens accepting 2, 1, 0, 0, 1
    rounds = [_round(s, 0, 0) for s in range(5)] + [_round(5 + s, 2, a) for s, a in enumerate([2, 1, 0, 0, 1])]
    write_shard(rounds, tmp_path / "traces" / "rounds__ngram__gsm8k__T0.parquet")
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    assert plots.plot_positions(tmp_path) == [tmp_path / "acceptance_T0.png"]
    conditional, survival = (ax.get_lines()[0].get_ydata().tolist() for ax in figures[0].axes)
    assert survival == pytest.approx([3 / 5, 1 / 5])  # drafts with >= 1, >= 2 accepted, of 5 drafts
    assert conditional == pytest.approx([3 / 5, 1 / 3])  # of the 3 that passed position 1, 1 passed 2
    assert survival[0] == conditional[0]

    counters = vllm_counters(read_traces(tmp_path / "traces"))  # the counters vLLM would export
    assert [c / counters["num_drafts"] for c in counters["num_accepted_tokens_per_pos"]] == pytest.approx(survival)
    table = position_table(read_traces(tmp_path / "traces"))  # REPORT.md: c_j (drafts reaching j)
    assert table[["c1", "c2"]].values.tolist() == [["0.60 (5)", "0.33 (3)"]]
