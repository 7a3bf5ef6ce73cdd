"""FusionEncoder: text encoder + vision encoder + a BERT-style fusion transformer. It computes features, never
losses, and reads and writes the self-describing export directory that fine-tuning starts from.

    t = TextEncoder(caption)                      (B, T, D)
    v = proj(VisionEncoder(image).patches)        (B, P, D), v_cls = proj(pooled) (B, D)
    e = FusionLayers([t; v_cls; v] + type emb)    (B, T + 1 + P, D);  e_cls = e[:, 0]
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from common.errors import MmieError
from common.zoo import TextEncoder, build_vision_encoder

EXPORT_FILES = ("model_config.json", "model.safetensors", "text/config.json")


@dataclass
class ModelConfig:
    text: str = "minilm-l6"  # zoo name or local Hugging Face directory
    vision: str = "efficientnet-lite0"  # efficientnet-lite0 | clip:<arch>[:<weights>] | patch[:<p>[:<dim>]]
    image_size: int = 224
    fusion_layers: int = 2
    fusion_init: Literal["text-upper", "fresh", "split"] = "text-upper"  # the fusion layers: copies of the text
    # encoder's top layers stacked after it | new layers | split: the text encoder's top layers themselves, moved,
    # so the text alone runs only its lower layers (ALBEF's split; the same depth as the text encoder, not more)
    freeze_vision: bool = False


class FusionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, text: TextEncoder | None = None):
        super().__init__()
        self.cfg = cfg
        self.text = text or TextEncoder(cfg.text)
        self.vision = build_vision_encoder(cfg.vision, image_size=cfg.image_size)
        if cfg.freeze_vision:
            self.vision.requires_grad_(False)
        d = self.text.dim
        self.dim = d
        self.vision_proj = nn.Linear(self.vision.dim, d)
        self.vision_cls_proj = nn.Linear(self.vision.dim, d)
        self.type_emb = nn.Embedding(2, d)  # 0 text, 1 image
        self.patch_pos = nn.Parameter(torch.zeros(1, 1 + self.vision.num_patches, d))
        nn.init.normal_(self.patch_pos, std=0.02)
        self.fusion_norm = nn.LayerNorm(d)
        text_layers = self.text.model.encoder.layer
        if cfg.fusion_layers == 0:  # no joint layers: fuse() is the embedding step only (type/position + norm)
            self.fusion = nn.ModuleList()
        elif cfg.fusion_init == "split":
            if cfg.fusion_layers >= len(text_layers):
                raise MmieError(f"model.fusion_init=split moves the text encoder's top model.fusion_layers="
                                f"{cfg.fusion_layers} layers into the fusion; it has {len(text_layers)} (keep one)")
            k = len(text_layers) - cfg.fusion_layers
            self.fusion = nn.ModuleList(text_layers[k:])  # the same modules: pretrained, not copied
            self.text.model.encoder.layer = nn.ModuleList(text_layers[:k])  # its config keeps the full depth, so
            # an export rebuilds the whole encoder and splits it the same way
        elif cfg.fusion_init == "text-upper" and cfg.fusion_layers <= len(text_layers):
            self.fusion = nn.ModuleList(copy.deepcopy(text_layers[-cfg.fusion_layers:]))
        else:
            from transformers.models.bert.modeling_bert import BertLayer

            layer_cfg = copy.deepcopy(self.text.model.config)
            self.fusion = nn.ModuleList(BertLayer(layer_cfg) for _ in range(cfg.fusion_layers))
            for layer in self.fusion:
                layer.apply(self.text.model._init_weights)

    @property
    def fusion_pretrained(self) -> bool:
        """The fusion layers start from (copies of) the text encoder's upper layers, not fresh weights."""
        return self.cfg.fusion_init != "fresh"

    def pretrained_prefixes(self, under: str = "") -> tuple[str, ...]:
        """Name prefixes of the parameters that start from pretrained weights and so train at the encoder learning
        rate: the text and vision encoders, and the fusion layers when they are (copies of) the text encoder's upper
        layers; `under` is this module's name in its parent (e.g. "encoder."). The projections, type and patch
        embeddings and fresh fusion layers train at the head learning rate, also when they come from an export."""
        names = ("text.", "vision.") + (("fusion.",) if self.fusion_pretrained else ())
        return tuple(under + n for n in names)

    def layers_below_top(self, name: str, under: str = "") -> int:
        """How many layers a pretrained text-side parameter sits below the top of the text path, for layer-wise
        learning-rate decay (train.layer_decay): the pretrained fusion layers are the top (the last one 0), the text
        encoder's layers below them, its embeddings lowest; fresh fusion layers are not on this path (they train at
        the head rate, see pretrained_prefixes). `name` is a parameter's name, `under` this module's name in its
        parent as in pretrained_prefixes ("encoder." + "text.model.encoder.layer.2.output.dense.weight"); any other
        parameter (vision, projections) is at the top, 0."""
        name = name.removeprefix(under)
        n_text = len(self.text.model.encoder.layer)
        n_fusion = len(self.fusion) if self.fusion_pretrained else 0
        parts = name.split(".")
        if n_fusion and name.startswith("fusion.") and parts[1].isdigit():
            return n_fusion - 1 - int(parts[1])
        if name.startswith("text.model.encoder.layer.") and parts[4].isdigit():
            return n_text + n_fusion - 1 - int(parts[4])
        if name.startswith("text.model.embeddings."):
            return n_text + n_fusion
        return 0

    @property
    def tokenizer(self):
        return self.text.tokenizer

    def encode_image(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.project_image(self.vision(image))

    def project_image(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The vision encoder's {"patches": (B, P, Dv), "pooled": (B, Dv)} -> the text width D."""
        return {"patches": self.vision_proj(out["patches"]),  # (B, P, D)
                "cls": self.vision_cls_proj(out["pooled"])}  # (B, D)

    def fuse(self, text_tokens: torch.Tensor, text_mask: torch.Tensor, image_cls: torch.Tensor,
             image_patches: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        B, T, _ = text_tokens.shape
        img = torch.cat([image_cls[:, None], image_patches], 1) + self.patch_pos  # (B, 1 + P, D)
        if self.cfg.fusion_init == "split":  # the text states go on into the encoder's own upper layers exactly as
            # the lower layers left them (no type embedding, no second norm), so at the start the text path is
            # the pretrained encoder; only the image tokens are embedded and normed to meet them
            x = torch.cat([text_tokens, self.fusion_norm(img + self.type_emb.weight[1])], 1)  # (B, L, D)
        else:
            x = torch.cat([text_tokens + self.type_emb.weight[0], img + self.type_emb.weight[1]], 1)  # (B, L, D)
            x = self.fusion_norm(x)
        mask = torch.cat([text_mask, text_mask.new_ones(B, img.shape[1])], 1)  # (B, L)
        attn = create_bidirectional_mask(config=self.text.model.config, inputs_embeds=x, attention_mask=mask)
        for layer in self.fusion:
            x = layer(x, attn)
            x = x[0] if isinstance(x, tuple) else x
        return x  # (B, L, D)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image: torch.Tensor,
                **_) -> dict[str, torch.Tensor]:
        t = self.text(input_ids=input_ids, attention_mask=attention_mask)
        v = self.encode_image(image)
        e = self.fuse(t["tokens"], attention_mask, v["cls"], v["patches"])
        T = input_ids.shape[1]
        return {"text_tokens": t["tokens"], "text_cls": t["cls"], "text_pooled": t["pooled"],
                "image_patches": v["patches"], "image_cls": v["cls"],
                "fused": e, "fused_cls": e[:, 0], "fused_text": e[:, :T], "fused_patches": e[:, T + 1:]}

    # --- the export directory ("ckpt") -------------------------------------------------------------------
    def export(self, out: str | Path, state_dict: dict[str, torch.Tensor] | None = None, extra: dict | None = None):
        """model_config.json, model.safetensors (fp32), text/ (HF config + tokenizer), plus `extra` JSON files."""
        from safetensors.torch import save_file

        out = Path(out)
        (out / "text").mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in state.items()}
        save_file(state, str(out / "model.safetensors"))
        self.text.model.config.save_pretrained(out / "text")
        self.text.tokenizer.save_pretrained(out / "text")
        meta = {"format": "mmie-fusion-encoder/1", "model": asdict(self.cfg), "dim": self.dim,
                "vision_dim": self.vision.dim, "grid": list(self.vision.grid), "image_size": self.vision.image_size,
                "text_config": "text/config.json"}
        (out / "model_config.json").write_text(json.dumps(meta, indent=1) + "\n")
        for name, value in (extra or {}).items():
            (out / name).write_text(value if isinstance(value, str) else json.dumps(value, indent=1) + "\n")
        return out

    @classmethod
    def from_export(cls, path: str | Path) -> "FusionEncoder":
        import warnings

        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_dir():
            raise MmieError(f"export directory {path} does not exist")
        missing = [f for f in EXPORT_FILES if not (path / f).is_file()]
        if missing:
            raise MmieError(f"export {path} is incomplete: {missing[0]} is missing")
        try:
            meta = json.loads((path / "model_config.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MmieError(f"{path / 'model_config.json'}: not valid JSON ({e}); re-export the model") from None
        if not isinstance(meta, dict) or meta.get("format") != "mmie-fusion-encoder/1" or not isinstance(
                meta.get("model"), dict):
            raise MmieError(f"{path / 'model_config.json'}: not an mmie fusion-encoder export")
        try:
            cfg = ModelConfig(**meta["model"])
        except TypeError as e:
            raise MmieError(f"{path / 'model_config.json'}: field model: {e}") from None
        if cfg.vision.startswith("clip:"):  # the weights come from the export, not from the original file
            cfg = ModelConfig(**{**meta["model"], "vision": ":".join(cfg.vision.split(":")[:2])})
        text = TextEncoder(str(path / "text"), load_weights=False)
        text.name = meta["model"]["text"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*random initialisation.*")
            model = cls(cfg, text=text)
        model.cfg = ModelConfig(**meta["model"])
        try:
            state = load_file(str(path / "model.safetensors"))
        except Exception as e:  # safetensors raises its own error types for a truncated or garbled file
            raise MmieError(f"{path / 'model.safetensors'}: unreadable ({str(e)[:120]}); re-export the model") from None
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            keys = result.missing_keys or result.unexpected_keys
            raise MmieError(f"export {path}: weights do not match the architecture ({len(keys)} keys differ, "
                            f"e.g. {keys[0]})")
        return model
