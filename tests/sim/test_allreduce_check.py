"""sim.allreduce_check: a point priced by hand, the fit recovers the link a synthetic table was made with (and no tp
term it was made without), the data file loads, bad input is one `error:` line, exit 2, nothing written."""
import pytest
import yaml

from lab.config_sim import InterconnectSheet
from sim import allreduce_check as ac


def _run(i, gpus, times, host="h", **extra):
    return {"id": f"synthetic-{i}", "url": "https://example.org", "host": host, "device": "rtx-4090", "gpus": gpus,
            "p2p": "disabled", "harness": "nccl-tests", "time_us": times, **extra}


def _write(path, runs):
    path.write_text(yaml.safe_dump({"runs": runs}))
    return path


def test_a_point_is_priced_by_the_cost_models_formula(tmp_path):
    runs = ac.load_runs(_write(tmp_path / "a.yaml", [_run(0, 4, {1048576: 250.0, 8192: 40.0})]))
    link = InterconnectSheet(kind="pcie", bandwidth_gbs=10, latency_us=20)
    table = ac.score(runs, {"rtx-4090": link})
    # 20 us + 2 (4-1)/4 x 1 MiB / 10 GB/s = 20 + 157.2864; 20 + 1.5 x 8192 / 1e4 = 21.2288
    assert table.bytes.tolist() == [8192, 1048576]
    assert table.sim_us.tolist() == pytest.approx([21.2288, 177.2864], abs=1e-3)
    assert table.rel_err.tolist() == pytest.approx([21.2288 / 40 - 1, 177.2864 / 250 - 1], abs=1e-5)


def test_fit_recovers_latency_and_bandwidth_and_wants_no_tp_term(tmp_path):
    link = InterconnectSheet(kind="pcie", bandwidth_gbs=4.0, latency_us=30.0)
    sizes = [2 ** k for k in range(13, 27, 2)]
    runs = []
    for i, (gpus, host) in enumerate([(2, "a"), (4, "a"), (8, "b"), (4, "b")]):
        shell = ac.AllReduceRun.model_validate(_run(i, gpus, {b: 1.0 for b in sizes}, host=host))
        runs.append(_run(i, gpus, dict(zip(sizes, ac.priced_us(shell, link).tolist())), host=host))
    loaded = ac.load_runs(_write(tmp_path / "a.yaml", runs))
    fitted = ac.fit_link(loaded, link.model_copy(update={"latency_us": 1.0, "bandwidth_gbs": 50.0}))
    assert fitted["latency_us"] == pytest.approx(30.0, rel=1e-3)
    assert fitted["bandwidth_gbs"] == pytest.approx(4.0, rel=1e-3)
    table = ac.fit_all(loaded).set_index(["fit", "tp_term"])
    assert table.loc[("pooled", "none"), "median_abs_err_pct"] == pytest.approx(0, abs=0.05)
    assert table.loc[("pooled", "ring-steps"), "tp_term_us"] == pytest.approx(0, abs=0.05)
    assert table.loc[("pooled", "none"), "host_out_median_abs_err_pct"] == pytest.approx(0, abs=0.1)


def test_the_data_file_loads_with_stock_4090_tables_at_2_4_and_8_gpus():
    runs = ac.load_runs(ac.DEFAULT_FILE)
    stock = [r for r in runs if r.device == "rtx-4090" and r.fittable]
    assert {r.gpus for r in stock} == {2, 4, 8} and all(r.p2p == "disabled" for r in stock)
    assert len({r.host for r in stock}) >= 2
    for r in runs:
        assert r.url or (r.find_string and r.where), r.id


def test_the_a100_links_are_the_pooled_fit_of_the_nvlink_8_gpu_tables():
    """a100-80g's link is sim.allreduce_check --fit's pooled fit of the A100 SXM nccl-tests tables (8 KiB..64 MiB),
    the 40GB boxes' among them (fit_with: same NVLink 3 / NVSwitch); a100-40g takes it. The line-rate sheet it
    replaced priced the same points at under half their time."""
    from sim.hardware import get_hardware

    runs = ac.load_runs(ac.DEFAULT_FILE)
    lo, hi = ac.FIT_BYTES
    fitted = [ac._in_range(r, lo, hi) for r in runs if r.fit_card == "a100-80g" and r.fittable and r.kernel == "nccl"]
    fitted = [r for r in fitted if r.time_us]  # as fit_all: a run with no size in range is listed, not fitted
    assert {r.device for r in fitted} == {"a100-80g", "a100-40g"} and len({r.host for r in fitted}) >= 2
    assert all(r.p2p == "nvlink" and r.gpus == 8 for r in fitted)
    link = get_hardware("a100-80g").interconnect
    table = ac.fit_all(runs).set_index(["device", "fit", "tp_term"])
    pooled = table.loc[("a100-80g", "pooled", "none")]
    assert pooled.latency_us == pytest.approx(link.latency_us, rel=0.01)
    assert pooled.bandwidth_gbs == pytest.approx(link.bandwidth_gbs, rel=0.01)
    assert pooled.runs == len(fitted) and pooled.host_out_median_abs_err_pct < 25
    assert ("a100-40g", "pooled", "none") not in table.index  # its runs sit in the 80GB block
    assert get_hardware("a100-40g").interconnect == link
    before = link.model_copy(update={"latency_us": 8.0, "bandwidth_gbs": 300.0})
    points = ac.score(fitted, {"a100-80g": before, "a100-40g": before})
    assert points.rel_err.median() < -0.5


def test_the_a100_custom_allreduce_pair_is_the_fit_of_vllms_kernel_tables():
    """a100-80g / a100-40g's custom_allreduce pair is --fit's `custom: pooled` over SGLang PR 2688's tables of vLLM's
    custom kernel (tp 2 / 4 / 8), within 8 MiB (CustomAllreduce's max_size on compute capability 8.0); the NCCL pair
    alone priced those tables at over twice their time, the custom pair within 20% at every point (median 7%)."""
    from sim.hardware import get_hardware

    runs = ac.load_runs(ac.DEFAULT_FILE)
    custom = [r for r in runs if r.kernel == "custom" and r.device == "a100-80g"]
    assert {r.gpus for r in custom} == {2, 4, 8} and all(r.fittable and r.harness == "other" for r in custom)
    link = get_hardware("a100-80g").interconnect
    pair = link.custom_allreduce
    table = ac.fit_all(runs).set_index(["device", "fit", "tp_term"])
    pooled = table.loc[("a100-80g", "custom: pooled", "none")]
    assert pooled.kernel == "custom" and pooled.runs == 3
    assert pooled.latency_us == pytest.approx(pair.latency_us, rel=0.01)
    assert pooled.bandwidth_gbs == pytest.approx(pair.bandwidth_gbs, rel=0.01)
    assert pair.max_bytes == 8 * 1024 * 1024 and get_hardware("a100-40g").interconnect == link
    lo, hi = ac.FIT_BYTES
    in_range = [ac._in_range(r, lo, hi) for r in custom]
    now = ac.score(in_range, {"a100-80g": link})
    before = ac.score(in_range, {"a100-80g": link.model_copy(update={"custom_allreduce": None})})
    assert now.rel_err.abs().max() < 0.2 and now.rel_err.abs().median() < 0.08 and before.rel_err.min() > 0.7


def test_the_h100_pairs_are_the_fits_and_price_the_other_hosts_nccl_tables():
    """h100 / h200 (NVLink 4): the NCCL pair is --fit's pooled fit of the one stock H100 nccl-tests table in range
    (Azure ND H100 v5, 8 GPUs); out of sample it prices the three other hosts' NCCL tables (vLLM's pynccl at tp 4 /
    6, torch's at tp 8) within 20% (median of each), where the line-rate sheet it replaced was 40-60% fast. The
    custom pair is `custom: pooled`, the symmetric-memory pair `symm_mem: pooled` (its multimem tables, tp 4 / 6);
    the H200 shares all three (an 8 x H200 nccl-tests point is fitted in the H100 block: fit_with)."""
    from sim.hardware import get_hardware

    runs = ac.load_runs(ac.DEFAULT_FILE)
    link = get_hardware("h100").interconnect
    assert get_hardware("h200").interconnect == link
    table = ac.fit_all(runs).set_index(["device", "fit", "tp_term"])
    for fit, pair in (("pooled", link), ("custom: pooled", link.custom_allreduce),
                      ("symm_mem: pooled", link.symm_mem_allreduce)):
        row = table.loc[("h100", fit, "none")]
        assert row.latency_us == pytest.approx(pair.latency_us, rel=0.01), fit
        assert row.bandwidth_gbs == pytest.approx(pair.bandwidth_gbs, rel=0.01), fit
    assert table.loc[("h100", "pooled", "none")].runs == 1
    assert [r.fit_card for r in runs if r.device == "h200"] == ["h100"]
    lo, hi = ac.FIT_BYTES
    others = [ac._in_range(r, lo, hi) for r in runs if r.device == "h100" and r.kernel == "nccl" and not r.fittable]
    assert sorted(r.gpus for r in others) == [4, 6, 8]
    line_rate = link.model_copy(update={"latency_us": 8.0, "bandwidth_gbs": 450.0, "custom_allreduce": None})
    for run in others:
        now = ac.score([run], {"h100": link}).rel_err
        before = ac.score([run], {"h100": line_rate}).rel_err
        assert now.abs().median() < 0.2 and before.median() < -0.4, run.id


def test_custom_kernel_tables_are_priced_at_the_custom_pair_and_nccl_ones_at_the_links(tmp_path):
    link = InterconnectSheet(kind="nvlink", bandwidth_gbs=100, latency_us=30,
                             custom_allreduce={"latency_us": 10, "bandwidth_gbs": 200, "max_bytes": 1024})
    runs = ac.load_runs(_write(tmp_path / "a.yaml", [
        _run(0, 2, {1048576: 30.0}, p2p="nvlink"), _run(1, 2, {1048576: 10.0}, p2p="nvlink", harness="other",
                                                          kernel="custom")]))
    table = ac.score(runs, {"rtx-4090": link}).set_index("run")
    # 1 MiB at tp 2: 1 x 1048576 B / 100 GB/s = 10.486 us + 30; at the custom pair 5.243 + 10 (max_bytes not asked)
    assert table.loc["synthetic-0", "sim_us"] == pytest.approx(40.486, abs=1e-3)
    assert table.loc["synthetic-1", "sim_us"] == pytest.approx(15.243, abs=1e-3)
    assert [r.fittable for r in runs] == [True, True]  # a custom-kernel table of another harness is fitted
    fits = ac.fit_all(runs)
    assert set(fits.fit) >= {"preset", "pooled", "custom: preset", "custom: pooled"}


def test_fit_with_pools_a_run_into_another_cards_block_priced_on_its_own(tmp_path):
    link = InterconnectSheet(kind="pcie", bandwidth_gbs=4.0, latency_us=30.0)
    sizes = [2 ** k for k in range(13, 27, 2)]
    shell = ac.AllReduceRun.model_validate(_run(0, 8, {b: 1.0 for b in sizes}))
    times = dict(zip(sizes, ac.priced_us(shell, link).tolist()))
    runs = ac.load_runs(_write(tmp_path / "a.yaml", [
        _run(0, 8, times, host="a"), _run(1, 8, times, host="b", device="rtx-3090", fit_with="rtx-4090")]))
    table = ac.fit_all(runs).set_index(["device", "fit"])
    assert table.loc[("rtx-4090", "pooled"), "runs"].max() == 2 and "rtx-3090" not in table.index.get_level_values(0)
    assert ac.score(runs, ac.preset_links(runs)).device.tolist().count("rtx-3090") == len(sizes)
    with pytest.raises(Exception, match="fit_with"):
        ac.load_runs(_write(tmp_path / "b.yaml", [_run(0, 8, times, fit_with="rtx-9090")]))


@pytest.mark.parametrize("bad, field", [
    ({"gpus": 1}, "runs[0].gpus"),
    ({"device": "rtx-9090"}, "runs[0].device"),
    ({"time_us": {8192: -1.0}}, "runs[0].time_us"),
    ({"url": None}, "runs[0]"),
    ({"kernel": "quick_reduce"}, "runs[0].kernel"),
])
def test_a_bad_file_is_one_error_line_exit_2_and_nothing_written(tmp_path, capsys, bad, field):
    path = _write(tmp_path / "bad.yaml", [{**_run(0, 2, {8192: 20.0}), **bad}])
    out = tmp_path / "out"
    assert ac.main(["--file", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(path) in err[0] and field in err[0]
    assert not out.exists()


def test_missing_file_and_an_inverted_size_range_exit_2(tmp_path, capsys):
    assert ac.main(["--file", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit) as stop:
        ac.main(["--min-bytes", "100", "--max-bytes", "10", "--out", str(tmp_path / "o")])
    assert stop.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2 and not (tmp_path / "o").exists()


def test_an_out_path_that_is_a_file_is_one_line_and_left_alone(tmp_path, capsys):
    blocker = tmp_path / "o"
    blocker.write_text("keep")
    assert ac.main(["--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and str(blocker) in err[0]
    assert blocker.read_text() == "keep"


def test_main_writes_the_tables_the_figure_and_the_fit(tmp_path):
    assert ac.main(["--fit", "--out", str(tmp_path / "o")]) == 0
    for name in ("allreduce.csv", "allreduce_fit.csv", "allreduce.md", "allreduce.png"):
        assert (tmp_path / "o" / name).is_file(), name
    text = (tmp_path / "o" / "allreduce.md").read_text()
    assert "kalavai-docker-2x4090" in text and "| rtx-4090 | nccl | pooled | none |" in text
    assert "| a100-80g | custom | custom: pooled | none |" in text


def test_a_run_with_no_size_in_range_and_no_fitted_run_say_so(tmp_path):
    """A run whose sizes all lie outside --min-bytes..--max-bytes was shown under the "in range" column (and as
    fitted); with no fitted run, the summary line ended in nothing."""
    path = _write(tmp_path / "a.yaml", [_run(0, 2, {8192: 40.0, 65536: 60.0}),
                                        _run(1, 4, {8: 20.0, 16: 21.0}),
                                        _run(2, 8, {8192: 40.0}, exclude="kept out")])
    assert ac.main(["--file", str(path), "--out", str(tmp_path / "o")]) == 0
    rows = {line.split(" | ")[0]: line for line in (tmp_path / "o" / "allreduce.md").read_text().splitlines()}
    assert rows["| synthetic-1"].endswith("| no | none in range (its sizes: 8..16 bytes) | - | - | - |")
    assert "| yes | 40 .. 60 |" in rows["| synthetic-0"]
    path = _write(tmp_path / "b.yaml", [_run(2, 8, {8192: 40.0}, exclude="kept out")])
    assert ac.main(["--file", str(path), "--out", str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "allreduce.md").read_text().splitlines()[-1].endswith(
        "by card and GPU count: none fitted (no fittable run has a size in range)")
