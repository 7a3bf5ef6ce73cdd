"""Run under torchrun: each rank reads the shards through the real pipeline and writes the keys it saw."""
import json
import sys

import torch.distributed as dist

import common  # noqa: F401
from common.zoo.text import TextEncoder
from pretrain.data import Collate, EpochStages, ImageSpec, build_pipeline, make_loader, read_shard_dir


def main() -> None:
    shard_dir, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    shards, manifest, vocab = read_shard_dir(shard_dir)
    collate = Collate(TextEncoder("minilm-l6").tokenizer, ImageSpec(64, (0.5,) * 3, (0.5,) * 3, (2, 2)),
                      len(vocab["entities"]), len(vocab["relations"]), max_boxes=6, max_length=48)
    pipeline = build_pipeline(shards, collate, 4, EpochStages(seed=1, shuffle_buffer=8),
                              world_size=dist.get_world_size(), num_workers=1)
    keys = [k for batch in make_loader(pipeline, num_workers=1) for k in batch["keys"]]
    with open(f"{out}.{dist.get_rank()}", "w") as f:
        json.dump(keys, f)
    dist.destroy_process_group()


if __name__ == "__main__":  # DataLoader workers are spawned and re-import this file
    main()
