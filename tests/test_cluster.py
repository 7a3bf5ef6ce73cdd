"""`ray up` / `ray submit` / `ray down` of cluster/sweep.yaml (local provider) on 127.0.0.1 through a private
sshd, inside fresh network and PID namespaces so every process it starts is ours alone."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ray_up_submit_down_local_provider(synth_dir, tmp_path):
    if not Path("/usr/sbin/sshd").is_file() or not shutil.which("rsync"):
        pytest.skip("needs openssh-server and rsync (apt-get install openssh-server rsync; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("needs root for the private network and PID namespaces")
    from common.offline import cache_dir

    env = dict(os.environ, MMIE_CACHE=str(cache_dir()))
    venv = Path(sys.executable).parent.parent
    r = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "bash",
                        str(REPO / "tests" / "helpers" / "cluster_sweep.sh"), str(tmp_path), str(REPO), str(venv),
                        str(synth_dir / "twitter")], capture_output=True, text=True, timeout=900, env=env)
    logs = "".join((tmp_path / n).read_text()[-2000:] for n in ("up.log", "submit.log", "down.log")
                   if (tmp_path / n).is_file())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + logs
    assert "best of 2 trials" in (tmp_path / "submit.log").read_text()
    assert (tmp_path / "sweeps" / "cluster" / "best.json").is_file()
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert "No nodes remaining" in (tmp_path / "down.log").read_text()
