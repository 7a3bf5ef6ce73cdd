"""python -m pretrain.detector train --data DIR/newsclippings --out DIR [--epochs N] [--imgsz PX]

Trains a small ultralytics YOLO (yolov8n from its config, random init) on the synthetic scenes, whose boxes are
known (objects.json), so the `--detector yolo:<weights.pt>` path of pretrain.prepare runs for real offline."""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common.errors import DataError, cli_main


def write_yolo_dataset(src: Path, out: Path, val_fraction: float = 0.1, limit: int | None = None) -> Path:
    """objects.json + images -> YOLO layout (images/{train,val}, labels/{train,val}, data.yaml)."""
    objects_path = src / "objects.json"
    if not objects_path.is_file():
        raise DataError(f"{src}: no objects.json (boxes are known only for synthetic data: python -m common.synthetic)")
    data = json.loads(objects_path.read_text())
    kinds, objects = data["kinds"], data["objects"]
    ids = sorted(objects, key=int)[:limit]
    n_val = max(1, int(len(ids) * val_fraction))
    for split, chunk in (("val", ids[:n_val]), ("train", ids[n_val:])):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for item in chunk:
            img = src / "images" / f"{item}.jpg"
            shutil.copyfile(img, out / "images" / split / img.name)
            from PIL import Image

            with Image.open(img) as im:
                w, h = im.size
            lines = []
            for o in objects[item]:
                x0, y0, x1, y1 = o["box"]
                lines.append(f"{kinds.index(o['kind'])} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} "
                             f"{(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}")
            (out / "labels" / split / f"{item}.txt").write_text("\n".join(lines) + "\n")
    yaml_path = out / "data.yaml"
    names = "\n".join(f"  {i}: {k}" for i, k in enumerate(kinds))
    yaml_path.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml_path


def train(src: Path, out: Path, epochs: int, imgsz: int, batch: int, limit: int | None) -> dict:
    from ultralytics import YOLO

    from common.detector import quiet_ultralytics

    quiet_ultralytics()
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data_yaml = write_yolo_dataset(src, out / "yolo_data", limit=limit)
    model = YOLO("yolov8n.yaml")  # architecture from the package's config: no download
    model.train(data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, device="cpu", workers=0,
                project=str(out.resolve()), name="train", exist_ok=True, plots=False, amp=False, verbose=False,
                seed=0, deterministic=True)
    best = out / "train" / "weights" / "best.pt"
    if not best.is_file():
        best = out / "train" / "weights" / "last.pt"
    shutil.copyfile(best, out / "detector.pt")
    metrics = YOLO(str(out / "detector.pt")).val(data=str(data_yaml), imgsz=imgsz, batch=batch, device="cpu",
                                                 workers=0, plots=False, verbose=False,
                                                 project=str(out.resolve()), name="val", exist_ok=True)
    report = {"weights": str(out / "detector.pt"), "epochs": epochs, "imgsz": imgsz,
              "mAP50": round(float(metrics.box.map50), 4), "mAP50-95": round(float(metrics.box.map), 4),
              "wall_s": round(time.perf_counter() - t0, 1)}
    (out / "detector.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pretrain.detector", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train YOLO on the synthetic scenes' known boxes")
    t.add_argument("--data", type=Path, required=True, help="synthetic newsclippings/ dir (objects.json, images/)")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--imgsz", type=int, default=128)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--limit", type=int, default=None, help="use only the first N images")
    a = p.parse_args(argv)
    r = train(a.data, a.out, a.epochs, a.imgsz, a.batch, a.limit)
    print(f"YOLO trained {r['epochs']} epochs at {r['imgsz']}px in {r['wall_s']}s: val mAP50 {r['mAP50']:.3f}, "
          f"mAP50-95 {r['mAP50-95']:.3f} -> {r['weights']} (use --detector yolo:{r['weights']})")
    return 0


if __name__ == "__main__":
    cli_main(main)
