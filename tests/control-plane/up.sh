#!/bin/bash
# Usage: up.sh DIR [--lifeline-stdin]
#
# Runs a throwaway Kubernetes control plane (etcd + kube-apiserver +
# kube-controller-manager, no nodes) on free loopback ports, all state in DIR.
# When it is usable, writes DIR/kubeconfig, DIR/env and finally DIR/ready,
# then stays in the foreground supervising:
#   - any component dies        -> tear everything down, exit 1
#   - SIGTERM / SIGINT / SIGHUP -> tear everything down, exit 0
#   - --lifeline-stdin and EOF on stdin -> tear down, exit 0
#     (a test holds the write end of the pipe; if the test panics or is
#     SIGKILLed, the pipe closes and the control plane goes away with it)
# Components get PDEATHSIG=KILL, so even a SIGKILLed supervisor leaves nothing.
# Binaries come from setup.sh's cache (JWT_ROTATOR_CACHE); this never builds.
# Env: JWT_ROTATOR_CP_TIMEOUT = seconds to wait for readiness (default 180);
#      JWT_ROTATOR_CP_REMOVE_DIR=1 removes DIR on tear-down.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

usage() { echo "usage: $0 DIR [--lifeline-stdin]" >&2; exit 2; }
DIR=""; LIFELINE=0
for a in "$@"; do
  case "$a" in
    --lifeline-stdin) LIFELINE=1 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) [ -z "$DIR" ] || usage; DIR="$a" ;;
  esac
done
[ -n "$DIR" ] || usage
TIMEOUT="${JWT_ROTATOR_CP_TIMEOUT:-180}"

# ---- preconditions -----------------------------------------------------------
ETCD="$(cp_find_etcd)"
[ -n "$ETCD" ] || cp_die "etcd not found: run $HERE/setup.sh first"
cp_have_k8s_bins || cp_die "kube-apiserver/kube-controller-manager not found in $K8S_BIN: run $HERE/setup.sh first (builds them once, several minutes)"
for c in openssl python3 curl setpriv; do
  command -v "$c" >/dev/null || cp_die "'$c' not found: run $HERE/setup.sh first"
done

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
case "$DIR" in *[[:space:]]*) cp_die "DIR must not contain whitespace: '$DIR'" ;; esac

if [ -f "$DIR/supervisor.pid" ]; then
  old="$(cat "$DIR/supervisor.pid" 2>/dev/null || true)"
  if [ -n "$old" ] && cp_alive "$old" && grep -qa 'up.sh' "/proc/$old/cmdline" 2>/dev/null; then
    cp_die "a control plane is already running in $DIR (supervisor pid $old); use down.sh $DIR"
  fi
fi
# Fresh state every time: an old etcd member would carry stale peer ports.
rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/flexvolume" "$DIR/ready" "$DIR/kubeconfig" "$DIR/env" "$DIR"/*.log "$DIR"/*.pid
echo $$ >"$DIR/supervisor.pid"

# ---- tear-down -----------------------------------------------------------------
PIDS=()      # component pids, in start order
NAMES=()
LIFELINE_PID=""
TORN_DOWN=0
teardown() {
  [ "$TORN_DOWN" = 0 ] || return 0
  TORN_DOWN=1
  trap '' PIPE       # the reader of our stderr may be gone already
  rm -f "$DIR/ready"
  local i pid deadline alive
  # reverse order (controller-manager, apiserver, etcd), all at once: state is throwaway
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  [ -z "$LIFELINE_PID" ] || kill -TERM "$LIFELINE_PID" 2>/dev/null || true
  deadline=$((SECONDS + 5))
  while :; do
    alive=0
    for pid in "${PIDS[@]}"; do cp_alive "$pid" && alive=1; done
    if [ "$alive" = 0 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    sleep 0.1
  done
  for pid in "${PIDS[@]}" $LIFELINE_PID; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$DIR/supervisor.pid" "$DIR"/*.pid
  # Tests run throwaway control planes: they ask for the state to go with them.
  if [ "${JWT_ROTATOR_CP_REMOVE_DIR:-0}" = 1 ]; then rm -rf "$DIR"; fi
  cp_log "control plane in $DIR stopped" || true
}
EXIT_CODE=1   # any exit not caused by a stop request is a failure
trap 'teardown; exit $EXIT_CODE' EXIT
trap 'EXIT_CODE=0; exit 0' TERM INT HUP

lifeline_closed() {
  [ -n "$LIFELINE_PID" ] && ! cp_alive "$LIFELINE_PID"
}
if [ "$LIFELINE" = 1 ]; then
  # A child that exits at EOF on our stdin, so `wait -n` wakes up then.
  # Started first, so a test dying during start-up is noticed too.
  exec 3<&0
  setpriv --pdeathsig KILL -- cat <&3 >/dev/null &
  LIFELINE_PID=$!
  exec 3<&-
fi

# Starts "$@" in the background, logging to DIR/NAME.log, killed if we die.
start() {
  local name="$1"; shift
  setpriv --pdeathsig KILL -- "$@" </dev/null >"$DIR/$name.log" 2>&1 &
  PIDS+=("$!"); NAMES+=("$name")
  echo "$!" >"$DIR/$name.pid"
}

fail_with_log() {  # NAME MESSAGE
  echo "----- last lines of $DIR/$1.log -----" >&2
  tail -n 30 "$DIR/$1.log" >&2 || true
  echo "-----" >&2
  cp_die "$2"
}

# Polls CHECK-COMMAND until it succeeds; fails if NAME's process died or the
# overall deadline passed.
DEADLINE=$((SECONDS + TIMEOUT))
wait_for() {  # NAME PID DESCRIPTION CHECK-COMMAND...
  local name="$1" pid="$2" what="$3"; shift 3
  until "$@" >/dev/null 2>&1; do
    cp_alive "$pid" || fail_with_log "$name" "$name exited while waiting for $what"
    if lifeline_closed; then cp_log "stdin closed (--lifeline-stdin) during start-up: tearing down"; exit 1; fi
    [ "$SECONDS" -lt "$DEADLINE" ] || fail_with_log "$name" "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

# ---- ports, keys, tokens ------------------------------------------------------
# Free loopback ports: bound to port 0 all at once (so they are distinct), then
# released for the components. The window for a clash is tiny.
read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
[ -n "$KCM_PORT" ] || cp_die "could not pick free ports with python3"

mkdir -p "$DIR/pki"
openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null || cp_die "openssl genrsa (service-account key) failed"
openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null || cp_die "openssl rsa -pubout failed"
TOKEN="$(openssl rand -hex 32)"
( umask 077; echo "$TOKEN,admin,admin,\"system:masters\"" >"$DIR/pki/tokens.csv" )

write_kubeconfig() {  # FILE CLUSTER-TLS-LINE
  ( umask 077; cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    $2
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: local
  context:
    cluster: local
    user: admin
    namespace: default
current-context: local
EOF
  )
}

# ---- etcd ----------------------------------------------------------------------
cp_log "starting etcd on 127.0.0.1:$ETCD_PORT"
start etcd "$ETCD" --name cp \
  --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "cp=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state new
ETCD_PID=$!
wait_for etcd "$ETCD_PID" "etcd /health" \
  sh -c "curl -sf http://127.0.0.1:$ETCD_PORT/health | grep -q '\"health\":\"true\"'"

# ---- kube-apiserver ------------------------------------------------------------
# --insecure-port=0: 1.20 would otherwise also listen on 127.0.0.1:8080 (clash
# between parallel control planes). --advertise-address=127.0.0.1 keeps the
# host's network out of it; the endpoint reconciler is off because a loopback
# endpoint for the `kubernetes` service would fail validation in a loop.
cp_log "starting kube-apiserver on https://127.0.0.1:$API_PORT"
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 \
  --secure-port "$API_PORT" \
  --insecure-port 0 \
  --advertise-address 127.0.0.1 \
  --endpoint-reconciler-type none \
  --cert-dir "$DIR/pki" \
  --token-auth-file "$DIR/pki/tokens.csv" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$DIR/pki/sa.pub" \
  --service-account-signing-key-file "$DIR/pki/sa.key" \
  --service-cluster-ip-range 10.0.0.0/24
API_PID=$!
API="https://127.0.0.1:$API_PORT"
AUTH="Authorization: Bearer $TOKEN"
wait_for kube-apiserver "$API_PID" "kube-apiserver /readyz" \
  sh -c "curl -sfk -H '$AUTH' $API/readyz | grep -qx ok"
# the bootstrap controller creates the `default` namespace shortly after /readyz
wait_for kube-apiserver "$API_PID" "namespace 'default'" \
  curl -sfk -H "$AUTH" "$API/api/v1/namespaces/default"

# The self-signed serving cert that kube-apiserver generated in --cert-dir
# (leaf + its own CA, SANs incl. 127.0.0.1) serves as the kubeconfig's CA, so
# clients verify TLS. Fall back to skipping verification should that ever fail.
if curl -sf --cacert "$DIR/pki/apiserver.crt" -H "$AUTH" "$API/readyz" >/dev/null 2>&1; then
  TLS_LINE="certificate-authority: $DIR/pki/apiserver.crt"
else
  cp_log "WARNING: $DIR/pki/apiserver.crt does not verify the apiserver; kubeconfig skips TLS verification"
  TLS_LINE="insecure-skip-tls-verify: true"
fi
write_kubeconfig "$DIR/kubeconfig.tmp" "$TLS_LINE"
mv "$DIR/kubeconfig.tmp" "$DIR/kubeconfig"

# ---- kube-controller-manager ---------------------------------------------------
# Runs with the admin credentials (simplest; it needs wide rights for garbage
# collection anyway). --port=0 disables its insecure port (1.20 default 10252).
# Without --authentication/authorization-kubeconfig its secure port only serves
# the always-allowed /healthz, which is all we use (and it spares an error loop
# about the extension-apiserver-authentication ConfigMap, which this apiserver
# never creates as it has no client CA). --flex-volume-plugin-dir: the default
# is created under /usr/libexec otherwise.
cp_log "starting kube-controller-manager (secure port $KCM_PORT)"
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig "$DIR/kubeconfig" \
  --bind-address 127.0.0.1 \
  --secure-port "$KCM_PORT" \
  --port 0 \
  --leader-elect=false \
  --flex-volume-plugin-dir "$DIR/flexvolume" \
  --service-account-private-key-file "$DIR/pki/sa.key" \
  --root-ca-file "$DIR/pki/apiserver.crt" \
  --use-service-account-credentials=false
KCM_PID=$!
wait_for kube-controller-manager "$KCM_PID" "kube-controller-manager /healthz" \
  sh -c "curl -sfk https://127.0.0.1:$KCM_PORT/healthz | grep -qx ok"
# /healthz is up before the controllers run; the garbage collector is what
# the tests rely on, so wait until it has started.
wait_for kube-controller-manager "$KCM_PID" "the garbage collector to start" \
  grep -q 'Started "garbagecollector"' "$DIR/kube-controller-manager.log"

# ---- ready -----------------------------------------------------------------------
cat >"$DIR/env.tmp" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBE_APISERVER=$API
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT
CONTROL_PLANE_PID=$$
EOF
mv "$DIR/env.tmp" "$DIR/env"
: >"$DIR/ready"
cp_log "ready in ${SECONDS}s: export KUBECONFIG=$DIR/kubeconfig"

# ---- supervise -------------------------------------------------------------------
while :; do
  wait -n || true   # returns when any child exits, or on a trapped signal
  for i in "${!PIDS[@]}"; do
    if ! cp_alive "${PIDS[$i]}"; then
      st=0; wait "${PIDS[$i]}" 2>/dev/null || st=$?
      fail_with_log "${NAMES[$i]}" "${NAMES[$i]} exited unexpectedly (status $st); tearing the control plane down"
    fi
  done
  if lifeline_closed; then
    cp_log "stdin closed (--lifeline-stdin): tearing down"
    EXIT_CODE=0
    exit 0
  fi
done
