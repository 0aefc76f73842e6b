"""The `lab` command.

    lab run experiments/smoke.yaml [--set decode.max_new_tokens=32 ...] [--stages evaluate,report]
    lab profile experiments/quickstart.yaml [--set profile.batch=[1,8]]   # the target's step times
    lab validate experiments/*.yaml
    lab targets [--prepare gemma3-270m]
    lab traces runs/<name>/<run_id>/traces

Errors a user can cause print one line `error: ...` and exit with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

from lab.config import STAGES, load_config
from lab.errors import LabError


def _parse_stages(text: str | None) -> list[str] | None:
    if text is None:
        return None
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise LabError(f"--stages: unknown stage(s) {unknown}; known: {list(STAGES)}")
    return stages


def cmd_run(args) -> int:
    from lab.runs import open_run
    from lab.stages import stage_function

    cfg = load_config(args.config, args.set)
    stages = _parse_stages(args.stages) or cfg.stages
    ctx = open_run(cfg, show_progress=not args.quiet)
    print(f"run directory: {ctx.root}")
    for stage in stages:
        if ctx.stage_done(stage) and not args.force:
            print(f"[{stage}] done already, skipped (use --force to redo)")
            continue
        if args.force:
            ctx.redo(stage)
        start = time.perf_counter()
        print(f"[{stage}] starting")
        stage_function(stage)(ctx)
        print(f"[{stage}] finished in {time.perf_counter() - start:.1f} s")
    report = ctx.path("REPORT.md")
    if report.exists():
        print(f"report: {report}")
    return 0


def cmd_profile(args) -> int:
    """`lab profile X.yaml`: the experiment's profile stage alone (step times of its target on its device)."""
    args.stages = "profile"
    return cmd_run(args)


def cmd_validate(args) -> int:
    for path in args.configs:
        cfg = load_config(path, args.set)
        print(f"{path}: ok (run id {cfg.resolved_run_id()}, stages {','.join(cfg.stages)})")
    return 0


def cmd_targets(args) -> int:
    embedded = importlib.import_module("real.embedded")  # lazy: lab itself never imports torch
    if args.prepare:
        path = embedded.prepare_target(args.prepare)
        print(f"{args.prepare}: ready at {path}")
        return 0
    for row in embedded.list_targets():
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0


def cmd_traces(args) -> int:
    from lab.metrics import tau_table, vllm_counters
    from lab.trace import read_traces

    frame = read_traces(args.path)
    print(f"{len(frame)} rows, tables {sorted(frame['table'].unique())}, "
          f"methods {sorted(frame['method'].unique())}, datasets {sorted(frame['dataset'].unique())}")
    table = tau_table(frame, by=("table", "method", "dataset", "temperature"))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for method, group in frame[frame["table"] == "rounds"].groupby("method"):
        print(f"{method}: vLLM counters {vllm_counters(group)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lab", description="DSpark Lab: speculative decoding experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an experiment's stages")
    run.add_argument("config")
    run.add_argument("--set", action="append", default=[], metavar="A.B=VALUE", help="dotted override")
    run.add_argument("--stages", help="comma-separated subset, e.g. evaluate,report")
    run.add_argument("--force", action="store_true", help="rerun stages already marked done")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)
    profile = sub.add_parser("profile", help="measure the target's step time over batch x query x context")
    profile.add_argument("config")
    profile.add_argument("--set", action="append", default=[], metavar="A.B=VALUE", help="dotted override")
    profile.add_argument("--force", action="store_true", help="measure again when a profile exists")
    profile.add_argument("--quiet", action="store_true", help="no progress bars")
    profile.set_defaults(func=cmd_profile)
    validate = sub.add_parser("validate", help="check experiment files against the schema")
    validate.add_argument("configs", nargs="+")
    validate.add_argument("--set", action="append", default=[], metavar="A.B=VALUE")
    validate.set_defaults(func=cmd_validate)
    targets = sub.add_parser("targets", help="list embedded targets, or prepare one")
    targets.add_argument("--prepare", metavar="NAME")
    targets.set_defaults(func=cmd_targets)
    traces = sub.add_parser("traces", help="summarize a trace file or directory")
    traces.add_argument("path")
    traces.set_defaults(func=cmd_traces)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
