#!/usr/bin/env bash
# Runs the operator's main job locally: a local Kubernetes control plane, the CRD, the
# operator, and an example JwtKeySet; then prints the published JWKS and the Secret's layout
# (never its private bytes). The control plane and the operator keep running afterwards;
# `tests/run-local.sh stop` stops both.
#
# Env: JWT_ROTATOR_LOCAL_DIR (default /tmp/jwt-key-rotator-local) holds the control plane's
# state, its kubeconfig and the operator's log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="${JWT_ROTATOR_LOCAL_DIR:-/tmp/jwt-key-rotator-local}"
EXAMPLE=deploy/examples/quick-demo.yaml
NAME=demo

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'run-local: ERROR: %s\n' "$*" >&2; exit 1; }

stop_operator() {
  local pid
  pid="$(cat "$DIR/operator.pid" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/operator.pid"
}

if [ "${1:-}" = stop ]; then
  stop_operator
  bash tests/control-plane/down.sh "$DIR"
  echo "stopped the operator and the local control plane in $DIR"
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

say "control plane and kubectl: install and build once (tests/control-plane/setup.sh)"
bash tests/control-plane/setup.sh
KUBECTL="$(bash tests/control-plane/which.sh kubectl)"
kc() { "$KUBECTL" "$@"; }
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain first"

say "building the operator"
cargo build --locked --bin jwt-key-rotator
BIN=target/debug/jwt-key-rotator

mkdir -p "$DIR"
if [ -f "$DIR/ready" ] && kill -0 "$(cat "$DIR/supervisor.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
  say "reusing the control plane already running in $DIR"
else
  say "starting a local control plane in $DIR"
  setsid nohup bash tests/control-plane/up.sh "$DIR" >"$DIR.up.log" 2>&1 </dev/null &
  for _ in $(seq 1 900); do
    [ -f "$DIR/ready" ] && break
    kill -0 $! 2>/dev/null || { tail -n 30 "$DIR.up.log" >&2; die "the control plane did not start (log: $DIR.up.log)"; }
    sleep 0.2
  done
  [ -f "$DIR/ready" ] || die "the control plane was not ready after 180s (log: $DIR.up.log)"
fi
export KUBECONFIG="$DIR/kubeconfig"
kc version

say "installing the CRD: kubectl apply -f crds/"
kc apply -f crds/
kc wait --for condition=established --timeout=60s crd/jwtkeysets.jwt.keyrotator.dev >/dev/null

say "starting the operator (log: $DIR/operator.log)"
stop_operator
nohup "$BIN" run >"$DIR/operator.log" 2>&1 </dev/null &
echo $! >"$DIR/operator.pid"

say "applying $EXAMPLE"
kc apply -f "$EXAMPLE"
if ! kc wait --for condition=Ready --timeout=60s "jwtkeyset/$NAME" >/dev/null; then
  tail -n 30 "$DIR/operator.log" >&2
  die "$NAME did not become Ready within 60s"
fi
kc get jwtkeyset "$NAME"

say "published JWKS (ConfigMap $NAME-jwks, key jwks.json)"
kc get configmap "$NAME-jwks" -o jsonpath='{.data.jwks\.json}' | python3 -m json.tool

say "Secret $NAME-signing-keys layout (sizes only; the private bytes stay in the cluster)"
kc get secret "$NAME-signing-keys" -o json | python3 -c '
import base64, json, sys
data = json.load(sys.stdin)["data"]
for key in sorted(data):
    print(f"  {key:28} {len(base64.b64decode(data[key])):6} bytes")'

cat <<EOF

The control plane and the operator keep running. The demo set rotates every 2 minutes.
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get jwtks -w   # watch it rotate
  $KUBECTL describe jwtks $NAME   # conditions and Events
  tests/run-local.sh stop   # stop both
EOF
