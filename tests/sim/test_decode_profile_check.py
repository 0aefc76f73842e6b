"""sim.decode_profile_check: the loader refuses bad profiles naming the field, the category mapping adds up to the
priced step (and follows its terms), a profile's published times divide as declared, a tampered profile changes the
table, the data file loads and prices, bad input is one `error:` line, exit 2, nothing written."""
import math

import pytest
import yaml

from lab.errors import LabError
from sim import decode_profile_check as dp
from sim.cost import CostModel
from sim.hardware import get_hardware
from sim.public_check import repo_model

CONFIG = "sim/validation/configs/deepseek-r1-0528.json"


def _profile(i=0, **extra):
    p = {"id": f"p-{i}", "url": "https://example.org", "where": "a test", "engine": "sglang", "engine_version": "x",
         "device": "h200", "device_name": "8 x H200", "model": "DeepSeek-R1", "model_config": CONFIG, "tp": 8,
         "concurrency": 4, "tokens": 4, "context_tokens": 600, "unit": "us", "divide_by": 2, "divide_note": "two steps",
         "complete": True, "fit": True,
         "kernels": [{"name": "fused_moe_kernel", "category": "moe_gemm", "time": 8000.0, "count": 232},
                     {"name": "allreduce", "category": "allreduce", "time": 3000.0},
                     {"name": "mla", "category": "attention", "time": 2000.0},
                     {"name": "gate", "category": "moe_routing", "time": None}]}
    p.update(extra)
    return p


def _write(path, runs):
    path.write_text(yaml.safe_dump({"runs": runs}))
    return path


@pytest.mark.parametrize("change, field", [
    ({"kernels": [{"name": "k", "category": "gemm", "time": 1.0}]}, "kernels.0.category"),
    ({"divide_by": 0}, "divide_by"),
    ({"url": "http://example.org"}, "url"),
    ({"model_config": None}, "<profile>"),            # null config needs not_priced
    ({"fit": False}, "<profile>"),                    # fit: false needs exclude
    ({"exclude": "why"}, "<profile>"),                # fit: true takes none
    ({"device": "h300"}, "device"),
    ({"kernels": [{"name": "k", "category": "other", "time": -1.0}]}, "kernels.0.time"),
])
def test_loader_names_the_bad_field(tmp_path, change, field):
    path = _write(tmp_path / "p.yaml", [_profile(**change)])
    with pytest.raises(LabError, match=rf"p\.yaml: runs\[0\]\.{field}"):
        dp.load_profiles(path)


def test_loader_refuses_repeated_ids_and_a_missing_file(tmp_path):
    with pytest.raises(LabError, match="repeated ids"):
        dp.load_profiles(_write(tmp_path / "p.yaml", [_profile(), _profile()]))
    with pytest.raises(LabError, match="does not exist"):
        dp.load_profiles(tmp_path / "none.yaml")


def test_published_times_divide_as_declared(tmp_path):
    p = dp.load_profiles(_write(tmp_path / "p.yaml", [_profile()]))[0]
    assert p.published_ms() == pytest.approx({"moe_gemm": 4.0, "allreduce": 1.5, "attention": 1.0})


@pytest.mark.parametrize("device, tokens, context", [("h200", 4, 600), ("h200", 64, 4000), ("b200", 1, 100),
                                                     ("mi300x", 256, 30000)])
def test_categories_add_up_to_the_priced_step(device, tokens, context):
    cm = CostModel(hw=get_hardware(device), model=repo_model(CONFIG), tp=8)
    cats = dp.priced_categories(cm, tokens, context)
    total = cats.pop("total")
    assert set(cats) == set(dp.PRICED)
    assert sum(cats.values()) == pytest.approx(total, rel=1e-12)
    assert total == pytest.approx(cm.step_time(tokens, tokens * context, tokens, False), rel=1e-12)
    assert all(v >= 0 for v in cats.values())


def test_categories_follow_the_terms():
    """act_quant is the quantized linears' term, allreduce the collectives', the MoE layer's floor sits in moe_gemm,
    and raising the layer overhead moves norm_elementwise alone."""
    hw = get_hardware("h200")
    m = repo_model(CONFIG)
    cm = CostModel(hw=hw, model=m, tp=8)
    cats = dp.priced_categories(cm, 4, 600)
    assert cats["act_quant"] == pytest.approx(m.quant_linears * hw.act_quant_us * 1e-6)
    # a 4-request decode step's all-reduces are small: vLLM's custom kernel (below its 8 MiB), at that pair's latency
    assert cats["allreduce"] >= 2 * m.n_layers * hw.interconnect.custom_allreduce.latency_us * 1e-6
    assert cats["moe_gemm"] > m.n_moe_layers * hw.moe_layer_us * 1e-6
    assert cats["moe_routing"] == 0.0
    slower = dp.priced_categories(CostModel(hw=hw, model=m, tp=8, layer_overhead_s=cm.layer_overhead_s + 1e-5), 4, 600)
    moved = {k for k in cats if not math.isclose(cats[k], slower[k], rel_tol=1e-12)}
    assert moved == {"norm_elementwise", "total"}
    assert slower["norm_elementwise"] - cats["norm_elementwise"] == pytest.approx(m.n_layers * 1e-5)


def test_a_tampered_profile_changes_the_table(tmp_path):
    base = dp.profile_table(dp.load_profiles(_write(tmp_path / "a.yaml", [_profile()])))
    tampered = _profile()
    tampered["kernels"][0]["time"] = 16000.0
    after = dp.profile_table(dp.load_profiles(_write(tmp_path / "b.yaml", [tampered])))
    row = lambda t, c: t[t.category == c].iloc[0]  # noqa: E731
    assert row(after, "moe_gemm").published_ms == pytest.approx(2 * row(base, "moe_gemm").published_ms)
    assert row(after, "moe_gemm").priced_ms == row(base, "moe_gemm").priced_ms   # the price does not read the data
    assert row(after, "total").published_ms == pytest.approx(row(base, "total").published_ms + 4.0)
    assert row(after, "moe").published_ms == pytest.approx(8.0)   # moe = gemm + routing (the dash row adds 0)
    assert row(after, "moe_gemm").priced_over_published < row(base, "moe_gemm").priced_over_published


def test_a_profile_publishing_moe_whole_is_compared_whole(tmp_path):
    prof = _profile(kernels=[{"name": "MoE (Experts + Routing)", "category": "moe", "time": 5.0}], unit="ms",
                    divide_by=1)
    t = dp.profile_table(dp.load_profiles(_write(tmp_path / "p.yaml", [prof])))
    assert "moe_gemm" not in set(t.category) and "moe_routing" not in set(t.category)
    cm = dp.cost_model(dp.load_profiles(tmp_path / "p.yaml")[0])
    priced = dp.priced_categories(cm, 4, 600)
    assert t[t.category == "moe"].iloc[0].priced_ms == pytest.approx(1e3 * (priced["moe_gemm"] + priced["moe_routing"]))


def test_the_data_file_loads_and_prices():
    profiles = dp.load_profiles(dp.DEFAULT_FILE)
    assert any(p.fit and p.device == "h200" for p in profiles)
    assert all(p.device == "h200" for p in profiles if p.fit)   # other cards never fit an H200 term
    t = dp.profile_table(profiles)
    for p in profiles:
        total = t[(t.profile == p.id) & (t.category == "total")].iloc[0]
        assert total.published_ms > 0
        assert math.isnan(total.priced_ms) != p.priced


def test_cli_writes_the_report(tmp_path):
    path = _write(tmp_path / "p.yaml", [_profile(), _profile(1, model_config=None, not_priced="no config")])
    out = tmp_path / "out"
    assert dp.main(["--file", str(path), "--out", str(out)]) == 0
    assert {f.name for f in out.iterdir()} == {"decode_profiles.csv", "decode_profiles.md", "decode_profiles.png"}
    assert "Not priced: no config" in (out / "decode_profiles.md").read_text()


def test_bad_input_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "out"
    path = _write(tmp_path / "p.yaml", [_profile(tokens=0)])
    assert dp.main(["--file", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "tokens" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("extra, line", [
    # ep 7 over tp 8 passes the loader (ep is a number in range) and the cost model refuses it: the line said only
    # 'sim: ep 7 over tp 8', naming neither the data file nor the profile
    ({"ep": 7}, "sim: ep 7 over tp 8"),
    # DeepSeek-R1's 128 attention heads over tp 3: vLLM refuses to start it; the check priced it (a fractional head
    # count per GPU) and printed a table
    ({"tp": 3}, "tp 3: the model's 128 attention"),
])
def test_a_pricing_refusal_names_the_file_and_the_profile(tmp_path, capsys, extra, line):
    out = tmp_path / "out"
    path = _write(tmp_path / "p.yaml", [_profile(), _profile(1, **extra)])
    assert dp.main(["--file", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}: profile 'p-1': {line}"), err
    assert not out.exists()


def test_a_directory_given_as_the_file_says_so(tmp_path):
    """--file DIR read '--file: DIR does not exist' (sim.decode_profile_check, sim.step_breakdown, sim.public_check)."""
    from sim.public_check import load_rows

    for load in (dp.load_profiles, load_rows):
        with pytest.raises(LabError, match=r"--file: .* is a directory, a file is needed here"):
            load(tmp_path)
