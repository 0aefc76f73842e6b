"""sim.vllm_memory: the data file's logs read back to consistent reserves, the fit recovers the reserve model a
synthetic table was made with, bad files fail with one `error:` line, exit 2 and nothing written."""
import pytest
import yaml

from lab.errors import LabError
from sim import vllm_memory as vm
from sim.kv_cache import ACTIVATION_BYTES_PER_TOKEN_HIDDEN, GIB, NON_TORCH_BYTES


def _log(i, tokens, hidden, tp, reserve_gib, engine="V0"):
    """A log whose KV figure leaves exactly `reserve_gib` behind: total 80, util 0.9, weights 10."""
    return {"id": f"synthetic-{i}", "url": "https://example.org", "device": "h100", "total_gib": 80.0,
            "total_source": "log", "util": 0.9, "tp": tp, "tokens": tokens, "tokens_basis": "logged",
            "model": "m", "hidden": hidden, "engine": engine, "version": "0.0", "weights_gib": 10.0,
            "kv_gib": 80.0 * 0.9 - 10.0 - reserve_gib, "cuda_graphs": False,
            **({"all_reduce": "custom"} if tp > 1 else {})}


def _write(path, runs):
    path.write_text(yaml.safe_dump({"runs": runs}))
    return path


def test_the_data_file_reads_back_with_consistent_v0_parts():
    logs = vm.load_logs(vm.DEFAULT_FILE)
    assert len(logs) >= 8 and {log.engine for log in logs} == {"V0", "V1"} and any(log.tp > 1 for log in logs)
    for log in logs:
        assert 0 < log.logged_reserve_gib() < 20, log.id
        if log.kv_gib is not None and log.non_torch_gib is not None:
            # V0 prints the two parts of the same subtraction: they agree to the rounding of four printed numbers
            assert log.logged_reserve_gib() == pytest.approx(log.non_torch_gib + log.activation_gib, abs=0.03), log.id


def test_compare_prices_the_simulators_formula(tmp_path):
    table = vm.compare(vm.load_logs(_write(tmp_path / "m.yaml", [_log(0, 8192, 4096, 1, 3.0)])))
    row = table.iloc[0]
    assert row.sim_gib == pytest.approx((8192 * 4096 * ACTIVATION_BYTES_PER_TOKEN_HIDDEN + NON_TORCH_BYTES) / GIB,
                                        abs=1e-3)
    assert row.logged_gib == pytest.approx(3.0) and row.error_gib == pytest.approx(row.sim_gib - 3.0, abs=1e-3)


def test_fit_recovers_the_model_a_table_was_made_with(tmp_path):
    a, b, c = 40.0, 0.3, 1.5
    shapes = [(2048, 4096, 1), (8192, 4096, 1), (16384, 5120, 1), (4096, 8192, 2), (8192, 7168, 8),
              (32768, 896, 1), (2048, 2048, 4)]
    runs = [_log(i, t, h, tp, a * t * h / GIB + b + c * (tp > 1), engine="V1" if i % 2 else "V0")
            for i, (t, h, tp) in enumerate(shapes)]
    fitted = vm.fit(vm.compare(vm.load_logs(_write(tmp_path / "m.yaml", runs))))
    assert fitted["a_bytes_per_token_hidden"] == pytest.approx(a, abs=0.05)
    assert fitted["b_gib"] == pytest.approx(b, abs=2e-3) and fitted["c_tp_gt1_gib"] == pytest.approx(c, abs=2e-3)
    assert fitted["mae_in_sample_gib"] < 2e-3 and fitted["mae_leave_one_out_gib"] < 5e-3
    assert fitted["mae_leave_one_engine_out_gib"] < 5e-3


def test_main_writes_the_table_and_the_fit(tmp_path):
    assert vm.main(["--fit", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "vllm_memory.csv").is_file()
    text = (tmp_path / "o" / "vllm_memory.md").read_text()
    assert "scores on the logs of a known sampler" in text and "fit max / lad:" in text
    assert "logs of unknown sampler, as the fit prices them" in text


@pytest.mark.parametrize("patch, field", [
    ({"tp": 0}, "tp"),
    ({"engine": "V2"}, "engine"),
    ({"url": "http://example.org"}, "url"),
    ({"device": "no-such-card"}, "entry"),
    ({"kv_gib": None}, "entry"),
    ({"kv_gib": 1e308}, "entry"),  # more than the card: was numpy's LinAlgError in the fits
    ({"weights_gib": 1e308}, "entry"),
    ({"total_gib": 1e308, "usable_gib": None}, "entry"),
])
def test_bad_field_is_one_error_line_and_exit_2(tmp_path, capsys, patch, field):
    run = {**_log(0, 2048, 4096, 1, 1.0), **patch}
    path = _write(tmp_path / "bad.yaml", [run])
    with pytest.raises(LabError, match=rf"runs\[0\]\.{field}"):
        vm.load_logs(path)
    out = tmp_path / "o"
    assert vm.main(["--file", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and not out.exists()


def test_missing_file_and_duplicate_ids(tmp_path, capsys):
    out = tmp_path / "o"
    assert vm.main(["--file", str(tmp_path / "none.yaml"), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error: --file:") and not out.exists()
    path = _write(tmp_path / "dup.yaml", [_log(0, 2048, 4096, 1, 1.0), _log(0, 4096, 4096, 1, 1.0)])
    with pytest.raises(LabError, match="repeated ids"):
        vm.load_logs(path)


def test_lad_fit_ignores_one_outlier_that_least_squares_follows(tmp_path):
    a, b = 40.0, 0.3
    shapes = [(2048, 4096), (8192, 4096), (16384, 5120), (4096, 8192), (32768, 896), (2048, 2048), (4096, 1536)]
    runs = [_log(i, t, h, 1, a * t * h / GIB + b + (3.0 if i == 0 else 0.0)) for i, (t, h) in enumerate(shapes)]
    table = vm.compare(vm.load_logs(_write(tmp_path / "m.yaml", runs)))
    lad, lsq = vm.fit(table, "lad"), vm.fit(table, "lsq")
    assert lad["a_bytes_per_token_hidden"] == pytest.approx(a, abs=0.5) and lad["b_gib"] == pytest.approx(b, abs=0.02)
    assert abs(lsq["b_gib"] - b) > 0.2


def test_out_in_the_way_of_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "o"
    blocker.write_text("x")
    assert vm.main(["--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and blocker.read_text() == "x"
