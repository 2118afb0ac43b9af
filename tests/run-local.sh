#!/usr/bin/env bash
# A user's first ten minutes, locally: a one-node Kubernetes cluster (tests/control-plane/up.sh
# --node), the operator's image built from the Dockerfile (tests/image/build.sh) and installed
# with Helm as a pod in a namespace that enforces the `restricted` Pod Security Standard, an
# example JwtKeySet, then the published JWKS and the Secret's layout (never its private bytes).
# The cluster keeps running afterwards; `tests/run-local.sh stop` stops it.
#
# Env: JWT_ROTATOR_LOCAL_DIR (default /tmp/jwt-key-rotator-local) holds the cluster's state and
# its kubeconfig. Needs root (the node's namespaces, containerd, iptables).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR="${JWT_ROTATOR_LOCAL_DIR:-/tmp/jwt-key-rotator-local}"
EXAMPLE=deploy/examples/quick-demo.yaml
NAME=demo
RELEASE=jwt-key-rotator
NAMESPACE=jwt-key-rotator

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'run-local: ERROR: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" = stop ]; then
  bash tests/control-plane/down.sh "$DIR"
  echo "stopped the local cluster in $DIR"
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [stop]"

say "Kubernetes, helm, containerd: install and build once (tests/control-plane/setup.sh)"
bash tests/control-plane/setup.sh
KUBECTL="$(bash tests/control-plane/which.sh kubectl)"
HELM="$(bash tests/control-plane/which.sh helm)"
kc() { "$KUBECTL" "$@"; }

say "the operator's image, from the Dockerfile, without a Docker engine (tests/image/build.sh)"
bash tests/image/build.sh
IMAGE="$(cat target/images/jwt-key-rotator.ref)"

mkdir -p "$DIR"
if [ -f "$DIR/ready" ] && kill -0 "$(cat "$DIR/supervisor.pid" 2>/dev/null || echo 0)" 2>/dev/null; then
  say "reusing the cluster already running in $DIR"
else
  say "starting a one-node cluster in $DIR (kubelet syncFrequency 5s)"
  # The node's kubelet refreshes mounted Secrets and ConfigMaps every 5 s (1.5 x 5 s at worst),
  # within the example's propagationDelay of 10 s. A default kubelet (1m) needs 90 s or more.
  JWT_ROTATOR_KUBELET_SYNC_FREQUENCY=5s \
    setsid nohup bash tests/control-plane/up.sh "$DIR" --node >"$DIR.up.log" 2>&1 </dev/null &
  for _ in $(seq 1 1200); do
    [ -f "$DIR/ready" ] && break
    kill -0 $! 2>/dev/null || { tail -n 30 "$DIR.up.log" >&2; die "the cluster did not start (log: $DIR.up.log)"; }
    sleep 0.2
  done
  [ -f "$DIR/ready" ] || die "the cluster was not ready after 240s (log: $DIR.up.log)"
fi
export KUBECONFIG="$DIR/kubeconfig"
kc version
kc get nodes -o wide

say "helm install $RELEASE charts/jwt-key-rotator (image $IMAGE) into namespace $NAMESPACE (restricted)"
kc create namespace "$NAMESPACE" --dry-run=client -o yaml | kc apply -f - >/dev/null
kc label namespace "$NAMESPACE" pod-security.kubernetes.io/enforce=restricted --overwrite >/dev/null
if "$HELM" status "$RELEASE" --namespace "$NAMESPACE" >/dev/null 2>&1; then
  verb=upgrade
else
  verb=install
fi
"$HELM" "$verb" "$RELEASE" charts/jwt-key-rotator --namespace "$NAMESPACE" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}"
if ! kc -n "$NAMESPACE" rollout status "deployment/$RELEASE" --timeout=180s; then
  kc -n "$NAMESPACE" describe pods >&2
  die "the operator's Deployment did not become available"
fi

say "applying $EXAMPLE"
kc apply -f "$EXAMPLE"
# Not `kubectl wait --for condition=Ready`: it fails at once ("accessor error") if it reads the
# object while its conditions are still null. Wait for the condition itself, with a deadline.
ready() {
  local deadline=$((SECONDS + 60))
  until kc get jwtkeyset "$NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' \
      2>/dev/null | grep -qx True; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.5
  done
}
if ! ready; then
  kc -n "$NAMESPACE" logs "deployment/$RELEASE" --tail 30 >&2
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

say "kubectl get pods -A"
kc get pods -A -o wide

cat <<EOF

The cluster keeps running, the operator in it as a pod. The demo set rotates every 2 minutes.
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get jwtks -w                         # watch it rotate
  $KUBECTL describe jwtks $NAME                   # conditions and Events
  $KUBECTL -n $NAMESPACE logs deploy/$RELEASE   # the operator's log
  tests/run-local.sh stop                       # stop the cluster
EOF
