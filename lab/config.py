"""ExperimentConfig: the strict schema of experiments/*.yaml, with dotted overrides.

    cfg = load_config("experiments/smoke.yaml", overrides=["decode.max_new_tokens=16"])
    lab validate experiments/smoke.yaml

Unknown keys are rejected; every override is re-validated; every failure is a LabError that names
the file and the field.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from lab.config_base import DatasetSpec, Seed, StrictModel, YamlSwitch, validation_message
from lab.config_engine import EngineSection
from lab.config_sim import SimSection
from lab.config_train import DrafterSpec, PrepareSection, TrainSection
from lab.errors import LabError
from lab.paths import PathText, UserPath
from lab.slug import Slug, case_collision, check_shard_part
from lab.yaml_load import load_yaml_bytes, load_yaml_text

STAGES = ("prepare", "train", "evaluate", "profile", "engine", "fidelity", "calibrate", "sim", "report")
REAL_STAGES = ("prepare", "train", "evaluate")
# stage -> the optional sections it cannot run without (the real stages: prompts and drafters, above)
STAGE_SECTIONS = {"sim": ("sim",), "engine": ("engine",), "fidelity": ("engine",)}
EMBEDDED_TARGETS = ("gemma3-270m", "tiny-qwen3", "tiny-gemma3", "tiny-qwen3-hd32")
TINY_CONTEXT = 4096  # the tiny test targets' max_position_embeddings (real/targets.py tiny_target)
TINY_LAYERS = 6  # the tiny test targets' num_hidden_layers (real/targets.py tiny_target)
# Weights-free sizing targets (target.init: random): architecture from real/presets/<name>.json
PRESET_TARGETS = ("qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b",
                  "gemma3-270m", "gemma3-1b", "gemma3-4b", "gemma3-12b", "gemma3-27b")
RANDOM_INIT_NOTE = "timing only: acceptance meaningless"  # on every output of a random-init target's run


class TargetSection(StrictModel):
    name: str = Field("gemma3-270m", description="embedded target name, or a label when `path` is set")
    path: UserPath | None = Field(None, description="local checkpoint directory (Qwen3 / Gemma3); $VARS expand")
    device: str = Field("cpu", pattern=r"^(cpu|cuda|cuda:\d+|mps)$", description="cpu, cuda, cuda:N or mps")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 where the device runs it natively (CUDA; CPUs with AVX512-BF16 "
        "or AMX), float32 elsewhere; the resolved dtype is recorded in the run's target.json and REPORT.md")
    tap_layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="target layers fed to drafters (each below the last); default: spec rule")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="random: a weights-free sizing target built from a shipped config "
        f"(name one of {PRESET_TARGETS}); timing only, acceptance meaningless")
    engine: Literal["auto", "eager", "static", "graphs"] = Field(
        "auto", description="target forward: eager (DynamicCache), static (StaticCache), graphs (StaticCache "
        "+ CUDA graphs, CUDA only); auto = graphs on CUDA, eager elsewhere")
    cpu_linear: Annotated[Literal["auto", "on", "off"], YamlSwitch] = Field(
        "auto", description="CPU only: compute few-row linear layers (verify steps, small batches) as W @ x^T "
        "where that measured faster on this CPU (auto; whole forward passes of the model measured once and kept in "
        "the lab's cache), "
        "always up to 64 rows (on), or never (off); real/cpu_linear.py")

    @model_validator(mode="after")
    def _embedded_or_path(self):
        if self.init == "random":
            if self.path is not None:
                raise ValueError("target.path: a random-init target is built from a preset; drop path")
            if self.name not in PRESET_TARGETS:
                raise ValueError(f"target.name {self.name!r}: no preset for init: random; one of {PRESET_TARGETS}")
        elif self.path is None and self.name not in EMBEDDED_TARGETS:
            raise ValueError(f"target.name {self.name!r} is not embedded {EMBEDDED_TARGETS}; set target.path "
                             f"(or init: random for a weights-free preset {PRESET_TARGETS})")
        if self.engine == "graphs" and not self.device.startswith("cuda"):
            raise ValueError(f"target.engine graphs needs a CUDA device, not {self.device!r}")
        return self


class PromptsSection(StrictModel):
    datasets: list[DatasetSpec] = Field(min_length=1)
    shuffle_seed: Seed = 980406
    chat_template: bool = True
    max_prompt_tokens: int = Field(512, ge=8, description="longer prompts are left-truncated")

    @field_validator("datasets")
    @classmethod
    def _names_make_distinct_files(cls, datasets: list[DatasetSpec]) -> list[DatasetSpec]:
        """Each dataset names its own trace, decode and tau rows: no '__' (the trace file name's separator),
        no repeat, and no two that differ only by case (one file on macOS' or Windows' filesystem)."""
        for i, spec in enumerate(datasets):
            try:
                check_shard_part(spec.name)
            except ValueError as exc:
                raise ValueError(f"[{i}].name {exc}") from None
        clash = case_collision([spec.name for spec in datasets], "dataset")
        if clash:
            raise ValueError(clash)
        return datasets


class DecodeSection(StrictModel):
    max_new_tokens: int = Field(128, ge=1)
    temperatures: list[float] = Field(default_factory=lambda: [0.0])
    baseline: bool = Field(True, description="also run plain autoregressive decoding for wall-clock speedup")
    stop_at_eos: bool = True
    anchors: bool = Field(True, description="greedy runs also record dense anchor traces (exact sim replay)")
    time_budget_s: float | None = Field(
        None, gt=0, description="evaluate's wall-clock budget: each (dataset, temperature) group gets an equal "
        "share of what is left and stops before a prompt its own pace says would overrun it (at least one "
        "prompt per group); evaluate.json and REPORT.md say how many prompts ran. None: every prompt")

    @field_validator("temperatures")
    @classmethod
    def _non_negative(cls, values: list[float]) -> list[float]:
        if not values or any(t < 0 for t in values):
            raise ValueError("temperatures must be a non-empty list of values >= 0")
        # trace and decode files are named T{t:g}: a repeat (or two values that print alike) decoded the
        # group twice into the same files
        names = [f"{t:g}" for t in values]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"temperature {', '.join(repeated)} is given twice; each temperature once")
        return values


MAX_PROFILE_BATCH = 8192  # sim.engine.max_num_seqs's own bound


class ProfileSection(StrictModel):
    """`lab profile`: the target's forward step time on its device over batch x query tokens x context
    (written as step_profile.csv/json in the run directory; the simulator's `cost.profile: run`)."""

    batch: list[int] = Field(default_factory=lambda: [1, 4, 16], description="requests per step")
    query_tokens: list[int] = Field(default_factory=lambda: [1, 4, 8],
                                    description="new tokens per request (1: decode; 1 + drafts: verify)")
    context_len: list[int] = Field(default_factory=lambda: [128, 512], description="cached tokens per request")
    repeats: int = Field(5, ge=1, le=1000, description="timed steps per point (median and p90 reported)")
    warmup: int = Field(2, ge=0, le=100, description="untimed steps before each point's timed ones")
    seed: Seed = 0

    @model_validator(mode="after")
    def _grid(self):
        for name, low in (("batch", 1), ("query_tokens", 1), ("context_len", 0)):
            values = getattr(self, name)
            if not values or any(v < low for v in values) or len(set(values)) != len(values):
                raise ValueError(f"profile.{name} must be a non-empty list of distinct integers >= {low}")
        if max(self.batch) > MAX_PROFILE_BATCH:  # 10^12 passed validate and asked torch for a cache of that many rows
            raise ValueError(f"profile.batch {max(self.batch):,}: at most {MAX_PROFILE_BATCH:,} requests per step "
                             "(vLLM's max_num_seqs tops out there)")
        return self


class ExperimentConfig(StrictModel):
    name: Slug
    seed: Seed = 0
    output_dir: PathText = "runs"
    run_id: Slug | None = Field(None, description="default: name + hash of the config, so reruns resume")
    stages: list[Literal[STAGES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["evaluate", "report"],
        description="stages `lab run` runs, in order (at least one: `stages: []` made a run directory and ran nothing)")
    threads: int | Literal["auto"] = Field(
        "auto", description="CPU intra-op threads; auto: the cores other processes leave free (lab/threads.py)")
    target: TargetSection = Field(default_factory=TargetSection)
    prompts: PromptsSection | None = Field(None, description="needed by the real stages (evaluate)")
    decode: DecodeSection = Field(default_factory=DecodeSection)
    drafters: list[DrafterSpec] = Field(default_factory=list, description="needed by the real stages")
    prepare: PrepareSection = Field(default_factory=PrepareSection)
    train: TrainSection = Field(default_factory=TrainSection)
    profile: ProfileSection = Field(default_factory=ProfileSection)
    sim: SimSection | None = None
    engine: EngineSection | None = Field(None, description="a real serving engine beside the lab (vLLM)")

    @field_validator("stages")
    @classmethod
    def _some_stage(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"empty; name at least one of {list(STAGES)}")
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed twice; each stage once")
        return value

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value):
        """One message for any value but a whole number >= 1 or auto (a YAML true / false: StrictModel's words)."""
        if isinstance(value, bool) or value == "auto" or isinstance(value, int) and value >= 1:
            return value
        raise ValueError(f"{value!r}: expected a number of threads >= 1, or auto")

    @model_validator(mode="after")
    def _real_stages_have_inputs(self):
        real = [s for s in self.stages if s in REAL_STAGES]
        if real and self.prompts is None:
            raise ValueError(f"stages {real} need a prompts section")
        if real and not self.drafters:
            raise ValueError(f"stages {real} need at least one drafter")
        return self

    def require_real_inputs(self, stage: str) -> None:
        """Raise LabError when a real stage was asked for (e.g. via --stages) without its sections."""
        if self.prompts is None or not self.drafters:
            raise LabError(f"stage {stage!r} needs the experiment's prompts and drafters sections")

    def require_sections(self, stage: str) -> None:
        """Raise LabError when `stage` (e.g. named in --stages) lacks a section it reads: checked before a
        run directory is created (lab/preflight.py), so a mistaken --stages leaves nothing behind."""
        if stage in REAL_STAGES:
            self.require_real_inputs(stage)
        for section in STAGE_SECTIONS.get(stage, ()):
            if getattr(self, section) is None:
                raise LabError(f"stage {stage!r} needs the {section}: section in the experiment YAML")
        if stage == "fidelity" and not self.engine.loads:  # its comparison of nothing ended in pandas' concat error
            raise LabError("engine.loads: empty; stage 'fidelity' compares the simulator with the engine on them")

    @model_validator(mode="after")
    def _engine_drafters_exist(self):
        specs = {d.name: d for d in self.drafters}
        for variant in self.engine.variants if self.engine else []:
            spec, name = variant.speculative, variant.speculative.drafter
            if name is None:
                continue
            drafter = specs.get(name)
            if drafter is None or drafter.method != spec.method:
                found = f"a {drafter.method} drafter" if drafter else "not in drafters"
                article = "an" if spec.method[0] in "aeiou" else "a"
                raise ValueError(f"engine.variants {variant.name!r}: speculative.drafter {name!r} must name "
                                 f"{article} {spec.method} drafter of this experiment ({found})")
            if spec.method == "dflash" and drafter.block_layout != "vllm":
                raise ValueError(f"engine.variants {variant.name!r}: speculative.drafter {name!r} has block_layout "
                                 f"{drafter.block_layout!r}; only block_layout vllm exports to vLLM's DFlash")
            if spec.method == "dflash" and spec.num_speculative_tokens != drafter.block_size:
                raise ValueError(f"engine.variants {variant.name!r}: speculative.num_speculative_tokens "
                                 f"{spec.num_speculative_tokens} != drafter {name!r} block_size {drafter.block_size}: "
                                 "vLLM's DFlash would run a block of another length than the one trained")
        return self

    @model_validator(mode="after")
    def _unique_drafter_names(self):
        names = [d.name for d in self.drafters]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"drafter names must be unique, repeated: {dupes}")
        clash = case_collision(names, "drafter")  # drafters/<name>/ and the trace files
        if clash:
            raise ValueError(f"drafters: {clash}")
        return self

    def content_hash(self) -> str:
        # what does not change results: the run's name for itself, which stages run, threads, the engine's port
        payload = self.model_dump(mode="json", exclude={"run_id": True, "stages": True, "threads": True,
                                                        "engine": {"port"}})
        for drafter in payload.get("drafters") or []:  # the default layout: run ids from before the key stay
            if drafter.get("block_layout") == "lab":
                del drafter["block_layout"]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    def resolved_run_id(self) -> str:
        return self.run_id or f"{self.name}-{self.content_hash()}"


def _format_validation_error(source: str, exc: ValidationError) -> str:
    # a check across sections (engine variants vs drafters) names its fields itself: no "<root>: " before it
    return f"{source}: {validation_message(exc, blank='')}"


def apply_override(data: dict, dotted: str) -> dict:
    """Return data with data[a][b][c] = value from 'a.b.c=value'; the value is parsed as YAML; list indices
    allowed. Copy-on-write: only the containers along the path are copied, `data` itself is not changed."""
    if "=" not in dotted:
        raise LabError(f"override {dotted!r}: expected KEY.PATH=VALUE")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise LabError(f"override {dotted!r}: empty key segment")
    value = load_yaml_text(raw, f"override {dotted!r}")
    root: Any = dict(data)
    node = root
    for part in parts[:-1]:
        node = _step_into(node, part, dotted)
    last = parts[-1]
    if isinstance(node, list):
        node[_list_index(node, last, dotted)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise LabError(f"override {dotted!r}: {'.'.join(parts[:-1])} is not a mapping")
    return root


def _list_index(node: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise LabError(f"override {dotted!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _shallow_copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value


def _step_into(node: Any, part: str, dotted: str) -> Any:
    """The child `part` of node, replaced in node by a shallow copy (a new mapping when missing) and returned."""
    if isinstance(node, list):
        index = _list_index(node, part, dotted)
        node[index] = _shallow_copy(node[index])
        return node[index]
    if isinstance(node, dict):
        child = node.get(part)
        node[part] = {} if child is None else _shallow_copy(child)
        return node[part]
    raise LabError(f"override {dotted!r}: cannot descend into {part!r}")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise LabError(f"{path}: is a directory, not an experiment file (e.g. {path}/x.yaml)")
    if not path.is_file():
        raise LabError(f"{path}: experiment file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise LabError(f"{path}: cannot read ({exc.strerror})") from None
    data = load_yaml_bytes(raw, str(path))
    if data is None:
        raise LabError(f"{path}: empty; an experiment needs at least `name:` (see experiments/smoke.yaml)")
    if not isinstance(data, dict):
        raise LabError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def config_from_dict(data: dict, source: str = "<config>", overrides: list[str] | None = None) -> ExperimentConfig:
    # No deep copy: overrides copy only what they change, and the loader bounded alias expansion.
    for item in overrides or []:
        data = apply_override(data, item)
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise LabError(_format_validation_error(source, exc)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    return config_from_dict(load_yaml(path), str(path), overrides)


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
