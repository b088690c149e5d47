#!/usr/bin/env bash
# Start a real one-node SLURM (Debian's slurm-wlm) with two fake GPUs on 127.0.0.1, run
# tests/slurm/test_cluster.py against it (the micro study through profiles/slurm), and stop the
# daemons it started, by pid, whatever happens. Needs root (CI and the dev machines are root).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi
work="$(mktemp -d /tmp/qid-slurm.XXXXXX)"
mkdir -p "$work/state" "$work/spool"
# The config goes where every SLURM command looks (job steps inside a batch job do not see
# SLURM_CONF); a config already there is set aside and put back on exit.
conf=/etc/slurm
mkdir -p "$conf"
for f in slurm.conf gres.conf; do
    [ -e "$conf/$f" ] && mv "$conf/$f" "$work/$f.saved"
done
stop() {
    for pidfile in "$work/slurmd.pid" "$work/slurmctld.pid" /run/munge/munged.pid; do
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for f in slurm.conf gres.conf; do
        rm -f "$conf/$f"
        [ -e "$work/$f.saved" ] && mv "$work/$f.saved" "$conf/$f"
    done
    return 0
}
trap stop EXIT
sed -e "s|@HOST@|$(hostname -s)|g" -e "s|@WORK@|$work|g" -e "s|@CPUS@|$(nproc)|g" \
    "$root/tests/slurm/slurm.conf.in" > "$conf/slurm.conf"
# Without File= the node drains ("gres/gpu count reported lower than configured").
printf 'Name=gpu File=/dev/null\nName=gpu File=/dev/zero\n' > "$conf/gres.conf"

mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create 2>/dev/null || \
    (dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null \
     && chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key)
[ -s /run/munge/munged.pid ] && kill -0 "$(cat /run/munge/munged.pid)" 2>/dev/null || \
    runuser -u munge -- munged
slurmctld
slurmd
for _ in $(seq 60); do
    state="$(sinfo -h -o %T 2>/dev/null || true)"
    [ "$state" = idle ] && break
    sleep 1
done
sinfo
[ "$state" = idle ] || { echo "node not idle: $state"; tail -20 "$work"/slurm*.log; exit 1; }

QID_SLURM=1 "$python" -m pytest -ra "$root/tests/slurm" -p no:cacheprovider
