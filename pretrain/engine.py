"""The DeepSpeed side of pretraining: the process group (gloo on CPU, nccl on GPU), the engine's JSON config, moving
a batch to the device, telling a lost peer from other errors, and the shared-memory buffers DeepSpeed leaves."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from common.errors import ConfigError
from common.ports import free_port
from pretrain.config import PretrainConfig

ENGINE_ONLY = ("zero_optimization", "bf16", "fp16", "activation_checkpointing", "communication_data_type",
               "zero_allow_untested_optimizer", "flops_profiler", "aio", "data_types")


def init_distributed(timeout_s: int = 600) -> tuple[int, int, torch.device]:
    """Under the deepspeed launcher or torchrun the environment says who we are; alone we are rank 0 of 1.
    timeout_s bounds every collective: a rank that stops answering ends the others with an error, never a hang."""
    from datetime import timedelta

    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    cuda = torch.cuda.is_available()
    deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False,
                               timeout=timedelta(seconds=timeout_s))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return rank, world, device


def build_ops() -> str:
    """Build now the ops DeepSpeed JIT-compiles when its process group starts (on CPU its shared-memory comm op,
    ~35 s of g++; nothing on GPU), into TORCH_EXTENSIONS_DIR, so the first pretraining run starts at once.
    `make install` runs this (python -m pretrain.engine --build-ops)."""
    from deepspeed.comm.torch import build_shm_op

    return "shared-memory comm op built" if build_shm_op() is not None else "no op to build on this accelerator"


def deepspeed_config(cfg: PretrainConfig) -> dict:
    path = Path(cfg.deepspeed)
    if not path.is_file():
        raise ConfigError(f"DeepSpeed config {path} does not exist")
    ds = json.loads(path.read_text())
    extra = sorted(set(ds) - set(ENGINE_ONLY))
    if extra:
        raise ConfigError(f"{path}: {extra[0]} does not belong in the DeepSpeed JSON (engine features only: "
                          f"{', '.join(ENGINE_ONLY[:3])}, ...); batch size, lr and clipping come from the run config")
    if ds.get("fp16", {}).get("enabled") and not torch.cuda.is_available():
        raise ConfigError(f"{path}: fp16 needs a GPU; use bf16 or fp32 on the CPU")
    ds.update(train_micro_batch_size_per_gpu=cfg.data.batch_size, gradient_accumulation_steps=cfg.train.grad_accum,
              gradient_clipping=cfg.train.clip, steps_per_print=10 ** 9, zero_allow_untested_optimizer=True,
              wall_clock_breakdown=False)
    return ds


def to_device(batch: dict, device: torch.device, dtype: torch.dtype | None) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if dtype is not None and v.is_floating_point() and k in ("image",):
                v = v.to(dtype)
        out[k] = v
    return out


LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out", "timed out",
             "NCCL communicator was aborted")


def lost_peer(e: BaseException) -> bool:
    """A collective failed because another rank died or stopped answering."""
    return isinstance(e, getattr(torch.distributed, "DistNetworkError", ())) or any(s in str(e) for s in LOST_PEER)


def remove_shm_buffers(rank: int) -> None:
    """DeepSpeed's CPU all-reduce leaves a ~66 MB buffer per rank in /dev/shm; each rank removes its own."""
    addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
    for f in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{addr}_{port}_{rank}"):
        try:
            f.unlink()
        except OSError:
            pass


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(prog="python -m pretrain.engine", description=build_ops.__doc__)
    p.add_argument("--build-ops", action="store_true", required=True, help="build DeepSpeed's JIT ops now")
    p.parse_args()
    print(build_ops())
