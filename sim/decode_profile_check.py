"""Public kernel-by-kernel profiles of DeepSeek-R1 decode steps against the cost model's decode step, by category.

    python -m sim.decode_profile_check --out decode_profiles/
    python -m sim.decode_profile_check --file my_profiles.yaml --out decode_profiles/

Each profile of the data file (sim/validation/decode_profiles.yaml, every number as its source published it) lists a
traced step's kernels with a category each (attention, dense_gemm, act_quant, moe_gemm, moe_routing, moe,
allreduce, norm_elementwise, other); a profile whose times span several steps says how many (`divide_by`), and the
check divides. The step is priced with CostModel on the profile's preset card and DeepSeek config (the public rows'
routing skew, sim.public_check's pricing), `tokens` decoding requests of `context_tokens` each, and
sim.step_breakdown's terms are mapped to the same categories:
    roofline (max of weight + KV reads and GEMM + score FLOPs): split between dense_gemm (non-expert weights, or the
        GEMM FLOPs where the step is compute-bound) and attention (KV reads, or the score FLOPs) in proportion to
        the bound side's parts; a hybrid model's linear-attention state (its own kernel) to attention too
    act_quant = quantized linears x act_quant_us; allreduce = the tensor-parallel all-reduces + the rest of the
        fixed collective latency + the collective bytes; moe_gemm = moe floor (moe_layer_us: the fused call's routing, sort and GEMM floor) +
        per-expert + pair activations + expert reads / FLOPs; moe_routing = 0 (no term of its own: it is inside
        moe_layer_us, so compare `moe` = moe_gemm + moe_routing); norm_elementwise = layer overhead (the per-layer
        small kernels the formula has no other term for); other = step + request overhead.
The categories add up to CostModel.step_time exactly (checked). A profile that lists only its top kernels
(complete: false) leaves the rest unpublished: its published total is a lower bound. Writes decode_profiles.csv,
decode_profiles.md and decode_profiles.png into --out. Bad input (missing file, bad field) prints one `error:` line
and exits 2 with nothing written.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field, model_validator

from lab.arguments import ArgumentParser, load_inputs, write_check_outputs
from lab.config_base import StrictModel
from lab.config_sim import HARDWARE_NAMES, ROUTING_SKEW
from lab.errors import LabError
from lab.io import atomic_path
from lab.report import markdown_table
from sim.cost import CostModel, check_tp_split
from sim.hardware import get_hardware
from sim.public_check import RepoFile, repo_model, validated_runs
from sim.step_breakdown import HOST_TERM, adds_up, decode_terms

DEFAULT_FILE = Path(__file__).parent / "validation" / "decode_profiles.yaml"
CATEGORIES = ("attention", "dense_gemm", "act_quant", "moe_gemm", "moe_routing", "moe", "allreduce",
              "norm_elementwise", "other")
PRICED = tuple(c for c in CATEGORIES if c != "moe")  # what the mapping of the cost model's terms fills
UNIT_MS = {"ms": 1.0, "us": 1e-3}


class KernelRow(StrictModel):
    """One published line of a profile: a kernel (or a category the source already summed), its time as printed."""

    name: str = Field(min_length=1)
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    time: float | None = Field(ge=0, description="as published, in the profile's unit; null: printed as a dash")
    count: int | None = Field(None, ge=0)


class DecodeProfile(StrictModel):
    """One public profile of DeepSeek-R1 decode (see the data file's header for the fields)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str = Field(pattern=r"^https://")
    find_string: str | None = None
    where: str = Field(min_length=1)
    engine: Literal["sglang", "vllm", "trtllm"]
    engine_version: str = Field(min_length=1)
    device: Literal[tuple(HARDWARE_NAMES)] = Field(description="a hardware preset name")  # type: ignore[valid-type]
    device_name: str = Field(min_length=1)
    model: str = Field(min_length=1)
    model_config_path: RepoFile | None = Field(alias="model_config")
    not_priced: str | None = None
    tp: int = Field(ge=1, le=64)
    ep: int = Field(1, ge=1, le=512)
    concurrency: int = Field(ge=1)
    tokens: int = Field(ge=1, le=65536, description="decode tokens in the priced step")
    context_tokens: int = Field(ge=1)
    unit: Literal["ms", "us"]
    divide_by: int = Field(ge=1, description="steps the published times span")
    divide_note: str = Field(min_length=1)
    complete: bool
    fit: bool
    exclude: str | None = None
    note: str | None = None
    kernels: list[KernelRow] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self):
        if (self.model_config_path is None) == (self.not_priced is None):
            raise ValueError("give model_config, or model_config: null with not_priced saying why")
        if self.fit == (self.exclude is not None):
            raise ValueError("fit: true takes no exclude; fit: false needs exclude saying why")
        if all(k.time is None for k in self.kernels):
            raise ValueError("kernels: at least one row needs a time")
        return self

    @property
    def priced(self) -> bool:
        return self.model_config_path is not None

    def published_ms(self) -> dict[str, float]:
        """Category -> ms of one step: the published times (rows without a time left out) / divide_by."""
        out: dict[str, float] = {}
        for k in self.kernels:
            if k.time is not None:
                out[k.category] = out.get(k.category, 0.0) + k.time * UNIT_MS[self.unit] / self.divide_by
        return out


def load_profiles(path: str | Path) -> list[DecodeProfile]:
    """The profiles of a data file; LabError naming the file and the first bad field."""
    return validated_runs(DecodeProfile, path, "decode profiles", "<profile>")


def cost_model(profile: DecodeProfile) -> CostModel:
    """The profile's step as the public rows price it: its preset card, its config.json with the serving routing
    skew (sim.models.model_from_config's default), tp / ep; LabError for a tp whose heads do not split."""
    model = repo_model(profile.model_config_path)
    check_tp_split(model, profile.tp, field="tp")  # a tp vLLM would refuse to start is one error line, not a price
    if model.moe_experts:
        model = replace(model, routing_skew=ROUTING_SKEW)
    return CostModel(hw=get_hardware(profile.device), model=model, tp=profile.tp, ep=profile.ep)


def priced_categories(cm: CostModel, tokens: int, context: float) -> dict[str, float]:
    """Seconds of a decode step of `tokens` requests at `context` cached tokens each, per category (PRICED), from
    sim.step_breakdown.decode_terms mapped as the module docstring says; they add up to its total (LabError if not)."""
    t = decode_terms(cm, tokens, context)
    memory = t["weights (non-expert)"] + t["kv reads"]
    compute = t["gemm flops"] + t["attention flops"]
    roofline = memory + compute + t["hidden (overlapped)"]
    if memory >= compute:  # the bound side's parts share its time
        dense, attention = t["weights (non-expert)"] / memory, t["kv reads"] / memory
    else:
        dense, attention = t["gemm flops"] / compute, t["attention flops"] / compute
    m, hw = cm.model, cm.hw
    quantized = bool(m.matmul_dtype) and m.matmul_dtype != m.dtype and hw.has_peak(m.matmul_dtype)
    act_quant = m.quant_linears * hw.act_quant_us * 1e-6 if quantized else 0.0
    moe_keys = ("moe floor (moe_layer_us)", "moe per-expert (moe_expert_us)", "moe pair activations (moe_pair_bytes)",
                "moe reads / flops")
    out = {"attention": roofline * attention + t["linear-attention state"],  # the recurrent kernel: its own term
           "dense_gemm": roofline * dense, "act_quant": act_quant,
           "moe_gemm": sum(t.get(k, 0.0) for k in moe_keys), "moe_routing": 0.0,
           "allreduce": t["other fixed (act quant, collective latency)"] - act_quant + t["collective bytes"]
           + t["tensor-parallel all-reduces"],
           "norm_elementwise": t["layer overhead"], "other": t["step overhead"] + t[HOST_TERM]}
    if not adds_up(sum(out.values()), t["total"]):
        raise LabError(f"sim.decode_profile_check: the categories add up to {sum(out.values()) * 1e3:.6f} ms, "
                       f"step_time says {t['total'] * 1e3:.6f} ms: update priced_categories")
    out["total"] = t["total"]
    return out


def profile_table(profiles: list[DecodeProfile]) -> pd.DataFrame:
    """One row per profile and category it publishes (and a total row): published and priced ms of one step, and
    priced / published. A profile that publishes `moe` (experts + routing together) is compared on moe_gemm +
    moe_routing priced; one that splits them gets a `moe` row of their sum too (not counted twice in the total); an
    unpriced profile's priced column is NaN."""
    rows = []
    for p in profiles:
        pub = p.published_ms()
        priced = {}
        if p.priced:
            try:
                sec = priced_categories(cost_model(p), p.tokens, p.context_tokens)
            except LabError as exc:  # a pricing refusal (ep that is not a multiple of tp, ...) names its profile
                raise LabError(f"profile {p.id!r}: {exc}") from None
            priced = {k: v * 1e3 for k, v in sec.items()}
            if "moe" in pub:
                priced["moe"] = priced.pop("moe_gemm") + priced.pop("moe_routing")
        cats = [c for c in CATEGORIES if c in pub or (c in priced and c != "total")]
        # the MoE floor (moe_layer_us) holds routing: the layer is compared whole as well
        if "moe" not in cats and "moe_routing" in cats:
            cats.insert(cats.index("moe_routing") + 1, "moe")
            if priced:
                priced["moe"] = priced["moe_gemm"] + priced["moe_routing"]
        for c in cats + ["total"]:
            if c == "total":
                published = sum(pub.values())
            elif c == "moe" and "moe" not in pub:
                published = pub.get("moe_gemm", 0.0) + pub.get("moe_routing", 0.0)
            else:
                published = pub.get(c, 0.0)
            sim = priced.get(c, float("nan"))
            rows.append({"profile": p.id, "device": p.device, "engine": f"{p.engine} {p.engine_version}",
                         "tokens": p.tokens, "category": c, "published_ms": published, "priced_ms": sim,
                         "priced_over_published": sim / published if published > 0 else float("nan"),
                         "published_complete": p.complete or c not in ("total", "other"), "fit": p.fit})
    return pd.DataFrame(rows)


def report(profiles: list[DecodeProfile], table: pd.DataFrame) -> str:
    """The markdown report: per profile its setup, the conversion, and the category table."""
    lines = ["# DeepSeek-R1 decode steps: public kernel profiles vs the cost model, by category", ""]
    for p in profiles:
        f = table[table.profile == p.id]
        lines += [f"## {p.id}", "",
                  f"{p.model} on {p.device_name} ({p.engine} {p.engine_version}), tp {p.tp}, ep {p.ep}, concurrency "
                  f"{p.concurrency}; priced as {p.tokens} tokens at {p.context_tokens} cached tokens each on preset "
                  f"{p.device}. Source: {p.url}", "",
                  f"per step = published / {p.divide_by} ({p.divide_note})."]
        if not p.complete:
            lines.append("The source lists its top kernels only: the published total is a lower bound.")
        if p.exclude:
            lines.append(f"Not for fitting: {p.exclude}")
        if not p.priced:
            lines.append(f"Not priced: {p.not_priced}")
        shown = f[["category", "published_ms", "priced_ms", "priced_over_published"]].rename(
            columns={"published_ms": "published ms", "priced_ms": "priced ms", "priced_over_published": "priced / published"})
        lines += ["", markdown_table(shown), ""]
    return "\n".join(lines)


def plot(table: pd.DataFrame, path: Path) -> None:
    """One panel per priced profile: published vs priced ms per category (bars), written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    priced = table[table.priced_ms.notna() & (table.category != "total")]
    ids = list(dict.fromkeys(priced.profile))
    fig, axes = plt.subplots(1, max(len(ids), 1), figsize=(4.6 * max(len(ids), 1), 4.0), squeeze=False)
    for ax, pid in zip(axes[0], ids):
        f = priced[priced.profile == pid]
        x = np.arange(len(f))
        ax.bar(x - 0.2, f.published_ms, 0.4, label="published")
        ax.bar(x + 0.2, f.priced_ms, 0.4, label="priced")
        ax.set_xticks(x, f.category, rotation=60, ha="right", fontsize=7)
        ax.set(ylabel="ms per decode step", title=pid)
        ax.title.set_fontsize(7)
        ax.legend(fontsize=6)
    fig.suptitle("DeepSeek-R1 decode: public profiles vs cost model, by category")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def load_and_price(path) -> tuple[list[DecodeProfile], pd.DataFrame]:
    """The file's profiles and their table; a pricing refusal (LabError) names the file and the profile."""
    profiles = load_profiles(path)
    try:
        return profiles, profile_table(profiles)
    except LabError as exc:
        raise LabError(f"{path}: {exc}") from None


def main(argv=None) -> int:
    import time

    ap = ArgumentParser(prog="python -m sim.decode_profile_check", description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="data file of public decode profiles")
    ap.add_argument("--out", default="decode_profiles", help="output directory")
    args = ap.parse_args(argv)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    loaded = load_inputs(load_and_price, args)  # priced before --out is made: a refusal leaves no empty directory
    if loaded is None:
        return 2
    profiles, table = loaded
    plot(table, Path(args.out) / "decode_profiles.png")
    return write_check_outputs(args.out, {"decode_profiles.csv": table}, "decode_profiles.md",
                               report(profiles, table), cpu0, wall0)


if __name__ == "__main__":
    sys.exit(main())
