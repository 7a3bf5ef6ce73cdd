"""Pretraining: the PROMU losses, the DeepSpeed runner (2 CPU ranks, ZeRO-2, with the MLM term), export, MLflow,
kill and resume."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.errors import MmieError
from common.fusion import FusionEncoder
from pretrain.losses import box_features, cir_loss, cit_loss, coe_loss, itm_loss

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def test_losses_finite_without_matched_pairs_or_boxes():
    t = torch.randn(4, 8, requires_grad=True)
    v = torch.randn(4, 8, requires_grad=True)
    none = torch.zeros(4)
    loss = cit_loss(t, v, none, torch.tensor(10.0))
    loss.backward()
    assert loss.item() == 0.0 and t.grad is not None
    logits = torch.randn(4, 3, 5, requires_grad=True)
    no_box = torch.zeros(4, 3, dtype=torch.bool)
    assert coe_loss(logits, torch.softmax(torch.randn(4, 3, 5), -1), no_box).item() == 0.0
    assert math.isfinite(itm_loss(torch.randn(4), none).item())
    assert math.isfinite(cir_loss(torch.randn(4, 7), torch.softmax(torch.randn(4, 7), -1)).item())


@pytest.mark.parametrize("fusion_init,at_encoder_lr", [("text-upper", True), ("fresh", False), ("split", True)])
def test_fusion_layers_copied_from_the_text_encoder_train_at_the_encoder_lr(fusion_init, at_encoder_lr):
    from common.fusion import ModelConfig
    from pretrain.config import LossConfig
    from pretrain.task import PromuTask

    task = PromuTask(FusionEncoder(ModelConfig(vision="patch", image_size=32, fusion_layers=1,
                                               fusion_init=fusion_init)), 5, 3, LossConfig())
    groups = task.param_groups(lr=3e-4, encoder_lr=3e-5, weight_decay=0.01)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    fusion = next(p for n, p in task.named_parameters() if n.startswith("encoder.fusion.") and p.ndim == 2)
    assert lr_of[id(fusion)] == (3e-5 if at_encoder_lr else 3e-4)
    assert lr_of[id(task.encoder.vision_proj.weight)] == 3e-4  # new projections always at the head lr


def test_split_fusion_moves_the_text_encoders_top_layers_and_survives_export(tmp_path):
    """fusion_init=split: the fusion layers are the text encoder's own top layers (not copies), the text alone
    runs the lower ones, the text states enter the fusion untouched, and an export loads back to the same model."""
    from common.fusion import ModelConfig
    from common.zoo import TextEncoder

    whole = TextEncoder("minilm-l6")
    top = whole.model.encoder.layer[-2:]
    enc = FusionEncoder(ModelConfig(vision="patch", image_size=32, fusion_layers=2, fusion_init="split"),
                        text=whole).eval()
    assert len(enc.text.model.encoder.layer) == 4 and all(a is b for a, b in zip(enc.fusion, top))
    batch = enc.tokenizer(["Obama visits Paris", "a dog"], padding=True, return_tensors="pt")
    image = torch.zeros(2, 3, 32, 32)
    with torch.no_grad():
        out = enc(batch["input_ids"], batch["attention_mask"], image)
        again = FusionEncoder.from_export(enc.export(tmp_path / "split")).eval()
        assert torch.equal(again(batch["input_ids"], batch["attention_mask"], image)["fused"], out["fused"])
    assert len(again.text.model.encoder.layer) == 4 and len(again.fusion) == 2
    with pytest.raises(MmieError, match="fusion_init=split"):
        FusionEncoder(ModelConfig(vision="patch", image_size=32, fusion_layers=6, fusion_init="split"))


def test_cit_is_symmetric_infonce_over_matched_pairs():
    t, v = torch.eye(3), torch.eye(3)
    match = torch.tensor([1.0, 1.0, 0.0])
    # two matched pairs, perfectly aligned: each row's CE = log(1 + e^{-s})
    s = 5.0
    assert cit_loss(t, v, match, torch.tensor(s)).item() == pytest.approx(math.log(1 + math.exp(-s)), rel=1e-5)


def test_box_features_average_the_covered_patches():
    fused = torch.arange(8.0).reshape(1, 4, 2)  # P = 4 patches of dim 2
    mask = torch.tensor([[[True, True, False, False], [False, False, False, True]]])
    assert box_features(fused, mask).tolist() == [[[1.0, 2.0], [6.0, 7.0]]]


def run_pretrain(args, env_extra=None, timeout=600, launcher=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    cmd = (launcher or [sys.executable]) + [str(REPO / "pretrain" / "run.py")] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def common_args(tiny_shards, run_dir, mlruns, *extra):
    return ["--config", str(REPO / "pretrain" / "configs" / "tiny.yaml"), "--run-dir", str(run_dir),
            "--tracking-uri", str(mlruns), f"data.train={tiny_shards['train']}", f"data.val={tiny_shards['val']}",
            "model.image_size=64", "data.batch_size=4", "data.max_boxes=3", "train.eval_batches=3", *extra]


def test_deepspeed_two_ranks_zero2_export_and_mlflow(tiny_shards, tmp_path):
    run_dir, mlruns = tmp_path / "run", tmp_path / "mlruns"
    r = run_pretrain(common_args(tiny_shards, run_dir, mlruns, "train.steps=6", "train.log_every=2",
                                 "train.eval_every=3", "train.ckpt_every=0",
                                 "deepspeed=pretrain/configs/ds/zero2.json"),
                     launcher=[str(VENV_BIN / "deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1"])
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["zero_stage"] == 2 and metrics["steps"] == 6
    assert metrics["samples_seen"] == 6 * 4 * 2
    # the export: consolidated fp32 weights equal to DeepSpeed's own consolidation of the final checkpoint
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    model = FusionEncoder.from_export(run_dir / "export")
    ref = get_fp32_state_dict_from_zero_checkpoint(str(run_dir / "checkpoints"), tag="step6")
    state = model.state_dict()
    enc = {k[len("encoder."):]: v for k, v in ref.items() if k.startswith("encoder.")}
    assert enc and all(torch.equal(state[k], v.float()) for k, v in enc.items())
    assert json.loads((run_dir / "export" / "metrics.json").read_text())["steps"] == 6
    assert (run_dir / "export" / "config.yaml").is_file() and (run_dir / "export" / "text" / "tokenizer.json").is_file()
    # MLflow holds the run with its params and every loss term, all finite
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mmie-pretrain")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["train.steps"] == "6"
    assert run.data.params["world_size"] == "2"
    for term in ("itm", "cit", "coe", "cir", "mlm"):
        history = client.get_metric_history(run.info.run_id, f"train/{term}_loss")
        assert [m.step for m in history] == [2, 4, 6] and all(math.isfinite(m.value) for m in history)
    assert all(f"val/{k}" in run.data.metrics for k in ("itm_acc", "cit_r1", "mlm_acc", "mlm_loss"))
    assert not list(Path("/dev/shm").glob("deepspeed_allreduce_buffer_*_127.0.0.1_*"))


def audit(run_dir):
    lines = (run_dir / "audit" / "keys.rank0.txt").read_text().splitlines()
    return [(int(e), int(s), k.split()) for e, s, k in (line.split(" ", 2) for line in lines)]


def test_kill_after_checkpoint_then_resume_continues_the_stream(tiny_shards, tmp_path):
    extra = ["train.steps=10", "train.ckpt_every=3", "train.eval_every=0", "train.log_every=5",
             "data.audit_keys=true", "deepspeed=pretrain/configs/ds/zero0.json"]
    ref_dir, run_dir, mlruns = tmp_path / "ref", tmp_path / "run", tmp_path / "mlruns"
    r = run_pretrain(common_args(tiny_shards, ref_dir, mlruns, *extra))
    assert r.returncode == 0, r.stderr[-3000:]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "pretrain" / "run.py"),
                             *common_args(tiny_shards, run_dir, mlruns, *extra)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first checkpoint"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = int(latest.read_text().strip()[len("step"):])
    assert 3 <= saved < 10
    n_killed = len(audit(run_dir))
    r = run_pretrain(common_args(tiny_shards, run_dir, mlruns, *extra) + ["--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ref_metrics = json.loads((ref_dir / "metrics.json").read_text())
    assert metrics["steps"] == 10 and metrics["samples_seen"] == ref_metrics["samples_seen"]
    # the batches before the checkpoint, then the resumed ones: exactly the uninterrupted stream
    rows = audit(run_dir)
    stitched = [row for row in rows[:n_killed] if row[1] < saved] + rows[n_killed:]
    assert rows[n_killed][1] == saved
    assert stitched == audit(ref_dir)
    keys = [k for _, _, ks in stitched for k in ks]
    assert len(keys) == len(set(keys)) == 10 * 4  # no sample twice within the epoch, none skipped


def test_bad_inputs_are_one_line_errors(tiny_shards, tmp_path):
    empty = tmp_path / "noshards"
    empty.mkdir()
    r = run_pretrain(common_args(tiny_shards, tmp_path / "r", tmp_path / "m", f"data.train={empty}"))
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(f"error: {empty}: no manifest.json")
    with pytest.raises(MmieError, match="model.safetensors is missing"):
        export = tmp_path / "export"
        (export / "text").mkdir(parents=True)
        (export / "model_config.json").write_text("{}")
        (export / "text" / "config.json").write_text("{}")
        FusionEncoder.from_export(export)
    r = run_pretrain(common_args(tiny_shards, tmp_path / "r", tmp_path / "m", "train.lrr=1"))
    assert r.returncode == 2 and "unknown key train.lrr" in r.stderr.strip().splitlines()[-1]
