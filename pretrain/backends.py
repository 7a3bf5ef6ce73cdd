"""Who runs prepare's units (pretrain/plan.py): `--backend inline|process|ray`. Every backend runs the same two
functions of pretrain/units.py on the same units, so the shards are byte-identical whatever runs them.

- inline (default): this process, models loaded once.
- process: a pool of `--workers` processes (spawned, not forked: torch and forked threads do not mix); each
  worker's initializer loads the detector and the teacher once.
- ray: `--workers` Ray actors, each loading the models once in its constructor, fed by `ray.util.ActorPool`
  (on `--ray-address`, or on a local Ray started for the run with `--workers` CPUs). Actors rather than plain
  tasks because the models are the expensive part: a task would load them per unit. Actors rather than Ray Data's
  `map_batches`: the units are already the plan's fixed batches and a few hundred of them per corpus, so Ray Data's
  block scheduling adds nothing, and its `write_webdataset` would name files with random ids and stamp the time
  into the tar members. Each actor asks for `--threads` CPUs (the teacher and detector run on the CPU here).

A backend's `map(kind, jobs)` takes (unit, payload) pairs and yields (unit, result) as units finish, in any
order; the caller keys results by unit. A write unit's payload is only its own pictures' labels.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from pathlib import Path
from typing import Iterator

from pretrain.config import PrepareConfig
from pretrain.units import Workshop, write_shard


def run_unit(shop: Workshop | None, kind: str, unit, payload):
    if kind == "label":
        return shop.label(unit)
    labels, out_dir = payload
    return write_shard(unit, labels, Path(out_dir))


class Inline:
    def __init__(self, cfg: PrepareConfig, vocab: dict, models=None):
        self.shop = Workshop(cfg, vocab, models)

    def map(self, kind: str, jobs: list) -> Iterator:
        for unit, payload in jobs:
            yield unit, run_unit(self.shop, kind, unit, payload)

    def close(self) -> None:
        pass


_SHOP: Workshop | None = None  # the process backend's per-worker models


def _init_worker(cfg: PrepareConfig, vocab: dict) -> None:
    global _SHOP  # (importing mmie applies its offline defaults in the spawned worker too: common/__init__.py)
    _SHOP = Workshop(cfg, vocab)


def _worker_unit(kind: str, unit, payload):
    return run_unit(_SHOP, kind, unit, payload)


class Processes:
    def __init__(self, cfg: PrepareConfig, vocab: dict):
        self.pool = cf.ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"),
                                           initializer=_init_worker, initargs=(cfg, vocab))

    def map(self, kind: str, jobs: list) -> Iterator:
        futures = {self.pool.submit(_worker_unit, kind, u, payload): u for u, payload in jobs}
        for fut in cf.as_completed(futures):
            yield futures[fut], fut.result()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


class RayActors:
    def __init__(self, cfg: PrepareConfig, vocab: dict):
        import ray
        from ray.util import ActorPool

        self.ray, self.started = ray, not ray.is_initialized()
        if self.started:
            ray.init(address=cfg.ray_address or None, num_cpus=None if cfg.ray_address else cfg.workers * cfg.threads,
                     include_dashboard=False, configure_logging=False, log_to_driver=False)
        @ray.remote(num_cpus=cfg.threads)
        class Shop:
            def __init__(self):
                _init_worker(cfg, vocab)

            def run(self, kind, unit, payload):
                return unit.index, _worker_unit(kind, unit, payload)

            def node(self):
                return ray.get_runtime_context().get_node_id()

        self.actors = [Shop.remote() for _ in range(cfg.workers)]
        self.pool = ActorPool(self.actors)
        self.nodes = sorted(set(ray.get([a.node.remote() for a in self.actors])))  # where the work ran

    def map(self, kind: str, jobs: list) -> Iterator:
        index = {u.index: u for u, _ in jobs}
        for unit_index, result in self.pool.map_unordered(lambda a, job: a.run.remote(kind, *job), jobs):
            yield index[unit_index], result

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self.started:
            self.ray.shutdown()


BACKENDS = {"inline": Inline, "process": Processes, "ray": RayActors}


def make_backend(cfg: PrepareConfig, vocab: dict, models=None):
    """models: (teacher, detector) already loaded here, which the inline backend uses rather than load again."""
    return Inline(cfg, vocab, models) if cfg.backend == "inline" else BACKENDS[cfg.backend](cfg, vocab)
