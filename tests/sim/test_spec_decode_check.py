"""sim.spec_decode_check: a speculative step priced by hand (verify + one-layer drafter + overheads, TPOT = step /
acceptance length), the data file loads and its baselines are priced within 5%, the what-if prices K drafter passes,
bad input is one `error:` line, exit 2, nothing written; the command writes its tables."""
import pytest
import yaml

from sim import spec_decode_check as sd

CONFIG = "sim/validation/configs/llama-3.1-8b-instruct.json"


def _run(i=0, points=None, **extra):
    run = {"id": f"run-{i}", "url": "https://example.org", "where": "a table", "host": "h", "device": "h100",
           "device_name": "a card", "engine": "vllm", "model": "m", "model_config": CONFIG, "method": "eagle3",
           "drafter_layers": 1, "concurrency": 1, "context_tokens": 256, "baseline_tpot_ms": 7.0,
           "points": points or [{"num_speculative_tokens": 3, "acceptance_length": 2.5, "tpot_ms": 4.0},
                                {"num_speculative_tokens": 5, "acceptance_length": 3.0, "tpot_ms": 4.5}]}
    run.update(extra)
    return run


def _write(path, runs):
    path.write_text(yaml.safe_dump({"runs": runs}))
    return path


def test_a_speculative_step_priced_by_hand(tmp_path):
    runs = sd.load_runs(_write(tmp_path / "a.yaml", [_run()]))
    table = sd.score(runs)
    row = table.iloc[0]
    # the H100 sheet's fixed terms: 0.13 ms + 32 layers x 32 us + 1 request x 4 us; at one request the verify over
    # 1 + 3 tokens reads the same weights as the one-token step (memory-bound), so it costs the baseline step
    fixed = 0.13 + 32 * 0.032 + 0.004
    assert row.verify_ms == pytest.approx(row.sim_base_tpot_ms, rel=1e-3)
    # the drafter: one of 32 layers' share of the weight read, + one layer's overhead; spec_overhead 0.3 ms
    assert row.drafter_ms == pytest.approx((row.sim_base_tpot_ms - fixed) / 32 + 0.032, rel=0.01)
    assert row.spec_overhead_ms == pytest.approx(0.3)
    assert row.sim_step_ms == pytest.approx(row.verify_ms + row.drafter_ms + 0.3)
    assert row.sim_tpot_ms == pytest.approx(row.sim_step_ms / 2.5)
    assert row.sim_speedup == pytest.approx(row.sim_base_tpot_ms / row.sim_tpot_ms)
    assert row.measured_speedup == pytest.approx(7.0 / 4.0)
    assert row.measured_step_ms == pytest.approx(4.0 * 2.5)
    assert row.implied_drafter_ms == pytest.approx(10.0 - row.verify_ms - 0.3)
    # the what-if: K = 3 passes over one token each, each with the layer's overhead
    assert row.drafter_seq_ms == pytest.approx(3 * row.drafter_ms, rel=1e-3)
    # the implied drafter's slope over K: (4.5 x 3 - 4 x 2.5) / 2, the verify flat in K at one request
    assert row.drafter_ms_per_k == pytest.approx((13.5 - 10.0) / 2, rel=1e-3)


def test_a_chain_drafter_pays_k_passes_each_reading_its_head(tmp_path):
    """drafter_passes per_token (vLLM's EAGLE proposer): K passes of one token per request, each the layer's share +
    drafter_head_vocab x hidden bf16 weights at the sheet's bandwidth + the layer's overhead; one: a single pass."""
    from sim.hardware import achievable_bandwidth, get_hardware

    one, chain = sd.score(sd.load_runs(_write(tmp_path / "b.yaml", [
        _run(0), _run(1, drafter_passes="per_token", drafter_head_vocab=128256)]))).groupby("run", sort=False)
    head_ms = 128256 * 4096 * 2 / achievable_bandwidth(get_hardware("h100")) * 1e3
    for (_, a), (_, b) in zip(one[1].iterrows(), chain[1].iterrows(), strict=True):
        assert b.drafter_ms == pytest.approx(b.k * (a.drafter_ms + head_ms), rel=1e-3)
        assert b.verify_ms == pytest.approx(a.verify_ms)


def test_a_verify_step_on_an_fa2_card_pays_its_tiles(tmp_path):
    """On the A100 (FA2, mixed_decode_tile_rows 64) the check prices a verify step as CostModel.from_config does for
    a V1 engine: FA2's unpacked kernel, dearer than the same step priced without the tiles; the H100 (FA3) is not."""
    from sim.cost import CostModel
    from sim.hardware import get_hardware
    from sim.public_check import repo_model

    run = sd.load_runs(_write(tmp_path / "c.yaml", [_run(0, device="a100-80g", concurrency=64,
                                                         context_tokens=2000)]))[0]
    n, kv, k = 64, 64 * 2000, 3
    bare = CostModel(hw=get_hardware("a100-80g"), model=repo_model(CONFIG), drafter_layers=1, max_draft=k)
    assert sd.priced(run, k)["verify"] > 1.5 * bare.step_time(n * (1 + k), kv, n, False, drafts=n * k) * 1e3
    assert sd.priced(run, k)["base"] == pytest.approx(bare.step_time(n, kv, n, False) * 1e3)  # no drafts: packed
    h100 = run.model_copy(update={"device": "h100"})
    bare_h100 = CostModel(hw=get_hardware("h100"), model=repo_model(CONFIG), drafter_layers=1, max_draft=k)
    assert sd.priced(h100, k)["verify"] == pytest.approx(
        bare_h100.step_time(n * (1 + k), kv, n, False, drafts=n * k) * 1e3)


def test_the_data_file_loads_and_prices_the_baselines_within_five_percent():
    runs = sd.load_runs(sd.DEFAULT_FILE)
    assert {r.method for r in runs} >= {"eagle", "eagle3"}
    table = sd.score(runs)
    assert len(table) >= 12
    base = table.sim_base_tpot_ms / table.measured_base_tpot_ms - 1
    assert (base.abs() < 0.05).all()


@pytest.mark.parametrize("edit, field", [
    (lambda r: r.update(device="no-such-card"), "device"),
    (lambda r: r.update(model_config="no/such.json"), "model_config"),
    (lambda r: r.update(points=[]), "points"),
    (lambda r: r.update(method="medusa"), "method"),
    (lambda r: r.update(method="ngram"), "drafter_layers"),
    (lambda r: r["points"][0].update(acceptance_length=4.5), "acceptance_length"),
    (lambda r: r["points"][0].update(tpot_ms=0), "tpot_ms"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, edit, field):
    run = _run()
    edit(run)
    path = _write(tmp_path / "a.yaml", [run])
    out = tmp_path / "out"
    assert sd.main(["--file", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and field in err[0], err
    assert not out.exists()


def test_the_command_writes_its_tables(tmp_path, capsys):
    path = _write(tmp_path / "a.yaml", [_run(0), _run(1, method="ngram", drafter_layers=0)])
    assert sd.main(["--file", str(path), "--out", str(tmp_path / "o"), "--fit"]) == 0
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"spec_decode.csv", "spec_decode.md"}
    text = (tmp_path / "o" / "spec_decode.md").read_text()
    assert "run-0" in text and "run-1" in text and "K passes" in text
