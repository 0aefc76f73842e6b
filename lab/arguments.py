"""Command-line parsing with the house rule for mistakes: one line `error: <command>: <what>`, exit status 2.

    from lab.arguments import ArgumentParser, positive_int
    parser = ArgumentParser(prog="python -m real.engine.drafter_check")
    parser.add_argument("--prompts", type=positive_int)

argparse itself prints its usage block and then `prog: error: ...` (two or more lines, and not the form every
other mistake takes). This parser prints the one line instead, naming the command and pointing at --help.
The `lab` command and every `python -m ...` tool a user runs build their parsers from it; its subparsers
inherit it.
"""
from __future__ import annotations

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's hook for every bad argument; it must not return
        sys.stderr.write(f"error: {self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def positive_int(text: str, low: int = 1) -> int:
    """An argparse `type`: an integer >= 1 (a count of prompts, tokens, repeats), or >= `low`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least {low}")
    return value


def nonnegative_int(text: str) -> int:
    """An argparse `type`: an integer >= 0 (a token id, an offset)."""
    return positive_int(text, low=0)


def int_list(text: str, low: int = 1) -> list[int]:
    """A comma-separated list of integers >= low ("1,4,8"); ArgumentTypeError naming the bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one integer")
    values = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{item!r}: must be at least {low}")
        values.append(value)
    return values


def data_check_parser(prog: str, doc: str, default_file, what: str, out: str, fit_help: str) -> ArgumentParser:
    """The command line of a check against a published data file (sim.moe_kernels, sim.gemm_kernels): --file,
    --out, --fit."""
    ap = ArgumentParser(prog=prog, description=doc.splitlines()[0])
    ap.add_argument("--file", default=str(default_file), help=f"data file of published {what}")
    ap.add_argument("--out", default=out, help="output directory")
    ap.add_argument("--fit", action="store_true", help=fit_help)
    return ap


def start_data_check(load, argv, prog: str, doc: str, default_file, what: str, out: str, fit_help: str):
    """The data checks' start in one call: their command line (data_check_parser) parsed from argv, the data file
    loaded and --out made (load_inputs: None on a user's mistake, the one error line printed), and the clocks:
    (args, data or None, process CPU time, wall time)."""
    import time

    args = data_check_parser(prog, doc, default_file, what, out, fit_help).parse_args(argv)
    return args, load_inputs(load, args), time.process_time(), time.perf_counter()


def write_check_outputs(out, tables: dict, md_name: str, text: str, cpu0: float, wall0: float) -> int:
    """The data checks' end: each table of `tables` (file name -> DataFrame; None: not written) as csv and `text` as
    `md_name` into `out` (atomically), the text printed, wall and process CPU time since (cpu0, wall0) on stderr;
    returns exit code 0."""
    import time
    from pathlib import Path

    from lab.io import write_text_atomic

    for name, table in tables.items():
        if table is not None:
            write_text_atomic(Path(out) / name, table.to_csv(index=False))
    write_text_atomic(Path(out) / md_name, text)
    print(text)
    print(f"wall {time.perf_counter() - wall0:.1f} s, process CPU {time.process_time() - cpu0:.1f} s", file=sys.stderr)
    return 0


def load_inputs(load, args):
    """The data checks' start (sim.allreduce_check, ...): load(args.file) and create args.out. On a user's mistake
    (LabError: a missing or bad file, an unwritable --out) prints the one `error:` line and returns None, for the
    caller to exit 2 with nothing written."""
    from lab.errors import LabError
    from lab.io import make_dirs

    try:
        data = load(args.file)
        make_dirs(args.out)
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return data
