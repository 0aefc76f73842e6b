"""The target's context window (and depth) from its config.json, read without loading the model (no torch): what
lets `lab validate` and `lab run` refuse a budget past it, or a tapped layer it lacks, before any stage spends its
hours.

    from lab.target_context import check_context, target_context
    target_context(cfg.target)           # (32768, '~/.cache/dspark-lab/gemma3-270m/config.json') or None
    check_context(cfg, cfg.stages)       # LabError "train.max_length = 40000 tokens exceeds the context ..."

Where the config comes from: a local checkpoint (`target.path`), the embedded Gemma3-270M's cache once built,
a weights-free preset (real/presets/<name>.json), the tiny test targets' TINY_CONTEXT. Unknown (the embedded
cache not built yet, a config.json that does not say): None, and the stage checks against the loaded target
(real/targets.py require_context, the same rule and wording).
"""
from __future__ import annotations

import json
from pathlib import Path

from lab.config import TINY_CONTEXT, TINY_LAYERS, ExperimentConfig, TargetSection
from lab.errors import LabError
from lab.paths import cache_root, expand_path

PRESET_DIR = Path(__file__).resolve().parent.parent / "real" / "presets"
TARGET_LOADING_STAGES = ("prepare", "train", "evaluate", "profile")  # the stages that load the target


def target_config_file(section: TargetSection) -> Path | None:
    """The config.json the target will be built from, where one is on disk now (None: not yet, or none)."""
    if section.init == "random":
        path = PRESET_DIR / f"{section.name}.json"
    elif section.path is not None:
        path = expand_path(section.path) / "config.json"
    elif section.name.startswith("tiny-"):
        return None
    else:  # the embedded model's cache (real/embedded.py), renamed into place only once complete
        path = cache_root() / section.name / "config.json"
    return path if path.is_file() else None


def config_size(path: Path, key: str) -> int | None:
    """A positive whole-number size of a config.json (of its text_config where it has one, as transformers'
    get_text_config reads it); None when it does not say. LabError naming the file when it is not JSON."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # a bad byte is a UnicodeDecodeError, a ValueError too
        raise LabError(f"{path}: not a readable config.json ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise LabError(f"{path}: config.json must hold a JSON object")
    text = config.get("text_config")
    value = (text if isinstance(text, dict) else config).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def context_of_config(path: Path) -> int | None:
    """max_position_embeddings of a config.json (see config_size)."""
    return config_size(path, "max_position_embeddings")


def target_size(section: TargetSection, key: str) -> tuple[int, str] | None:
    """(the target's config value `key`, where it comes from), or None when unknown before loading."""
    if section.init != "random" and section.path is None and section.name.startswith("tiny-"):
        tiny = {"max_position_embeddings": TINY_CONTEXT, "num_hidden_layers": TINY_LAYERS}
        return (tiny[key], f"its {key}") if key in tiny else None
    path = target_config_file(section)
    value = config_size(path, key) if path is not None else None
    return (value, f"its {key} in {path}") if value is not None else None


def target_context(section: TargetSection) -> tuple[int, str] | None:
    """(the target's context in tokens, where that number comes from), or None when unknown before loading."""
    return target_size(section, "max_position_embeddings")


def context_budgets(cfg: ExperimentConfig, stages) -> list[tuple[str, int]]:
    """(the fields, their tokens) each stage in `stages` runs the target over; the stages' own checks'
    budgets (real/prepare.py, real/train.py, real/evaluate.py)."""
    budgets = []
    if "prepare" in stages:
        budgets.append(("prepare.max_prompt_tokens + prepare.max_new_tokens",
                        cfg.prepare.max_prompt_tokens + cfg.prepare.max_new_tokens))
    train = cfg.train
    if "train" in stages and any(s.trained and (train.drafters is None or s.name in train.drafters)
                                 for s in cfg.drafters):
        budgets.append(("train.max_length", train.max_length))
    if "evaluate" in stages and cfg.prompts is not None:
        budgets.append(("prompts.max_prompt_tokens + decode.max_new_tokens",
                        cfg.prompts.max_prompt_tokens + cfg.decode.max_new_tokens))
    if "profile" in stages:  # its longest step: the largest cache plus the longest query appended to it
        budgets.append(("profile.context_len + profile.query_tokens",
                        max(cfg.profile.context_len) + max(cfg.profile.query_tokens)))
    return budgets


def check_tap_layers(cfg: ExperimentConfig, stages) -> None:
    """LabError when target.tap_layers names a layer the target lacks (or its last), where its depth is known and a
    stage of `stages` loads it (real/targets.py Target makes the same check once the model is loaded)."""
    taps = cfg.target.tap_layers
    if not taps or not set(stages) & set(TARGET_LOADING_STAGES):
        return
    known = target_size(cfg.target, "num_hidden_layers")
    if known is not None and any(i >= known[0] - 1 for i in taps):
        raise LabError(f"target.tap_layers {taps}: ids must lie in 0..{known[0] - 2} (the final layer is never "
                       f"tapped; {known[0]} layers, {known[1]})")


def check_context(cfg: ExperimentConfig, stages) -> None:
    """LabError at the first budget of `stages` past the target's context, where the context is known; and at a
    tapped layer the target lacks (check_tap_layers)."""
    check_tap_layers(cfg, stages)
    budgets = context_budgets(cfg, stages)
    known = target_context(cfg.target) if budgets else None
    if known is None:
        return
    limit, where = known
    for fields, needed in budgets:
        if needed > limit:
            raise LabError(f"{fields} = {needed} tokens exceeds the context of target {cfg.target.name} "
                           f"({limit}, {where}); lower {'them' if '+' in fields else 'it'}")
