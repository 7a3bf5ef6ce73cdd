"""Fault injection in pretraining: one rank killed mid-run, a shard cut short while it is read."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.ports import free_port
from tests.test_pretrain import REPO, common_args, run_pretrain


def start_rank(rank: int, world: int, port: int, args: list[str], log: Path) -> subprocess.Popen:
    """One rank as a launcher would start it (RANK / WORLD_SIZE / MASTER_* in the environment), in its own
    session so that the test can stop it and whatever it started by PID."""
    env = dict(os.environ, PYTHONPATH=str(REPO), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return subprocess.Popen([sys.executable, str(REPO / "pretrain" / "run.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_ranks(args: list[str], tmp: Path, name: str, kill_rank_1_after_checkpoint: bool = False) -> list:
    """Start two ranks; optionally SIGKILL rank 1 once the first checkpoint is written. Returns, per rank, its
    exit code and stderr, and how long rank 0 took to exit after the kill."""
    port = free_port()
    logs = [tmp / f"{name}-rank{r}.log" for r in (0, 1)]
    ranks = [start_rank(r, 2, port, args, logs[r]) for r in (0, 1)]
    waited = None
    try:
        if kill_rank_1_after_checkpoint:
            latest = Path(args[args.index("--run-dir") + 1]) / "checkpoints" / "latest"
            deadline = time.time() + 300
            while not latest.is_file() and all(p.poll() is None for p in ranks) and time.time() < deadline:
                time.sleep(0.05)
            assert all(p.poll() is None for p in ranks), "a rank ended before the first checkpoint"
            t_kill = time.time()
            os.killpg(ranks[1].pid, signal.SIGKILL)
            ranks[0].wait(timeout=120)  # bounded: a hang fails the test here
            waited = time.time() - t_kill
        codes = [p.wait(timeout=600) for p in ranks]
    finally:
        for p in ranks:
            stop(p)
        for f in Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_127.0.0.1_{port}_*"):
            f.unlink()  # the killed rank could not remove its own
    return [(c, log.read_text()) for c, log in zip(codes, logs)], waited


def test_killed_rank_ends_the_other_with_a_clear_error_and_resume_finishes(tiny_shards, tmp_path):
    run_dir, mlruns = tmp_path / "run", tmp_path / "mlruns"
    extra = ["train.steps=12", "train.ckpt_every=3", "train.eval_every=0", "train.log_every=4",
             "train.dist_timeout_s=60", "deepspeed=pretrain/configs/ds/zero0.json"]
    args = common_args(tiny_shards, run_dir, mlruns, *extra)
    (rank0, _), waited = run_ranks(args, tmp_path, "killed", kill_rank_1_after_checkpoint=True)
    code, err = rank0
    (line,) = [x[x.index("error:"):] for x in err.splitlines() if "error:" in x]  # (after a progress bar's \r)
    assert code == 2 and line.startswith("error: rank 0: another rank stopped answering during step"), err[-2000:]
    # gloo says "Connection closed by peer" or "Read error ...: Connection reset by peer", depending on timing
    assert re.search(r"Connection (closed|reset) by peer", line), line
    assert "checkpoints/step" in line and line.endswith("with --resume")
    assert waited < 60
    (r0, r1), _ = run_ranks(args + ["--resume"], tmp_path, "resumed")
    assert r0[0] == 0 and r1[0] == 0, (r0[1] + r1[1])[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 12 and metrics["world_size"] == 2
    assert metrics["samples_seen"] == 12 * 4 * 2  # steps x batch x ranks: as if never interrupted


def test_shards_cut_short_while_read_are_skipped_and_counted(tiny_shards, tmp_path):
    import shutil

    train = tmp_path / "train"
    shutil.copytree(tiny_shards["train"], train)
    run_dir, mlruns = tmp_path / "run", tmp_path / "mlruns"
    # a small shuffle buffer: shards are read as training goes (256 would read the whole epoch before step 1)
    args = common_args(tiny_shards, run_dir, mlruns, f"data.train={train}", "data.shuffle_buffer=4",
                       "train.steps=12", "train.ckpt_every=3", "train.eval_every=0", "train.log_every=4",
                       "deepspeed=pretrain/configs/ds/zero0.json")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "pretrain" / "run.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "run.log", "w"), start_new_session=True)
    try:
        latest = run_dir / "checkpoints" / "latest"
        deadline = time.time() + 300
        while not latest.is_file() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before its first checkpoint"
        shards = sorted(train.glob("*.tar"))
        for shard in shards:  # every shard, the one being read included, loses its last 40%
            os.truncate(shard, int(shard.stat().st_size * 0.6))
        code = proc.wait(timeout=600)
    finally:
        stop(proc)
    log = (tmp_path / "run.log").read_text()
    assert code == 0, log[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 12
    assert sum(metrics["skipped_samples"].values()) >= 1, metrics["skipped_samples"]
    assert "skipping a bad sample" in log


def test_resume_past_a_damaged_latest_checkpoint_names_it_and_uses_the_one_before(tiny_shards, tmp_path):
    run_dir, mlruns = tmp_path / "run", tmp_path / "mlruns"
    args = common_args(tiny_shards, run_dir, mlruns, "train.steps=9", "train.ckpt_every=3", "train.eval_every=0",
                       "train.log_every=3", "deepspeed=pretrain/configs/ds/zero0.json")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "pretrain" / "run.py"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    latest = run_dir / "checkpoints" / "latest"
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and not (
                latest.is_file() and latest.read_text().strip() == "step6"):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before its second checkpoint"
    finally:
        stop(proc)
    for f in (run_dir / "checkpoints" / "step6").rglob("*.pt"):
        os.truncate(f, f.stat().st_size // 2)
    r = run_pretrain(args + ["--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step6 is unreadable" in r.stderr and "resumed from step3 instead" in r.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 9 and metrics["samples_seen"] == 9 * 4
