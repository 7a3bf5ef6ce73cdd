"""Pretraining across "nodes": two DeepSpeed launchers on this machine (`--hostfile`, `--no_ssh`, `--node_rank` 0
and 1, one CPU rank each, loopback only) train exactly as one launcher with two ranks (the same loss at every
step), and a run resumed from the two-node checkpoint continues the same sample stream with the same losses."""
import json
import shutil
import subprocess

import pytest

from common.ports import free_port
from tests.test_pretrain import REPO, VENV_BIN, common_args, run_pretrain

TERMS = ("train/loss", "train/itm_loss", "train/cit_loss", "train/coe_loss", "train/cir_loss", "train/mlm_loss")
EXTRA = ["train.steps=4", "train.log_every=1", "train.eval_every=0", "train.ckpt_every=2",
         "deepspeed=pretrain/configs/ds/zero2.json", "data.audit_keys=true"]


def losses(mlruns):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("mmie-pretrain").experiment_id])
    return {t: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, t),
                                                  key=lambda m: m.step)] for t in TERMS}


def two_nodes(args, hostfile, timeout=600):
    """The per-node launch: the same command on each node with its --node_rank; rank 0's node is the master."""
    port = str(free_port())
    procs = [subprocess.Popen([str(VENV_BIN / "deepspeed"), "--hostfile", str(hostfile), "--no_ssh",
                               "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", port,
                               str(REPO / "pretrain" / "run.py"), *args],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    finally:
        for p in procs:
            p.kill()
    return [p.returncode for p in procs], outs


@pytest.fixture(scope="module")
def reference(tiny_shards, tmp_path_factory):
    """One node, two ranks: the existing launch."""
    tmp = tmp_path_factory.mktemp("one-node")
    r = run_pretrain(common_args(tiny_shards, tmp / "run", tmp / "mlruns", *EXTRA),
                     launcher=[str(VENV_BIN / "deepspeed"), "--num_gpus", "2", "--master_addr", "127.0.0.1",
                               "--master_port", str(free_port())])
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return losses(tmp / "mlruns")


def test_two_nodes_train_as_one_node_with_two_ranks_and_resume(tiny_shards, reference, tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")  # names only label the nodes: nothing is ssh-ed to
    run_dir, mlruns = tmp_path / "run", tmp_path / "mlruns"
    codes, outs = two_nodes(common_args(tiny_shards, run_dir, mlruns, *EXTRA), hostfile)
    assert codes == [0, 0], "\n".join(o[-2000:] for o in outs)
    assert losses(mlruns) == reference  # the same data order, the same all-reduce: the same numbers
    # resume from the two-node checkpoint of step 2, as if the run had been stopped there
    shutil.rmtree(run_dir / "checkpoints" / "step4")
    (run_dir / "checkpoints" / "latest").write_text("step2")
    mlruns2 = tmp_path / "mlruns-resumed"
    codes, outs = two_nodes(common_args(tiny_shards, run_dir, mlruns2, *EXTRA) + ["--resume"], hostfile)
    assert codes == [0, 0], "\n".join(o[-2000:] for o in outs)
    resumed = losses(mlruns2)
    assert [s for s, _ in resumed["train/loss"]] == [3, 4]  # it went on from step 2 ...
    # ... with the same weights, optimizer state, data and dropout masks (each rank's RNG state is in the
    # checkpoint): the same loss terms at steps 3 and 4 as the uninterrupted run
    assert resumed == {t: v[2:] for t, v in reference.items()}
    for rank in (0, 1):  # the samples of steps 3-4 are those the uninterrupted run read (keys per rank, in order)
        keys = (run_dir / "audit" / f"keys.rank{rank}.txt").read_text().splitlines()
        assert keys[4:] == keys[2:4] and len(keys) == 6
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 4
