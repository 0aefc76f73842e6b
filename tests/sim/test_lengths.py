"""Request lengths as vLLM's benchmark sends them (sim/workload.py): rows of a lengths table (yours, or
ShareGPT's in tokens, kept by vLLM bench's filter), seeded draws, vLLM's random-dataset rule, bad files."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lab.config_sim import LengthSpec
from lab.errors import LabError
from sim.simulate import prepare_inputs, simulate
from sim.workload import (
    BORROW_TOLERANCE,
    LengthSampler,
    borrowed_sharegpt_table,
    borrowed_table_name,
    load_length_table,
    random_dataset_bounds,
    read_lengths,
    sharegpt_filter,
    sharegpt_lengths_label,
    sharegpt_table_label,
    sharegpt_table_path,
)
from tests.sim.conftest import make_sim


def write_csv(path, **columns):
    pd.DataFrame(columns).to_csv(path, index=False)
    return str(path)


def closed_loop(lengths: dict, users: int = 3, prompts: int = 12) -> dict:
    return {"kind": "closed_loop", "concurrency": users, "max_requests": prompts, "duration_s": 1e6,
            "warmup_s": 0, "lengths": lengths}


def run_log(lengths: dict, seed: int = 0) -> pd.DataFrame:
    sim = make_sim(workload=closed_loop(lengths))
    return simulate(prepare_inputs(sim, seed=seed), "ar", seed=seed).requests


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty $DSPARK_LAB_CACHE: where the ShareGPT length tables live."""
    root = tmp_path / "cache"
    monkeypatch.setenv("DSPARK_LAB_CACHE", str(root))
    return root


@pytest.mark.parametrize("columns", [("prompt_tokens", "output_tokens"), ("input_tokens", "output_tokens"),
                                     ("num_prefill_tokens", "num_decode_tokens")])
def test_lengths_from_a_file_are_what_the_requests_get(tmp_path, columns):
    table = {columns[0]: [37, 150, 61, 290], columns[1]: [5, 40, 9, 17]}
    log = run_log({"source": "csv", "csv_path": write_csv(tmp_path / "l.csv", **table)})
    assert len(log) == 12 and log["finish_s"].notna().all()
    pairs = set(zip(log["input_tokens"], log["output_tokens"]))
    assert pairs <= set(zip(*table.values())) and len(pairs) > 1


@pytest.mark.parametrize("draw", ["iid", "shuffle"])
def test_draws_are_seeded(draw):
    table = np.stack([np.arange(10, 1010), np.arange(1000, 0, -1)], axis=1)
    spec = LengthSpec(source="csv", csv_path="x.csv", draw=draw)

    def draws(seed):
        sampler = LengthSampler.from_spec(spec, table)
        rng = np.random.default_rng(seed)
        return np.concatenate([sampler.sample(4, rng)[0], sampler.sample(1, rng)[0], sampler.sample(3, rng)[0]])

    assert (draws(1) == draws(1)).all() and not (draws(1) == draws(2)).all()


def test_a_run_with_table_lengths_repeats_with_its_seed(tmp_path):
    path = write_csv(tmp_path / "l.csv", prompt_tokens=np.arange(20, 420, 4), output_tokens=np.arange(3, 103))
    lengths = {"source": "csv", "csv_path": path}
    first, again, other = run_log(lengths, 0), run_log(lengths, 0), run_log(lengths, 1)
    assert first["input_tokens"].tolist() == again["input_tokens"].tolist()
    assert first["finish_s"].tolist() == again["finish_s"].tolist()
    assert first["input_tokens"].tolist() != other["input_tokens"].tolist()


@pytest.mark.parametrize("draw", ["iid", "shuffle", "random"])
def test_the_same_requests_at_every_rate_and_concurrency_of_a_seed(tmp_path, draw):
    """vLLM's benchmark samples its dataset apart from the arrival times: a rate or concurrency sweep sends the
    same prompts at every point. The simulator's lengths have a stream of their own for the same reason, and
    are drawn request by request, though a closed loop draws its users' first ones together, then one at a time
    (random lengths with a range ratio drew the C first prompts, then their outputs: request i's changed with C)."""
    path = write_csv(tmp_path / "l.csv", prompt_tokens=np.arange(20, 420, 4), output_tokens=np.arange(3, 103))
    lengths = ({"source": "random", "prompt_tokens": 200, "output_tokens": 50, "range_ratio": 0.5} if draw == "random"
               else {"source": "csv", "csv_path": path, "draw": draw})

    def sent(workload: dict, seed: int = 0) -> list[tuple[int, int]]:
        log = simulate(prepare_inputs(make_sim(workload=workload), seed=seed), "ar", seed=seed).requests
        log = log.sort_values(["arrival_s", "rid"] if "rid" in log else "arrival_s", kind="stable")
        return list(zip(log["input_tokens"].tolist(), log["output_tokens"].tolist()))

    def poisson(rate: float) -> dict:
        return {"kind": "poisson", "rate": rate, "max_requests": 12, "duration_s": 1e4, "warmup_s": 0,
                "drain": True, "lengths": lengths}

    slow, fast = sent(poisson(0.5)), sent(poisson(50.0))
    assert len(slow) == 12 and slow == fast
    assert sent(poisson(0.5), seed=1) != slow  # another seed, other requests
    one, four = sent(closed_loop(lengths, users=1)), sent(closed_loop(lengths, users=4))
    assert sorted(one) == sorted(four) and sorted(one) == sorted(slow)


def test_shuffle_sends_every_row_once_before_any_twice():
    table = np.stack([np.arange(1, 51), np.arange(101, 151)], axis=1)
    sampler = LengthSampler.from_spec(LengthSpec(source="csv", csv_path="x.csv", draw="shuffle"), table)
    rng = np.random.default_rng(0)
    first = np.concatenate([sampler.sample(n, rng)[0] for n in (7, 1, 30, 12)])
    assert sorted(first.tolist()) == list(range(1, 51))  # a permutation of the table, pairs kept together
    later, outs = sampler.sample(50, rng)
    assert (outs - later == 100).all() and later.tolist() == first.tolist()  # then the same order again
    iid = LengthSampler.from_spec(LengthSpec(source="csv", csv_path="x.csv"), table).sample(50, rng)[0]
    assert len(set(iid.tolist())) < 50  # independent draws repeat rows (P(no repeat) ~ 1e-21)


def test_vllm_sharegpt_filter_rules():
    rows = np.array([[3, 100], [4, 100], [100, 3], [100, 4], [1024, 100], [1025, 100],
                     [1000, 1048], [1000, 1049], [0, 0]])
    kept = sharegpt_filter(rows)
    assert kept.tolist() == [[4, 100], [100, 4], [1024, 100], [1000, 1048]]
    # --sharegpt-output-len: every output that long, its minimum not checked, the total checked with it
    fixed = sharegpt_filter(rows, output_len=2)
    assert fixed.tolist() == [[4, 2], [100, 2], [100, 2], [1024, 2], [1000, 2], [1000, 2]]
    assert sharegpt_filter(rows, output_len=1045).tolist() == [[4, 1045], [100, 1045], [100, 1045], [1000, 1045],
                                                             [1000, 1045]]  # 1024 + 1045 > 2048


def test_sharegpt_lengths_come_from_the_cached_table_after_the_filter(cache):
    path = sharegpt_table_path("qwen3")
    assert path == cache / "lengths" / "sharegpt-qwen3.csv"
    path.parent.mkdir(parents=True)
    write_csv(path, conversation=range(6), prompt_tokens=[2, 40, 90, 1500, 300, 12],
              output_tokens=[50, 60, 1, 10, 700, 25])
    table = read_lengths(LengthSpec(source="sharegpt"))
    assert table.tolist() == [[40, 60], [300, 700], [12, 25]]
    log = run_log({"source": "sharegpt"})
    assert set(zip(log["input_tokens"], log["output_tokens"])) == {(40, 60), (300, 700), (12, 25)}
    # distinct conversations first, as vLLM sends its shuffled list: 3 rows, so each one in every 3 requests
    order = sorted(log.itertuples(), key=lambda r: r.arrival_s)
    assert len({r.input_tokens for r in order[:3]}) == 3
    fixed = read_lengths(LengthSpec(source="sharegpt", sharegpt_output_len=128))
    assert fixed.tolist() == [[40, 128], [90, 128], [300, 128], [12, 128]]


def test_a_tokenizer_sharing_qwen3s_vocabulary_reads_its_table_with_the_bos_counted(cache):
    """deepseek-r1-distill-qwen (SHAREGPT_TABLE_ALIASES): Qwen3's counts + 1 on prompt and reply (its BOS), shifted
    before vLLM's filter -- a 3-token prompt now passes, a 1024-token one and a 2048-token pair no longer do; a
    table of its own, once built, wins."""
    distill = LengthSpec(source="sharegpt", tokenizer="deepseek-r1-distill-qwen")
    with pytest.raises(LabError, match="sharegpt-qwen3.csv; build it with `python -m real.sharegpt_lengths "
                                       "--tokenizer qwen3`"):
        read_lengths(distill)
    path = sharegpt_table_path("qwen3")
    path.parent.mkdir(parents=True)
    write_csv(path, conversation=range(5), prompt_tokens=[3, 40, 1024, 1000, 12], output_tokens=[50, 60, 10, 1047, 3])
    assert read_lengths(LengthSpec(source="sharegpt")).tolist() == [[40, 60], [1024, 10], [1000, 1047]]
    assert read_lengths(distill).tolist() == [[4, 51], [41, 61], [13, 4]]
    assert sharegpt_table_label("deepseek-r1-distill-qwen") == "qwen3 +1 / +1 as deepseek-r1-distill-qwen"
    assert sharegpt_table_label("qwen3") == "qwen3"
    log = run_log({"source": "sharegpt", "tokenizer": "deepseek-r1-distill-qwen"})
    assert set(zip(log["input_tokens"], log["output_tokens"])) == {(4, 51), (41, 61), (13, 4)}
    own = sharegpt_table_path("deepseek-r1-distill-qwen")
    write_csv(own, conversation=[0], prompt_tokens=[77], output_tokens=[88])
    assert read_lengths(distill).tolist() == [[77, 88]]
    assert sharegpt_table_label("deepseek-r1-distill-qwen") == "deepseek-r1-distill-qwen"


def test_a_borrowed_table_is_scaled_first_then_filtered_to_the_asked_means():
    """Every prompt times one factor, every output times another, then vLLM's filter on the scaled counts (as vLLM
    filters the served tokenizer's): conversations the scaling pushes past its limits drop out, and the kept
    rows' means are the asked ones."""
    rng = np.random.default_rng(0)
    raw = np.stack([rng.integers(1, 1400, 4000), rng.integers(1, 1400, 4000)], axis=1)  # [4000, 2], unfiltered
    kept = borrowed_sharegpt_table(raw, 600.0, 300.0)
    assert kept.dtype == np.int64
    assert np.all(np.abs(kept.mean(axis=0) / [600.0, 300.0] - 1) <= BORROW_TOLERANCE)
    assert np.array_equal(sharegpt_filter(kept), kept)  # all within vLLM's limits
    # the prompts grew (600 against the filtered table's ~440): more of them now pass 1024 and are dropped, where
    # scaling the already-filtered rows would keep prompts up to ~1400
    assert len(kept) < len(sharegpt_filter(raw)) and kept[:, 0].max() <= 1024
    # a table already at the asked means comes back as vLLM's filter keeps it (factors of 1)
    same = sharegpt_filter(raw).mean(axis=0)
    assert np.array_equal(borrowed_sharegpt_table(raw, *same), sharegpt_filter(raw))
    # --sharegpt-output-len: every output that long, only prompts scale
    fixed = borrowed_sharegpt_table(raw, 300.0, 999.0, output_len=128)
    assert set(fixed[:, 1].tolist()) == {128} and abs(fixed[:, 0].mean() / 300 - 1) <= BORROW_TOLERANCE


def test_a_borrowed_table_that_cannot_reach_the_means_is_an_error():
    raw = np.array([[100, 100], [200, 50], [300, 400]])
    with pytest.raises(LabError, match=r"sim.workload.lengths.prompt_tokens / output_tokens: means 1500 / 100 "
                                       r"cannot be had"):
        borrowed_sharegpt_table(raw, 1500.0, 100.0)  # vLLM keeps no prompt above 1024


def test_borrow_draws_the_nearest_cached_table_scaled_to_the_given_means(cache):
    """A tokenizer without a table of its own borrows the cached table whose kept prompts' mean is nearest
    prompt_tokens; its own table, once built, wins; without `borrow` it is the missing-table error."""
    spec = LengthSpec(source="sharegpt", tokenizer="phi4", borrow=True, prompt_tokens=110, output_tokens=40)
    assert borrowed_table_name(spec) is None  # nothing cached
    with pytest.raises(LabError, match="no ShareGPT length table for 'phi4' .* \\(nor any other tokenizer's to borrow\\)"):
        read_lengths(spec)
    (cache / "lengths").mkdir(parents=True)
    write_csv(sharegpt_table_path("qwen3"), conversation=range(4), prompt_tokens=[40, 80, 120, 160],
              output_tokens=[10, 20, 30, 40])  # kept prompt mean 100
    write_csv(sharegpt_table_path("llama3"), conversation=range(4), prompt_tokens=[400, 800, 1000, 600],
              output_tokens=[10, 20, 30, 40])  # 700
    assert borrowed_table_name(spec) == "qwen3"
    assert borrowed_table_name(spec.model_copy(update={"prompt_tokens": 600})) == "llama3"
    assert borrowed_table_name(spec.model_copy(update={"borrow": False})) is None
    table = read_lengths(spec)
    assert table.tolist() == [[44, 16], [88, 32], [132, 48], [176, 64]]  # x 1.1 / x 1.6
    assert sharegpt_lengths_label(spec) == "qwen3 scaled to 110 / 40 as phi4"
    log = run_log({"source": "sharegpt", "tokenizer": "phi4", "borrow": True, "prompt_tokens": 110,
                   "output_tokens": 40})
    assert set(zip(log["input_tokens"], log["output_tokens"])) == {tuple(r) for r in table.tolist()}
    own = sharegpt_table_path("phi4")
    write_csv(own, conversation=[0], prompt_tokens=[77], output_tokens=[88])
    assert borrowed_table_name(spec) is None and read_lengths(spec).tolist() == [[77, 88]]
    assert sharegpt_lengths_label(spec) == "phi4"
    # a tokenizer with an alias reads the alias's table, shifted, not a scaled one
    distill = LengthSpec(source="sharegpt", tokenizer="deepseek-r1-distill-qwen", borrow=True, prompt_tokens=500)
    assert borrowed_table_name(distill) is None and read_lengths(distill)[0].tolist() == [41, 11]


@pytest.mark.parametrize("lengths, message", [
    ({"source": "fixed", "borrow": True}, "lengths.borrow does not apply to lengths.source 'fixed'"),
    ({"source": "sharegpt", "borrow": True, "csv_path": "x.csv"}, "lengths.borrow does not apply with lengths.csv_path"),
])
def test_borrow_belongs_to_a_cached_sharegpt_table(lengths, message):
    with pytest.raises(ValueError, match=message):
        LengthSpec(**lengths)


def test_missing_sharegpt_table_says_how_to_build_it(cache):
    with pytest.raises(LabError) as err:
        prepare_inputs(make_sim(workload=closed_loop({"source": "sharegpt", "tokenizer": "gemma3"})))
    message = str(err.value)
    assert message.startswith("sim.workload.lengths.tokenizer: no ShareGPT length table for 'gemma3'")
    assert "python -m real.sharegpt_lengths --tokenizer gemma3" in message and "\n" not in message


def test_a_missing_table_of_a_tokenizer_the_builder_does_not_know_says_what_works(cache):
    """`--tokenizer mistral` is refused by the builder (it knows qwen3, llama3, ... by name): the error names a
    tokenizer directory written with --out where the simulator looks, and `borrow` once another table is cached."""
    spec = LengthSpec(source="sharegpt", tokenizer="mistral", prompt_tokens=300, output_tokens=200)
    path = sharegpt_table_path("mistral")
    with pytest.raises(LabError) as err:
        read_lengths(spec)
    message = str(err.value)
    assert message == (f"sim.workload.lengths.tokenizer: no ShareGPT length table for 'mistral' at {path}; build it "
                       "with `python -m real.sharegpt_lengths --tokenizer <mistral's tokenizer directory> --out "
                       f"{path}`")
    (cache / "lengths").mkdir(parents=True)
    write_csv(sharegpt_table_path("qwen3"), conversation=range(2), prompt_tokens=[40, 80], output_tokens=[10, 20])
    with pytest.raises(LabError) as err:
        read_lengths(spec)
    message = str(err.value)
    assert message.endswith("; or set sim.workload.lengths.borrow: true to draw a cached table's conversations "
                            "(qwen3) scaled to lengths.prompt_tokens / output_tokens, your run's mean lengths")
    assert "\n" not in message
    # a name the builder knows keeps its own command, with the borrow option beside it
    with pytest.raises(LabError, match="build it with `python -m real.sharegpt_lengths --tokenizer gemma3`; or set "
                                       r"sim.workload.lengths.borrow: true .*\(qwen3\)"):
        read_lengths(LengthSpec(source="sharegpt", tokenizer="gemma3"))
    # borrow set and a table to borrow: no error at all
    assert len(read_lengths(spec.model_copy(update={"borrow": True})))


@pytest.mark.parametrize("users", [1, 4, 16])
def test_a_random_requests_lengths_do_not_depend_on_how_the_draws_are_split(users):
    """Request i's lengths when a closed loop of `users` draws them (its users' first requests together, then
    one at a time) are those of one draw of all the requests: the same requests at every concurrency."""
    spec = LengthSpec(source="random", prompt_tokens=300, output_tokens=80, range_ratio=0.4)
    whole = LengthSampler.from_spec(spec, None, rng=np.random.default_rng(7)).sample(40, None)
    sampler = LengthSampler.from_spec(spec, None, rng=np.random.default_rng(7))
    parts = [sampler.sample(users, None)] + [sampler.sample(1, None) for _ in range(40 - users)]
    assert (np.concatenate([p for p, _ in parts]) == whole[0]).all()
    assert (np.concatenate([o for _, o in parts]) == whole[1]).all()


def test_vllm_random_dataset_rule():
    assert random_dataset_bounds(100, 0.0) == (100, 100)
    assert random_dataset_bounds(100, 0.1) == (90, 111)  # ceil(100 * 1.1) = 111 in float, as in vLLM
    assert random_dataset_bounds(2000, 0.5) == (1000, 3000)
    assert random_dataset_bounds(1, 0.9, minimum=1) == (1, 2)  # outputs never below 1
    spec = LengthSpec(source="random", prompt_tokens=2000, output_tokens=100, range_ratio=0.5)
    p, o = LengthSampler.from_spec(spec, None).sample(5000, np.random.default_rng(0))
    assert p.min() == 1000 and p.max() == 3000 and o.min() == 50 and o.max() == 150
    assert abs(p.mean() - 2000) < 20 and len(np.unique(o)) == 101  # uniform over the integer range
    exact = LengthSampler.from_spec(LengthSpec(source="random", prompt_tokens=512, output_tokens=128), None)
    p, o = exact.sample(50, np.random.default_rng(0))
    assert (p == 512).all() and (o == 128).all()  # range ratio 0, vLLM's default: exactly as asked


@pytest.mark.parametrize("content, fragment", [
    (None, "does not exist"),
    ("a,b\n1,2\n", "lacks length columns prompt_tokens,output_tokens or input_tokens,output_tokens"),
    ("prompt_tokens,output_tokens\n", "has no rows"),
    ("prompt_tokens,output_tokens\n10,5\n12,many\n", "line 3: prompt_tokens / output_tokens must be whole"),
    ("prompt_tokens,output_tokens\n-4,5\n", "line 2:"),
    ("prompt_tokens,output_tokens\n4.5,5\n", "line 2:"),
    ("prompt_tokens,output_tokens\n4,\n", "line 2:"),
    ("\x00\x01\x02garbage", "lengths.csv_path:"),
])
def test_bad_lengths_file_is_one_line_naming_the_field(tmp_path, content, fragment):
    path = tmp_path / "l.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LabError) as err:
        prepare_inputs(make_sim(workload=closed_loop({"source": "csv", "csv_path": str(path)})))
    message = str(err.value)
    assert message.startswith("sim.workload.lengths.csv_path: ") and fragment in message and "\n" not in message


def test_a_sharegpt_table_that_the_filter_empties_is_an_error(tmp_path):
    path = write_csv(tmp_path / "t.csv", prompt_tokens=[2, 3000], output_tokens=[10, 10])
    with pytest.raises(LabError, match="no row passes vLLM's ShareGPT filter"):
        read_lengths(LengthSpec(source="sharegpt", csv_path=path))
    assert load_length_table(path).tolist() == [[2, 10], [3000, 10]]


@pytest.mark.parametrize("spec, field", [
    ({"source": "fixed", "draw": "shuffle"}, "lengths.draw"),
    ({"source": "csv", "csv_path": "l.csv", "range_ratio": 0.2}, "lengths.range_ratio"),
    ({"source": "random", "sharegpt_output_len": 64}, "lengths.sharegpt_output_len"),
])
def test_a_lengths_key_of_another_source_is_an_error(spec, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=f"{field} does not apply"):
        LengthSpec.model_validate(spec)
