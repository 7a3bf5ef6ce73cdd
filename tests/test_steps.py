"""The demo's step timer (common/steps.py) and the summary's "time" line."""
import json
import subprocess
import sys

from common.steps import read_steps, wall_seconds
from common.summary import summarise


def test_a_step_is_timed_its_status_passed_on_and_the_summary_lists_it(tmp_path):
    log = tmp_path / "demo" / "steps.jsonl"
    for step, code in (("data", "import time; time.sleep(0.3)"), ("zoo", "raise SystemExit(3)")):
        r = subprocess.run([sys.executable, "-m", "common.steps", "--log", str(log), "--step", step, "--",
                            sys.executable, "-c", code])
        assert r.returncode == (3 if step == "zoo" else 0)
    with open(log, "a") as f:
        f.write('{"step": "cut off", "sec')  # a step killed while writing: skipped on reading
    steps = read_steps(log)
    assert [s["step"] for s in steps] == ["data", "zoo"] and [s["rc"] for s in steps] == [0, 3]
    assert steps[0]["seconds"] >= 0.3
    (line,) = [x for x in summarise(tmp_path / "demo") if x.strip().startswith("time")]
    assert "over 2 steps" in line and "data 0 s" in line and "zoo 0 s (exit 3)" in line
    json.loads(log.read_text().splitlines()[0])  # one JSON object per line
    assert steps[0]["start"] <= steps[0]["end"] <= steps[1]["start"] <= steps[1]["end"]


def test_steps_side_by_side_count_once_in_the_wall_time(tmp_path):
    log = tmp_path / "demo" / "steps.jsonl"
    sleep = [sys.executable, "-c", "import time; time.sleep(1.5)"]
    procs = [subprocess.Popen([sys.executable, "-m", "common.steps", "--log", str(log), "--step", name, "--",
                               *sleep]) for name in ("a", "b")]
    assert [p.wait() for p in procs] == [0, 0]
    steps = read_steps(log)
    assert sorted(s["step"] for s in steps) == ["a", "b"] and sum(s["seconds"] for s in steps) >= 3.0
    assert wall_seconds(steps) < sum(s["seconds"] for s in steps) - 1.0  # they overlapped: not the sum
    assert wall_seconds([{"step": "old", "seconds": 2.0, "rc": 0}]) == 2.0  # a log from before start/end: the sum


def test_a_missing_command_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "common.steps", "--log", str(tmp_path / "s.jsonl"), "--step", "x",
                        "--", "/nonexistent/tool"], capture_output=True, text=True)
    assert r.returncode == 2 and "command not found: /nonexistent/tool" in r.stderr


def test_the_summary_says_how_many_sweep_trials_were_reused(tmp_path):
    best = tmp_path / "demo" / "sweeps" / "demo-sweep" / "best.json"
    best.parent.mkdir(parents=True)
    best.write_text(json.dumps({"trials": 3, "reused": 1, "errored_trials": 0,
                                "best": {"dev_f1": 0.9346, "align.alpha": 0.2, "align.beta": 0.2, "align.k": 3}}))
    (line,) = [x for x in summarise(tmp_path / "demo") if x.strip().startswith("sweep")]
    assert "3 trials (1 reused, 0 errored): best dev F1 93.46 at alpha 0.200, beta 0.200, K 3" in line
