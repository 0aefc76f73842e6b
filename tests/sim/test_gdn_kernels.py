"""The GDN decode-kernel check (sim/gdn_kernels.py) and the linear_state_bw_efficiency it fits: the data file reads,
the fit recovers the presets' values, each point is priced from the cost model's own state bandwidth, and bad input
gets one clear error line naming the field."""
import pytest

from lab.errors import LabError
from sim.gdn_kernels import DEFAULT_FILE, fit, load_points, main, score
from sim.hardware import get_hardware


def test_points_read_with_their_moved_bytes():
    """H200 TP=2 after, batch 32: 16 heads x 128 x 128 bf16 = 512 KiB a request, read and written: 32 x 1 MiB."""
    pts = load_points(DEFAULT_FILE)
    row = pts[(pts.run == "vllm31722-h200-tp2-after") & (pts.batch == 32)].iloc[0]
    assert row.moved_bytes == 32 * 2 * 16 * 128 * 128 * 2 and row.published_us == 20.29 and row.fit
    assert set(pts.device) == {"h200", "b200"} and (~pts.fit).sum() == 20


def test_fit_recovers_the_presets():
    """The per-card lines through the fit runs give the sheets' values (h200 0.54, b200 0.44) and a floor of a few
    microseconds; the 'before' kernel (fit: false) is left out."""
    fits = fit(load_points(DEFAULT_FILE)).set_index("device")
    for device in ("h200", "b200"):
        assert fits.loc[device, "linear_state_bw_efficiency"] == pytest.approx(
            get_hardware(device).linear_state_bw_efficiency, abs=0.005)
        assert 2.0 < fits.loc[device, "floor_us"] < 10.0
    assert fits.loc["h200", "points"] == 10 and fits.loc["b200", "points"] == 7


def test_large_batches_priced_within_ten_percent():
    """Where a call moves 256 MiB of state or more the kernel's floor is small: the sheet's efficiency prices the
    merged kernel within 10%; at the KV reads' fraction (0.75) they would be 28-45% too fast."""
    scored = score(load_points(DEFAULT_FILE))
    big = scored[scored.fit & (scored.moved_bytes >= 256 * 2**20)]
    assert len(big) == 7 and big.error.abs().max() < 0.10


def test_bad_input_one_line(tmp_path):
    bad = tmp_path / "gdn.yaml"
    bad.write_text("runs:\n  - {id: x, url: 'https://a', device: h200, v_heads: 0, k_dim: 128, v_dim: 128, "
                   "state_dtype: bf16, fit: true, kernel_us: {32: 1.0}}\n")
    with pytest.raises(LabError, match=r"runs\[0\]\.v_heads"):
        load_points(bad)
    bad.write_text("runs:\n  - {id: x, url: 'https://a', device: h200, v_heads: 8, k_dim: 128, v_dim: 128, "
                   "state_dtype: int4, fit: true, kernel_us: {32: 1.0}}\n")
    with pytest.raises(LabError, match=r"runs\[0\]\.state_dtype"):
        load_points(bad)
    bad.write_text("runs:\n  - {id: x, url: 'https://a', device: h200, v_heads: 8, k_dim: 128, v_dim: 128, "
                   "state_dtype: [bf16], fit: true, kernel_us: {32: 1.0}}\n")
    with pytest.raises(LabError, match=r"runs\[0\]\.state_dtype"):  # a list: was 'unhashable type'
        load_points(bad)
    assert main(["--file", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]) == 2


def test_main_writes_the_fit(tmp_path):
    assert main(["--fit", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "gdn_fit.csv").is_file() and "h200" in (tmp_path / "gdn_kernels.md").read_text()
