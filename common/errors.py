"""User-facing errors: raised with a one-line message, printed without a traceback by `cli_main`."""
from __future__ import annotations

import sys
from typing import Callable


class MmieError(Exception):
    """A problem the user can fix (bad path, bad config, bad input file): one line, no traceback."""


class ConfigError(MmieError):
    """A config file or override that does not match the schema."""


class ZooError(MmieError):
    """An encoder, teacher or detector name or weights path the offline zoo cannot resolve."""


class DataError(MmieError):
    """An input file that cannot be read as the format it claims (names the file and line)."""


def cli_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run `main(argv)`; an MmieError exits with status 2 and one line on stderr."""
    try:
        code = main(argv)
    except MmieError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
