"""Fine-tuning: train on train, select on dev (early stopping on F1), evaluate the best model once on test, and
write the run directory (config.yaml, metrics.json, predictions.jsonl, reports and plots, model/) and MLflow.
After every epoch a checkpoint (finetune/checkpoint.py) lets `--resume` continue a killed run exactly."""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from common.config import flatten, save_config
from common.errors import DataError, MmieError
from common.optim import adamw, param_groups, warmup_cosine
from common.tracking import check_tracking_uri, make_logger
from common.zoo import set_attention_dropout
from finetune import calibration, checkpoint, task
from finetune.batches import batches, collate, predict_features
from finetune.labels import task_classes
from finetune.checkpoint import load_encoder, save_model_dir
from finetune.config import FinetuneConfig
from finetune.ema import WeightAverage
from finetune.images import ImageStore, resolve_image_root
from finetune.model import Extractor
from finetune.pos import PosTagger
from finetune.readers import read_task
from finetune.retrieval import Retriever
from finetune.report import plot_curves, write_report
from finetune.splits import (STAND_IN_NOTE, SplitData, prepare_split, score, warn_if_no_picture_found,
                             write_predictions)
from finetune.subsets import nested_subset
from finetune.teacher_signal import split_signal
from finetune.wordpair import relation_types

LOSS_TERMS = (*task.TERMS, "loss")


def param_group(name: str, encoder_prefixes: tuple[str, ...]) -> str:
    """Pretrained weights (FusionEncoder.pretrained_prefixes: the encoders and the fusion layers copied from the
    text encoder) train at encoder_lr, the vision encoder's at vision_lr when that is set; the CRF scores at
    crf_lr; heads, projections and the fusion modules at lr."""
    if name.startswith("encoder.vision."):
        return "vision"
    if name.startswith(encoder_prefixes):
        return "encoder"
    return "crf" if name.startswith("crf.") else "rest"


def build_optimizer(model: torch.nn.Module, encoder_prefixes: tuple[str, ...], t, total_steps: int,
                    below_top=None):
    """AdamW over the named groups of param_group (each group's lr from TrainConfig `t`) and the warm-up + cosine
    schedule over `total_steps`. With t.layer_decay < 1 and `below_top(name)` (FusionEncoder.layers_below_top on a
    model parameter's name), an "encoder" parameter k layers below the top trains in group "encoder-k" at
    encoder_lr * layer_decay ** k (the top keeps the name "encoder")."""
    lrs = {"encoder": t.encoder_lr, "vision": t.encoder_lr if t.vision_lr < 0 else t.vision_lr,
           "crf": t.crf_lr, "rest": t.lr}

    def group(name: str) -> str:  # adds each "encoder-k" it names to lrs (param_groups reads lrs afterwards)
        g = param_group(name, encoder_prefixes)
        k = below_top(name) if g == "encoder" and below_top is not None and t.layer_decay < 1 else 0
        if k:
            g = f"encoder-{k}"
            lrs[g] = t.encoder_lr * t.layer_decay ** k
        return g

    groups = param_groups(model, group, lrs, t.weight_decay)
    opt = adamw(groups, lr=t.lr, weight_decay=t.weight_decay)
    factor = warmup_cosine(int(total_steps * t.warmup_ratio), total_steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


class FinetuneTrainer:
    def __init__(self, cfg: FinetuneConfig, run_dir: Path, tracking_uri: str | None, parent_run_id: str | None = None,
                 report_fn=None, quiet: bool = False, resume: bool = False, log_model: bool = True):
        """log_model: log the trained model to the MLflow run as a pyfunc model (~130 MB; sweeps' trials skip it)."""
        self.cfg, self.run_dir, self.report_fn, self.quiet = cfg, Path(run_dir), report_fn, quiet
        self.tracking_uri, self.log_model = tracking_uri, log_model
        check_tracking_uri(tracking_uri)  # before minutes of data preparation and model loading
        self.ckpt_dir = self.run_dir / "checkpoints"
        if resume and (self.run_dir / "metrics.json").is_file() and not self.ckpt_dir.is_dir():
            raise MmieError(f"--resume: {self.run_dir} has finished (metrics.json is there); nothing to continue")
        self.resumed = checkpoint.load_latest(self.ckpt_dir) if resume else None
        self.ema: WeightAverage | None = None  # set by fit() when train.ema > 0
        if not resume:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)  # a fresh run never mixes with an older one's state
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        data_dir = Path(cfg.data.dir)
        self.splits = read_task(cfg.task, data_dir)
        if cfg.data.max_train:
            self.splits["train"].examples = self.splits["train"].examples[:cfg.data.max_train]
        if cfg.data.train_fraction < 1.0:
            train = self.splits["train"].examples
            train[:] = [train[i] for i in nested_subset(len(train), cfg.data.train_fraction, cfg.data.subset_seed)]
        for name, s in self.splits.items():
            if not s.examples:
                raise DataError(f"{s.path}: no examples for task {cfg.task}")
        self.encoder = load_encoder(cfg)
        if cfg.train.attention_dropout >= 0:  # the text layers and the fusion layers taken from them
            set_attention_dropout(self.encoder, cfg.train.attention_dropout)
        self.classes = task_classes(cfg.task, self.splits["train"].examples)
        root = Path(cfg.data.images) if cfg.data.images else resolve_image_root(data_dir, None)
        tagger = PosTagger()
        # Preparing the inputs builds models only on a cache miss (the picture describer, the retrieval store's
        # embedder, IMM's teacher), and building one draws from torch's global generator: forked, so the weights
        # the model starts from and the dropout masks are the same whether the caches were cold or warm.
        with torch.random.fork_rng(devices=[]):
            retriever = (Retriever.build(self.splits["train"].examples, cfg.data.retrieve, cfg.data.retrieve_as)
                         if cfg.data.retrieve else None)
            self.data = {name: prepare_split(cfg, s, self.encoder, self.classes, root, tagger, retriever)
                         for name, s in self.splits.items()}
            if cfg.align.sw_weight > 0:  # IMM's pseudo-signal, once per dataset (cached)
                self.data["train"].teacher = split_signal(cfg.align.teacher, self.splits["train"].examples,
                                                          ImageStore(root if cfg.data.image == "on" else None))
        warn_if_no_picture_found(self.data, self.splits, root if cfg.data.image == "on" else None)
        self.model = Extractor(self.encoder, cfg, self.classes)
        if cfg.task == "mjere":  # the relations' type signatures in training, saved with the heads (typed_decode)
            self.model.relation_types.copy_(relation_types(
                self.classes, [t for ex in self.splits["train"].examples for t in ex.triples]))
        self.model.retriever = retriever  # saved with the model (model/retrieval/)
        self.pad_id = self.encoder.tokenizer.pad_token_id
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")
        if cfg.data.train_fraction < 1.0 or cfg.data.max_train:  # which posts this run trained on
            (self.run_dir / "train_uids.txt").write_text("".join(ex.uid + "\n" for ex in self.splits["train"].examples))
        params = flatten(cfg) | {"n_train": len(self.splits["train"]), "n_dev": len(self.splits["dev"]),
                                 "n_test": len(self.splits["test"])}
        self.logger = make_logger(self.run_dir.name, params, tracking_uri, cfg.experiment, tags={"task": cfg.task},
                                  parent_run_id=parent_run_id, write=tqdm.write if not quiet else (lambda s: None),
                                  run_id=self.resumed["mlflow_run_id"] if self.resumed else None)

    def _batch(self, data: SplitData, idx: list[int]) -> dict:
        batch = collate([data.feats[i] for i in idx], data.images, self.pad_id, self.cfg.task)
        if data.teacher is not None:
            batch["teacher"] = data.teacher[idx]
        return batch

    def optimizer(self, total_steps: int):
        return build_optimizer(self.model, self.encoder.pretrained_prefixes(under="encoder."), self.cfg.train,
                               total_steps, partial(self.encoder.layers_below_top, under="encoder."))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The training batches of an epoch: a function of (seed, epoch) only, so a resumed run sees the same."""
        t = self.cfg.train
        return batches([len(f.input_ids) for f in self.data["train"].feats], t.batch_size, True,
                       t.seed * 1000 + epoch, pool=t.bucket_pool)

    def train_step(self, batch: dict, opt, sched, gen: torch.Generator) -> dict[str, float]:
        """One optimizer step; the loss terms as floats (a non-finite loss skips the update)."""
        out = task.losses(self.model, batch, gen)
        terms = {k: float(v.detach()) for k, v in out.items()}
        if not math.isfinite(terms["loss"]):
            return terms
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip)
        opt.step()
        sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return terms

    def predict_split(self, name: str, method: str = "predict") -> list:
        data = self.data[name]
        return predict_features(self.model, data.feats, data.images, self.pad_id, self.cfg.task,
                                self.cfg.train.eval_batch_size, None if self.quiet else f"eval {name}", method)

    def tune_none_margin(self) -> dict | None:
        """MRE/MJERE: the `None` margin (calibration.py) with the best dev F1, set on the model for test."""
        if self.cfg.task == "mner" or not self.cfg.head.tune_none:
            return None
        logps = self.predict_split("dev", method="relation_logp")
        dev = self.data["dev"]
        if self.cfg.task == "mre":
            found = calibration.best_none_margin(torch.tensor([f.labels for f in dev.feats]), torch.stack(logps))
        else:
            examples = dev.split.examples
            allowed = self.model.relation_types if self.cfg.head.typed_decode else None
            found = calibration.best_joint_margin(logps, self.classes, [ex.triples for ex in examples],
                                                  [ex.entities for ex in examples], allowed=allowed)
        self.model.none_margin.fill_(found["margin"])
        if not self.quiet:
            tqdm.write(f"`None` margin {found['margin']:+.3f} chosen on dev: F1 {100 * found['f1_at_zero']:.2f} -> "
                       f"{100 * found['f1']:.2f}")
        return found

    def fit(self) -> dict:
        t = self.cfg.train
        t0 = time.perf_counter()
        steps_per_epoch = math.ceil(len(self.data["train"].feats) / t.batch_size)  # also with length buckets
        opt, sched = self.optimizer(steps_per_epoch * t.epochs)
        gen = torch.Generator().manual_seed(t.seed)
        self.ema = WeightAverage(self.model, t.ema) if t.ema > 0 else None
        state = self.start_state(opt, sched, gen)
        for epoch in range(state["done"] + 1, t.epochs + 1):
            if state["best"]["bad_epochs"] >= t.patience:  # early stopping (also when a resumed run had reached it)
                break
            sums = self.train_epoch(epoch, opt, sched, gen)
            metrics = {f"train/{k}": v / steps_per_epoch for k, v in sums.items()}
            metrics.update({f"lr/{g['name']}": lr for g, lr in zip(opt.param_groups, sched.get_last_lr())
                            if not g["name"].endswith("/no_decay")})  # the same lr as its group's decayed part
            self.end_epoch(epoch, metrics, state)
            state["wall_s"] = state["wall_before"] + time.perf_counter() - t0
            checkpoint.save_epoch(self.ckpt_dir, {
                "epoch": epoch, "model": self.model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "generator": gen.get_state(),
                "best": state["best"], "history": state["history"], "wall_s": state["wall_s"],
                "resumed_at": state["resumed_at"], "mlflow_run_id": getattr(self.logger, "run_id", None),
                "ema": None if self.ema is None else self.ema.state_dict()})
        return self.finish(state, state["wall_before"] + time.perf_counter() - t0)

    def start_state(self, opt, sched, gen: torch.Generator) -> dict:
        """Early-stopping state, history and the last finished epoch: fresh, or read back from the checkpoint
        (model, optimizer, scheduler and RNG states restored) when resuming."""
        state = {"best": {"f1": -1.0, "epoch": 0, "dev": {}, "bad_epochs": 0}, "history": [], "done": 0,
                 "wall_before": 0.0, "resumed_at": []}
        r = self.resumed
        if r is None:
            return state
        self.model.load_state_dict(r["model"])
        opt.load_state_dict(r["optimizer"])
        sched.load_state_dict(r["scheduler"])
        torch.set_rng_state(r["rng"])
        gen.set_state(r["generator"])
        if self.ema is not None:
            if r.get("ema") is None:
                raise MmieError(f"--resume: {self.run_dir} was trained without train.ema; resume it without it")
            self.ema.load_state_dict(r["ema"])
        state.update(best=r["best"], history=r["history"], done=r["epoch"], wall_before=r["wall_s"],
                     resumed_at=r["resumed_at"] + [r["epoch"]])
        if not self.quiet:
            tqdm.write(f"resuming {self.run_dir} after epoch {r['epoch']} (best dev F1 {100 * r['best']['f1']:.2f} "
                       f"at epoch {r['best']['epoch']})")
        return state

    def train_epoch(self, epoch: int, opt, sched, gen: torch.Generator) -> dict[str, float]:
        """One pass over the training batches; the sum of each loss term."""
        self.model.train()
        sums = {k: 0.0 for k in LOSS_TERMS}
        bar = tqdm(self.epoch_batches(epoch), desc=f"epoch {epoch}", leave=False, disable=self.quiet)
        for idx in bar:
            losses = self.train_step(self._batch(self.data["train"], idx), opt, sched, gen)
            if not math.isfinite(losses["loss"]):
                raise MmieError(f"epoch {epoch}: the loss is not finite ({losses})")
            for k in LOSS_TERMS:
                sums[k] += losses[k]
            bar.set_postfix(loss=f"{losses['loss']:.3f}")
        return sums

    def end_epoch(self, epoch: int, metrics: dict, state: dict) -> None:
        """Score dev, log the epoch, and keep the best weights so far (early-stopping count otherwise). With
        train.ema dev scores both the moving average and the weights as trained, and the better of the two is the
        epoch's candidate: a long run's average damps its last steps' noise, but a short run's still holds its
        first, untrained steps (600 tweets for 3 epochs is ~110 steps, inside the average's ~200-step horizon), so
        dev decides, epoch by epoch. Ties go to the average. Once those first steps weigh under 10% in the average
        (WeightAverage.settled) the reason for the second dev pass is gone and the average alone is scored (README,
        session 45, for what that was measured to change)."""
        if self.ema is None:
            return self.select(epoch, metrics, state, self.score_dev(), "as trained")
        live = None if self.ema.settled() else self.score_dev()
        if live is not None:
            metrics["dev/f1_live"] = live["f1"]
        with self.ema.swapped_in(self.model):
            average = self.score_dev()
            metrics["dev/f1_average"] = average["f1"]
            if live is None or average["f1"] >= live["f1"]:
                return self.select(epoch, metrics, state, average, "average")
        self.select(epoch, metrics, state, live, "as trained")

    def score_dev(self) -> dict:
        return score(self.cfg.task, self.data["dev"], self.predict_split("dev"))

    def select(self, epoch: int, metrics: dict, state: dict, dev: dict, weights: str) -> None:
        """Log the epoch with `dev` (the scores of the model's weights now) and keep those weights if best."""
        metrics.update({f"dev/{k}": dev[k] for k in ("f1", "precision", "recall")})
        if self.cfg.task == "mjere":
            metrics["dev/entity_f1"] = dev["entity"]["f1"]
        self.logger.log_metrics(metrics, epoch)
        state["history"].append({"epoch": epoch, **metrics, "weights": weights})
        if self.report_fn is not None:
            self.report_fn(epoch, metrics)
        best = state["best"]
        if dev["f1"] > best["f1"]:
            state["best"] = {"f1": dev["f1"], "epoch": epoch, "dev": dev, "bad_epochs": 0, "weights": weights}
            checkpoint.save_best(self.ckpt_dir, epoch, self.model.state_dict())
        else:
            best["bad_epochs"] += 1
        state["done"] = epoch

    def finish(self, state: dict, wall: float) -> dict:
        """The best-dev weights back, the `None` margin (MRE/MJERE), test once, and the run's outputs."""
        cfg, best = self.cfg, state["best"]
        if best["epoch"]:
            self.model.load_state_dict(checkpoint.load_best(self.ckpt_dir, best["epoch"]))
        margin = self.tune_none_margin()
        dev = best["dev"] if margin is None else self.score_dev()
        test_preds = self.predict_split("test")
        test = score(cfg.task, self.data["test"], test_preds)
        self.logger.log_metrics({f"test/{k}": test[k] for k in ("f1", "precision", "recall")}, best["epoch"])
        result = {
            "task": cfg.task, "init": cfg.init, "image": cfg.data.image, "context": cfg.data.context,
            "missing_context": cfg.data.missing_context, "threads": torch.get_num_threads(), "dev": dev,
            "dev_at_selection": best["dev"], "none_margin": margin,
            "test": test, "epochs": state["done"], "best_epoch": best["epoch"],
            "best_weights": best.get("weights"), "n_train": len(self.splits["train"]),
            "wall_s": round(wall, 1), "resumed_after_epochs": state["resumed_at"],
            "mlflow_run_id": getattr(self.logger, "run_id", None), "history": state["history"],
            "missing_images": {k: d.image_counts for k, d in self.data.items()},
            "image_handling": {"stand_in": STAND_IN_NOTE, **{k: d.image_handling for k, d in self.data.items()}},
            "contexts": {k: d.context_counts for k, d in self.data.items()},
            "truncation": {k: d.truncation for k, d in self.data.items()},
            "skipped_input": {k: dict(s.skipped) for k, s in self.splits.items()},
        }
        self.write_outputs(result, test_preds)
        if not cfg.train.keep_checkpoints:
            shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        return result

    def write_outputs(self, result: dict, test_preds: list) -> None:
        out = self.run_dir
        self.save_model(out / "model")
        run_id = getattr(self.logger, "run_id", None)
        if self.log_model and run_id:  # the MLflow pyfunc model, servable with `mlflow models serve`
            from finetune.mlflow_model import log_model

            try:
                result["mlflow_model"] = log_model(out / "model", self.tracking_uri, run_id, self.cfg.task)
            except Exception as e:  # a finished run's results are never lost to a logging failure
                print(f"warning: the model was not logged to MLflow ({type(e).__name__}: {str(e)[:200]}); it is in "
                      f"{out / 'model'}", file=sys.stderr)
        (out / "metrics.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        write_predictions(out / "predictions.jsonl", self.cfg.task, self.splits["test"].examples, test_preds)
        title = f"{self.cfg.task} test ({Path(self.cfg.data.dir).name}, init {Path(self.cfg.init).name})"
        paths = write_report(result["test"], out / "reports", "test", title)
        paths["curves"] = plot_curves(result["history"], f"{self.cfg.task} training ({Path(self.cfg.data.dir).name})",
                                      out / "reports" / "curves.png")
        for p in [out / "config.yaml", out / "metrics.json", *paths.values()]:
            self.logger.log_artifact(p)

    def save_model(self, out: Path) -> None:
        save_model_dir(self.model, self.encoder, self.cfg, self.classes, out)

    def close(self, status: str = "FINISHED") -> None:
        self.logger.close(status)

    def fit_and_close(self) -> dict:
        """fit(), then close the MLflow run: FINISHED, or FAILED when fit raised (the error goes on)."""
        try:
            result = self.fit()
        except BaseException:
            self.close("FAILED")
            raise
        self.close()
        return result
