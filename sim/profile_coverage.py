"""How much of a simulated run a measured step profile priced outside its measured grid.

    cov = ProfileCoverage(profile.axes)          # one per replica (cluster.Replica does this when cost.profile is set)
    cov.add(*cost.profile_point(tokens, kv_sum, n_reqs, drafts), dt)   # every step, at the point step_time read
    summary.update(coverage_summary(covs, busy_s))                     # the run's profile_* columns (sim/simulate.py)
    line = coverage_warning(summary, profile.axes)                     # one line, or None below WARN_SHARE

sim/cost.py reads a step of `batch` rows x `query_tokens` x `context_len` (CostModel.profile_point) off the grid
the profile measured (sim/step_profile.py). Per axis a step lies inside [first, last measured value], below the
first (priced as if at the first: clamped) or above the last (the last segment extended linearly; an axis
measured at one value is held constant). A step outside on any axis counts once in profile_outside_*; per axis
it counts in each axis it left. Only each replica step's own reading is counted: not a drafter pass's read
(drafter_layers > 0), nor sim.cost.spec_profile's, nor a disaggregated prefill node's pass (Cluster._dispatch); a
DP-padded lockstep step counts at its own, unpadded shape. Summary keys (sim/results.parquet; the fidelity stage's coverage table):

    profile_outside_steps, profile_outside_share     steps outside on any axis, their share of step time
    profile_<axis>_<below|above>_steps / _share      per axis (batch, query_tokens, context_len)
    profile_<axis>_above_max                         the largest value read above the axis (nan: none)

Shares are of the replicas' summed step time (busy_time_s), not of the run's wall span. The warning threshold
WARN_SHARE is the lab's fidelity goal (5%, the +-5% lines of the fidelity plot): once that much of the step time
is priced off the measurement, a +-5% claim rests on how well the extrapolation guesses, not on the profile.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

AXES = ("batch", "query_tokens", "context_len")
WARN_SHARE = 0.05


class ProfileCoverage:
    """Per-axis counts and seconds of one replica's steps read outside a profile's measured axes."""

    __slots__ = ("above_max", "above_s", "above_steps", "below_s", "below_steps", "hi", "lo", "outside_s",
                 "outside_steps")

    def __init__(self, axes: Sequence[Sequence[float]]):
        self.lo = tuple(float(a[0]) for a in axes)  # [3] first measured value per axis
        self.hi = tuple(float(a[-1]) for a in axes)  # [3] last measured value per axis
        self.below_steps = [0, 0, 0]
        self.above_steps = [0, 0, 0]
        self.below_s = [0.0, 0.0, 0.0]
        self.above_s = [0.0, 0.0, 0.0]
        self.above_max = [-math.inf, -math.inf, -math.inf]
        self.outside_steps = 0
        self.outside_s = 0.0

    def add(self, batch: float, query_tokens: float, context_len: float, dt: float) -> None:
        """One step read at (batch, query_tokens, context_len) that lasted dt seconds."""
        lo, hi = self.lo, self.hi
        if (lo[0] <= batch <= hi[0] and lo[1] <= query_tokens <= hi[1]
                and lo[2] <= context_len <= hi[2]):  # the common case: inside the grid
            return
        self.outside_steps += 1
        self.outside_s += dt
        for i, x in enumerate((batch, query_tokens, context_len)):
            if x < lo[i]:
                self.below_steps[i] += 1
                self.below_s[i] += dt
            elif x > hi[i]:
                self.above_steps[i] += 1
                self.above_s[i] += dt
                self.above_max[i] = max(self.above_max[i], x)


def coverage_summary(coverages: Iterable[ProfileCoverage], busy_s: float) -> dict:
    """The profile_* keys of a run (the module docstring) summed over its replicas' coverages; busy_s: their
    summed step time (the shares' denominator)."""
    covs = list(coverages)
    total = busy_s if busy_s > 0 else math.inf
    out = {"profile_outside_steps": sum(c.outside_steps for c in covs),
           "profile_outside_share": sum(c.outside_s for c in covs) / total}
    for i, axis in enumerate(AXES):
        for side, steps, seconds in (("below", "below_steps", "below_s"), ("above", "above_steps", "above_s")):
            out[f"profile_{axis}_{side}_steps"] = sum(getattr(c, steps)[i] for c in covs)
            out[f"profile_{axis}_{side}_share"] = sum(getattr(c, seconds)[i] for c in covs) / total
        top = max((c.above_max[i] for c in covs), default=-math.inf)
        out[f"profile_{axis}_above_max"] = top if top > -math.inf else math.nan
    return out


def pooled(summaries: Iterable[Mapping]) -> dict:
    """Several runs' profile_* keys as one (steps summed, shares weighted by each run's busy_time_s, maxima of
    maxima): a sweep's points, or a load's rounds. Each mapping needs busy_time_s and the profile_* keys."""
    rows = list(summaries)
    busy = sum(float(r["busy_time_s"]) for r in rows)
    total = busy if busy > 0 else math.inf
    out: dict = {"busy_time_s": busy, "steps": sum(int(r.get("steps", 0)) for r in rows)}
    keys = ["profile_outside"] + [f"profile_{a}_{s}" for a in AXES for s in ("below", "above")]
    for key in keys:
        out[f"{key}_steps"] = sum(int(r[f"{key}_steps"]) for r in rows)
        out[f"{key}_share"] = sum(float(r[f"{key}_share"]) * float(r["busy_time_s"]) for r in rows) / total
    for axis in AXES:
        tops = [float(r[f"profile_{axis}_above_max"]) for r in rows if not math.isnan(float(r[f"profile_{axis}_above_max"]))]
        out[f"profile_{axis}_above_max"] = max(tops) if tops else math.nan
    return out


def coverage_text(summary: Mapping, axes: Sequence[Sequence[float]]) -> str:
    """One sentence: how many steps and what share of step time the profile priced outside its grid, and where."""
    share = float(summary["profile_outside_share"])
    steps = int(summary["profile_outside_steps"])
    total = summary.get("steps")
    of = f" of {int(total):,}" if total is not None else ""
    if not steps:
        return f"every step{'' if total is None else f' ({int(total):,})'} priced inside the measured step profile"
    parts = []
    for i, axis in enumerate(AXES):
        below, above = summary[f"profile_{axis}_below_steps"], summary[f"profile_{axis}_above_steps"]
        if below:
            parts.append(f"{axis} below {axes[i][0]:g} (clamped) {int(below):,} steps, "
                         f"{100 * summary[f'profile_{axis}_below_share']:.1f}%")
        if above:
            held = "held" if len(axes[i]) == 1 else "extrapolated"
            parts.append(f"{axis} above {axes[i][-1]:g} up to {summary[f'profile_{axis}_above_max']:.4g} ({held}) "
                         f"{int(above):,} steps, {100 * summary[f'profile_{axis}_above_share']:.1f}%")
    return (f"{100 * share:.1f}% of step time ({steps:,}{of} steps) priced outside the measured step profile: "
            + "; ".join(parts))


def coverage_warning(summary: Mapping, axes: Sequence[Sequence[float]], threshold: float = WARN_SHARE) -> str | None:
    """'warning: ...' (coverage_text) when at least `threshold` of the step time lay outside the grid, else None."""
    if float(summary["profile_outside_share"]) < threshold:
        return None
    return (f"warning: {coverage_text(summary, axes)} (>= {100 * threshold:g}%: measure a grid that covers "
            "these steps)")


__all__ = ["AXES", "WARN_SHARE", "ProfileCoverage", "coverage_summary", "coverage_text", "coverage_warning",
           "pooled"]
