"""Reading a JSON input file with one-line errors: a missing file and a file that is not UTF-8 JSON each stop with
a DataError whose wording the caller chooses (it knows what the file was meant to be); writing one atomically."""
from __future__ import annotations

import json
from pathlib import Path

from common.atomic import atomic_write
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


def read_jsonl(path: Path) -> list[tuple[int, object]]:
    """(line number, parsed value) for each non-blank line of a JSON-lines file; DataError naming file:line for a
    line that is not UTF-8 or not JSON (a leading byte-order mark is allowed), or when the file does not exist."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    out = []
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if line.strip():
                try:
                    out.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
    return out


def write_json(path: Path, obj, **dumps) -> None:
    """`obj` as JSON, written atomically (common/atomic.py)."""
    atomic_write(path, lambda f: f.write(json.dumps(obj, **dumps).encode()))
