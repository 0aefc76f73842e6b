"""Experiment-schema section for a real serving engine beside the lab (`engine:` in experiments/*.yaml).

    engine:
      kind: vllm
      port: 8765
      dtype: float32
      kv_cache_space_gib: 2
      threads_bind: "0-1"
      max_num_seqs: 16
      variants: [{name: nospec}, {name: ngram, speculative: {method: ngram, num_speculative_tokens: 4}},
                 {name: eagle3, speculative: {method: eagle3, drafter: eagle3}}]   # a trained drafter of the run
                 # (a dflash one too: block_layout vllm, num_speculative_tokens = its block_size)
      loads:
        - {name: low, kind: poisson, rate: 0.5, prompt_tokens: 128, output_tokens: 64, max_requests: 40}
        - {name: trace, kind: trace, trace_path: $DATA/azure2023_splitwise_conv.csv, time_scale: 0.05}
      step_profile: {batches: [1, 2, 4, 8], query_tokens: [1, 64, 256]}
      profile_every_variant: false   # true: the step profile on every variant's server (fidelity reads its own)
      speculative_profile_prompts: text   # or random: token ids a speculative server's proposer rarely matches
      spec_step_profile: false    # true: also profile each speculative server's own decode steps
      reference: {points: [[1, 1, 256], [1, 64, 0]], repeats: 2}   # drift control around every load

The `engine` stage serves the run's target (the embedded model's cached safetensors, or target.path) with
`vllm serve` from the engine's own environment (`lab engine setup vllm`), once per variant, drives every
load against it, and writes engine/<variant>/<load>/requests.parquet and spec_counters.json. Everything is
bounded: each load by max_requests and timeout_s, the server start by startup_timeout_s.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from lab.config_base import MAX_MODEL_LEN, Seed, StrictModel
from lab.paths import UserPath

SPEC_METHODS = ("none", "ngram", "draft_model", "eagle3", "dflash", "suffix")


class SpeculativeSpec(StrictModel):
    method: Literal[SPEC_METHODS] = "none"  # type: ignore[valid-type]
    num_speculative_tokens: int = Field(4, ge=1, le=16)
    prompt_lookup_min: int = Field(2, ge=1, description="ngram: shortest n-gram matched in the context")
    prompt_lookup_max: int = Field(4, ge=1, description="ngram: longest n-gram matched in the context")
    model: str | None = Field(None, description="draft_model/eagle3/dflash: drafter checkpoint directory")
    drafter: str | None = Field(None, description="eagle3/dflash: a trained drafter of this run (a name in "
                                "drafters:; dflash: block_layout vllm), exported to vLLM's layout by the engine "
                                "stage (real/export_vllm.py)")

    @model_validator(mode="after")
    def _needs_model(self):
        if self.drafter is not None:
            if self.method not in ("eagle3", "dflash"):
                raise ValueError(f"speculative.drafter: only methods eagle3 and dflash export a lab drafter to "
                                 f"vLLM, not {self.method!r}")
            if self.model:
                raise ValueError("speculative: give drafter (this run's trained drafter) or model (a "
                                 "checkpoint directory), not both")
        elif self.method in ("draft_model", "eagle3", "dflash") and not self.model:
            raise ValueError(f"speculative.method {self.method!r} needs speculative.model (a checkpoint dir) "
                             "or, for eagle3/dflash, speculative.drafter (a drafter of this run)")
        if self.prompt_lookup_min > self.prompt_lookup_max:
            raise ValueError("speculative.prompt_lookup_min must not exceed prompt_lookup_max")
        return self

    def vllm_config(self, drafter_dir: str | None = None) -> dict | None:
        """The JSON vLLM's --speculative-config takes, or None for plain decoding; drafter_dir: where the
        engine stage exported `drafter`."""
        if self.method == "none":
            return None
        out: dict = {"method": self.method, "num_speculative_tokens": self.num_speculative_tokens}
        if self.method == "ngram":
            out.update(prompt_lookup_min=self.prompt_lookup_min, prompt_lookup_max=self.prompt_lookup_max)
        if self.drafter is not None:
            if drafter_dir is None:
                raise ValueError(f"speculative.drafter {self.drafter!r}: not exported yet")
            out["model"] = str(drafter_dir)
        elif self.model:
            out["model"] = self.model
        return out


class EngineVariant(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="subdirectory of engine/")
    speculative: SpeculativeSpec = Field(default_factory=SpeculativeSpec)


class LoadSpec(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="subdirectory of engine/<variant>/")
    kind: Literal["poisson", "trace", "closed_loop"] = "poisson"
    rate: float = Field(1.0, gt=0, description="poisson: requests/s")
    concurrency: int = Field(4, ge=1, description="closed_loop: users, each sends its next request on reply")
    trace_path: UserPath | None = Field(None, description="trace: CSV arrived_at,num_prefill_tokens,num_decode_tokens")
    time_scale: float = Field(1.0, gt=0, description="trace: arrival times are multiplied by this")
    trace_offset: int = Field(0, ge=0, description="trace: first row replayed")
    prompt_tokens: int = Field(128, ge=1, description="fixed prompt length (trace: the cap on its lengths)")
    output_tokens: int = Field(64, ge=1, description="fixed max_tokens with ignore_eos (trace: the cap)")
    max_requests: int = Field(32, ge=1, le=100000, description="hard bound on requests sent")
    duration_s: float = Field(300.0, gt=0, description="no request is sent after this many seconds")
    timeout_s: float = Field(900.0, gt=0, description="the load is cut (open requests cancelled) after this")
    seed: Seed = 0

    @model_validator(mode="after")
    def _trace(self):
        if self.kind == "trace" and not self.trace_path:
            raise ValueError("engine.loads[].kind 'trace' needs trace_path")
        return self


class StepProfileSpec(StrictModel):
    """A full grid batch x query_tokens x context_len (the shared step-profile format needs one)."""
    batches: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    query_tokens: list[int] = Field(default_factory=lambda: [1, 64, 256], min_length=1,
                                    description="1 = decode steps; more = prefill of that many new tokens")
    context_lens: list[int] = Field(default_factory=lambda: [0, 256, 1024], min_length=1,
                                    description="KV tokens before the step (prefill: a cached shared prefix)")
    output_tokens: int = Field(24, ge=4, description="decode steps measured per decode point")
    repeats: int = Field(2, ge=1, le=20)

    @model_validator(mode="after")
    def _axes(self):
        for label, axis in (("batches", self.batches), ("query_tokens", self.query_tokens),
                            ("context_lens", self.context_lens)):
            if axis != sorted(set(axis)) or axis[0] < (0 if label == "context_lens" else 1):
                raise ValueError(f"step_profile.{label} must be strictly increasing (and positive)")
        return self


class ReferenceSpec(StrictModel):
    """Drift control: some of the step profile's own grid points measured again, the same way, right before
    and right after every load (engine/<variant>/<load>/reference.json); the fidelity stage scales the
    profile by the load's measured speed ratio for its drift-corrected table."""
    points: list[tuple[int, int, int]] = Field(min_length=1, description="[batch, query_tokens, context_len] "
                                               "points of engine.step_profile's grid")
    output_tokens: int = Field(8, ge=4, description="decode points: tokens per request (the first gap dropped)")
    repeats: int = Field(1, ge=1, le=10)


class EngineSection(StrictModel):
    kind: Literal["vllm"] = "vllm"
    venv: str | None = Field(None, description="the engine's environment; default ~/.cache/dspark-lab/engines/vllm")
    model: str | None = Field(None, description="checkpoint served; default the run's target (embedded cache)")
    host: Literal["127.0.0.1"] = Field("127.0.0.1", description="loopback only")
    port: int = Field(8765, ge=1024, le=65535)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    kv_cache_space_gib: float = Field(2.0, gt=0, description="VLLM_CPU_KVCACHE_SPACE (CPU)")
    threads_bind: str | None = Field("0-1", description="VLLM_CPU_OMP_THREADS_BIND (CPU); null: vLLM's default")
    max_num_seqs: int = Field(16, ge=1, le=4096)
    max_num_batched_tokens: int = Field(2048, ge=16)
    max_model_len: int = Field(2048, ge=32, le=MAX_MODEL_LEN)
    startup_timeout_s: float = Field(600.0, gt=0, description="the server must answer /health within this")
    extra_args: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="more `vllm serve` arguments (an empty one reached vllm serve's parser "
                                          "after the engine's environment had started)")
    variants: list[EngineVariant] = Field(default_factory=lambda: [EngineVariant(name="nospec")], min_length=1)
    loads: list[LoadSpec] = Field(default_factory=lambda: [LoadSpec(name="poisson")])
    step_profile: StepProfileSpec | None = Field(None, description="measure step times on the first variant")
    profile_every_variant: bool = Field(False, description="measure the step profile on every variant's own "
                                        "server too, every round (engine/<variant>/profile/; a speculative "
                                        "server's decode rows solved from its steps and their verified drafts, "
                                        "real/engine/spec_rows.py); the fidelity stage prices each variant from "
                                        "its own server's profile")
    speculative_profile_prompts: Literal["text", "random"] = Field(
        "text", description="what a speculative server is profiled with (profile_every_variant): text, the run's "
        "prompts as the plain server and the loads get them, so its proposer drafts as it will in the loads; "
        "random: random token ids (it drafts only where greedy output repeats itself)")
    spec_step_profile: bool = Field(False, description="also measure each speculative variant's own decode steps "
                                    "(engine/<variant>/step_profile.csv, for sim.cost.spec_profile; the fidelity "
                                    "stage does not use it; ~2.6 min per variant on 2 CPU cores)")
    reference: ReferenceSpec | None = Field(None, description="re-measure some profile points before/after each "
                                            "load (drift control; needs step_profile)")
    rounds: int = Field(1, ge=1, le=10, description="measure the step profile and drive every load this many "
                        "times, interleaved (round k: profile, then the loads; prompts drawn afresh); the simulator "
                        "reads the rounds' per-point median profile and is compared with the rounds' mean "
                        "(real/engine/rounds.py)")

    @model_validator(mode="after")
    def _unique_and_fitting(self):
        for label, names in (("variants", [v.name for v in self.variants]), ("loads", [x.name for x in self.loads])):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"engine.{label} names must be unique, repeated: {dupes}")
        prof = self.step_profile
        if prof and prof.batches[-1] * prof.query_tokens[-1] > self.max_num_batched_tokens:
            raise ValueError("engine.step_profile: largest batch x query_tokens exceeds max_num_batched_tokens "
                             f"{self.max_num_batched_tokens} (the step would be chunked)")
        if prof and prof.batches[-1] > self.max_num_seqs:
            raise ValueError(f"engine.step_profile: largest batch exceeds max_num_seqs {self.max_num_seqs}")
        if prof and prof.context_lens[-1] + prof.query_tokens[-1] + prof.output_tokens > self.max_model_len:
            raise ValueError("engine.step_profile: context + query + output tokens exceed max_model_len")
        if self.profile_every_variant and prof is None:
            raise ValueError("engine.profile_every_variant: needs engine.step_profile (the grid each server measures)")
        if self.reference is not None:
            if prof is None:
                raise ValueError("engine.reference: needs engine.step_profile (its points are the profile's)")
            grid = {(b, q, c) for b in prof.batches for q in prof.query_tokens for c in prof.context_lens}
            off = [list(p) for p in self.reference.points if tuple(p) not in grid]
            if off:
                raise ValueError(f"engine.reference.points {off}: not on engine.step_profile's grid "
                                 "(batches x query_tokens x context_lens)")
            if len(set(self.reference.points)) != len(self.reference.points):
                raise ValueError("engine.reference.points: repeated")
        for load in self.loads:
            if load.prompt_tokens + load.output_tokens > self.max_model_len:
                raise ValueError(f"engine.loads {load.name!r}: prompt_tokens + output_tokens exceed max_model_len "
                                 f"{self.max_model_len}")
        return self
