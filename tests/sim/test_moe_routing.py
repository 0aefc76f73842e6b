"""sim.routing and sim.moe_routing_check: skewed routing touches fewer distinct experts than uniform at small batch
and (nearly) all of them at large batch, cv 0 is the uniform closed form exactly, a step of one token touches k;
ModelShape.touched_experts keeps its signature (numpy arrays, ep / dp) and a `sim.model` section carries the
grounded default to MoE models only, while a bare ModelShape (what the kernel benchmarks build) routes uniformly;
the published data load, the default is the default run's fit, the fitted shape reproduces the statistics it was not
fitted on, bad input is one `error:` line, exit 2, nothing written."""
import numpy as np
import pytest
import yaml

from lab.config_sim import ROUTING_SKEW, ModelSpec
from sim import moe_kernels, routing
from sim import moe_routing_check as mrc
from sim.models import from_hf_config, model_from_config

CONFIG = "sim/validation/configs/qwen3-30b-a3b.json"


def test_uniform_is_the_closed_form_and_one_token_touches_k():
    b = np.array([1.0, 10.0, 64.0])
    assert routing.distinct_experts(b, 128, 8, 0.0) == pytest.approx(128 * (1 - (1 - 8 / 128) ** b))
    assert routing.distinct_experts(1, 128, 8, 1.16) == pytest.approx(8.0)
    assert routing.inclusion(128, 8, 1.16).sum() == pytest.approx(8.0)
    capped = routing.inclusion(8, 2, 3.0)
    assert capped.max() <= 1.0 and capped.sum() == pytest.approx(2.0)


def test_skewed_routing_touches_fewer_experts_at_small_batch_and_all_at_large():
    for b in (4, 10, 16, 32):
        assert routing.distinct_experts(b, 128, 8, ROUTING_SKEW) < 0.9 * routing.distinct_experts(b, 128, 8, 0.0)
    assert routing.distinct_experts(10, 128, 8, ROUTING_SKEW) == pytest.approx(48.0, abs=0.5)  # vs 60.9 uniform
    assert routing.distinct_experts(65536, 128, 8, ROUTING_SKEW) == pytest.approx(128, rel=0.002)
    more = [routing.distinct_experts(10, 128, 8, cv) for cv in (0.0, 0.5, 1.0, 1.5)]
    assert more == sorted(more, reverse=True)  # more skew, fewer experts


def test_concentration_inverts():
    cv = routing.cv_for_concentration(0.111, 128)
    assert routing.concentration(routing.popularity(128, cv)) == pytest.approx(0.111, abs=1e-5)
    assert routing.cv_for_concentration(0.111, 128, 8000) < cv  # a finite trace reads more concentrated than it is
    assert routing.cv_for_concentration(0.0, 128) == 0.0
    assert routing.coverage_experts(routing.popularity(128, 0.0), 0.9) == 116  # uniform: ceil(0.9 x 128)


def test_touched_experts_keeps_its_signature_and_layout():
    uniform = from_hf_config(CONFIG)
    assert uniform.routing_skew == 0.0  # a bare shape (sim.moe_kernels' layer models) routes uniformly
    skewed = model_from_config(ModelSpec(config=CONFIG))
    assert skewed.routing_skew == ROUTING_SKEW
    tokens = np.array([1.0, 10.0, 256.0])
    got = skewed.touched_experts(tokens, 4, 2)
    assert got.shape == (3,)
    assert got == pytest.approx(routing.distinct_experts(2 * tokens, 128, 8, ROUTING_SKEW) / 4)
    assert skewed.touched_experts(10.0) < uniform.touched_experts(10.0)
    assert skewed.routed_bytes_read(10.0) < uniform.routed_bytes_read(10.0)
    assert uniform.touched_experts(10.0, 4) == pytest.approx(32 * (1 - (1 - 1 / 16) ** 40))  # dp None: ep
    assert model_from_config(ModelSpec(config=CONFIG, routing_skew=0)).touched_experts(10.0) == \
        pytest.approx(uniform.touched_experts(10.0))
    assert model_from_config(ModelSpec(name="qwen3-8b")).routing_skew == 0.0  # dense: nothing to skew
    kernel_runs = moe_kernels.load_runs(moe_kernels.DEFAULT_FILE)  # benchmark_moe routes uniformly: so do they
    assert {r.layer_model().routing_skew for r in kernel_runs} == {0.0}


def test_the_published_data_load_and_ground_the_default(tmp_path):
    runs = mrc.load_runs(mrc.DEFAULT_FILE)
    defaults = [r for r in runs if r.default]
    assert len(defaults) == 1
    assert ROUTING_SKEW == round(mrc.fitted_cv(defaults[0]), 2)
    fits, curve = mrc.score(runs)
    for _, row in fits.iterrows():  # the shape's cross-checks: statistics the fit did not use
        assert abs(row.gamma_coverage_experts - row.published_coverage_experts) <= 5
        assert abs(row.gamma_top1_pct - row.published_top1_pct) <= 1.0
        assert abs(row.gamma_coverage_experts - row.published_coverage_experts) < \
            abs(row.lognormal_coverage_experts - row.published_coverage_experts)  # why log-normal was dropped
    assert (curve.skewed <= curve.uniform + 1e-9).all()
    assert mrc.main(["--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "moe_routing.md").read_text().count("gpu-container") >= 2


def test_bad_input_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"runs": [{"id": "x", "url": "https://example.org", "where": "w", "model": "m",
                                             "experts": 8, "top_k": 9, "engine": "e", "workload": "w",
                                             "tokens": 10, "concentration": 0.1}]}))
    out = tmp_path / "out"
    assert mrc.main(["--file", str(bad), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("error:") and not out.exists()


def test_distinct_experts_of_whole_token_counts_come_from_the_table_exactly():
    """The array path looks whole token counts up in a table grown on demand: the same values as the formula, for
    counts past the first table and mixed with a fractional count (which takes the formula)."""
    from sim.routing import distinct_experts, inclusion
    untouched = 1.0 - inclusion(128, 8, 1.16)
    counts = np.array([[0.0, 1.0, 7.0], [2047.0, 5000.0, 3.0]])  # (2, 3)
    direct = (1.0 - untouched ** counts[..., None]).sum(axis=-1)
    assert distinct_experts(counts, 128, 8, 1.16).shape == (2, 3)
    np.testing.assert_allclose(distinct_experts(counts, 128, 8, 1.16), direct, rtol=0, atol=1e-12)
    mixed = np.array([2.5, 4.0])
    np.testing.assert_allclose(distinct_experts(mixed, 128, 8, 1.16),
                               (1.0 - untouched ** mixed[:, None]).sum(axis=-1), rtol=0, atol=1e-12)
    assert distinct_experts(np.array([6.0]), 128, 8, 1.16)[0] == distinct_experts(6, 128, 8, 1.16)


def test_distinct_experts_past_the_table_bound_are_computed_not_tabled():
    """A count past TABLE_MAX (a huge data-parallel gather) is computed from the formula, growing no table."""
    from sim.routing import TABLE_MAX, _TABLES, distinct_experts, inclusion
    _TABLES.pop((64, 4, 0.9), None)
    big = np.array([float(TABLE_MAX + 1), 3.0])
    direct = (1.0 - (1.0 - inclusion(64, 4, 0.9)) ** big[:, None]).sum(axis=-1)
    np.testing.assert_allclose(distinct_experts(big, 64, 4, 0.9), direct, rtol=0, atol=1e-12)
    assert (64, 4, 0.9) not in _TABLES
