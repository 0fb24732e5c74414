#!/usr/bin/env bash
# Start a single-node SLURM cluster (munged, slurmctld, slurmd) for CI.
# Idempotent: daemons already running per their pid files are left alone.
# Env: SLURM_RUNTIME_DIR (default /tmp/shift-harness-slurm),
#      SLURM_START_TIMEOUT (seconds to wait for the node, default 60).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/common.sh"
TIMEOUT="${SLURM_START_TIMEOUT:-60}"
ETC_CONF=/etc/slurm/slurm.conf

dump_logs() {
  echo "---- sinfo ----" >&2; sinfo -N -l >&2 || true
  for f in "$RT"/log/*.log; do
    [[ -e "$f" ]] && { echo "---- $f (tail) ----" >&2; tail -n 40 "$f" >&2; }
  done
}
trap 'rc=$?; if (( rc != 0 )); then echo "start.sh failed (rc=$rc)" >&2; dump_logs; fi' EXIT

mkdir -p "$RT"/{munge,state,spool/slurmd,log}
# munged refuses group/world-writable dirs on the socket and key paths.
chmod 0755 "$RT" "$RT/munge"

# --- munge: private key, socket and pid file inside $RT (no /etc/munge, no
# clash with a system munged already bound to /run/munge).
KEY="$RT/munge/munge.key"
if [[ ! -s "$KEY" ]]; then
  mungekey --create --keyfile="$KEY" 2>/dev/null \
    || dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chmod 0400 "$KEY"   # munged rejects keys readable by others
SOCK="$RT/munge/munge.socket"
if ! pid_of munged >/dev/null; then
  # --force: a previous munged killed hard may have left the socket behind.
  munged --force --socket="$SOCK" --key-file="$KEY" --pid-file="$RT/munged.pid" \
    --log-file="$RT/log/munged.log" --seed-file="$RT/munge/munged.seed" \
    --origin=127.0.0.1   # skip resolving the hostname (may be unresolvable)
fi
munge -n -S "$SOCK" | unmunge -S "$SOCK" >/dev/null

# --- slurm.conf
HOST="$(hostname -s)"
CPUS="$(nproc)"
TOTAL_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
MEM_MB=$(( TOTAL_MB * 9 / 10 ))   # slurmd drains the node if RealMemory > what it sees
{ echo "$MARKER"
  sed -e "s|@HOST@|$HOST|g" -e "s|@RT@|$RT|g" -e "s|@CPUS@|$CPUS|g" \
      -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@DEF_MEM_MB@|$(( MEM_MB / CPUS ))|g" \
      "$HERE/slurm.conf.in"
} > "$CONF.tmp"
mv "$CONF.tmp" "$CONF"
export SLURM_CONF="$CONF"   # for this script's own sinfo calls; clients: see end

# --- daemons (they daemonize and write the pid files named in slurm.conf)
if ! pid_of slurmctld >/dev/null; then
  rm -f "$RT/slurmctld.pid"
  slurmctld -c -f "$CONF"   # -c: start from empty state, no jobs from a previous run
fi
if ! pid_of slurmd >/dev/null; then
  rm -rf "$RT/slurmd.pid" "$RT/spool/slurmd"/*
  slurmd -f "$CONF" -N "$HOST"
fi

# --- wait for the node to register
deadline=$(( SECONDS + TIMEOUT ))
until [[ "$(sinfo -h -n "$HOST" -o %t 2>/dev/null)" =~ ^(idle|mix|alloc)$ ]]; do
  if (( SECONDS >= deadline )); then
    echo "error: node $HOST not idle after ${TIMEOUT}s" >&2; exit 1
  fi
  for d in slurmctld slurmd; do
    if [[ -s "$RT/$d.pid" ]] && ! pid_of "$d" >/dev/null; then
      echo "error: $d exited" >&2; exit 1
    fi
  done
  sleep 1
done

# Only now (so a failed second instance cannot clobber a working one) expose
# the conf at the default path: submitit runs sbatch/sacct/scontrol with the
# caller's environment, so this is what lets a plain `pytest` submit.
if { [[ -w /etc/slurm ]] || mkdir -p /etc/slurm 2>/dev/null; } \
   && { [[ ! -e "$ETC_CONF" ]] || grep -qxF "$MARKER" "$ETC_CONF"; }; then
  cp "$CONF" "$ETC_CONF"
  CONF_HINT=""
else
  CONF_HINT="export SLURM_CONF=$CONF"
fi
echo "slurm up: node $HOST ($CPUS cpus, ${MEM_MB} MB), partition debug, runtime $RT"
[[ -z "$CONF_HINT" ]] || echo "clients need: $CONF_HINT"
