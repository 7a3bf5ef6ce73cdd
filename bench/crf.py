"""Benchmark: mmie's CRF vs pytorch-crf (NLL forward+backward, Viterbi), side by side in one run. Also checks both
give the same NLL and paths on the same parameters. Last line: one JSON object.

    python bench/crf.py [--batch 32] [--length 40] [--tags 9] [--repeats 20]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from timing import best_of  # noqa: E402
from torchcrf import CRF as TorchCRF  # noqa: E402

from finetune.crf import CRF  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=40)
    p.add_argument("--tags", type=int, default=9)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    torch.manual_seed(0)
    ours, ref = CRF(a.tags), TorchCRF(a.tags, batch_first=True)
    with torch.no_grad():  # the same parameters in both
        ref.start_transitions.copy_(ours.start)
        ref.end_transitions.copy_(ours.end)
        ref.transitions.copy_(ours.trans)
    em = torch.randn(a.batch, a.length, a.tags, requires_grad=True)
    lengths = torch.randint(a.length // 2, a.length + 1, (a.batch,))
    lengths[0] = a.length
    mask = torch.arange(a.length)[None] < lengths[:, None]
    tags = torch.randint(0, a.tags, (a.batch, a.length)) * mask
    nll_ours = ours.nll(em, tags, mask).item()
    nll_ref = -ref(em, tags, mask, reduction="mean").item()
    same_paths = ours.decode(em, mask) == ref.decode(em, mask)

    def fb(model, fn):
        def run():
            em.grad = None
            fn().backward()
        return run

    t = {
        "ours_nll_fwd_bwd": best_of(fb(ours, lambda: ours.nll(em, tags, mask)), a.repeats),
        "torchcrf_nll_fwd_bwd": best_of(fb(ref, lambda: -ref(em, tags, mask, reduction="mean")), a.repeats),
        "ours_viterbi": best_of(lambda: ours.decode(em.detach(), mask), a.repeats),
        "torchcrf_viterbi": best_of(lambda: ref.decode(em.detach(), mask), a.repeats),
    }
    result = {"batch": a.batch, "length": a.length, "tags": a.tags,
              "nll_abs_diff": abs(nll_ours - nll_ref), "same_viterbi_paths": same_paths,
              **{f"{k}_ms": round(1000 * v, 3) for k, v in t.items()},
              "nll_speedup_vs_torchcrf": round(t["torchcrf_nll_fwd_bwd"] / t["ours_nll_fwd_bwd"], 2),
              "viterbi_speedup_vs_torchcrf": round(t["torchcrf_viterbi"] / t["ours_viterbi"], 2)}
    print(f"NLL fwd+bwd: ours {result['ours_nll_fwd_bwd_ms']} ms vs pytorch-crf {result['torchcrf_nll_fwd_bwd_ms']} ms "
          f"-> {result['nll_speedup_vs_torchcrf']}x; Viterbi: ours {result['ours_viterbi_ms']} ms vs "
          f"{result['torchcrf_viterbi_ms']} ms -> {result['viterbi_speedup_vs_torchcrf']}x; "
          f"|NLL diff| {result['nll_abs_diff']:.2e}, same paths {same_paths}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
