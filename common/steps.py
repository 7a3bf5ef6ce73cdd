"""python -m common.steps --log FILE --step NAME -- COMMAND [ARGS...] — run one step of a pipeline (the demo's data,
shards, pretraining, ...) and append its wall time, start and end (Unix seconds) and exit status to FILE as a JSON
line; exits with the command's status. Steps may run side by side (each appends one short line). common.summary
reads the file back as "where the time went"."""
from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from common.errors import MmieError, cli_main


def run_step(log: Path, step: str, command: list[str]) -> int:
    if not command:
        raise MmieError(f"step {step!r}: no command given after --")
    start, began = time.perf_counter(), time.time()
    try:
        rc = subprocess.run(command).returncode
    except FileNotFoundError:
        raise MmieError(f"step {step!r}: command not found: {command[0]}") from None
    except KeyboardInterrupt:  # Ctrl-C: subprocess.run has stopped the child; logged as interrupted
        rc = 130
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(json.dumps({"step": step, "seconds": round(time.perf_counter() - start, 1), "rc": rc,
                            "start": round(began, 1), "end": round(time.time(), 1)}) + "\n")
    return rc


def wall_seconds(steps: list[dict]) -> float:
    """First start to last end when every step has them (steps that ran side by side count once), else the sum."""
    if steps and all("start" in s and "end" in s for s in steps):
        return max(s["end"] for s in steps) - min(s["start"] for s in steps)
    return sum(s["seconds"] for s in steps)


def read_steps(log: Path) -> list[dict]:
    """The steps logged so far, in order; a line that is not a step record is skipped (a cut-off last line)."""
    out = []
    for line in log.read_text().splitlines() if log.is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and {"step", "seconds", "rc"} <= set(row):
            out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m common.steps", description=__doc__)
    p.add_argument("--log", type=Path, required=True, help="JSON-lines file the step's time is appended to")
    p.add_argument("--step", required=True, help="the step's name")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    a = p.parse_args(argv)
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    return run_step(a.log, a.step, command)


if __name__ == "__main__":
    cli_main(main)
