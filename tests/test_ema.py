"""train.ema: the moving average of the weights is the bias-corrected weighted mean it claims to be, swapping it in
and out leaves the training weights untouched, dev picks the better of the average and the weights as trained each
epoch, and a resumed run continues the average exactly."""
import json
from pathlib import Path

import pytest
import torch

from finetune.ema import WeightAverage
from finetune.run import main as finetune_main


def test_average_is_the_bias_corrected_weighted_mean_and_swaps_back():
    model = torch.nn.Linear(3, 2)
    avg, d = WeightAverage(model, 0.9), 0.9
    seen = []
    for step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        seen.append([p.detach().clone() for p in model.parameters()])
        avg.update(model)
    weights = torch.tensor([d ** (4 - s) for s in range(5)])
    weights /= weights.sum()
    expected = [sum(w * seen[s][i] for s, w in enumerate(weights)) for i in range(2)]
    for got, want in zip(avg.averaged(), expected):
        torch.testing.assert_close(got, want)
    live = [p.detach().clone() for p in model.parameters()]
    with avg.swapped_in(model):
        for p, want in zip(model.parameters(), expected):
            torch.testing.assert_close(p.detach(), want)
    for p, want in zip(model.parameters(), live):
        assert torch.equal(p.detach(), want)

    # the first horizon's share (h = 10 steps at d = 0.9) is the sum of its steps' normalised weights
    for n in (5, 10, 11, 28, 29, 60):
        avg.steps = n
        w = torch.tensor([d ** (n - s) for s in range(1, n + 1)], dtype=torch.float64)
        share = float(w[:10].sum() / w.sum())
        assert avg.first_horizon_share() == pytest.approx(share, rel=1e-9)
        assert avg.settled() == (share < 0.1)
    assert not WeightAverage(model, 0.9).settled() and avg.settled()
    avg.steps = 5
    again = WeightAverage(model, 0.5)
    again.load_state_dict(avg.state_dict())
    assert again.decay == 0.9 and again.steps == 5
    for a, b in zip(again.averaged(), avg.averaged()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="different parameters"):
        WeightAverage(torch.nn.Linear(3, 3, bias=False), 0.9).load_state_dict(avg.state_dict())
    with pytest.raises(ValueError, match="no step"):
        WeightAverage(model, 0.9).averaged()


def run_args(data: Path, run: Path) -> list[str]:
    return ["--task", "mner", "--data", str(data), "--init", "none", "--run-dir", str(run), "--tracking-uri", "none",
            "train.epochs=3", "train.patience=5", "train.batch_size=8", "model.image_size=64", "train.lr=1e-3",
            "train.encoder_lr=3e-4", "train.threads=1", "train.keep_checkpoints=true", "data.max_train=96",
            "train.ema=0.8"]


def test_resumed_run_continues_the_average(synth_dir, tmp_path):
    n = torch.get_num_threads()
    try:
        straight, resumed = tmp_path / "straight", tmp_path / "resumed"
        assert finetune_main(run_args(synth_dir / "twitter", straight)) == 0
        assert finetune_main(run_args(synth_dir / "twitter", resumed)) == 0
        # as if the run had been killed before its last epoch's checkpoint: --resume redoes epoch 3 from epoch 2's
        # checkpoint, which must carry the average (its steps and sums) for epoch 3 to come out the same
        for name in ("metrics.json", "checkpoints/epoch-3.pt", "checkpoints/best-epoch-3.safetensors"):
            (resumed / name).unlink(missing_ok=True)
        ckpt = torch.load(resumed / "checkpoints" / "epoch-2.pt", weights_only=True)
        # one update of the average per optimizer step: as many as the scheduler has taken over two epochs
        assert ckpt["ema"]["steps"] == ckpt["scheduler"]["last_epoch"] > 2
        assert finetune_main(["--resume", "--run-dir", str(resumed), "--tracking-uri", "none"]) == 0
    finally:
        torch.set_num_threads(n)
    m, ref = (json.loads((r / "metrics.json").read_text()) for r in (resumed, straight))
    assert m["resumed_after_epochs"] == [2]
    assert len({h["dev/f1"] for h in ref["history"]}) > 1  # a run that learns
    # each epoch's candidate is the better on dev of the average and the weights as trained, until the average has
    # settled (d = 0.8: after 14 steps; 9 steps an epoch here), when the average alone is scored (epochs 2, 3)
    assert [("dev/f1_live" in h) for h in ref["history"]] == [True, False, False]
    for h in ref["history"]:
        live = h.get("dev/f1_live", -1.0)
        better = "average" if h["dev/f1_average"] >= live else "as trained"
        assert (h["weights"], h["dev/f1"]) == (better, max(h["dev/f1_average"], live))
    assert ref["best_weights"] == ref["history"][ref["best_epoch"] - 1]["weights"]
    assert ref["dev"]["f1"] == max(h["dev/f1"] for h in ref["history"])
    for key in ("dev", "test", "best_epoch", "history"):
        assert m[key] == ref[key], key
