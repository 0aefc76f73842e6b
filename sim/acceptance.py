"""Acceptance sources: what a verify step of length l accepts, and the confidences a policy sees.

    src = TraceSource.from_frame(read_traces(dir), method="dspark", max_draft=7, temps=None, weights=None)
    src = ParametricSource(max_draft=7, alpha=0.8)                    # i.i.d. what-if
    src = ParametricSource(4, rates=r, draft_probability=0.7)         # a proposer that sometimes finds no draft
    src = ParametricSource(4, rates=r, draft_tokens_mean=3.9)         # ... and drafts fewer than k tokens
    q, r = rates_from_counters(4, accepted_per_pos, drafts, decode_tokens, draft_tokens_mean=3.9)  # engine counters
    src.in_order = True                    # the i-th request replays the i-th recorded prompt (replay of a log)
    slot = src.new_request(rng)            # (start, length, recorded_output_len) of the replayed prompt
    conf, state, kcap = src.draw(rows_or_n, rng)  # conf[R, gamma] for the policy; state for accept()
    accepted = src.accept(state, lengths, rng)    # int[R], 0..lengths

Trace replay (DESIGN.md): with dense `anchors` (greedy), a request walks its recorded output: a step at
position t with verify length l accepts min(l, accepted(t)) and moves to t + that + 1 -- exact for any
policy. With `rounds` only, request r replays its recorded rounds in order (l <= k accepts min(l, accepted)
under greedy; under sampling the accept_prob prefix product with the run's RNG) -- approximate, and
labelled so. A request whose workload output is longer than the recording wraps around it.
Policies only ever get `conf`; outcomes stay inside accept().
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from sim.trace_rows import pack_rows, select_rows


def apply_temperatures(conf: np.ndarray, temps: list[float] | None) -> np.ndarray:
    """Sequential temperature scaling: c'_k = sigmoid(logit(c_k) / T_k) per position (sim/calibrate.py)."""
    if not temps:
        return conf
    c = np.clip(conf.astype(np.float64), 1e-6, 1 - 1e-6)
    t = np.ones(conf.shape[1])
    n = min(len(temps), conf.shape[1])
    t[:n] = temps[:n]
    if len(temps) < conf.shape[1]:
        t[n:] = temps[-1]
    out = 1.0 / (1.0 + np.exp(-np.log(c / (1 - c)) / t))
    return np.where(conf > 0, out, 0.0).astype(conf.dtype)


class TraceSource:
    """Packed replay arrays: one row per anchor position (anchors) or per recorded round (rounds)."""

    kind = "trace"

    def __init__(self, conf, accepted, kcap, accept_prob, starts, lengths, out_lens, prompt_weights,
                 exact: bool, sampled: bool, max_draft: int, label: str):
        self.conf = conf  # [N, gamma] float32, 0 beyond the row's k
        self.accepted = accepted  # [N] int
        self.kcap = kcap  # [N] int: drafts recorded at this row
        self.accept_prob = accept_prob  # [N, gamma] float32 (rounds under sampling) or None
        self.starts, self.lengths, self.out_lens = starts, lengths, out_lens  # per prompt
        self.prompt_p = prompt_weights / prompt_weights.sum()
        self.exact = exact
        self.sampled = sampled
        self.max_draft = max_draft
        self.label = label
        self.advance_by_tokens = exact  # anchors: move by accepted + 1 tokens; rounds: one round
        self._cum = np.cumsum(self.prompt_p)
        self.in_order = False  # True: request i replays prompt i (sorted by dataset, prompt_id), wrapping
        self._next = 0

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, method: str | None, max_draft: int, temperature: float | None = None,
                   weights: dict[str, float] | None = None, table: str = "auto",
                   temps: list[float] | None = None, where: str = "traces") -> TraceSource:
        sel = select_rows(frame, method, temperature, table, weights, where)
        f, method, temp, table = sel.rows, sel.method, sel.temperature, sel.table
        n = len(f)
        gamma = max_draft
        conf, aprob, kcap, accepted = pack_rows(f, gamma)
        conf = apply_temperatures(conf, temps)
        keys = (f["dataset"] + "\x00" + f["prompt_id"]).to_numpy()
        change = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        starts = change.astype(np.int64)
        lengths = np.diff(np.r_[change, n]).astype(np.int64)
        ds = f["dataset"].to_numpy()[starts]
        if table == "anchors":
            out_lens = lengths + 1
        else:
            out_lens = np.add.reduceat(accepted + 1, starts) if n else lengths
        w = np.ones(len(starts))
        if weights:
            # a dataset's weight is split evenly over its prompts
            for d in np.unique(ds):
                mine = ds == d
                w[mine] = weights.get(d, 0.0) / mine.sum()
        sampled = temp > 0 and table == "rounds"
        label = f"{method}:{table}:{'exact' if table == 'anchors' else 'approximate'}:T{temp:g}"
        return cls(conf, accepted, kcap, aprob if sampled else None, starts, lengths, out_lens, w,
                   exact=table == "anchors", sampled=sampled, max_draft=gamma, label=label)

    def new_request(self, rng: np.random.Generator) -> tuple[int, int, int]:
        if self.in_order:
            i, self._next = self._next % len(self.starts), self._next + 1
        else:
            i = int(np.searchsorted(self._cum, rng.random() * self._cum[-1], side="right"))
            i = min(i, len(self.starts) - 1)
        return int(self.starts[i]), int(self.lengths[i]), int(self.out_lens[i])

    def draw(self, n: int, start: np.ndarray, pos: np.ndarray, plen: np.ndarray, rng: np.random.Generator):
        """Confidences [n, gamma] at each request's current replay row, the opaque state, per-row k caps."""
        rows = start + pos % plen
        return self.conf[rows], rows, self.kcap[rows]

    def accept(self, rows: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.accept_prob is None:
            return np.minimum(lengths, self.accepted[rows])
        ok = rng.random((len(rows), self.max_draft)) < self.accept_prob[rows]
        lead = np.cumprod(ok, axis=1)
        return np.minimum(lead.sum(axis=1), lengths)


class ParametricSource:
    """I.i.d. or per-position-curve acceptance; optional per-(request, step) Beta heterogeneity.

    With `concentration`, each request-step draws a rate a ~ Beta(mean, concentration); the drafter's
    confidence reports a (calibrated), plus optional logit noise. Positions accept independently with
    their rate, so accepted = number of leading successes.
    With `draft_probability` p < 1, a request-step has a draft only with probability p (a prompt-lookup
    proposer such as vLLM's n-gram finds no match otherwise): the other rows get a draft cap of 0, so that
    request verifies nothing and the step carries its one token only. The rates are then conditional on a
    draft (what vLLM's per-position counters measure: accepted at position j / drafts).
    With `draft_tokens_mean` m < max_draft, a draft is shorter than max_draft tokens on average (vLLM's n-gram
    proposer returns the tokens that followed the match, at most k of them, fewer where the match lies less
    than k tokens before the end of the context: vllm/v1/spec_decode/ngram_proposer.py, `k = min(k,
    total_token - start_position)`): a drafted row's cap is floor(m) or floor(m) + 1 tokens (draft_lengths;
    the least spread lengths with mean m), and `rates` are then conditional on the position being drafted
    (rates_from_counters gives them so).
    """

    kind = "parametric"
    exact = False
    sampled = True
    advance_by_tokens = True

    def __init__(self, max_draft: int, alpha: float = 0.8, rates: list[float] | None = None,
                 concentration: float | None = None, confidence_noise: float = 0.0, output_tokens: int = 256,
                 draft_probability: float = 1.0, draft_tokens_mean: float | None = None):
        self.max_draft = max_draft
        self.draft_probability = float(draft_probability)
        mean = float(max_draft if draft_tokens_mean is None else min(draft_tokens_mean, max_draft))
        self.draft_tokens_mean = mean
        self._short = mean < max_draft  # drafts shorter than max_draft: every row gets a cap
        r = np.asarray(rates[:max_draft] if rates else [alpha] * max_draft, dtype=np.float64)
        self.rates = r
        self.concentration = concentration
        self.noise = confidence_noise
        self.out_len = output_tokens
        m = np.clip(self.rates, 1e-4, 1 - 1e-4)
        # each request-step's rate a scales the curve: position j accepts with a * rates[j] / rates[0]
        self._shape = (m / m[0]) if rates else np.ones(max_draft)
        self._flat = not rates or bool(np.allclose(self.rates, self.rates[0]))
        self._clip = bool(np.any(self._shape > 1))
        self.label = f"parametric:{'curve' if rates else f'iid{alpha:g}'}" + (
            f":beta{concentration:g}" if concentration else "") + (
            f":drafts{draft_probability:g}" if draft_probability < 1 else "") + (
            f":len{mean:g}" if self._short else "")
        self._lead = np.zeros(0, np.int64)  # the current block of draws (empty: the first draw refills)
        self._i = 0

    BLOCK = 1 << 15  # random draws are made in blocks; per-step work is then slicing

    def new_request(self, rng: np.random.Generator) -> tuple[int, int, int]:
        return 0, 1, self.out_len

    def _refill(self, rng: np.random.Generator, n: int) -> None:
        size = max(self.BLOCK, n)
        m0 = float(np.clip(self.rates[0], 1e-4, 1 - 1e-4))
        if self.concentration:
            a = rng.beta(m0 * self.concentration, (1 - m0) * self.concentration, size=size)
        else:
            a = np.full(size, m0)
        a = np.clip(a, 1e-9, 1 - 1e-9)
        logu = np.log(rng.random(size))  # used by the flat (iid) fast path
        # per-step work is then slicing these [size, gamma] / [size] blocks
        true = a[:, None] * self._shape  # [size, gamma] each request-step's per-position rates
        if self._clip:
            np.clip(true, 0.0, 1.0, out=true)
        self._true = true
        # flat: leading successes of i.i.d. Bernoulli(a): P(X >= k) = a^k = P(log u <= k log a)
        self._lead = (logu / np.log(a)).astype(np.int64)  # [size]
        self._i = 0

    def draw(self, n: int, start, pos, plen, rng: np.random.Generator):
        i = self._i
        if i + n > len(self._lead):
            self._refill(rng, n)
            i = 0
        self._i = j = i + n
        true = self._true[i:j]
        conf = true
        if self.noise > 0:
            c = np.clip(true, 1e-6, 1 - 1e-6)
            z = np.log(c / (1 - c)) + rng.normal(0, self.noise, size=c.shape)
            conf = 1 / (1 + np.exp(-z))
        # the state holds views of this block's arrays, not indices: another replica's draw may refill
        # the block before this step's accept(), and the outcomes must stay those of these confidences
        kcap = None
        if self._short:  # [n] draft lengths: floor(mean) or floor(mean) + 1
            kcap = draft_lengths(self.draft_tokens_mean, n, rng)
        if self.draft_probability < 1.0:  # [n] drafts available per request: a draft's length, or none
            kcap = np.where(rng.random(n) < self.draft_probability, self.max_draft if kcap is None else kcap, 0)
        return conf, (self._lead[i:j] if self._flat else true), kcap

    def accept(self, state, lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self._flat:  # state: leading successes drawn with the rates (capped by the verify lengths here)
            return np.minimum(state, lengths)
        ok = rng.random(state.shape) < state  # state: true per-position rates [n, gamma]
        lead = np.cumprod(ok, axis=1)
        return np.minimum(lead.sum(axis=1), lengths)


def draft_lengths(mean: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n] draft lengths with the given mean, the least spread there is: floor(mean) + 1 with probability
    mean - floor(mean), else floor(mean) (ParametricSource's short drafts)."""
    whole = int(np.floor(mean))
    return whole + (rng.random(n) < mean - whole).astype(np.int64)


def drafted_share(mean: float, k: int) -> np.ndarray:
    """[k] P(a draft reaches position j), j = 1..k, for draft_lengths of that mean (1 where mean >= k)."""
    positions = np.arange(1, k + 1)
    whole = int(np.floor(mean))
    return np.where(positions <= whole, 1.0, np.where(positions == whole + 1, mean - whole, 0.0))


def rates_from_counters(k: int, accepted_per_pos, drafts: int, decode_tokens,
                        draft_tokens_mean: float | None = None) -> tuple[float, list[float]]:
    """(draft probability, conditional rate per position) that reproduce an engine's spec-decode counters.

    accepted_per_pos[j]: drafts whose position j was accepted (vLLM's num_accepted_tokens_per_pos), over
    `drafts` drafts of k tokens; decode_tokens: per finished request, the tokens its decode steps emitted
    (output tokens - 1, the first comes from prefill). Given a draft, position j survives with
    accepted_per_pos[j] / drafts, so rate_j = accepted_per_pos[j] / accepted_per_pos[j - 1]. The share of
    request-steps with a draft is not in the counters: it is the p for which a request that emits one token
    per draftless step and 1 + accepted per drafted step, its last step cut at its output length, makes
    `drafts` drafts in expectation over these requests (_expected_drafts). Counting steps as
    output - accepted - requests instead would be wrong twice: vLLM counts accepted drafts past max_tokens
    (the last step's surplus is dropped from the output, not from the counter), and it makes every step a
    draft.
    draft_tokens_mean (vLLM's num_draft_tokens / num_drafts): drafts shorter than k on average; a position
    is then accepted only where the draft reached it (drafted_share, the lengths ParametricSource draws), so
    rate_j is conditional on that too: survival_j / drafted_share_j over survival_(j-1) / drafted_share_(j-1),
    which keeps the accepted tokens per position those of the counters. ValueError where the counters accept
    more at a position than drafts of that mean reach it."""
    per_pos = np.asarray(accepted_per_pos, dtype=np.float64)[:k]
    if drafts <= 0 or len(per_pos) != k or np.any(np.diff(per_pos) > 0) or per_pos[0] > drafts:
        raise ValueError(f"counters: {drafts} drafts with accepted per position {list(per_pos)} (k = {k}) are "
                         "not a speculative run's (need drafts > 0 and non-increasing counts <= drafts)")
    survival = np.concatenate([[1.0], per_pos / drafts])  # P(accepted >= j | draft), j = 0..k
    reach = np.ones(k + 1)  # P(the draft reaches position j), j = 0..k
    if draft_tokens_mean is not None:
        if not 1 <= draft_tokens_mean <= k:
            raise ValueError(f"counters: {draft_tokens_mean:g} draft tokens per draft, outside [1, k = {k}]")
        reach[1:] = drafted_share(draft_tokens_mean, k)
        if np.any(survival[1:] > reach[1:] + 1e-9):
            raise ValueError(f"counters: accepted per position {list(per_pos)} of {drafts} drafts exceed what "
                             f"drafts of {draft_tokens_mean:g} tokens on average reach")
    with np.errstate(divide="ignore", invalid="ignore"):
        given = np.where(reach > 0, survival / reach, 0.0)  # P(accepted >= j | the draft reaches j)
        rates = np.where(given[:-1] > 0, given[1:] / given[:-1], 0.0)
    accepted_pmf = survival - np.concatenate([survival[1:], [0.0]])  # P(accepted = a | draft), a = 0..k
    lengths = np.asarray(decode_tokens, dtype=np.int64)

    def expected_drafts(p: float) -> float:  # one recursion up to the longest request serves them all
        return float(_expected_drafts(p, accepted_pmf, int(lengths.max(initial=0)))[lengths].sum())

    if expected_drafts(1.0) <= drafts:
        p = 1.0
    else:  # expected drafts grow with p: bisection
        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if expected_drafts(mid) < drafts else (lo, mid)
        p = 0.5 * (lo + hi)
    return p, [float(r) for r in np.clip(rates, 0.0, 1.0)]


def _expected_drafts(p: float, accepted_pmf: np.ndarray, tokens: int) -> np.ndarray:
    """[tokens + 1] expected drafts of a request emitting r = 0..tokens decode tokens: each step has a draft
    with probability p and then emits 1 + accepted tokens (accepted_pmf), else 1; its last step's surplus
    is dropped."""
    d = np.zeros(tokens + 1)  # d[r]: expected drafts still to come with r tokens left
    back = np.arange(len(accepted_pmf))
    for r in range(1, tokens + 1):
        ahead = d[np.maximum(r - 1 - back, 0)]
        d[r] = (1 - p) * d[r - 1] + p * (1.0 + float(accepted_pmf @ ahead))
    return d


def expected_tokens_iid(alpha: float, k: int) -> float:
    """E[tokens per step] = (1 - a^(k+1)) / (1 - a) for i.i.d. acceptance a and verify length k."""
    return (1 - alpha ** (k + 1)) / (1 - alpha)
