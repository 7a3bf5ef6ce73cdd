"""Epoch checkpoints for `finetune/run.py --resume`.

    <run>/checkpoints/epoch-<k>.pt            model, optimizer, scheduler, RNG states, early-stopping state, history,
                                              MLflow run id (torch.save; read back with weights_only=True)
    <run>/checkpoints/best-epoch-<k>.safetensors   the best-dev weights so far (what test is evaluated with)

Every file is written to a temporary name, flushed to disk and renamed, so a kill during a save leaves the previous
checkpoint intact and never a half-written one under a checkpoint's name. The last `keep` epoch checkpoints stay;
a latest one that cannot be read (truncated, corrupt) is reported and the one before it is used.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

from common.errors import MmieError

EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")
REQUIRED = ("epoch", "model", "optimizer", "scheduler", "rng", "generator", "best", "history")


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # a full disk or a file-size limit; torch wraps the OSError in its writer
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise MmieError(f"cannot write {path} ({first}); the checkpoints saved before it are intact: free space "
                        f"and continue with --resume") from None
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself reaches the disk
    finally:
        os.close(fd)


def epochs_saved(ckpt_dir: Path) -> list[int]:
    """Epochs with a checkpoint file, newest first."""
    if not ckpt_dir.is_dir():
        return []
    found = (EPOCH_RE.match(p.name) for p in ckpt_dir.iterdir())
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def save_best(ckpt_dir: Path, epoch: int, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"best-epoch-{epoch}.safetensors"
    data = save({k: v.detach().contiguous() for k, v in state.items()})
    _atomic_write(path, lambda f: f.write(data))
    return path


def load_best(ckpt_dir: Path, epoch: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = ckpt_dir / f"best-epoch-{epoch}.safetensors"
    try:
        return load_file(str(path))
    except Exception as e:  # OSError, or safetensors' own error on a damaged file
        raise MmieError(f"{path}: cannot read the best-dev weights ({type(e).__name__}: {e})") from None


def save_epoch(ckpt_dir: Path, state: dict, keep: int = 2) -> Path:
    """Write epoch-<state["epoch"]>.pt atomically, then drop all but the newest `keep` epoch checkpoints and
    best-weight files (the best epoch never decreases, so the kept checkpoints refer to the newest best files)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / f"epoch-{state['epoch']}.pt"
    _atomic_write(path, lambda f: torch.save(state, f))
    for epoch in epochs_saved(ckpt_dir)[keep:]:
        (ckpt_dir / f"epoch-{epoch}.pt").unlink(missing_ok=True)
    bests = sorted((int(p.stem.rsplit("-", 1)[1]), p) for p in ckpt_dir.glob("best-epoch-*.safetensors"))
    for _, p in bests[:-keep]:
        p.unlink(missing_ok=True)
    return path


def load_latest(ckpt_dir: Path) -> dict:
    """The newest readable epoch checkpoint; unreadable newer ones are named on stderr and skipped."""
    epochs = epochs_saved(ckpt_dir)
    if not epochs:
        raise MmieError(f"--resume: no checkpoint in {ckpt_dir} (a run writes one after each epoch)")
    problems = []
    for epoch in epochs:
        path = ckpt_dir / f"epoch-{epoch}.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated zip, bad pickle, wrong type: torch raises several kinds
            problems.append(f"{path.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
            problems.append(f"{path.name}: not a fine-tuning checkpoint")
            continue
        if not (ckpt_dir / f"best-epoch-{state['best']['epoch']}.safetensors").is_file():
            problems.append(f"{path.name}: its best-dev weights best-epoch-{state['best']['epoch']}.safetensors "
                            "are missing")
            continue
        for p in problems:
            print(f"--resume: skipped unreadable checkpoint {p}", file=sys.stderr)
        return state
    raise MmieError(f"--resume: no readable checkpoint in {ckpt_dir} ({'; '.join(problems)})")
