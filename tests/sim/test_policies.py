"""Algorithm 1 (hand-computed batches, the paper's Appendix A example), the async variant, other policies."""
import numpy as np
import pytest

from lab.config_sim import PolicySpec
from sim.policies import make_policy, prefix_schedule, trim_to_budget
from sim.policies.prefix import best_count, sorted_survival
from sim.policies.prefix_async import PrefixAsyncPolicy


def table_sps(table: dict):
    return lambda b: np.array([table[int(x)] for x in np.atleast_1d(b)], dtype=float)


def test_hand_batch_greedy_stops_at_first_drop():
    conf = np.array([[0.9, 0.5], [0.8, 0.1]])
    # survivals: r0 0.9, 0.45; r1 0.8, 0.08 -> order 0.9, 0.8, 0.45, 0.08
    sps = table_sps({2: 1.0, 3: 0.9, 4: 0.8, 5: 0.6, 6: 0.55})
    # theta: 2.0 -> 2.9*0.9=2.61 -> 3.7*0.8=2.96 -> 4.15*0.6=2.49 (stop)
    assert prefix_schedule(conf, sps, budget=10).tolist() == [1, 1]
    assert prefix_schedule(conf, sps, budget=10, early_stop=False).tolist() == [1, 1]
    assert prefix_schedule(conf, sps, budget=1).tolist() == [1, 0]
    assert prefix_schedule(conf, sps, budget=0).tolist() == [0, 0]


def test_hand_batch_jagged_sps_greedy_vs_global():
    conf = np.array([[0.95, 0.95], [0.95, 0.9]])
    sps = table_sps({2: 1.0, 3: 0.6, 4: 0.58, 5: 0.56, 6: 0.55})
    # theta: 2.0, 2.95*0.6=1.77 (greedy stops here), 3.9*.58=2.262, 4.8025*.56=2.689, 5.6575*.55=3.112
    assert prefix_schedule(conf, sps, budget=10).tolist() == [0, 0]
    assert prefix_schedule(conf, sps, budget=10, early_stop=False).tolist() == [2, 2]


def test_sort_is_prefix_consistent_with_ties():
    conf = np.array([[1.0, 1.0, 0.5], [1.0, 0.2, 0.9]])
    order, values = sorted_survival(conf, 3)
    seen = {0: -1, 1: -1}
    for flat in order:
        r, j = divmod(int(flat), 3)
        assert j == seen[r] + 1  # every row's positions come in order
        seen[r] = j
    assert np.all(np.diff(values) <= 0)


def _first_token_dist(search_early_stop: bool, retrospective: bool):
    """Appendix A: vocab {A, B}, target p = (0.7, 0.3), draft q = (0.5, 0.5), SPS(1, 2, 3) = 1.0, 0.5, 0.45.

    Enumerate both drafts; the scheduler's scores are either the accept probabilities min(1, p/q) of the
    drafted tokens (retrospective: they depend on the target) or a fixed confidence 0.8 (drafter-only).
    Returns P(first emitted token = A)."""
    p, q = {"A": 0.7, "B": 0.3}, {"A": 0.5, "B": 0.5}
    acc = {x: min(1.0, p[x] / q[x]) for x in "AB"}
    resid = {x: max(0.0, p[x] - q[x]) for x in "AB"}
    z = sum(resid.values())
    sps = table_sps({1: 1.0, 2: 0.5, 3: 0.45})
    prob_a = 0.0
    for x1 in "AB":
        for x2 in "AB":
            w = q[x1] * q[x2]
            conf = np.array([[acc[x1], acc[x2]]]) if retrospective else np.array([[0.8, 0.8]])
            ell = int(prefix_schedule(conf, sps, budget=2, early_stop=search_early_stop)[0])
            if ell == 0:
                prob_a += w * p["A"]
            else:  # first token: the draft if accepted, else the residual sample
                prob_a += w * (acc[x1] * (x1 == "A") + (1 - acc[x1]) * resid["A"] / z)
    return prob_a


def test_appendix_a_example():
    # searching past the first non-improvement with outcome-revealing scores distorts the output
    assert _first_token_dist(search_early_stop=False, retrospective=True) == pytest.approx(0.85)
    # Algorithm 1's early stop keeps the target distribution
    assert _first_token_dist(search_early_stop=True, retrospective=True) == pytest.approx(0.7)
    # drafter-only confidences are lossless under either search (the async variant's case)
    assert _first_token_dist(search_early_stop=False, retrospective=False) == pytest.approx(0.7)
    assert _first_token_dist(search_early_stop=True, retrospective=False) == pytest.approx(0.7)


def test_async_budget_comes_from_two_steps_back():
    sps = lambda b: 1.0 / (1.0 + 0.02 * np.asarray(b, float))
    pol = PrefixAsyncPolicy(max_draft=4, stale_steps=2)
    high = np.full((3, 4), 0.99)
    low = np.full((3, 4), 0.05)
    k_high = best_count(sorted_survival(high, 4)[1], 3, sps, 100, early_stop=False)
    assert k_high > 0
    assert pol.choose(high, 3, 100, sps).sum() == k_high
    assert pol.choose(high, 3, 100, sps).sum() == k_high
    # confidences collapse now, but the budget still comes from two steps back ...
    got = pol.choose(low, 3, 100, sps)
    assert got.sum() == k_high
    # ... and is allocated by current survival: rows with higher current confidence get the tokens
    mixed = np.array([[0.9, 0.9, 0.9, 0.9], [0.01, 0.01, 0.01, 0.01], [0.5, 0.5, 0.5, 0.5]])
    pol.choose(low, 3, 100, sps)
    got = pol.choose(mixed, 3, 100, sps)  # budget from `low` (2 steps back): Algorithm 1 on it admits ~nothing
    assert got.sum() == best_count(sorted_survival(low, 4)[1], 3, sps, 100, early_stop=False)
    pol2 = PrefixAsyncPolicy(max_draft=4, stale_steps=0)
    got = pol2.choose(mixed, 3, 5, sps)
    assert got.tolist()[0] >= got.tolist()[2] >= got.tolist()[1] and got.sum() <= 5


def test_simple_policies():
    conf = np.array([[0.9, 0.4, 0.9], [0.6, 0.6, 0.6]])
    flat = lambda b: np.ones(np.shape(b))
    assert make_policy(PolicySpec(kind="threshold", threshold=0.5), 3).choose(conf, 2, 10, flat).tolist() == [1, 3]
    assert make_policy(PolicySpec(kind="fixed_k", k=5), 3).choose(None, 2, 10, flat).tolist() == [3, 3]
    assert make_policy(PolicySpec(kind="fixed_k", k=3), 7).choose(None, 3, 7, flat).tolist() == [3, 2, 2]
    assert make_policy(PolicySpec(kind="mtp"), 7).choose(None, 2, 10, flat).tolist() == [1, 1]
    ar = make_policy(PolicySpec(kind="ar"), 7)
    assert not ar.spec and ar.choose(None, 2, 10, flat).tolist() == [0, 0]
    assert trim_to_budget(np.array([7, 1, 7, 3]), 9).tolist() == [3, 1, 3, 2]
    assert trim_to_budget(np.array([2, 2]), 0).tolist() == [0, 0]


def test_smartspec_reacts_to_cost_and_acceptance():
    pol = make_policy(PolicySpec(kind="smartspec"), 7)
    flat = lambda b: np.ones(np.shape(b))
    steep = lambda b: 1.0 / np.asarray(b, float)
    assert pol.choose(None, 4, 100, flat).tolist() == [7] * 4
    assert pol.choose(None, 4, 100, steep).tolist() == [0] * 4
    for _ in range(50):  # observed acceptance collapses -> alpha falls -> shorter k even when verify is cheap
        pol.observe(np.full(4, 3), np.zeros(4, np.int64))
    assert pol.alpha < 0.05
    mild = lambda b: 1.0 / (1.0 + 0.05 * np.asarray(b, float))
    assert pol.choose(None, 4, 100, mild).tolist() == [0] * 4


def test_small_batch_fast_path_matches_numpy_path(monkeypatch):
    from sim.policies import prefix as P

    rng = np.random.default_rng(0)
    orig = P.SMALL
    for trial in range(400):
        n, g = int(rng.integers(1, 4)), int(rng.integers(1, 8))
        conf = rng.random((n, g))
        conf[rng.random((n, g)) < 0.1] = 1.0
        conf[rng.random((n, g)) < 0.05] = 0.0
        tab = np.r_[0, np.sort(rng.random(40))[::-1]] + rng.random(41) * 0.05 * (trial % 2)  # jagged half the time
        sps = lambda b, tab=tab: tab[np.asarray(b)]
        budget = int(rng.integers(0, 30))
        for early in (True, False):
            small = P._prefix_small(conf, sps, budget, g, early)
            monkeypatch.setattr(P, "SMALL", -1)
            big = P.prefix_schedule(conf, sps, budget, None, early)
            monkeypatch.setattr(P, "SMALL", orig)
            assert small.tolist() == big.tolist()


def _prefix_small_reference(conf, sps, budget, g, early_stop):
    """Algorithm 1's small-batch path as it was before the speed work (tuples sorted, SPS through numpy)."""
    from sim.policies.prefix import _AR

    n = conf.shape[0]
    cand = []
    for r, row in enumerate(conf.tolist()):
        a = 1.0
        for j in range(g):
            a *= row[j]
            if a <= 0:
                break
            cand.append((-a, r * g + j))
    cand.sort()
    m = min(len(cand), max(budget, 0))
    lengths = [0] * n
    if m == 0:
        return np.zeros(n, np.int64)
    s = sps(_AR[n:n + m + 1]).tolist()
    best, tau, count = n * s[0], float(n), 0
    for i in range(m):
        tau -= cand[i][0]
        th = tau * s[i + 1]
        if th > best:
            best, count = th, i + 1
        elif early_stop:
            break
    for i in range(count):
        lengths[cand[i][1] // g] += 1
    return np.array(lengths, np.int64)


class _TableSps:
    """An SPS table with RooflineSps's interface: callable on arrays, values(lo, hi) as floats."""

    def __init__(self, tab):
        self.tab = tab

    def __call__(self, b):
        return self.tab[np.asarray(b)]

    def values(self, lo, hi):
        return self.tab[lo:hi].tolist()


def test_small_batch_path_equals_the_reference_with_the_roofline_sps(monkeypatch):
    # the plain-Python SPS values, the skipped sort of one descending row and the shared one-row results
    # must choose exactly what the pre-speed-work code chose (ties, zeros, rates above 1, both stop rules)
    from sim.cost import CostModel
    from sim.policies import prefix as P
    from tests.sim.conftest import make_sim

    cm = CostModel.from_config(make_sim())
    rng = np.random.default_rng(11)
    for trial in range(600):
        n, g = int(rng.integers(1, 5)), int(rng.integers(1, 8))
        conf = rng.random((n, g))
        conf[rng.random((n, g)) < 0.15] = 1.0
        conf[rng.random((n, g)) < 0.05] = 0.0
        if trial % 5 == 0:
            conf[:] = conf[0, 0]  # equal rates: many tied survivals
        if trial % 4 == 0:
            conf[0, int(rng.integers(0, g))] = 1 + rng.random()  # a rate above 1: survivals rise, sort them
        sps = cm.sps_curve(int(rng.integers(0, 3000)) * (trial % 2), float(rng.integers(0, 100_000)), n)
        if trial % 3 == 0:  # a jagged curve, where the admission order decides where greedy stops
            tab = np.r_[0, np.sort(rng.random(40))[::-1]] + rng.random(41) * 0.05
            sps = lambda b, tab=tab: tab[np.asarray(b)]
            if trial % 2:  # ... also through the plain-Python values(lo, hi) fast path
                sps = _TableSps(tab)
        budget = int(rng.integers(0, 30))
        for early in (True, False):
            got = P._prefix_small(conf, sps, budget, g, early)
            assert got.tolist() == _prefix_small_reference(conf, sps, budget, g, early).tolist()
            with monkeypatch.context() as mp:
                mp.setattr(P, "SMALL", -1)  # the numpy path, SPS through the array call
                assert got.tolist() == P.prefix_schedule(conf, sps, budget, None, early).tolist()
    # one row whose second rate is above 1: survival 0.95 ranks before 0.5 (theta 1.95 x 0.6 > 1; 1.5 x 0.6 < 1)
    rising = np.array([[0.5, 1.9]])
    tab = table_sps({1: 1.0, 2: 0.6, 3: 0.1})
    assert _prefix_small_reference(rising, tab, 10, 2, True).tolist() == [1]
    assert P._prefix_small(rising, tab, 10, 2, True).tolist() == [1]
    assert P._prefix_small(rising, _TableSps(np.array([0, 1.0, 0.6, 0.1])), 10, 2, True).tolist() == [1]
    one = P.prefix_schedule(np.full((1, 7), 0.9), cm.sps_curve(0, 1000, 1), 100)
    with pytest.raises(ValueError):  # shared one-row results are read-only
        one[0] = 0


def test_async_keeps_the_planned_step_size_when_the_batch_changes():
    sps = lambda b: 1.0 / (1.0 + 0.02 * np.asarray(b, float))
    pol = PrefixAsyncPolicy(max_draft=4, stale_steps=2)
    high3 = np.full((3, 4), 0.99)
    k3 = best_count(sorted_survival(high3, 4)[1], 3, sps, 100, early_stop=False)
    pol.choose(high3, 3, 100, sps)
    pol.choose(high3, 3, 100, sps)
    # one more request joined: the step keeps B* = 3 + k3 tokens, so one draft fewer
    got = pol.choose(np.full((4, 4), 0.99), 4, 100, sps)
    assert 4 + got.sum() == 3 + k3


def test_policy_names_have_one_source():
    """The config's names (what `lab validate` accepts) are exactly the registry's (what `lab run` builds)."""
    from lab.config_sim import POLICY_KINDS, PolicySpec
    from sim.policies import POLICIES, make_policy

    assert sorted(POLICIES) == sorted(POLICY_KINDS)
    for kind in POLICY_KINDS:
        spec = PolicySpec(kind=kind, k=2 if kind == "fixed_k" else None, threshold=0.5 if kind == "threshold" else None)
        assert make_policy(spec, 7).max_verify() <= 7
