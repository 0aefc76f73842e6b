"""What the engine stage serves from a run: the target's checkpoint directory and the run's exported drafters.

    model_dir = served_model_dir(cfg, ctx)                 # engine.model, target.path, embedded cache, or
                                                           # <run>/engine/export/target for a tiny-* target
    drafter_dir = exported_drafter(ctx, "eagle3", target)  # <run>/engine/export/eagle3 (vLLM eagle3/dflash layout)

A tiny-* target is built in memory (random weights from a seed); it is saved once, with the Qwen3 tokenizer,
as a checkpoint directory vLLM can load. A variant's `speculative.drafter` names a trained drafter of the
run; it is exported (real/export_vllm.py) from <run>/drafters/<name>, again when that checkpoint is newer.
"""
from __future__ import annotations

from pathlib import Path

from lab.errors import LabError
from lab.paths import expand_path
from real.embedded import embedded_model_dir

EXPORT_DIR = ("engine", "export")


def served_model_dir(cfg, ctx=None) -> Path:
    """The checkpoint directory vLLM serves: engine.model, target.path, the embedded model's cache, or (with
    the run's ctx) a tiny target saved under <run>/engine/export/target."""
    section = cfg.engine
    if section.model:
        path = expand_path(section.model)
    elif cfg.target.path:
        path = expand_path(cfg.target.path)
    elif cfg.target.name.startswith("tiny-"):
        if ctx is None:
            raise LabError(f"target.name {cfg.target.name!r}: built in memory, vLLM needs a checkpoint directory; "
                           "set engine.model or target.path")
        path = ctx.path(*EXPORT_DIR, "target")
        if not (path / "config.json").is_file():
            from real.export_vllm import export_target
            from real.targets import load_target

            export_target(load_target(cfg.target), path)
    else:
        path = embedded_model_dir(cfg.target.name)
    if not (path / "config.json").is_file():
        raise LabError(f"engine.model {path}: not a checkpoint directory (no config.json)")
    return path


def needs_drafters(section) -> bool:
    return any(v.speculative.drafter is not None for v in section.variants)


def exported_drafter(ctx, name: str, target) -> Path:
    """<run>/engine/export/<name>: the run's trained drafter `name` in vLLM's eagle3 or dflash layout
    (re-exported when the trained checkpoint is newer than the export)."""
    from real.drafters.trained import MODEL_FILE
    from real.export_vllm import export_drafter

    spec = next(s for s in ctx.cfg.drafters if s.name == name)  # the config validator checked it exists
    source = ctx.path("drafters", name)
    if not (source / MODEL_FILE).is_file():
        raise LabError(f"engine: speculative.drafter {name!r}: no trained weights at {source}/{MODEL_FILE}; "
                       "run the train stage first")
    out = ctx.path(*EXPORT_DIR, name)
    done = out / "config.json"  # written last
    if not done.is_file() or done.stat().st_mtime < (source / MODEL_FILE).stat().st_mtime:
        export_drafter(spec, target, source, out)
    return out
