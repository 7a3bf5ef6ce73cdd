"""Benchmark: one fine-tuning optimizer step of the full default model against one step of the bare text encoder
it fine-tunes (forward + backward + AdamW on the same token ids, same threads), per task, on real batches of the
default size, side by side in one run; then where the rest of the step goes. Last line: one JSON object

    {"adamw_ms_text_encoder": {"fused": …, "foreach": …, "loop": …},
     "mner": {"ratio": full / bare, "full_s": …, "bare_s": …, "parts_s": {…}, "padding": {…}, …},
     "mre": {…}, "mjere": {…}}

    python bench/finetune_step.py [--data ../shared/data] [--tasks mner mre mjere] [--steps 8] [--threads 0]
        [overrides, e.g. train.batch_size=32]

Parts are timed in isolation (forward + backward of one stage on the detached outputs of the stage before it):
collate, text encoder, vision encoder, fusion layers, adaptive fusion, heads (CRF / word-pair cell / grid),
alignment losses, optimizer (clipping + AdamW), and, where the task's config averages the weights (train.ema > 0,
MNER's default), the average's update, which the full step then includes too; "evaluation per epoch" is the dev
passes of one epoch (two with train.ema: the average and the weights as trained), beside the training time of one
epoch (steps per epoch x the full step); "padding" is padded over real tokens in one epoch's batches without and
with length buckets (train.bucket_pool 0 and 50). MJERE is derived from MNRE (finetune.mjere) into a temp dir.
"adamw_ms_text_encoder" times one AdamW step over MiniLM-L6: fused, foreach and per-tensor loop.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import common  # noqa: E402,F401
from common.optim import adamw  # noqa: E402
from finetune import task as loss_terms  # noqa: E402
from finetune.ema import WeightAverage  # noqa: E402
from finetune.trainer import FinetuneTrainer  # noqa: E402
from finetune.run import build_config, parse  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"mner": "twitter2015", "mre": "mnre", "mjere": None}


def task_data(task: str, root: Path, tmp: Path) -> Path:
    if task != "mjere":
        return root / DATASETS[task]
    from finetune.mjere import build_from_mnre

    out = tmp / "mjere"
    if not out.is_dir():
        build_from_mnre(root / "mnre", out)
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.detach().requires_grad_(x.is_floating_point())


def backward_all(*outs: torch.Tensor) -> None:
    torch.autograd.backward([o for o in outs if o.requires_grad], [torch.ones_like(o) for o in outs
                                                                    if o.requires_grad])


def parts(tr: FinetuneTrainer, idx: list[int], opt, gen: torch.Generator) -> dict[str, float]:
    """Forward + backward of each stage alone, on the detached outputs of the stage before it."""
    model, enc, train = tr.model, tr.encoder, tr.data["train"]
    out: dict[str, float] = {}
    box: dict = {}
    out["collate"] = timed(lambda: box.update(batch=tr._batch(train, idx)))
    b = box["batch"]

    def text():
        box["H"] = enc.text(input_ids=b["input_ids"], attention_mask=b["attention_mask"])["tokens"]
        backward_all(box["H"])

    def vision():
        box["img"] = model.encode_images(b)
        backward_all(box["img"]["cls"], box["img"]["patches"])

    out["text encoder"], out["vision encoder"] = timed(text), timed(vision)
    H, img = leaf(box["H"]), {k: leaf(v) for k, v in box["img"].items()}
    v_cls, v_patches = img["cls"][b["image_index"]], img["patches"][b["image_index"]]

    def fusion_layers():
        box["E"] = enc.fuse(H, b["attention_mask"], v_cls, v_patches)
        backward_all(box["E"])

    out["fusion layers"] = timed(fusion_layers)
    E = leaf(box["E"])
    L = H.shape[1]

    def adaptive():
        masks = {"attention": b["attention_mask"], "text": b["text_mask"], "ctx": b["ctx_mask"]}
        box["M"] = model.fusion(E[:, :L], E[:, L:], masks)["tokens"]
        backward_all(box["M"])

    out["adaptive fusion"] = timed(adaptive)
    return out | head_parts(tr, b, H, v_cls, leaf(box["M"]), opt, gen)


def head_parts(tr: FinetuneTrainer, b: dict, H, v_cls, M, opt, gen: torch.Generator) -> dict[str, float]:
    """parts() after the fusion: the heads, the alignment losses, and clipping + AdamW after a full backward."""
    model, out = tr.model, {}
    words = model.dropout(M.gather(1, b["word_index"][..., None].expand(-1, -1, M.shape[-1])))
    f = {"words": leaf(words), "x_t": leaf(H[:, 1:].mean(1)), "x_c": leaf(H[:, 1:].mean(1)), "x_v": leaf(v_cls),
         "has_ctx": b["ctx_mask"].any(1)}
    out["heads"] = timed(lambda: model.main_loss(f, b).backward())

    def align():
        terms = loss_terms.align_losses(model, f, gen)
        sum(terms.values()).backward()

    out["alignment losses"] = timed(align)
    model.zero_grad(set_to_none=True)
    loss_terms.losses(model, b, gen)["loss"].backward()

    def step():
        torch.nn.utils.clip_grad_norm_(model.parameters(), tr.cfg.train.clip)
        opt.step()

    out["optimizer"] = timed(step)
    model.zero_grad(set_to_none=True)
    if tr.ema is not None:
        out["weight average"] = timed(lambda: tr.ema.update(model))
    return out


def padding(lengths: list[int], batch_size: int, pool: int) -> float:
    """Padded positions over real ones in one training epoch's batches (pool 0: plain shuffle)."""
    from finetune.batches import batches

    got = batches(lengths, batch_size, True, seed=1, pool=pool)
    return sum(len(b) * max(lengths[i] for i in b) for b in got) / sum(lengths) - 1


def optimizer_step_ms(module: torch.nn.Module, repeats: int = 5) -> dict[str, float]:
    """One AdamW step over `module`'s parameters: the fused kernel (the trainers') against torch's per-tensor loop
    and its foreach variant, side by side, on the same random gradients."""
    params = [p.detach().clone().requires_grad_() for p in module.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    out = {}
    for name, kw in (("fused", {"fused": True}), ("foreach", {"foreach": True}), ("loop", {"foreach": False})):
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kw)
        opt.step()
        out[name] = round(1000 * statistics.median(timed(opt.step) for _ in range(repeats)), 1)
    return out


def bench_task(task: str, data: Path, steps: int, overrides: list[str], tmp: Path) -> dict:
    cfg = build_config(parse(["--task", task, "--data", str(data), "--init", "none", *overrides]))
    tr = FinetuneTrainer(cfg, tmp / f"run-{task}", "none", quiet=True)
    train, t = tr.data["train"], cfg.train
    order = tr.epoch_batches(1)
    steps_per_epoch = len(order)
    order = order[:steps + 1]
    opt, sched = tr.optimizer(steps_per_epoch * t.epochs)
    tr.ema = WeightAverage(tr.model, t.ema) if t.ema > 0 else None  # as fit() sets it: train_step updates it
    gen = torch.Generator().manual_seed(0)
    bare = copy.deepcopy(tr.encoder.text).train()
    if tr.encoder.cfg.fusion_init == "split":  # the bare step is the whole text encoder: its top layers back
        bare.model.encoder.layer.extend(copy.deepcopy(tr.encoder.fusion))
    bare_opt = adamw(bare.parameters(), lr=t.encoder_lr, weight_decay=t.weight_decay)  # the trainer's AdamW

    def full_step(idx):
        tr.model.train()
        tr.train_step(tr._batch(train, idx), opt, sched, gen)

    def bare_step(idx):
        b = tr._batch(train, idx)
        loss = bare(input_ids=b["input_ids"], attention_mask=b["attention_mask"])["tokens"].pow(2).mean()
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    full_step(order[0])
    bare_step(order[0])  # warm-up
    full, plain, sizes = [], [], []
    for idx in order[1:]:  # interleaved, on the same batches
        full.append(timed(lambda: full_step(idx)))
        plain.append(timed(lambda: bare_step(idx)))
        b = tr._batch(train, idx)
        sizes.append((tuple(b["input_ids"].shape), int(b["images"].shape[0])))
    part = [parts(tr, idx, opt, gen) for idx in order[1:]]
    parts_s = {k: statistics.median(p[k] for p in part) for k in part[0]}
    tr.model.train()
    eval_s = timed(lambda: tr.predict_split("dev")) * (2 if tr.ema is not None else 1)
    full_s, bare_s = statistics.median(full), statistics.median(plain)
    epoch_train_s = steps_per_epoch * full_s
    lengths = [len(f.input_ids) for f in train.feats]
    return {"ratio": round(sum(full) / sum(plain), 3), "full_s": round(full_s, 4), "bare_s": round(bare_s, 4),
            "padding": {f"pool_{k}": round(padding(lengths, t.batch_size, k), 3) for k in (0, 50)},
            "batch_size": t.batch_size,
            "tokens_per_batch": round(statistics.mean(s[0][0] * s[0][1] for s in sizes), 1),
            "pictures_per_batch": statistics.mean(s[1] for s in sizes), "steps_per_epoch": steps_per_epoch,
            "ema": t.ema,
            "parts_s": {k: round(v, 4) for k, v in parts_s.items()},
            "parts_sum_over_full": round(sum(parts_s.values()) / full_s, 3),
            "epoch_train_s": round(epoch_train_s, 1), "eval_dev_s": round(eval_s, 1),
            "eval_share_of_epoch": round(eval_s / (eval_s + epoch_train_s), 3), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("MMIE_DATA", str(REPO.parent / "shared" / "data")),
                   help="holds twitter2015/ and mnre/ in the real layout (default $MMIE_DATA or ../shared/data)")
    p.add_argument("--tasks", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--steps", type=int, default=8, help="timed steps per task (after one warm-up)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the default, every core)")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    for task in a.tasks:
        need = Path(a.data) / (DATASETS[task] or "mnre")
        if not need.is_dir():
            raise SystemExit(f"bench/finetune_step.py: {need} not found (give --data DIR or set MMIE_DATA)")
    if a.threads:
        torch.set_num_threads(a.threads)
    results = {}
    from common.zoo import TextEncoder

    results["adamw_ms_text_encoder"] = optimizer_step_ms(TextEncoder("minilm-l6"))
    print(f"AdamW step over MiniLM-L6 (ms): {results['adamw_ms_text_encoder']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for task in a.tasks:
            data = task_data(task, Path(a.data), Path(tmp))
            r = bench_task(task, data, a.steps, a.overrides, Path(tmp))
            results[task] = r
            print(f"{task}: full step {r['full_s']:.3f} s, bare encoder {r['bare_s']:.3f} s, ratio {r['ratio']:.2f}x;"
                  f" epoch {r['epoch_train_s']:.0f} s train + {r['eval_dev_s']:.0f} s dev eval; padding per epoch "
                  f"{r['padding']}", flush=True)
            for k, v in r["parts_s"].items():
                print(f"    {k:18s} {v * 1000:8.1f} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
