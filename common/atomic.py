"""Writing a file atomically: into a temp file beside it (its name carries the pid, so concurrent writers do not
collide), flushed and fsynced, then renamed over the target and the directory fsynced — a reader, or a run killed
mid-write, sees the old file or the new one, never half of one. A full disk is a one-line MmieError."""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

from common.errors import MmieError


def atomic_write(path: Path, write: Callable[[BinaryIO], object], hint: str = "") -> None:
    """`write(f)` fills the open temp file; `hint` ends the error message when the write fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk or a file-size limit; torch wraps the OSError in its writer
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise MmieError(f"cannot write {path} ({first}){'; ' + hint if hint else ''}") from None
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself reaches the disk
    finally:
        os.close(fd)
