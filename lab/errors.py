"""User-facing errors: one clear line naming the field or path, exit code 2 (DESIGN.md rule 6).

Raise LabError anywhere a user's input is wrong; lab/cli.py turns it into `error: ...` on stderr and
exit status 2 without a traceback.
"""


import functools
import sys
from collections.abc import Callable


class LabError(Exception):
    """An error the user caused and can fix (bad YAML, missing file, corrupt trace)."""

    exit_code = 2

    def __str__(self) -> str:
        """The message on one line: a wrapped library error (pandas' CSV parser, a JSON decoder) may carry line
        breaks, and the user gets one `error:` line."""
        return " ".join(line.strip() for line in super().__str__().splitlines() if line.strip())


def print_or_fail(build: Callable[[], str]) -> int:
    """A command-line tool's last step: print the text build() returns and return exit status 0; on a LabError
    print its one `error: ...` line to stderr instead and return 2 (nothing printed to stdout)."""
    try:
        text = build()
    except LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(text, end="")
    return 0


def exit_on_user_error(prog: str):
    """A decorator for the main() of a tool that builds lab sections from its flags (real.bench, real.bench_step):
    a LabError, or pydantic's ValidationError of a section a flag made invalid (--dtype float7, --prompts 0), prints
    one `error: PROG: ...` line to stderr and exits with status 2 instead of a traceback."""
    def decorate(main: Callable) -> Callable:
        @functools.wraps(main)
        def wrapped(*args, **kwargs):
            from pydantic import ValidationError

            try:
                return main(*args, **kwargs)
            except LabError as exc:
                print(f"error: {prog}: {exc}", file=sys.stderr)
            except ValidationError as exc:
                from lab.config_base import validation_message

                print(f"error: {prog}: {validation_message(exc, blank='the flags')}", file=sys.stderr)
            sys.exit(LabError.exit_code)
        return wrapped
    return decorate
