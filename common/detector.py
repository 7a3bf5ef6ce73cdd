"""Object proposals for the entity-object teacher and for offline image descriptions.

    crops               deterministic multi-scale crop proposals (PROMU's own practice; offline default)
    yolo:<weights.pt>   an ultralytics YOLO checkpoint (e.g. one trained by `python -m pretrain.detector train`)

Both return, per image, a list of `Box(x0, y0, x1, y1, score, label)` in pixels of that image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from common.errors import ZooError


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float = 1.0
    label: str = ""

    def as_list(self) -> list[float]:
        return [round(self.x0, 1), round(self.y0, 1), round(self.x1, 1), round(self.y1, 1)]


class CropProposals:
    """The whole image, then overlapping windows at each scale (a 2 x 2 grid at 1/2, 3 x 3 at 1/3 ...)."""

    name = "crops"

    def __init__(self, scales: tuple[int, ...] = (1, 2, 3), max_boxes: int = 10):
        self.scales, self.max_boxes = scales, max_boxes

    def boxes(self, size: tuple[int, int]) -> list[Box]:
        w, h = size
        out = []
        for n in self.scales:
            bw, bh = w / n, h / n
            for r in range(n):
                for c in range(n):
                    out.append(Box(c * bw, r * bh, (c + 1) * bw, (r + 1) * bh, 1.0 / n, f"crop{n}"))
        return out[: self.max_boxes]

    def detect(self, images: list[Image.Image]) -> list[list[Box]]:
        return [self.boxes(im.size) for im in images]

    def labels(self, images: list[Image.Image]) -> list[list[str]]:
        return [[] for _ in images]  # crops carry no object names


ULTRALYTICS_OFF = {"sync": False, "hub": False, "mlflow": False, "raytune": False, "clearml": False, "comet": False,
                   "dvc": False, "tensorboard": False, "wandb": False, "neptune": False, "vscode_msg": False}


def quiet_ultralytics() -> None:
    """ultralytics' own telemetry and its logger integrations (it would open an MLflow run of its own, and a Ray
    Tune callback) are switched off; mmie logs to MLflow itself."""
    from ultralytics import settings

    settings.update({k: v for k, v in ULTRALYTICS_OFF.items() if k in settings})


class YoloDetector:
    def __init__(self, weights: str, max_boxes: int = 10, conf: float = 0.25, imgsz: int | None = None):
        path = Path(weights)
        if not path.is_file():
            raise ZooError(f"YOLO weights file {path} does not exist (train one: python -m pretrain.detector train)")
        quiet_ultralytics()
        from ultralytics import YOLO

        self.model = YOLO(str(path))
        self.name = f"yolo:{path.name}"
        self.max_boxes, self.conf = max_boxes, conf
        self.imgsz = imgsz or int(self.model.overrides.get("imgsz", 640) or 640)

    def detect(self, images: list[Image.Image]) -> list[list[Box]]:
        if not images:
            return []
        results = self.model.predict(images, conf=self.conf, imgsz=self.imgsz, verbose=False, device="cpu",
                                     max_det=self.max_boxes)
        names = self.model.names
        out = []
        for res in results:
            xyxy = res.boxes.xyxy.tolist()
            scores = res.boxes.conf.tolist()
            classes = res.boxes.cls.int().tolist()
            out.append([Box(*b, s, names[k]) for b, s, k in zip(xyxy, scores, classes)][: self.max_boxes])
        return out

    def labels(self, images: list[Image.Image]) -> list[list[str]]:
        return [[b.label for b in boxes] for boxes in self.detect(images)]


def build_detector(spec: str, max_boxes: int = 10):
    if spec == "crops":
        return CropProposals(max_boxes=max_boxes)
    if spec.startswith("yolo:") and len(spec) > len("yolo:"):
        return YoloDetector(spec[len("yolo:"):], max_boxes=max_boxes)
    raise ZooError(f"unknown detector {spec!r}: use crops or yolo:<weights.pt>")
