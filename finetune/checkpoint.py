"""A fine-tuning run's saved state: the trained model (model/ directory: save_model_dir, load_model_dir,
load_trained, used by the trainer, predict, evaluate and the MLflow model) and the epoch checkpoints for
`finetune/run.py --resume`.

    <run>/model/                              encoder/ (FusionEncoder export), heads.safetensors, classes.json,
                                              config.yaml

    <run>/checkpoints/epoch-<k>.pt            model, optimizer, scheduler, RNG states, early-stopping state, history,
                                              MLflow run id (torch.save; read back with weights_only=True)
    <run>/checkpoints/best-epoch-<k>.safetensors   the best-dev weights so far (what test is evaluated with)

Every file is written to a temporary name, flushed to disk and renamed, so a kill during a save leaves the previous
checkpoint intact and never a half-written one under a checkpoint's name. The last `keep` epoch checkpoints stay;
a latest one that cannot be read (truncated, corrupt) is reported and the one before it is used.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import torch

from common.atomic import atomic_write
from common.config import save_config
from common.errors import MmieError
from common.fusion import FusionEncoder
from finetune.config import FinetuneConfig
from finetune.model import Extractor

EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")
REQUIRED = ("epoch", "model", "optimizer", "scheduler", "rng", "generator", "best", "history")


def _atomic_write(path: Path, write) -> None:
    atomic_write(path, write, hint="the checkpoints saved before it are intact: free space and continue with --resume")


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


def load_encoder(cfg: FinetuneConfig) -> FusionEncoder:
    if cfg.init == "none":
        return FusionEncoder(cfg.model)
    return FusionEncoder.from_export(cfg.init)


def save_model_dir(model: Extractor, encoder: FusionEncoder, cfg: FinetuneConfig, classes: list[str],
                   out: Path) -> None:
    """A model/ directory: the encoder export, the heads (safetensors), the classes, the retrieval store
    (data.retrieve > 0) and the config."""
    from safetensors.torch import save_file

    encoder.export(out / "encoder")
    heads = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    save_file(heads, str(out / "heads.safetensors"))
    (out / "classes.json").write_text(json.dumps(classes) + "\n")
    if model.retriever is not None:
        model.retriever.save(out / "retrieval")
    save_config(cfg, out / "config.yaml")


def load_trained(run: Path) -> tuple[Extractor, FinetuneConfig]:
    """A fine-tuned model back from its run directory (for predict)."""
    if not (Path(run) / "model" / "heads.safetensors").is_file():
        raise MmieError(f"{run}: no model/ directory — not a finished fine-tuning run")
    return load_model_dir(Path(run) / "model", run)


def load_model_dir(model_dir: Path, run: Path | str | None = None) -> tuple[Extractor, FinetuneConfig]:
    """A fine-tuned model back from a run's model/ directory (or its copy in an MLflow model's artifacts)."""
    from safetensors.torch import load_file

    from common.config import load_config

    model_dir, run = Path(model_dir), run or model_dir
    cfg = load_config(FinetuneConfig, model_dir / "config.yaml")
    encoder = FusionEncoder.from_export(model_dir / "encoder")
    classes = json.loads((model_dir / "classes.json").read_text())
    model = Extractor(encoder, cfg, classes)
    try:
        heads = load_file(str(model_dir / "heads.safetensors"))
    except Exception as e:  # a truncated or garbled file: safetensors raises its own error types
        raise MmieError(f"{model_dir / 'heads.safetensors'}: unreadable ({str(e)[:120]})") from None
    missing = model.load_state_dict(heads, strict=False)
    older = ("none_margin", "relation_types")  # runs before them: margin 0, every type signature allowed
    bad = [k for k in missing.missing_keys if not k.startswith("encoder.") and k not in older]
    bad += list(missing.unexpected_keys)
    if bad:
        raise MmieError(f"{run}: saved heads do not match the model ({bad[0]})")
    if cfg.data.retrieve:
        from finetune.retrieval import Retriever

        model.retriever = Retriever.load(model_dir / "retrieval")
    return model.eval(), cfg
