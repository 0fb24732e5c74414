#!/usr/bin/env bash
# Stop the cluster started by start.sh: cancel its jobs, then stop slurmd,
# slurmctld and munged by the pids in $SLURM_RUNTIME_DIR. Idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/common.sh"
export SLURM_CONF="$CONF"

# Jobs run under slurmstepd, which outlives slurmd: cancel them first.
if pid_of slurmctld >/dev/null && [[ -n "$(squeue -h -o %A 2>/dev/null)" ]]; then
  squeue -h -o %A | xargs -r scancel 2>/dev/null || true
  for _ in $(seq 60); do
    [[ -z "$(squeue -h -o %A 2>/dev/null)" ]] && break
    sleep 1
  done
fi

for d in slurmd slurmctld munged; do
  pid="$(pid_of "$d")" || continue
  kill -TERM "$pid"
  for _ in $(seq 60); do          # up to 30 s, then SIGKILL
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "warning: $d ($pid) ignored SIGTERM, killing" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RT/$d.pid"
  echo "stopped $d ($pid)"
done
