"""pretrain.prepare's backends (inline, a process pool, Ray actors on a two-node cluster) write byte-identical
shards, vocab.json and manifest.json; a run killed mid-way and resumed writes the same bytes too."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from common.errors import ConfigError
from pretrain.prepare import parse, prepare
from tests.test_sweep import REPO, ray_env


def args(news, out, *extra):
    return ["--annotations", str(news / "annotations" / "train.json"), "--data-json", str(news / "data.json"),
            "--images", str(news), "--out", str(out), "--entities", "30", "--max-boxes", "3", "--teacher-size", "64",
            "--shard-size", "12", "--batch-size", "8", "--top-k", "3", *extra]


def digests(out):
    """sha256 of every output file but stats.json (wall times: what may differ)."""
    files = sorted(p for p in out.iterdir() if p.name != "stats.json")
    assert (out / "stats.json").is_file() and any(p.suffix == ".tar" for p in files)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def inline(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("inline") / "shards"
    prepare(parse(args(synth_dir / "newsclippings", out)))
    return out


def test_process_pool_writes_the_same_bytes(synth_dir, inline, tmp_path):
    out = tmp_path / "shards"
    m = prepare(parse(args(synth_dir / "newsclippings", out, "--backend", "process", "--workers", "2")))
    assert m["stats"]["workers"] == 2 and m["stats"]["label_units"] > 2
    assert digests(out) == digests(inline)


def test_ray_actors_on_two_nodes_write_the_same_bytes(synth_dir, inline, tmp_path):
    out = tmp_path / "shards"
    cmd = [sys.executable, str(REPO / "tests" / "helpers" / "prepare_on_two_ray_nodes.py"),
           *args(synth_dir / "newsclippings", out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ray_env(tmp_path), timeout=900, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["backend"] == "ray" and len(stats["ray_nodes"]) == 2  # an actor on each node
    assert digests(out) == digests(inline)


def test_a_killed_run_resumes_to_the_same_bytes(synth_dir, inline, tmp_path):
    out = tmp_path / "shards"
    units = tmp_path / ".shards.partial" / "units"
    cmd = [sys.executable, "-m", "pretrain.prepare", *args(synth_dir / "newsclippings", out)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(units.glob("labels-*.json")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way: after its first finished unit
    proc.wait()
    assert not out.exists() and list(units.glob("labels-*.json"))
    m = prepare(parse(args(synth_dir / "newsclippings", out, "--resume")))
    assert m["stats"]["units_resumed"] >= 1 and not units.parent.exists()
    assert digests(out) == digests(inline)


def test_resume_refuses_a_staging_directory_made_with_other_settings(synth_dir, tmp_path):
    out = tmp_path / "shards"
    (tmp_path / ".shards.partial" / "units").mkdir(parents=True)
    (tmp_path / ".shards.partial" / "units" / "plan.json").write_text(json.dumps("0123456789abcdef"))
    with pytest.raises(ConfigError, match="other settings"):
        prepare(parse(args(synth_dir / "newsclippings", out, "--resume")))
