"""Fine-tuning: train on train, select on dev (early stopping on F1), evaluate the best model once on test, and
write the run directory (config.yaml, metrics.json, predictions.jsonl, reports and plots, model/) and MLflow.
After every epoch a checkpoint (finetune/checkpoint.py) lets `--resume` continue a killed run exactly."""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from common.config import flatten, save_config
from common.errors import DataError, MmieError
from common.fusion import FusionEncoder
from common.optim import adamw, warmup_cosine
from common.tracking import check_tracking_uri, make_logger
from finetune import calibration, checkpoint, task
from finetune.batches import batches, build_features, collate, predict_features, task_classes
from finetune.config import FinetuneConfig
from finetune.context import build_context
from finetune.examples import Split
from finetune.images import STAND_IN, ImageStore, default_image, resolve_image_root
from finetune.metrics import joint_scores, ner_scores, re_scores
from finetune.model import Extractor
from finetune.pos import PosTagger
from finetune.readers import read_task
from finetune.report import plot_curves, write_report
from finetune.subsets import nested_subset
from finetune.teacher_signal import teacher_embeddings

LOSS_TERMS = (*task.TERMS, "loss")
STAND_IN_NOTE = ("a missing or unreadable picture is one grey stand-in; its vision features are computed once, "
                 "without gradient, and reused while the vision weights are unchanged; real pictures go through the "
                 "vision encoder every step")


def load_encoder(cfg: FinetuneConfig) -> FusionEncoder:
    if cfg.init == "none":
        return FusionEncoder(cfg.model)
    return FusionEncoder.from_export(cfg.init)


def param_group(name: str, encoder_prefixes: tuple[str, ...]) -> str:
    """Pretrained weights (FusionEncoder.pretrained_prefixes: the encoders and the fusion layers copied from the
    text encoder) train at encoder_lr, the vision encoder's at vision_lr when that is set; the CRF scores at
    crf_lr; heads, projections and the fusion modules at lr."""
    if name.startswith("encoder.vision."):
        return "vision"
    if name.startswith(encoder_prefixes):
        return "encoder"
    return "crf" if name.startswith("crf.") else "rest"


class SplitData:
    """A split ready for the model: examples, features, images (decoded once), and what was missing."""

    def __init__(self, split: Split, feats, images: dict[str, torch.Tensor], image_counts: dict, context_counts: dict,
                 truncation: dict, image_handling: dict):
        self.split, self.feats, self.images = split, feats, images
        self.image_counts, self.context_counts, self.truncation = image_counts, context_counts, truncation
        self.image_handling = image_handling
        self.teacher: torch.Tensor | None = None  # (n, 2, Dt) IMM's teacher embeddings (training split, sw_weight > 0)


def prepare_split(cfg: FinetuneConfig, split: Split, encoder: FusionEncoder, classes: list[str],
                  store_root: Path | None, pos_tagger: PosTagger) -> SplitData:
    examples = split.examples
    names = [ex.image for ex in examples]
    store = ImageStore(store_root if cfg.data.image == "on" else None)
    context_spec = cfg.data.context if cfg.data.image == "on" or cfg.data.context.startswith("file:") else "none"
    ctx_source = build_context(context_spec)
    contexts = ctx_source.describe(names, store)
    images: dict[str, torch.Tensor] = {STAND_IN: encoder.vision.preprocess(default_image())}
    for ex in examples:
        if ex.image in images:
            continue
        img, status = store.open(ex.image)
        images[ex.image] = images[STAND_IN] if status != "ok" else encoder.vision.preprocess(img)
    pos = pos_tagger.tag([ex.tokens for ex in examples])
    feats, truncation = build_features(cfg.task, examples, encoder.tokenizer, pos, contexts, cfg.data.max_length,
                                       classes, cfg.data.markers)
    counts = store.report() if cfg.data.image == "on" else {"disabled": len(examples)}
    stand_in = sum(images[ex.image] is images[STAND_IN] for ex in examples)
    handling = {"posts_with_picture": len(examples) - stand_in, "posts_with_stand_in": stand_in,
                "distinct_pictures": len({id(images[ex.image]) for ex in examples} - {id(images[STAND_IN])})}
    return SplitData(split, feats, images, counts, ctx_source.report(), truncation, handling)


def score(task: str, data: SplitData, preds: list) -> dict:
    examples = data.split.examples
    if task == "mner":
        gold = [ex.tags for ex in examples]
        pred = [p + ["O"] * (len(ex.tags) - len(p)) for p, ex in zip(preds, examples)]  # truncated words: O
        return ner_scores(gold, pred)
    if task == "mre":
        return re_scores([ex.triples[0].label for ex in examples], preds)
    return joint_scores([ex.triples for ex in examples], [p[1] for p in preds],
                        [ex.entities for ex in examples], [p[0] for p in preds])


def _jsonable(p):
    if isinstance(p, tuple):
        ents, triples = p
        return {"entities": [asdict(e) for e in ents], "triples": [asdict(t) for t in triples]}
    return p


def write_predictions(path: Path, task: str, examples: list, preds: list) -> None:
    """One JSON line per example: uid, tokens, image, gold and predicted labels (MRE: and the entity pair)."""
    with open(path, "w") as f:
        for ex, p in zip(examples, preds):
            gold = ex.tags if task == "mner" else (
                ex.triples[0].label if task == "mre" else _jsonable((ex.entities, ex.triples)))
            row = {"uid": ex.uid, "tokens": ex.tokens, "image": ex.image, "gold": gold, "pred": _jsonable(p)}
            if task == "mre":
                h, t = ex.triples[0].head, ex.triples[0].tail
                row["pair"] = {"head": [h.start, h.end], "tail": [t.start, t.end]}
            f.write(json.dumps(row) + "\n")


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
        self.classes = task_classes(cfg.task, self.splits["train"].examples)
        root = Path(cfg.data.images) if cfg.data.images else resolve_image_root(data_dir, None)
        tagger = PosTagger()
        self.data = {name: prepare_split(cfg, s, self.encoder, self.classes, root, tagger)
                     for name, s in self.splits.items()}
        self.warn_if_no_picture_found(root)
        if cfg.align.sw_weight > 0:  # IMM's pseudo-signal, once per dataset (cached); RNG untouched by a cache miss
            with torch.random.fork_rng():
                self.data["train"].teacher = teacher_embeddings(
                    cfg.align.teacher, [" ".join(ex.tokens) for ex in self.splits["train"].examples],
                    [ex.image for ex in self.splits["train"].examples],
                    ImageStore(root if cfg.data.image == "on" else None))
        self.model = Extractor(self.encoder, cfg, self.classes)
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

    def warn_if_no_picture_found(self, root: Path | None) -> None:
        """An image root was given (or found) but not one picture of any split is under it: most likely the wrong
        root, so say which root was tried and what a path looked like (the run goes on, as text + stand-in)."""
        if root is None or self.cfg.data.image != "on":
            return
        counts = [d.image_counts for d in self.data.values()]
        if sum(c.get("ok", 0) for c in counts) == 0 and sum(c.get("missing", 0) for c in counts) > 0:
            example = next((ex.image for s in self.splits.values() for ex in s.examples if ex.image), "")
            print(f"warning: none of the pictures is under the image root {root} (e.g. {root / example}); every "
                  f"post gets the grey stand-in. Is --images the folder that holds the files the dataset names?",
                  file=sys.stderr)

    def _batch(self, data: SplitData, idx: list[int]) -> dict:
        batch = collate([data.feats[i] for i in idx], data.images, self.pad_id, self.cfg.task)
        if data.teacher is not None:
            batch["teacher"] = data.teacher[idx]
        return batch

    def optimizer(self, total_steps: int):
        t = self.cfg.train
        groups: dict[str, list] = {"encoder": [], "vision": [], "crf": [], "rest": []}
        prefixes = self.encoder.pretrained_prefixes(under="encoder.")
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                groups[param_group(name, prefixes)].append(p)
        lrs = {"encoder": t.encoder_lr, "vision": t.encoder_lr if t.vision_lr < 0 else t.vision_lr,
               "crf": t.crf_lr, "rest": t.lr}
        opt = adamw([{"params": groups[g], "lr": lr, "name": g} for g, lr in lrs.items()], lr=t.lr,
                    weight_decay=t.weight_decay)
        factor = warmup_cosine(int(total_steps * t.warmup_ratio), total_steps)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)

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
            found = calibration.best_joint_margin(logps, self.classes, [ex.triples for ex in examples],
                                                  [ex.entities for ex in examples])
        self.model.none_margin.fill_(found["margin"])
        if not self.quiet:
            tqdm.write(f"`None` margin {found['margin']:+.3f} chosen on dev: F1 {100 * found['f1_at_zero']:.2f} -> "
                       f"{100 * found['f1']:.2f}")
        return found

    def fit(self) -> dict:
        cfg, t = self.cfg, self.cfg.train
        t0 = time.perf_counter()
        train = self.data["train"]
        steps_per_epoch = math.ceil(len(train.feats) / t.batch_size)  # also with length buckets
        opt, sched = self.optimizer(steps_per_epoch * t.epochs)
        gen = torch.Generator().manual_seed(t.seed)
        best = {"f1": -1.0, "epoch": 0, "dev": {}, "bad_epochs": 0}
        history, start, wall_before, resumed_at = [], 1, 0.0, []
        if self.resumed is not None:
            r = self.resumed
            self.model.load_state_dict(r["model"])
            opt.load_state_dict(r["optimizer"])
            sched.load_state_dict(r["scheduler"])
            torch.set_rng_state(r["rng"])
            gen.set_state(r["generator"])
            best, history, start = r["best"], r["history"], r["epoch"] + 1
            wall_before, resumed_at = r["wall_s"], r["resumed_at"] + [r["epoch"]]
            if not self.quiet:
                tqdm.write(f"resuming {self.run_dir} after epoch {r['epoch']} (best dev F1 {100 * best['f1']:.2f} at "
                           f"epoch {best['epoch']})")
        done = start - 1
        for epoch in range(start, t.epochs + 1):
            if best["bad_epochs"] >= t.patience:  # early stopping (also when a resumed run had already reached it)
                break
            self.model.train()
            sums = {k: 0.0 for k in LOSS_TERMS}
            bar = tqdm(self.epoch_batches(epoch), desc=f"epoch {epoch}", leave=False, disable=self.quiet)
            for idx in bar:
                losses = self.train_step(self._batch(train, idx), opt, sched, gen)
                if not math.isfinite(losses["loss"]):
                    raise MmieError(f"epoch {epoch}: the loss is not finite ({losses})")
                for k in LOSS_TERMS:
                    sums[k] += losses[k]
                bar.set_postfix(loss=f"{losses['loss']:.3f}")
            dev = score(cfg.task, self.data["dev"], self.predict_split("dev"))
            metrics = {f"train/{k}": v / steps_per_epoch for k, v in sums.items()}
            metrics.update({f"lr/{g['name']}": lr for g, lr in zip(opt.param_groups, sched.get_last_lr())})
            metrics.update({f"dev/{k}": dev[k] for k in ("f1", "precision", "recall")})
            if cfg.task == "mjere":
                metrics["dev/entity_f1"] = dev["entity"]["f1"]
            self.logger.log_metrics(metrics, epoch)
            history.append({"epoch": epoch, **metrics})
            if self.report_fn is not None:
                self.report_fn(epoch, metrics)
            if dev["f1"] > best["f1"]:
                best = {"f1": dev["f1"], "epoch": epoch, "dev": dev, "bad_epochs": 0}
                checkpoint.save_best(self.ckpt_dir, epoch, self.model.state_dict())
            else:
                best["bad_epochs"] += 1
            checkpoint.save_epoch(self.ckpt_dir, {
                "epoch": epoch, "model": self.model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "generator": gen.get_state(),
                "best": best, "history": history, "wall_s": wall_before + time.perf_counter() - t0,
                "resumed_at": resumed_at, "mlflow_run_id": getattr(self.logger, "run_id", None)})
            done = epoch
        if best["epoch"]:
            self.model.load_state_dict(checkpoint.load_best(self.ckpt_dir, best["epoch"]))
        margin = self.tune_none_margin()
        dev = best["dev"] if margin is None else score(cfg.task, self.data["dev"], self.predict_split("dev"))
        test_preds = self.predict_split("test")
        test = score(cfg.task, self.data["test"], test_preds)
        wall = wall_before + time.perf_counter() - t0
        self.logger.log_metrics({f"test/{k}": test[k] for k in ("f1", "precision", "recall")}, best["epoch"])
        result = {
            "task": cfg.task, "init": cfg.init, "image": cfg.data.image, "context": cfg.data.context,
            "threads": torch.get_num_threads(),
            "dev": dev, "dev_at_selection": best["dev"], "none_margin": margin, "test": test, "epochs": done,
            "best_epoch": best["epoch"], "n_train": len(self.splits["train"]),
            "wall_s": round(wall, 1),
            "resumed_after_epochs": resumed_at, "mlflow_run_id": getattr(self.logger, "run_id", None),
            "history": history,
            "missing_images": {k: d.image_counts for k, d in self.data.items()},
            "image_handling": {"stand_in": STAND_IN_NOTE, **{k: d.image_handling for k, d in self.data.items()}},
            "contexts": {k: d.context_counts for k, d in self.data.items()},
            "truncation": {k: d.truncation for k, d in self.data.items()},
            "skipped_input": {k: dict(s.skipped) for k, s in self.splits.items()},
        }
        self.write_outputs(result, test_preds)
        if not t.keep_checkpoints:
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


def save_model_dir(model: Extractor, encoder: FusionEncoder, cfg: FinetuneConfig, classes: list[str],
                   out: Path) -> None:
    """A model/ directory: the encoder export, the heads (safetensors), the classes and the config."""
    from safetensors.torch import save_file

    encoder.export(out / "encoder")
    heads = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    save_file(heads, str(out / "heads.safetensors"))
    (out / "classes.json").write_text(json.dumps(classes) + "\n")
    save_config(cfg, out / "config.yaml")


def load_trained(run: Path) -> tuple[Extractor, FinetuneConfig]:
    """A fine-tuned model back from its run directory (for predict)."""
    if not (Path(run) / "model" / "heads.safetensors").is_file():
        raise MmieError(f"{run}: no model/ directory — not a finished fine-tuning run")
    return load_model_dir(Path(run) / "model", run)


def load_model_dir(model_dir: Path, run: Path | str | None = None) -> tuple[Extractor, FinetuneConfig]:
    """A fine-tuned model back from a run's model/ directory (or its copy in an MLflow model's artifacts)."""
    from safetensors.torch import load_file

    from common.config import load_config

    model_dir, run = Path(model_dir), run or model_dir
    cfg = load_config(FinetuneConfig, model_dir / "config.yaml")
    encoder = FusionEncoder.from_export(model_dir / "encoder")
    classes = json.loads((model_dir / "classes.json").read_text())
    model = Extractor(encoder, cfg, classes)
    try:
        heads = load_file(str(model_dir / "heads.safetensors"))
    except Exception as e:  # a truncated or garbled file: safetensors raises its own error types
        raise MmieError(f"{model_dir / 'heads.safetensors'}: unreadable ({str(e)[:120]})") from None
    missing = model.load_state_dict(heads, strict=False)
    bad = [k for k in missing.missing_keys if not k.startswith("encoder.") and k != "none_margin"]  # older runs: 0
    bad += list(missing.unexpected_keys)
    if bad:
        raise MmieError(f"{run}: saved heads do not match the model ({bad[0]})")
    return model.eval(), cfg

