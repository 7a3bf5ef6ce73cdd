"""The plan of a `pretrain.prepare` run: every unit of work, its inputs and its output name, fixed before any worker
runs (the img2dataset pattern), so the bytes written do not depend on which backend runs the units, how many
workers there are or in what order they finish.

Two kinds of unit, in two phases:
- a LabelUnit is up to `batch_size` distinct pictures, in the order the annotations first use them; its worker
  decodes them, runs the detector and the teacher over them as one batch and returns each picture's boxes and
  soft labels (or why it cannot be used). The teacher's floats depend on the batch a picture is in, so the batches
  are the plan's, never what a cache happens to lack; each picture is labelled exactly once.
- a ShardUnit is `shard_size` consecutive pairs; its worker writes `shard-%06d.tar` from them and the labels of
  their pictures. A pair whose picture could not be used is skipped and counted, so a shard may hold fewer than
  `shard_size` samples (the manifest lists each shard's count); a shard left with none is not written.
"""
from __future__ import annotations

from dataclasses import dataclass

from pretrain.newsclippings import Pair

SHARD_PATTERN = "shard-%06d.tar"


@dataclass(frozen=True)
class LabelUnit:
    index: int
    images: tuple[str, ...]  # picture paths, in first-use order

    @property
    def name(self) -> str:
        return f"labels-{self.index:06d}.json"


@dataclass(frozen=True)
class ShardUnit:
    index: int
    pairs: tuple[Pair, ...]

    @property
    def name(self) -> str:
        return SHARD_PATTERN % self.index

    @property
    def images(self) -> set[str]:
        return {str(p.image_path) for p in self.pairs}


def make_plan(pairs: list[Pair], batch_size: int, shard_size: int) -> tuple[list[LabelUnit], list[ShardUnit]]:
    """The label units (distinct pictures in first-use order, `batch_size` at a time) and the shard units
    (`shard_size` consecutive pairs each)."""
    distinct = list(dict.fromkeys(str(p.image_path) for p in pairs))
    labels = [LabelUnit(i, tuple(distinct[s:s + batch_size]))
              for i, s in enumerate(range(0, len(distinct), batch_size))]
    shards = [ShardUnit(i, tuple(pairs[s:s + shard_size])) for i, s in enumerate(range(0, len(pairs), shard_size))]
    return labels, shards
