"""User-facing errors: one clear line naming the field or path, exit code 2 (DESIGN.md rule 6).

Raise LabError anywhere a user's input is wrong; lab/cli.py turns it into `error: ...` on stderr and
exit status 2 without a traceback.
"""


class LabError(Exception):
    """An error the user caused and can fix (bad YAML, missing file, corrupt trace)."""

    exit_code = 2

    def __str__(self) -> str:
        """The message on one line: a wrapped library error (pandas' CSV parser, a JSON decoder) may carry line
        breaks, and the user gets one `error:` line."""
        return " ".join(line.strip() for line in super().__str__().splitlines() if line.strip())
