"""Streaming reader of the pretraining shards (WebDataset).

    shards  -> epoch-seeded shard shuffle (same order on every rank) -> split_by_node -> split_by_worker
            -> tar samples -> seeded sample shuffle -> skip (resume) -> decode -> to tensors -> batches of dicts

A batch: {"image": (B, 3, S, S), "input_ids": (B, T), "attention_mask": (B, T), "match": (B,),
"box_mask": (B, NB, P) bool patch cells covered by each box, "box_valid": (B, NB), "ent_target": (B, NB, E)
and "rel_target": (B, R) soft labels (top-k entries renormalised), "keys": [str], "skipped": {reason: n}}, plus
"mlm_input_ids" and "mlm_labels" (B, T) when the MLM term is on (pretrain/masking.py).
Bad samples are skipped and counted (log-and-continue), never fatal.
"""
from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from common.errors import DataError, MmieError
from pretrain.masking import mask_tokens

log = logging.getLogger(__name__)


class SkipCounter(Counter):
    """The WebDataset handler of a pipeline: counts every bad sample by reason (logging the first few) and keeps
    going. Its Collate owns it and drains it into each batch ("skipped"); each DataLoader worker has its own copy,
    so the counts travel with the batches; what is left after an epoch's last batch the trainer drains."""

    def __call__(self, exn: Exception) -> bool:
        reason = type(exn).__name__
        self[reason] += 1
        if self[reason] <= 3:
            log.warning("skipping a bad sample (%s: %s)", reason, str(exn)[:200])
        return True

    def drain(self) -> dict[str, int]:
        out = dict(self)
        self.clear()
        return out


@dataclass(frozen=True)
class ImageSpec:
    """What the vision encoder needs: square size, normalisation and its patch grid (rows, cols)."""
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    grid: tuple[int, int]

    @classmethod
    def of(cls, encoder) -> "ImageSpec":
        return cls(encoder.image_size, tuple(encoder.mean), tuple(encoder.std), tuple(encoder.grid))


def read_shard_dir(shard_dir: str | Path) -> tuple[list[str], dict, dict]:
    """(shard paths, manifest, vocab) with the checks that turn a confusing failure into one clear line."""
    shard_dir = Path(shard_dir)
    manifest_path, vocab_path = shard_dir / "manifest.json", shard_dir / "vocab.json"
    if not manifest_path.is_file():
        raise DataError(f"{shard_dir}: no manifest.json — not a shard directory (python -m pretrain.prepare "
                        "makes one)")
    if not vocab_path.is_file():
        raise DataError(f"{shard_dir}: no vocab.json beside the shards")
    manifest = json.loads(manifest_path.read_text())
    vocab = json.loads(vocab_path.read_text())
    shards = [shard_dir / s for s in manifest.get("shards", [])]
    if not shards:
        raise DataError(f"{shard_dir}: the manifest lists no shards (0 samples were written)")
    missing = [s.name for s in shards if not s.is_file()]
    if missing:
        raise DataError(f"{shard_dir}: shard {missing[0]} listed in manifest.json is missing")
    if manifest.get("vocab_digest") != vocab.get("digest"):
        raise DataError(f"{shard_dir}: vocab.json (digest {vocab.get('digest')}) does not match the shards "
                        f"(manifest says {manifest.get('vocab_digest')})")
    return [str(s) for s in shards], manifest, vocab


def box_patch_mask(boxes: torch.Tensor, width: float, height: float, grid: tuple[int, int]) -> torch.Tensor:
    """(NB, 4) pixel boxes -> (NB, gh * gw) bool: cells whose centre lies in the box; a box smaller than a cell
    gets the cell holding its centre."""
    gh, gw = grid
    cy = (torch.arange(gh, dtype=torch.float32) + 0.5) * height / gh  # (gh,)
    cx = (torch.arange(gw, dtype=torch.float32) + 0.5) * width / gw  # (gw,)
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))  # each (NB, 1)
    inside_y = (cy[None] >= y0) & (cy[None] < y1)  # (NB, gh)
    inside_x = (cx[None] >= x0) & (cx[None] < x1)  # (NB, gw)
    mask = (inside_y[:, :, None] & inside_x[:, None, :]).reshape(len(boxes), gh * gw)  # (NB, P)
    r = ((y0 + y1)[:, 0] / 2 * gh / height).long().clamp(0, gh - 1)
    c = ((x0 + x1)[:, 0] / 2 * gw / width).long().clamp(0, gw - 1)
    empty = ~mask.any(1)
    mask[empty, (r * gw + c)[empty]] = True
    return mask


def _dense(ids: list[int], probs: list[float], size: int) -> torch.Tensor:
    out = torch.zeros(size)
    if ids:
        out[torch.tensor(ids)] = torch.tensor(probs, dtype=torch.float32)
        out /= out.sum().clamp(min=1e-12)
    return out


class Collate:
    """Samples -> one batch dict. Tokenises captions and builds the box masks and dense soft targets."""

    def __init__(self, tokenizer, spec: ImageSpec, n_entities: int, n_relations: int, max_boxes: int,
                 max_length: int, mlm_prob: float = 0.0, seed: int = 0):
        """max_boxes, max_length: DataConfig's (the trainer passes its config; no second default here)."""
        self.tokenizer, self.spec = tokenizer, spec
        self.n_entities, self.n_relations = n_entities, n_relations
        self.max_boxes, self.max_length = max_boxes, max_length
        self.mlm_prob, self.seed = mlm_prob, seed
        self.epoch = -1  # set_epoch: the training epoch before each epoch's loader; -1: evaluation masks
        self.skips = SkipCounter()  # this pipeline's bad samples (build_pipeline uses it as the handler)

    def set_epoch(self, epoch: int) -> None:
        """MLM masks are drawn from (seed, epoch, key): fresh each epoch, the same after a resume; -1 for evaluation."""
        self.epoch = epoch

    def image_tensor(self, img) -> torch.Tensor:
        from common.zoo.vision import to_model_input

        return to_model_input(img, self.spec.size, self.spec.mean, self.spec.std)

    def __call__(self, samples: list[dict]) -> dict:
        B, NB, P = len(samples), self.max_boxes, self.spec.grid[0] * self.spec.grid[1]
        tok = self.tokenizer([s["txt"] for s in samples], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        box_mask = torch.zeros(B, NB, P, dtype=torch.bool)
        box_valid = torch.zeros(B, NB, dtype=torch.bool)
        ent_target = torch.zeros(B, NB, self.n_entities)
        rel_target = torch.zeros(B, self.n_relations)
        for i, s in enumerate(samples):
            meta = s["json"]
            boxes = torch.tensor(meta["boxes"][:NB], dtype=torch.float32).reshape(-1, 4)
            n = len(boxes)
            if n:
                box_mask[i, :n] = box_patch_mask(boxes, meta["width"], meta["height"], self.spec.grid)
                box_valid[i, :n] = True
                for j in range(n):
                    ent_target[i, j] = _dense(meta["ent_ids"][j], meta["ent_probs"][j], self.n_entities)
            rel_target[i] = _dense(meta["rel_ids"], meta["rel_probs"], self.n_relations)
        skipped = self.skips.drain()
        match = torch.tensor([s["json"]["match"] for s in samples], dtype=torch.float32)
        keys = [s["__key__"] for s in samples]
        mlm = {}
        if self.mlm_prob > 0:  # only matched pairs: there the image can tell what a masked word was
            t = self.tokenizer
            ids, labels = mask_tokens(tok["input_ids"], tok["attention_mask"], keys, (match > 0.5).tolist(),
                                      self.mlm_prob, t.mask_token_id, len(t), set(t.all_special_ids), self.seed,
                                      self.epoch)
            mlm = {"mlm_input_ids": ids, "mlm_labels": labels}
        return {"image": torch.stack([self.image_tensor(s["jpg"]) for s in samples]),
                "input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"],
                "match": match, "box_mask": box_mask, "box_valid": box_valid, "ent_target": ent_target,
                "rel_target": rel_target, "keys": keys, "skipped": skipped, **mlm}


def _check_sample(sample: dict) -> dict:
    for key in ("jpg", "txt", "json"):
        if key not in sample:
            raise DataError(f"sample {sample.get('__key__')} has no {key}")
    return sample


class EpochStages:
    """Shard shuffle (same on every rank), per-worker sample shuffle and resume skip, all seeded by epoch."""

    def __init__(self, seed: int, shuffle_buffer: int, epoch: int = 0, skip_batches: int = 0):
        self.seed, self.shuffle_buffer, self.epoch = seed, shuffle_buffer, epoch
        self.skip_batches = skip_batches  # batches this rank already consumed in the current epoch (resume)
        self.batch_size, self.num_workers = 1, 1

    def shuffle_shards(self, src):
        shards = list(src)
        random.Random(self.seed * 1000003 + self.epoch).shuffle(shards)
        yield from shards

    def shuffle_samples(self, src):
        from webdataset.utils import pytorch_worker_info

        rank, _, worker, _ = pytorch_worker_info()
        rng = random.Random(f"{self.seed}:{self.epoch}:{rank}:{worker}")
        buf: list = []
        for sample in src:
            buf.append(sample)
            if len(buf) >= self.shuffle_buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf

    def skip(self, src):
        """Drop what this worker yielded before the checkpoint: DataLoader hands out batches round-robin."""
        from webdataset.utils import pytorch_worker_info

        _, _, worker, num_workers = pytorch_worker_info()
        num_workers = max(1, num_workers)
        mine = len(range(worker, self.skip_batches, num_workers))
        n = mine * self.batch_size
        for i, sample in enumerate(src):
            if i >= n:
                yield sample


def rank_batches(samples_per_shard: list[int], seed: int, epoch: int, world_size: int, num_workers: int,
                 batch_size: int) -> list[int]:
    """Full batches each rank yields in `epoch` (partial=False), from the same shard shuffle and split as the
    pipeline. Distributed training runs min() of these per epoch so that no rank waits on another."""
    order = list(range(len(samples_per_shard)))
    random.Random(seed * 1000003 + epoch).shuffle(order)
    workers = max(1, num_workers)
    out = []
    for rank in range(world_size):
        mine = order[rank::world_size]
        out.append(sum(sum(samples_per_shard[s] for s in mine[w::workers]) // batch_size for w in range(workers)))
    return out


def build_pipeline(shards: list[str], collate: Collate, batch_size: int, stages: EpochStages,
                   resampled: bool = False, epoch_batches: int | None = None, world_size: int = 1,
                   num_workers: int = 0, partial: bool = True, split_nodes: bool = True):
    """`partial=False` drops each worker's last incomplete batch (equal-size batches for training);
    `split_nodes=False` gives every rank all the shards (evaluation)."""
    import webdataset as wds

    if not split_nodes:
        world_size = 1
    if not resampled and len(shards) < world_size * max(1, num_workers):
        raise MmieError(f"{len(shards)} shards for {world_size} ranks x {max(1, num_workers)} workers: each "
                        "reader needs a shard of its own (write smaller shards with --shard-size, use fewer "
                        "workers, or resampled mode)")
    stages.batch_size, stages.num_workers = batch_size, max(1, num_workers)
    source = [wds.ResampledShards(shards, seed=stages.seed, deterministic=True)] if resampled else [
        wds.SimpleShardList(shards), stages.shuffle_shards, *([wds.split_by_node] if split_nodes else []),
        wds.split_by_worker]
    pipeline = wds.DataPipeline(
        *source,
        wds.tarfile_to_samples(handler=collate.skips),
        stages.shuffle_samples,
        stages.skip,
        wds.decode("pil", handler=collate.skips),
        wds.map(_check_sample, handler=collate.skips),
        wds.batched(batch_size, collation_fn=collate, partial=partial),
    )
    if epoch_batches is not None:
        pipeline = pipeline.with_epoch(epoch_batches)
    return pipeline


def make_loader(pipeline, num_workers: int = 0):
    """A DataLoader over an already-batched pipeline (batch_size=None), workers split the shards. Workers are
    spawned, not forked: a fork copies locks that other threads (torch, tokenizers, MLflow) may hold, and the
    child can deadlock on them."""
    # its own generator: a DataLoader otherwise draws its workers' base seed from the global torch RNG each time
    # it is iterated, so a run resumed mid-epoch would shift every later dropout mask (the pipeline's shuffles and
    # masks are seeded explicitly and never read that seed)
    return torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=num_workers, persistent_workers=False,
                                       multiprocessing_context="spawn" if num_workers > 0 else None,
                                       generator=torch.Generator().manual_seed(0))
