"""The target's context window from its config.json, read without loading the model (no torch): what lets
`lab validate` and `lab run` refuse a budget past it before any stage spends its hours.

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

from lab.config import TINY_CONTEXT, ExperimentConfig, TargetSection
from lab.errors import LabError
from lab.paths import cache_root, expand_path

PRESET_DIR = Path(__file__).resolve().parent.parent / "real" / "presets"


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


def context_of_config(path: Path) -> int | None:
    """max_position_embeddings of a config.json (of its text_config where it has one, as transformers'
    get_text_config reads it); None when it does not say. LabError naming the file when it is not JSON."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # a bad byte is a UnicodeDecodeError, a ValueError too
        raise LabError(f"{path}: not a readable config.json ({type(exc).__name__})") from None
    if not isinstance(config, dict):
        raise LabError(f"{path}: config.json must hold a JSON object")
    text = config.get("text_config")
    limit = (text if isinstance(text, dict) else config).get("max_position_embeddings")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None


def target_context(section: TargetSection) -> tuple[int, str] | None:
    """(the target's context in tokens, where that number comes from), or None when unknown before loading."""
    if section.init != "random" and section.path is None and section.name.startswith("tiny-"):
        return TINY_CONTEXT, "its max_position_embeddings"
    path = target_config_file(section)
    limit = context_of_config(path) if path is not None else None
    return (limit, f"its max_position_embeddings in {path}") if limit is not None else None


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
    return budgets


def check_context(cfg: ExperimentConfig, stages) -> None:
    """LabError at the first budget of `stages` past the target's context, where the context is known."""
    budgets = context_budgets(cfg, stages)
    known = target_context(cfg.target) if budgets else None
    if known is None:
        return
    limit, where = known
    for fields, needed in budgets:
        if needed > limit:
            raise LabError(f"{fields} = {needed} tokens exceeds the context of target {cfg.target.name} "
                           f"({limit}, {where}); lower {'them' if '+' in fields else 'it'}")
