"""Write a metrics report as JSON plus plots: per-type F1 bars (entities, relations), for relation extraction the
confusion matrix, and a run's training curves (dev P/R/F1 and train loss per epoch)."""
from __future__ import annotations

import json
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_per_type(scores: dict, title: str, path: Path) -> Path:
    plt = _plt()
    per = scores.get("per_type", {})
    names = list(per)
    f1 = [100 * per[n]["f1"] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(names) + 2), 3.2 + (0.9 if len(names) > 6 else 0)))
    bars = ax.bar(range(len(names)), f1, color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(names)), names, rotation=60 if len(names) > 6 else 0, ha="right" if len(names) > 6
                  else "center", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("F1 (%)")
    ax.set_title(f"{title}\nmicro F1 {100 * scores['f1']:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_confusion(confusion: dict[str, dict[str, int]], title: str, path: Path) -> Path:
    import numpy as np

    plt = _plt()
    labels = sorted(set(confusion) | {p for row in confusion.values() for p in row})
    m = np.array([[confusion.get(g, {}).get(p, 0) for p in labels] for g in labels], dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.35 * len(labels) + 3, 0.35 * len(labels) + 2.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    short = [lab.rsplit("/", 1)[-1] for lab in labels]
    ax.set_xticks(range(len(labels)), short, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), short, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold (row-normalised)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_curves(history: list[dict], title: str, path: Path) -> Path:
    """Per epoch: dev F1, precision, recall (entity F1 for MJERE; with train.ema the average's and the weights as
    trained, dev F1 being the better of the two, the latter only for the epochs that scored it) on the left, the
    train loss terms on the right."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, style in (("dev/f1", "-o"), ("dev/precision", "--"), ("dev/recall", ":"), ("dev/entity_f1", "-s"),
                       ("dev/f1_average", "-x"), ("dev/f1_live", "-.")):  # the last two with train.ema
        points = [(h["epoch"], 100 * h[key]) for h in history if key in h]
        if points:
            left.plot(*zip(*points), style, label=key.split("/", 1)[1], markersize=3)
    left.set_xlabel("epoch")
    left.set_ylabel("dev (%)")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    for key in ("train/loss", "train/main_loss"):
        if history and key in history[0]:
            right.plot(epochs, [h[key] for h in history], "-o", label=key.split("/", 1)[1], markersize=3)
    right.set_xlabel("epoch")
    right.set_ylabel("mean train loss")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(scores: dict, out_dir: str | Path, name: str, title: str) -> dict[str, Path]:
    """`<name>.json` and `<name>_f1.png` (+ `<name>_confusion.png` when there is a confusion matrix)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json"}
    paths["json"].write_text(json.dumps(scores, indent=1, sort_keys=True) + "\n")
    paths["f1"] = plot_per_type(scores, title, out_dir / f"{name}_f1.png")
    if "confusion" in scores:
        paths["confusion"] = plot_confusion(scores["confusion"], f"{title} — confusion",
                                            out_dir / f"{name}_confusion.png")
    return paths
