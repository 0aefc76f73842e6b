"""Few-row linear layers as W @ x^T (real/cpu_linear.py): the same product, greedy identity kept."""
import json

import pytest
import torch
import torch.nn.functional as F

from real.cpu_linear import (
    ON_ROW_LIMIT,
    ROW_TILE,
    matrix_vector_rows,
    measured_model_limits,
    one_row_switched,
    padded_rows,
    probe_model,
    probe_shape,
    row_limit,
    transposed_linear,
    use_fast_few_row_linears,
)
from real.decode import speculative_decode
from real.drafters.ngram import NgramDrafter
from real.targets import tiny_target
from tests.real.drafters_for_tests import NoisyOracleDrafter
from tests.real.test_decode import hf_greedy, prompts

pytestmark = pytest.mark.usefixtures("one_thread")


def switched_linear(out_features=48, in_features=32, bias=True, limit=8, one_row=False):
    layer = torch.nn.Linear(in_features, out_features, bias=bias)
    layer._lab_row_limit, layer._lab_one_row = limit, one_row
    return layer


@pytest.mark.parametrize("shape,limit", [((1, 32), 8), ((2, 32), 8), ((3, 5, 32), 8), ((8, 32), 8), ((9, 32), 8),
                                         ((2, 4, 32), 8), ((12, 32), 16), ((3, 3, 32), 16), ((2, 8, 32), 16)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("one_row", [False, True])
def test_transposed_linear_is_the_same_product(shape, limit, bias, one_row):
    """1 row (F.linear, or W @ x where one row is switched), 2..limit rows (switched; 9-15 rows padded to a whole
    tile of 16) and past the limit, 2-D and 3-D inputs, with and without bias."""
    layer = switched_linear(bias=bias, limit=limit, one_row=one_row)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    expected = F.linear(x, layer.weight, layer.bias)
    got = transposed_linear(layer, x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_strided_input_is_handled():
    """transformers slices hidden[:, -k:] before the LM head: a non-contiguous input."""
    layer = switched_linear()
    x = torch.randn(2, 10, 32)[:, -3:]  # [B, 3, d], strided
    torch.testing.assert_close(transposed_linear(layer, x), F.linear(x, layer.weight, layer.bias))


def test_row_limit_runs_until_f_linear_first_wins_by_the_margin():
    assert row_limit([[4, 10.0, 3.0], [16, 10.0, 5.0], [64, 10.0, 12.0]]) == 16  # F.linear wins 64 by 20%
    assert row_limit([[4, 10.0, 3.0], [16, 10.0, 5.0], [64, 10.0, 10.5]]) == 64  # a tie (5%) switches
    assert row_limit([[4, 10.0, 11.5]]) == 1  # F.linear faster by 15%: never switch
    assert row_limit([[4, 10.0, 3.0], [16, 10.0, 30.0], [64, 10.0, 1.0]]) == 4  # a loss ends the run
    assert row_limit([[4, 10.0, 3.0], [64, 10.0, 3.0], [256, 10.0, 3.0]]) == 64  # never past ON_ROW_LIMIT
    assert row_limit([]) == 1
    assert row_limit([[1, 10.0, 20.0], [4, 10.0, 3.0]]) == 4  # one row is a kernel of its own: not part of the run
    assert row_limit([[1, 10.0, 2.0], [4, 10.0, 12.0]]) == 1


def test_one_row_is_decided_on_its_own_probe():
    assert one_row_switched([[1, 10.0, 5.0], [4, 10.0, 20.0]])
    assert one_row_switched([[1, 10.0, 10.5], [4, 10.0, 3.0]])  # a tie switches
    assert not one_row_switched([[1, 10.0, 11.5], [4, 10.0, 3.0]])  # F.linear faster by 15%
    assert not one_row_switched([[4, 10.0, 3.0]])  # never probed: never switched


def test_probing_goes_past_a_one_row_loss(monkeypatch):
    """A one-row loss must not end the probe before the multi-row counts (the crossover rule is theirs)."""
    times = iter([10.0, 20.0, 10.0, 3.0, 10.0, 30.0])  # (F.linear, W @ x^T) at 1, 4, 16 rows
    monkeypatch.setattr("real.cpu_linear._best_ms", lambda fn, repeats=3: next(times))
    probes = probe_shape(torch.zeros(8, 4), rows_list=(1, 4, 16, 64))
    assert [p[0] for p in probes] == [1, 4, 16]  # stopped at 16's loss, not at one row's
    assert row_limit(probes) == 4 and not one_row_switched(probes)


def test_modes_switch_and_restore_the_layers():
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    x = torch.randn(5, 8)
    before = model(x)
    record = use_fast_few_row_linears(model, "on", "cpu")
    assert record["applied"] and record["switched_shapes"] == ["16x8", "4x16"]
    assert all(m._lab_row_limit == ON_ROW_LIMIT and m._lab_one_row and "forward" in m.__dict__
               for m in model if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(model(x[:1]), before[:1])  # one row through W @ x
    torch.testing.assert_close(model(x), before)
    record = use_fast_few_row_linears(model, "off", "cpu")
    assert not record["applied"]
    assert all("forward" not in m.__dict__ for m in model if isinstance(m, torch.nn.Linear))
    assert use_fast_few_row_linears(model, "on", "cuda")["applied"] is False  # never on a GPU
    with pytest.raises(ValueError, match="cpu_linear mode"):
        use_fast_few_row_linears(model, "fast", "cpu")


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                               torch.nn.ReLU(), torch.nn.Linear(64, 128))


def probed_mlp(tmp_path, monkeypatch, busy=False):
    """A small model, its linear layers, auto's cache on a scratch file and the machine's load as given."""
    monkeypatch.setenv("DSPARK_LAB_CPU_LINEAR_CACHE", str(tmp_path / "cpu_linear.json"))
    monkeypatch.setattr("real.cpu_linear.machine_busy", lambda: (busy, 6.0 if busy else 0.5))
    model = mlp()
    return model, [m for m in model if isinstance(m, torch.nn.Linear)]


def mlp_forward(model):
    """How auto runs a model that is not a transformers one: the ids only give the row count."""
    return lambda ids: model(torch.full((ids.shape[1], 64), 0.01))


def scripted_clock(monkeypatch, step_ms: dict):
    """time.perf_counter as seen by cpu_linear: each timed forward pass takes step_ms[(rows, switched)] ms."""
    state = {"now": 0.0}

    def forward_for(model, linears):
        def forward(ids):
            switched = "forward" in linears[0].__dict__
            state["now"] += step_ms[(ids.shape[1], switched)] / 1e3
        return forward

    monkeypatch.setattr("real.cpu_linear.time.perf_counter", lambda: state["now"])
    return forward_for


def test_auto_decides_from_whole_forward_passes(tmp_path, monkeypatch):
    """One decision for every layer, from whole passes: switched wins at 1 and 4 rows, ties at 16, loses at 64 ->
    every layer switched up to 16 rows and one row too; the probe stops where F.linear first wins."""
    model, linears = probed_mlp(tmp_path, monkeypatch)
    steps = {(1, False): 10.0, (1, True): 6.0, (4, False): 30.0, (4, True): 10.0, (16, False): 40.0,
             (16, True): 42.0, (64, False): 50.0, (64, True): 60.0}  # 16 rows a tie, 64 F.linear's by 20%
    forward_for = scripted_clock(monkeypatch, steps)
    record = use_fast_few_row_linears(model, "auto", "cpu", forward=forward_for(model, linears))
    assert [p[0] for p in record["probes"]] == [1, 4, 16, 64]
    assert record["row_limit"] == 16 and record["one_row"] and record["applied"] and not record["cached"]
    assert all(m._lab_row_limit == 16 and m._lab_one_row and "forward" in m.__dict__ for m in linears)
    assert record["switched_shapes"] == ["128x64", "64x128"]
    steps[(1, True)] = 11.5  # F.linear faster by 15% at one row: not switched there
    steps[(4, True)] = 40.0  # a loss at 4 rows ends the probe
    (tmp_path / "cpu_linear.json").unlink()
    record = use_fast_few_row_linears(model, "auto", "cpu", forward=forward_for(model, linears))
    assert [p[0] for p in record["probes"]] == [1, 4] and not record["applied"]
    assert all("forward" not in m.__dict__ for m in linears)


def test_auto_measures_once_and_keeps_the_answer(tmp_path, monkeypatch):
    model, linears = probed_mlp(tmp_path, monkeypatch)
    first = measured_model_limits(model, linears, forward=mlp_forward(model))
    assert not first["cached"] and first["kept"] and [p[0] for p in first["probes"]][:2] == [1, 4]
    assert first["one_row"] == one_row_switched(first["probes"]) and first["row_limit"] == row_limit(first["probes"])
    cache_file = tmp_path / "cpu_linear.json"
    (key,) = json.loads(cache_file.read_text())
    assert "Sequential" in key and "128x64*2" in key and "64x128*1" in key and "float32" in key and "threads" in key
    second = measured_model_limits(model, linears, forward=mlp_forward(model))
    assert second["cached"] and second["probes"] == first["probes"]
    cache_file.write_text("{not json")  # a damaged cache is measured again, not trusted
    assert measured_model_limits(model, linears, forward=mlp_forward(model))["cached"] is False
    assert json.loads(cache_file.read_text())  # and rewritten whole
    old = {"cpu | torch | float32 | 2 threads | 128x64": [[1, 1.0, 2.0], [4, 3.0, 1.0]]}  # a per-shape entry of before
    cache_file.write_text(json.dumps(old))
    again = measured_model_limits(model, linears, forward=mlp_forward(model))
    assert not again["cached"] and list(json.loads(cache_file.read_text())) == [key]  # measured; the old one dropped


def test_a_probe_taken_on_a_busy_machine_is_not_kept(tmp_path, monkeypatch):
    """Session 35: a probe taken under load recorded the switch as slower and kept the slow path for good."""
    model, linears = probed_mlp(tmp_path, monkeypatch, busy=True)
    busy = measured_model_limits(model, linears, forward=mlp_forward(model))
    assert not busy["cached"] and not busy["kept"] and busy["load_average"] == 6.0
    assert not (tmp_path / "cpu_linear.json").exists()  # used for this run only
    monkeypatch.setattr("real.cpu_linear.machine_busy", lambda: (False, 0.3))
    quiet = measured_model_limits(model, linears, forward=mlp_forward(model))
    assert not quiet["cached"] and quiet["kept"] and (tmp_path / "cpu_linear.json").exists()


def test_auto_probes_a_transformers_target_as_it_runs(tmp_path, monkeypatch, tiny_qwen3):
    """The default forward: model(input_ids=..., use_cache=False) over one sequence; the model's logits after the
    decision are the unswitched model's (the probe leaves nothing behind but the decision)."""
    monkeypatch.setenv("DSPARK_LAB_CPU_LINEAR_CACHE", str(tmp_path / "cpu_linear.json"))
    ids = torch.tensor([[5, 17, 3, 9]])
    with torch.inference_mode():
        before = tiny_qwen3.model(input_ids=ids).logits
    record = use_fast_few_row_linears(tiny_qwen3.model, "auto", "cpu")
    try:
        assert [p[0] for p in record["probes"]][0] == 1 and all(p[1] > 0 and p[2] > 0 for p in record["probes"])
        with torch.inference_mode():
            torch.testing.assert_close(tiny_qwen3.model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)
    finally:
        use_fast_few_row_linears(tiny_qwen3.model, "off", "cpu")


def test_probing_draws_nothing_from_the_global_rng():
    weight = torch.nn.Linear(32, 64).weight  # built first: its init draws
    model = mlp()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    state = torch.get_rng_state()
    probe_shape(weight, rows_list=(4, 16))
    probe_model(model, linears, rows_list=(4, 16), forward=mlp_forward(model))
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("kind", ["qwen3", "gemma3"])
def test_greedy_identity_with_the_switch_on(kind):
    """fp32: spec decoding through switched layers (verify and one-row decode = W @ x^T) equals the
    unswitched target's own generate() token for token -- the switch changes no token (8 prompts here;
    the slow test_embedded_identity runs the real Gemma3-270M with it on)."""
    plain = tiny_target(kind, dtype="float32")
    switched = tiny_target(kind, dtype="float32")
    assert use_fast_few_row_linears(switched.model, "on", "cpu")["applied"]
    ngram = NgramDrafter("ngram", block_size=7, ngram_max=3, ngram_min=1)
    accepted = 0
    for i, ids in enumerate(prompts(plain.tokenizer, 8)):
        reference = hf_greedy(plain, ids, 24)
        assert speculative_decode(switched, ngram, ids, 24).tokens == reference, f"ngram, prompt {i}"
        result = speculative_decode(switched, NoisyOracleDrafter(reference, len(ids), seed=i), ids, 24)
        assert result.tokens == reference, f"noisy oracle, prompt {i}"
        accepted += sum(s.accepted for s in result.steps)
    assert accepted > 50  # multi-token verify steps ran through the switched layers


def test_bench_step_times_both_forms_side_by_side(tmp_path, monkeypatch, capsys):
    from real import bench_step

    out = tmp_path / "bench.json"
    monkeypatch.setattr("sys.argv", ["bench_step", "--target", "tiny-qwen3", "--engines", "eager",
                                     "--cpu-linear", "off,on", "--batches", "1", "--queries", "4",
                                     "--context", "16", "--repeats", "1", "--out", str(out)])
    bench_step.main()
    rows = json.loads(out.read_text())["rows"]
    assert [r["cpu_linear"] for r in rows] == ["off", "on"]
    assert rows[1]["max_abs_diff_vs_eager"] < 1e-4  # the same logits through either form
    assert "| eager | on | 1 | 4 | 16 |" in capsys.readouterr().out


def test_rows_past_one_tile_compute_whole_tiles(monkeypatch):
    assert [padded_rows(r) for r in (1, 2, 8, 9, 12, 16, 17, 60)] == [2, 2, 8, 16, 16, 16, 24, 64]
    seen = []
    real_mm = torch.mm

    def spy(a, b):
        seen.append(b.shape[1])
        return real_mm(a, b)

    monkeypatch.setattr(torch, "mm", spy)
    layer = switched_linear(limit=64, one_row=True)
    for rows in (1, 4, 8, 12, 20):
        transposed_linear(layer, torch.ones(rows, 32))
    assert seen == [2, 4, 8, 2 * ROW_TILE, 3 * ROW_TILE]  # one row as a two-row matrix product, not a vector one


def test_matrix_vector_rows_is_the_largest_count_at_the_one_row_rate(monkeypatch):
    """1-4 rows within 20% of the fastest of one and two rows (3 a little over: odd counts are slower), 5+ past
    it -> 4; the timed products are what a switched layer computes (whole tiles past 8 rows)."""
    per_rows = {1: 16.5, 2: 17.0, 3: 21.0, 4: 18.0, 5: 22.0, 6: 27.0, 7: 33.0, 8: 35.0}
    seen = []
    monkeypatch.setattr("real.cpu_linear._best_ms", lambda fn, repeats=3: (seen.append(fn()),
                                                                           per_rows.get(seen[-1].shape[0], 60.0))[1])
    rows, timed = matrix_vector_rows(torch.ones(16, 8), max_rows=10)
    assert rows == 4 and [r for r, _ in timed] == list(range(1, 11))
    assert [y.shape for y in seen] == [(r, 16) for r in range(1, 11)]
    per_rows[2] = 40.0  # nothing but one row near its own rate
    assert matrix_vector_rows(torch.ones(16, 8), max_rows=3)[0] == 1
