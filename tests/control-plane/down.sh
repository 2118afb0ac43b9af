#!/bin/bash
# Usage: down.sh DIR
# Stops the control plane that up.sh runs in DIR and waits until it is gone.
# Idempotent: nothing running is not an error.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
DIR="$1"
[ -d "$DIR" ] || { cp_log "no directory $DIR: nothing to stop"; exit 0; }
DIR="$(cd "$DIR" && pwd)"

# pid from FILE if that process is alive and its command line contains WORD
# (guards against a recycled pid).
live_pid() {
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  [ -n "$pid" ] && cp_alive "$pid" && grep -qa -- "$2" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

wait_gone() {  # PID SECONDS -> 0 if gone in time
  local end=$((SECONDS + $2))
  while cp_alive "$1"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.1
  done
}

sup="$(live_pid "$DIR/supervisor.pid" up.sh || true)"
if [ -n "$sup" ]; then
  # The supervisor's own tear-down TERMs, then KILLs, its children within ~5s.
  kill -TERM "$sup" 2>/dev/null || true
  if ! wait_gone "$sup" 20; then
    cp_log "supervisor $sup did not stop in 20s: killing it"
    kill -KILL "$sup" 2>/dev/null || true   # its children have PDEATHSIG=KILL
    wait_gone "$sup" 5 || true
  fi
fi

# Leftover components (e.g. supervisor SIGKILLed on a system without pdeathsig). A node's
# cgroups left so are removed by the next up.sh --node.
for name in node kube-scheduler kube-controller-manager kube-apiserver etcd; do
  # node.pid is the node's unshare (killing it kills the node: --kill-child)
  word="$name"; [ "$name" != node ] || word=unshare
  pid="$(live_pid "$DIR/$name.pid" "$word" || true)"
  [ -n "$pid" ] || continue
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
done
rm -f "$DIR/ready" "$DIR"/*.pid
if [ -n "$sup" ]; then cp_log "stopped control plane in $DIR"; else cp_log "no control plane running in $DIR"; fi
