#!/usr/bin/env bash
# Bring up the `local` provider Ray cluster of cluster/sweep.yaml on 127.0.0.1 through a private sshd, submit a
# tiny sweep with `ray submit`, and `ray down` it. Run inside fresh network and PID namespaces, so the sshd, its
# port 22 and every Ray process (`ray stop` kills by name) are ours alone:
#   unshare -n -p -f --mount-proc bash tests/helpers/cluster_sweep.sh WORK REPO VENV DATA
set -euo pipefail
WORK=$1 REPO=$2 VENV=$3 DATA=$4
ip link set lo up
mkdir -p "$WORK/home" "$WORK/ssh" /run/sshd
echo '{}' > "$WORK/home/ray_bootstrap_config.yaml"   # keeps Ray's dashboard from probing cloud metadata
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/id" <<< y >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host" <<< y >/dev/null
cp "$WORK/ssh/id.pub" "$WORK/ssh/authorized_keys"
chmod 700 "$WORK/ssh" && chmod 600 "$WORK/ssh/authorized_keys"
cat > "$WORK/home/.bashrc" <<RC
export PATH=$VENV/bin:\$PATH
export MMIE_CACHE=${MMIE_CACHE:-$HOME/.cache/mmie} RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_AUTH_MODE=disabled HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
export YOLO_OFFLINE=1 PYTHONPATH=$REPO
RC
cat > "$WORK/ssh/sshd_config" <<CFG
ListenAddress 127.0.0.1
Port 22
HostKey $WORK/ssh/host
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $WORK/ssh/sshd.pid
SetEnv HOME=$WORK/home
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -f "$WORK/ssh/sshd_config" -E "$WORK/ssh/sshd.log"
trap 'kill $(cat "$WORK/ssh/sshd.pid") 2>/dev/null || true' EXIT
# the shipped cluster file, pointed at this key and user
sed -e "s#ssh_private_key: .*#ssh_private_key: $WORK/ssh/id#" -e "s#ssh_user: .*#ssh_user: $(id -un)#" \
    "$REPO/cluster/sweep.yaml" > "$WORK/sweep.yaml"
export HOME=$WORK/home PATH=$VENV/bin:$PATH
ray up -y --no-config-cache "$WORK/sweep.yaml" > "$WORK/up.log" 2>&1 || { tail -40 "$WORK/up.log"; exit 1; }
set +e
ray submit "$WORK/sweep.yaml" "$REPO/sweeps/tune.py" -- --task mner --data "$DATA" --address auto \
    --samples 2 --epochs 1 --storage "$WORK/sweeps" --tracking-uri "$WORK/mlruns" --name cluster \
    data.max_train=16 train.batch_size=8 model.image_size=64 model.fusion_layers=1 > "$WORK/submit.log" 2>&1
status=$?
set -e
ray down -y "$WORK/sweep.yaml" > "$WORK/down.log" 2>&1
tail -5 "$WORK/submit.log"
exit $status
