"""Benchmark: what synchronising one pretraining step's gradients costs, measured with torch.distributed's gloo
backend (the CPU ranks' backend under DeepSpeed) between processes on this machine over 127.0.0.1. The tensor is
the size of the config's trainable parameters in fp32 (and bf16), reduced as one bucket (DeepSpeed's default
reduce bucket, 5e8 elements, holds the whole model). Loopback is a memory copy, not a network: the figure is the
software's ceiling, and SCALING.md turns it into a network estimate. Last line: one JSON object

    {"params": …, "ranks": …, "fp32": {"s": …, "algbw_gb_s": …, "busbw_gb_s": …}, "bf16": {…}}

    python bench/allreduce.py [--config base] [--ranks 2] [--repeats 5]

algbw = bytes / time; busbw = algbw x 2(n-1)/n, the bytes each rank sends and receives in a ring all-reduce.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import common  # noqa: E402,F401
from common.ports import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def trainable_params(config: str) -> int:
    from common.config import load_config
    from common.fusion import FusionEncoder
    from pretrain.config import PretrainConfig
    from pretrain.task import PromuTask

    cfg = load_config(PretrainConfig, REPO / "pretrain" / "configs" / f"{config}.yaml", [])
    task = PromuTask(FusionEncoder(cfg.model), 1000, 216, cfg.loss)  # bench/pretrain_step.py's vocabulary sizes
    return sum(p.numel() for p in task.parameters() if p.requires_grad)


def _rank(rank: int, ranks: int, port: int, numel: int, repeats: int, out) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=ranks)
    result = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        t = torch.ones(numel, dtype=dtype)
        dist.all_reduce(t)  # warm-up: connections, buffers
        times = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - t0)
        assert float(t[0]) == float(ranks ** (repeats + 1)), "all_reduce gave a wrong sum"
        s = sorted(times)[len(times) // 2]
        nbytes = numel * t.element_size()
        result[name] = {"s": round(s, 4), "bytes": nbytes, "algbw_gb_s": round(nbytes / s / 1e9, 3),
                        "busbw_gb_s": round(nbytes / s / 1e9 * 2 * (ranks - 1) / ranks, 3)}
    if rank == 0:
        out.put(result)
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="base", help="pretrain/configs/<name>.yaml whose parameters are synchronised")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    numel = trainable_params(a.config)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank, args=(r, a.ranks, port, numel, a.repeats, out)) for r in range(a.ranks)]
    for p in procs:
        p.start()
    result = out.get(timeout=600)
    for p in procs:
        p.join(timeout=60)
    if any(p.exitcode != 0 for p in procs):
        print(f"a rank failed: exit codes {[p.exitcode for p in procs]}", file=sys.stderr)
        return 1
    for name, r in result.items():
        print(f"{name}: {r['bytes'] / 1e6:.0f} MB all-reduce over {a.ranks} gloo ranks (loopback) in {r['s']} s: "
              f"algbw {r['algbw_gb_s']} GB/s, busbw {r['busbw_gb_s']} GB/s", flush=True)
    print(json.dumps({"config": a.config, "params": numel, "ranks": a.ranks, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
