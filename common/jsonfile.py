"""Reading a JSON input file with one-line errors: a missing file and a file that is not UTF-8 JSON each stop with
a DataError whose wording the caller chooses (it knows what the file was meant to be)."""
from __future__ import annotations

import json
from pathlib import Path

from common.errors import DataError


def load_json(path: Path, missing: str, invalid: str):
    """The parsed content of `path`; DataError(missing) when it is not a file, DataError(f"{invalid} (reason)")
    when it is not UTF-8 JSON (a leading byte-order mark is allowed)."""
    if not path.is_file():
        raise DataError(missing)
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{invalid} ({e})") from None
