"""Benchmark: samples/s of one pretraining step (forward, the config's loss terms, backward, AdamW) for the tiny and
base configs, single process, side by side in one run; bf16 autocast and MFU too when a GPU is present. Last line:
one JSON object.

    python bench/pretrain_step.py [--steps 5] [--configs tiny base]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import common  # noqa: E402,F401
from common.config import load_config  # noqa: E402
from common.fusion import FusionEncoder  # noqa: E402
from pretrain.config import PretrainConfig  # noqa: E402
from pretrain.masking import mask_tokens  # noqa: E402
from pretrain.task import PromuTask  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def batch_for(cfg: PretrainConfig, enc: FusionEncoder, device, text_len: int = 32, n_ent: int = 1000,
              n_rel: int = 216) -> dict:
    B, NB, P = cfg.data.batch_size, cfg.data.max_boxes, enc.vision.num_patches
    S = enc.vision.image_size
    g = torch.Generator().manual_seed(0)
    box_mask = torch.rand(B, NB, P, generator=g) < 0.3
    ids, attn = torch.randint(1000, 5000, (B, text_len), generator=g), torch.ones(B, text_len, dtype=torch.long)
    match = (torch.rand(B, generator=g) < 0.5).float()
    tok = enc.tokenizer
    mlm_ids, mlm_labels = mask_tokens(ids, attn, [str(i) for i in range(B)], (match > 0.5).tolist(),
                                      cfg.loss.mlm_prob, tok.mask_token_id, len(tok), set(tok.all_special_ids), 0, 0)
    return {k: v.to(device) for k, v in {
        "image": torch.randn(B, 3, S, S, generator=g), "input_ids": ids, "attention_mask": attn, "match": match,
        "box_mask": box_mask, "box_valid": box_mask.any(-1),
        "ent_target": torch.softmax(torch.randn(B, NB, n_ent, generator=g), -1),
        "rel_target": torch.softmax(torch.randn(B, n_rel, generator=g), -1),
        "mlm_input_ids": mlm_ids, "mlm_labels": mlm_labels}.items()}


def flops_per_sample(task: PromuTask, text_len: int, patches: int) -> float:
    """6 x parameters x tokens (dense transformer rule of thumb; convolutions counted per image)."""
    n_text = sum(p.numel() for n, p in task.named_parameters() if n.startswith("encoder.text."))
    n_fusion = sum(p.numel() for n, p in task.named_parameters() if n.startswith("encoder.fusion."))
    n_rest = sum(p.numel() for n, p in task.named_parameters()) - n_text - n_fusion
    return 6 * (n_text * text_len + n_fusion * (text_len + 1 + patches) + n_rest)


def bench(name: str, steps: int, device, bf16: bool, mlm: bool = True) -> dict:
    cfg = load_config(PretrainConfig, REPO / "pretrain" / "configs" / f"{name}.yaml",
                      [] if mlm else ["loss.mlm=0"])
    enc = FusionEncoder(cfg.model)
    task = PromuTask(enc, 1000, 216, cfg.loss).to(device)
    opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
    batch = batch_for(cfg, enc, device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = task(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    r = {"config": name, "mlm": cfg.loss.mlm > 0, "batch_size": cfg.data.batch_size,
         "image_size": cfg.model.image_size, "fusion_layers": cfg.model.fusion_layers, "device": device.type,
         "bf16": bf16, "step_s": round(dt, 3), "samples_per_s": round(cfg.data.batch_size / dt, 2)}
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
        achieved = flops_per_sample(task, 32, enc.vision.num_patches) * r["samples_per_s"] / 1e12
        r.update(gpu=gpu, model_tflops=round(achieved, 2), mfu=round(achieved / peak, 4) if peak else None)
    return r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--configs", nargs="+", default=["tiny", "base"])
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = [bench(c, a.steps, device, bf16=False, mlm=m) for c in a.configs for m in (True, False)]
    if device.type == "cuda":
        results += [bench(c, a.steps, device, bf16=True) for c in a.configs]
    for r in results:
        print(f"{r['config']:5s} bs {r['batch_size']:3d} {r['image_size']}px {r['fusion_layers']} fusion layers "
              f"{'with' if r['mlm'] else 'without'} MLM {r['device']}{' bf16' if r['bf16'] else ''}: "
              f"{r['samples_per_s']} samples/s ({r['step_s']} s/step)"
              + (f", MFU {r['mfu']}" if r.get("mfu") is not None else ""))
    base = {(r["config"], r["mlm"]): r for r in results if not r["bf16"]}
    out = {"results": results}
    if ("tiny", True) in base and ("base", True) in base:
        out["tiny_vs_base_samples_per_s"] = round(base["tiny", True]["samples_per_s"]
                                                  / base["base", True]["samples_per_s"], 2)
    for c in a.configs:  # what the MLM term's second text + fusion pass costs
        out[f"{c}_without_vs_with_mlm_samples_per_s"] = round(base[c, False]["samples_per_s"]
                                                              / base[c, True]["samples_per_s"], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
