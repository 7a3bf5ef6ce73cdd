"""Shared fixtures. Tests run offline (inside `unshare -n` under `make test`) on CPU."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import common  # noqa: F401  (sets the offline environment first)

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    return Path(os.environ.get("MMIE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shipped real datasets ($MMIE_DATA, default ../shared/data); tests skip where they are absent."""
    root = shared_data()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set MMIE_DATA)")
    return root


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic dataset in the real formats, made once per test session."""
    from common.synthetic import SynthConfig, generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(SynthConfig(seed=1, news=120, twitter=90, mnre=90, image_size=96), out)
    return out


def _prepare(news: Path, split: str, out: Path, vocab: Path | None = None) -> Path:
    from pretrain.prepare import parse, prepare

    args = ["--annotations", str(news / "annotations" / f"{split}.json"), "--data-json", str(news / "data.json"),
            "--images", str(news), "--out", str(out), "--entities", "30", "--max-boxes", "3",
            "--teacher-size", "64", "--shard-size", "20", "--top-k", "3"]
    prepare(parse(args + (["--vocab", str(vocab)] if vocab else [])))
    return out


@pytest.fixture(scope="session")
def tiny_shards(synth_dir, tmp_path_factory) -> dict[str, Path]:
    """Clean train/val shards of the synthetic NewsCLIPpings (train: ~190 samples in ~10 shards)."""
    root = tmp_path_factory.mktemp("tiny_shards")
    news = synth_dir / "newsclippings"
    train = _prepare(news, "train", root / "train")
    return {"train": train, "val": _prepare(news, "val", root / "val", vocab=train / "vocab.json")}


RAY_LEFTOVERS = ("ray/session_*", "ray/cluster-mmie-sweep.*", "ray-config-*", "ray_ssh_*")


@pytest.fixture(scope="session", autouse=True)
def remove_ray_leftovers():
    """Ray keeps session logs and cluster state under /tmp; remove what this test session's runs added."""
    import shutil

    tmp = Path("/tmp")
    before = {p for pattern in RAY_LEFTOVERS for p in tmp.glob(pattern)}
    yield
    for p in {p for pattern in RAY_LEFTOVERS for p in tmp.glob(pattern)} - before:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
