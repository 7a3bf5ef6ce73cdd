"""Pretraining loop on a DeepSpeed engine: CPU (gloo) or GPU (nccl), one process or many, ZeRO 0-3.

Batch size, accumulation, lr schedule and clipping come from our config; the DeepSpeed JSON only adds engine
features. Checkpoints carry the client state (step, samples seen, epoch, position in the epoch) so `--resume`
continues the same stream; the export at the end is consolidated fp32 safetensors that fine-tuning reads.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from common.atomic import atomic_write
from common.config import flatten, save_config
from common.errors import MmieError
from common.fusion import FusionEncoder
from common.optim import warmup_cosine
from common.tracking import check_tracking_uri, make_logger
from pretrain.config import PretrainConfig
from pretrain.engine import deepspeed_config, init_distributed, lost_peer, remove_shm_buffers, to_device
from pretrain.data import (Collate, EpochStages, ImageSpec, build_pipeline, make_loader, rank_batches,
                           read_shard_dir)
from pretrain.task import PromuTask, rates

class Trainer:
    def __init__(self, cfg: PretrainConfig, run_dir: Path, tracking_uri: str | None, resume: bool = False):
        import deepspeed

        self.cfg, self.run_dir, self.resume = cfg, Path(run_dir), resume
        if int(os.environ.get("RANK", "0")) == 0:  # only rank 0 logs to MLflow
            check_tracking_uri(tracking_uri)
        self.rank, self.world, self.device = init_distributed(cfg.train.dist_timeout_s)
        torch.manual_seed(cfg.train.seed)
        self.shards, self.manifest, self.vocab = read_shard_dir(cfg.data.train)
        if cfg.data.val:
            self.val_shards, _, val_vocab = read_shard_dir(cfg.data.val)
            if val_vocab.get("digest") != self.vocab.get("digest"):
                raise MmieError(f"{cfg.data.val}: its vocab.json differs from the training shards' (prepare the "
                                f"val split with --vocab {Path(cfg.data.train) / 'vocab.json'})")
        ds = deepspeed_config(cfg)
        self.zero_stage = ds.get("zero_optimization", {}).get("stage", 0)
        self.dtype = torch.bfloat16 if ds.get("bf16", {}).get("enabled") else None
        encoder = FusionEncoder(cfg.model)
        self.task = PromuTask(encoder, len(self.vocab["entities"]), len(self.vocab["relations"]), cfg.loss)
        groups = self.task.param_groups(cfg.train.lr, cfg.train.encoder_lr, cfg.train.weight_decay)
        if ds.get("zero_optimization", {}).get("offload_optimizer"):
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            optimizer = DeepSpeedCPUAdam(groups, lr=cfg.train.lr)
        else:
            optimizer = torch.optim.AdamW(groups, lr=cfg.train.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.train.warmup_steps,
                                                                               cfg.train.steps))
        self.engine, _, _, _ = deepspeed.initialize(model=self.task, optimizer=optimizer, lr_scheduler=scheduler,
                                                    config=ds)
        self.spec = ImageSpec.of(encoder.vision)
        self.collate = Collate(encoder.tokenizer, self.spec, len(self.vocab["entities"]),
                               len(self.vocab["relations"]), cfg.data.max_boxes, cfg.data.max_text_len,
                               mlm_prob=cfg.loss.mlm_prob if cfg.loss.mlm > 0 else 0.0, seed=cfg.train.seed)
        self.state = {"step": 0, "samples_seen": 0, "epoch": 0, "batches_in_epoch": 0}
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.skipped: Counter = Counter()  # bad samples by reason
        self.audit = None
        if cfg.data.audit_keys:  # every consumed sample key, by epoch and step (a data-order audit trail)
            (self.run_dir / "audit").mkdir(parents=True, exist_ok=True)
            self.audit = open(self.run_dir / "audit" / f"keys.rank{self.rank}.txt", "a")
        if self.rank == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self.logger = make_logger(self.run_dir.name, flatten(cfg) | {"world_size": self.world,
                                                                     "zero_stage": self.zero_stage},
                                  tracking_uri, cfg.experiment, rank=self.rank, stdout_every=cfg.train.log_every,
                                  write=tqdm.write)

    # --- data ---------------------------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> int:
        d = self.cfg.data
        if d.resampled:
            return max(1, self.manifest["samples"] // (self.world * d.batch_size))
        counts = rank_batches(self.manifest["samples_per_shard"], self.cfg.train.seed, epoch, self.world,
                              d.num_workers, d.batch_size)
        if min(counts) == 0:
            raise MmieError(f"{d.train}: some rank gets no full batch of {d.batch_size} in epoch {epoch} "
                            f"(per-rank batches {counts}); use smaller shards or a smaller batch size")
        return min(counts)

    def train_loader(self, stages: EpochStages):
        d = self.cfg.data
        return make_loader(build_pipeline(self.shards, self.collate, d.batch_size, stages, resampled=d.resampled,
                                          world_size=self.world, num_workers=d.num_workers, partial=False),
                           d.num_workers)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def save(self) -> str:
        """DeepSpeed's checkpoint plus each rank's torch RNG state (dropout), written first and atomically: a
        resumed run then draws the same dropout masks as an uninterrupted one, so it logs the same losses."""
        tag = f"step{self.state['step']}"
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None}
        atomic_write(self.ckpt_dir / tag / f"rng.rank{self.rank}.pt", lambda f: torch.save(rng, f))
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=dict(self.state))
        return tag

    def load_rng(self, tag: str) -> None:
        rng = self.ckpt_dir / tag / f"rng.rank{self.rank}.pt"
        try:
            state = torch.load(rng, weights_only=True)
        except Exception as e:  # absent (a checkpoint from before RNG states were saved) or unreadable: resume anyway
            print(f"--resume: {rng}: {type(e).__name__}; this rank's dropout masks will differ from an uninterrupted "
                  f"run's", file=sys.stderr)
            return
        torch.set_rng_state(state["cpu"])
        if state["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"])

    def load(self) -> None:
        """The newest checkpoint every rank can read: the one `latest` names, else the next older (named on
        stderr). The ranks agree on each attempt (all-reduce), so a file damaged on one rank moves them all."""
        if not (self.ckpt_dir / "latest").is_file():
            raise MmieError(f"--resume: no checkpoint in {self.ckpt_dir}")
        latest = (self.ckpt_dir / "latest").read_text().strip()
        tags = sorted((p.name for p in self.ckpt_dir.glob("step*") if p.name[4:].isdigit()),
                      key=lambda t: int(t[4:]), reverse=True)
        tags = [latest] + [t for t in tags if t != latest]
        for i, tag in enumerate(tags):
            try:
                _, client = self.engine.load_checkpoint(str(self.ckpt_dir), tag=tag)
                problem = "" if client is not None else "nothing loaded (same world size?)"
            except Exception as e:  # torch.load raises many kinds on a truncated or garbled file
                problem = f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}"
            ok = torch.tensor(0 if problem else 1)
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
            if ok.item():
                self.state.update({k: client[k] for k in self.state})
                self.load_rng(tag)
                if i and self.rank == 0:
                    print(f"--resume: resumed from {tag} instead", file=sys.stderr)
                return
            if self.rank == 0:
                print(f"--resume: checkpoint {self.ckpt_dir / tag} is unreadable ({problem or 'on another rank'})"
                      f"{'; trying ' + tags[i + 1] if i + 1 < len(tags) else ''}", file=sys.stderr)
        raise MmieError(f"--resume: no readable checkpoint in {self.ckpt_dir} (tried {', '.join(tags)})")

    # --- evaluation -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.cfg.data.val:
            return {}
        self.engine.eval()
        stages = EpochStages(self.cfg.train.seed, shuffle_buffer=1)  # fixed order: the same pairs every time
        collate = copy.copy(self.collate)
        collate.set_epoch(-1)  # the same masks every evaluation
        pipe = build_pipeline(self.val_shards, collate, self.cfg.data.batch_size, stages, split_nodes=False)
        sums: dict[str, float] = {}
        n_batches = 0
        for i, batch in enumerate(make_loader(pipe)):
            if i >= self.cfg.train.eval_batches:
                break
            out = self.engine(to_device(batch, self.device, self.dtype))
            for k in self.task.counts + tuple(f"{t}_loss" for t in self.task.terms):
                sums[k] = sums.get(k, 0.0) + out[k].item()
            n_batches += 1
        self.engine.train()
        if not n_batches:
            return {}
        metrics = {f"val/{t}_loss": sums[f"{t}_loss"] / n_batches for t in self.task.terms}
        metrics.update({f"val/{k}": v for k, v in rates(sums).items()})
        metrics["val/cit_r1_chance"] = n_batches / max(1.0, sums["matched"])  # 1 / matched pairs per batch
        return metrics

    # --- the loop -------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train to cfg.train.steps, export, return the metrics. Another rank dying (or a collective timing out)
        is a one-line error naming the checkpoint to --resume from."""
        try:
            return self._fit()
        except RuntimeError as e:  # gloo and NCCL raise RuntimeError subclasses (DistBackendError, ...)
            if self.world == 1 or not lost_peer(e):
                raise
            latest = self.ckpt_dir / "latest"
            where = f"{self.ckpt_dir}/{latest.read_text().strip()}" if latest.is_file() else "none yet"
            reason = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            reason = re.sub(r"^\[[^\]]*\]\s*", "", reason).split(". ")[0]  # gloo: "[file:line] what. advice"
            raise MmieError(f"rank {self.rank}: another rank stopped answering during step {self.state['step'] + 1} "
                            f"({reason[:120]}); last checkpoint: {where} — restart every rank with --resume") \
                from None

    def _fit(self) -> dict:
        """The loop: epochs of micro-batches until cfg.train.steps optimizer steps; then evaluate, save, export."""
        cfg = self.cfg
        if self.resume:
            self.load()
        t0, start_samples = time.perf_counter(), self.state["samples_seen"]
        bar = tqdm(total=cfg.train.steps, initial=self.state["step"], desc="pretrain", disable=self.rank != 0,
                   unit="step")
        self.window = {"sums": {}, "n": 0, "t": time.perf_counter()}
        while self.state["step"] < cfg.train.steps:
            n_epoch = self.epoch_batches(self.state["epoch"])
            stages = EpochStages(cfg.train.seed, cfg.data.shuffle_buffer, epoch=self.state["epoch"],
                                 skip_batches=self.state["batches_in_epoch"])
            self.collate.set_epoch(self.state["epoch"])
            for batch in self.train_loader(stages):
                if self.state["batches_in_epoch"] >= n_epoch or self.state["step"] >= cfg.train.steps:
                    break
                out = self.micro_step(batch)
                if self.engine.is_gradient_accumulation_boundary():
                    self.state["step"] += 1
                    bar.update(1)
                    self.after_step(out)
            self.skipped.update(self.collate.skips.drain())  # bad samples after the epoch's last batch
            if self.state["batches_in_epoch"] >= n_epoch:
                self.state["epoch"] += 1
                self.state["batches_in_epoch"] = 0
        bar.close()
        return self.finish(t0, start_samples)

    def micro_step(self, batch: dict) -> dict:
        """Forward, backward and the engine's step (an optimizer step at an accumulation boundary) on one
        micro-batch; its loss terms and counts are added to the logging window."""
        self.skipped.update(batch.pop("skipped"))
        if self.audit is not None:
            self.audit.write(f"{self.state['epoch']} {self.state['step']} {' '.join(batch['keys'])}\n")
            self.audit.flush()
        out = self.engine(to_device(batch, self.device, self.dtype))
        self.engine.backward(out["loss"])
        self.engine.step()
        self.state["batches_in_epoch"] += 1
        self.state["samples_seen"] += len(batch["keys"]) * self.world
        sums = self.window["sums"]
        for k in ("loss",) + self.task.counts + tuple(f"{t}_loss" for t in self.task.terms):
            sums[k] = sums.get(k, 0.0) + out[k].detach().item()
        self.window["n"] += 1
        return out

    def after_step(self, out: dict) -> None:
        """After optimizer step `step`: log the window's means and rates every log_every steps, evaluate every
        eval_every, checkpoint every ckpt_every (the last step's evaluation and save are finish()'s)."""
        t, step, w = self.cfg.train, self.state["step"], self.window
        if step % t.log_every == 0 or step == t.steps:
            dt = time.perf_counter() - w["t"]
            metrics = {f"train/{k}": v / w["n"] for k, v in w["sums"].items() if k.endswith("loss")}
            metrics.update({f"train/{k}": v for k, v in rates(w["sums"]).items()})
            metrics.update({"train/lr": self.engine.get_lr()[0], "train/tau": float(out["tau"]),
                            "train/samples_per_s": w["n"] * self.cfg.data.batch_size * self.world / max(dt, 1e-9),
                            "train/epoch": self.state["epoch"]})
            bad = [k for k, v in metrics.items() if not math.isfinite(v)]
            if bad:
                raise MmieError(f"step {step}: {bad[0]} is not finite")
            self.logger.log_metrics(metrics, step)
            self.window = {"sums": {}, "n": 0, "t": time.perf_counter()}
        if t.eval_every and step % t.eval_every == 0 and step < t.steps:
            self.logger.log_metrics(self.evaluate(), step)
        if t.ckpt_every and step % t.ckpt_every == 0 and step < t.steps:
            self.save()

    def finish(self, t0: float, start_samples: int) -> dict:
        """Evaluate, save the last checkpoint and export; the run's metrics (wall time up to the evaluation)."""
        last_val = self.evaluate()
        self.logger.log_metrics(last_val, self.state["step"])
        wall = time.perf_counter() - t0
        tag = self.save()
        metrics = {"steps": self.state["step"], "samples_seen": self.state["samples_seen"],
                   "epochs_completed": self.state["epoch"], "world_size": self.world, "zero_stage": self.zero_stage,
                   "wall_s": round(wall, 1),
                   "samples_per_s": round((self.state["samples_seen"] - start_samples) / max(wall, 1e-9), 2),
                   "skipped_samples": dict(self.skipped), **{k.replace("/", "_"): v for k, v in last_val.items()}}
        self.export(tag, metrics)
        return metrics

    def consolidated_state(self, tag: str) -> dict[str, torch.Tensor]:
        """fp32 weights of the whole task: the module's own state (buffers such as BatchNorm statistics, and the
        parameters at ZeRO-0 fp32), with the parameters replaced by DeepSpeed's fp32 consolidation otherwise."""
        state = {k: v.detach().float().cpu() for k, v in self.engine.module.state_dict().items()}
        if self.zero_stage == 0 and self.dtype is None:
            return state
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        params = get_fp32_state_dict_from_zero_checkpoint(str(self.ckpt_dir), tag=tag)
        unknown = set(params) - set(state)
        if unknown:
            raise MmieError(f"ZeRO consolidation returned unexpected keys, e.g. {sorted(unknown)[0]}")
        state.update({k: v.float() for k, v in params.items()})
        return state

    def export(self, tag: str, metrics: dict) -> Path | None:
        torch.distributed.barrier()
        out = self.run_dir / "export"
        if self.rank == 0:
            state = self.consolidated_state(tag)
            enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
            self.engine.module.encoder.export(out, enc_state, extra={
                "metrics.json": metrics, "config.yaml": (self.run_dir / "config.yaml").read_text(),
                "vocab.json": self.vocab})
            (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
            self.logger.log_artifact(self.run_dir / "config.yaml")
            self.logger.log_artifact(self.run_dir / "metrics.json")
            self.logger.log_artifact(out / "model_config.json")
        torch.distributed.barrier()
        return out if self.rank == 0 else None

    def close(self, status: str = "FINISHED") -> None:
        self.logger.close(status)
        if self.audit is not None:
            self.audit.close()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        remove_shm_buffers(self.rank)
