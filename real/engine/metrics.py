"""The engine's Prometheus /metrics, parsed into the lab's speculative-decoding counter table.

    before = scrape_spec_counters("http://127.0.0.1:8765")
    ...   # drive the load
    table = counter_table(before, scrape_spec_counters(url))   # {"before", "after", "delta"}

vLLM exports vllm:spec_decode_num_drafts, _num_draft_tokens, _num_accepted_tokens (counters, `_total` in
the text format) and _num_accepted_tokens_per_pos (one sample per `position` label, cumulative: position j
counts drafts with at least j+1 accepted). They are returned under the names lab.metrics.vllm_counters
uses for the lab's own traces (num_drafts, num_draft_tokens, num_accepted_tokens,
num_accepted_tokens_per_pos), summed over engines, so both sides compare key by key.
"""
from __future__ import annotations

import re

from lab.errors import LabError
from lab.metrics import counter_acceptance
from real.engine.server import http_get

PREFIX = "vllm:spec_decode_"
SCALARS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
PER_POS = "num_accepted_tokens_per_pos"
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s+([-+0-9.eEinfNa]+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) for every sample line of the Prometheus text format."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match.group(3) or ""))
            out.append((match.group(1), labels, float(match.group(4))))
    return out


def spec_counters(text: str) -> dict:
    """The lab's counter table from one /metrics body (zeros when speculation is off)."""
    table: dict = {name: 0 for name in SCALARS}
    per_pos: dict[int, int] = {}
    for name, labels, value in parse_prometheus(text):
        if not name.startswith(PREFIX) or name.endswith("_created"):
            continue
        short = name[len(PREFIX):].removesuffix("_total")
        if short in SCALARS:
            table[short] += int(value)
        elif short == PER_POS and "position" in labels:
            pos = int(labels["position"])
            per_pos[pos] = per_pos.get(pos, 0) + int(value)
    table[PER_POS] = [per_pos.get(j, 0) for j in range(max(per_pos) + 1)] if per_pos else []
    return table


def scrape_spec_counters(base_url: str) -> dict:
    status, body = http_get(f"{base_url}/metrics", timeout=10.0)
    if status != 200:
        raise LabError(f"engine: {base_url}/metrics answered {status or 'nothing'}")
    return spec_counters(body)


PREFIX_CACHE = ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries")


def metric_sums(base_url: str, names: tuple[str, ...]) -> dict[str, float] | None:
    """Each named sample summed over engines and labels (a counter's `_total` suffix dropped), or None where
    the engine answers no /metrics or exports none of them."""
    status, body = http_get(f"{base_url}/metrics", timeout=10.0)
    return sums_in(body if status == 200 else "", names)


def sums_in(body: str, names: tuple[str, ...]) -> dict[str, float] | None:
    """metric_sums over one /metrics body already read."""
    totals = dict.fromkeys(names, 0.0)
    seen = False
    for name, _labels, value in parse_prometheus(body):
        key = name.removesuffix("_total")
        if key in totals and not name.endswith("_created"):
            totals[key] += value
            seen = True
    return totals if seen else None


def prefix_cache_tokens(base_url: str) -> tuple[float, float]:
    """(hit tokens, queried tokens) of the engine's prefix cache so far, summed over engines; (nan, nan)
    where the engine answers no /metrics or exports no such counter."""
    totals = metric_sums(base_url, PREFIX_CACHE)
    if totals is None:
        return float("nan"), float("nan")
    return totals[PREFIX_CACHE[0]], totals[PREFIX_CACHE[1]]


ENGINE_STEPS = "vllm:iteration_tokens_total_count"  # the tokens-per-step histogram's sample count: steps run


def engine_steps(base_url: str) -> float:
    """Engine steps run so far (vLLM's tokens-per-step histogram count); nan where not exported."""
    totals = metric_sums(base_url, (ENGINE_STEPS,))
    return float("nan") if totals is None else totals[ENGINE_STEPS]


def spec_counters_and_steps(base_url: str) -> tuple[dict, float]:
    """One /metrics scrape: the spec-decode counter table and the engine steps run so far (nan where not
    exported)."""
    status, body = http_get(f"{base_url}/metrics", timeout=10.0)
    if status != 200:
        raise LabError(f"engine: {base_url}/metrics answered {status or 'nothing'}")
    totals = sums_in(body, (ENGINE_STEPS,))
    return spec_counters(body), float("nan") if totals is None else totals[ENGINE_STEPS]


def delta(before: dict, after: dict) -> dict:
    out = {name: after[name] - before[name] for name in SCALARS}
    width = max(len(before[PER_POS]), len(after[PER_POS]))
    after_pos = list(after[PER_POS]) + [0] * (width - len(after[PER_POS]))
    before_pos = list(before[PER_POS]) + [0] * (width - len(before[PER_POS]))
    out[PER_POS] = [a - b for a, b in zip(after_pos, before_pos)]
    return out


def counter_table(before: dict, after: dict) -> dict:
    """{"before", "after", "delta"} plus the derived acceptance of the delta (tau as in lab.metrics)."""
    d = delta(before, after)
    return {"before": before, "after": after, "delta": d, "derived": counter_acceptance(d)}
