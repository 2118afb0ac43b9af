#!/bin/bash
# End-to-end check of up.sh (with --lifeline-stdin) against the real binaries, as a user's
# first steps go: `kubectl version`, `kubectl apply -f crds/` (the CEL rules compiled and
# enforced by the server), Pod Security admission, namespace deletion and garbage collection
# (the controller manager works); then closes the lifeline and checks that no process is left
# behind. Needs the binaries from setup.sh. Prints "N passed, N failed".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KUBECTL="$("$HERE/which.sh" kubectl)"
kubectl() { "$KUBECTL" "$@"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/jwt-rotator-cp-smoke.XXXXXX")"
DIR="$WORK/cp"
PASSED=0; FAILED=0
ok()   { echo "ok   - $*"; PASSED=$((PASSED + 1)); }
nok()  { echo "FAIL - $*"; FAILED=$((FAILED + 1)); }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else nok "$what"; fi; }

# Lifeline: up.sh reads a FIFO whose only writer is our fd 7.
mkfifo "$WORK/lifeline"
"$HERE/up.sh" "$DIR" --lifeline-stdin <"$WORK/lifeline" >"$WORK/up.out" 2>&1 &
UP_PID=$!
exec 7>"$WORK/lifeline"
cleanup() { exec 7>&- 2>/dev/null || true; "$HERE/down.sh" "$DIR" >/dev/null 2>&1 || true; }
trap cleanup EXIT

T0=$SECONDS
until [ -f "$DIR/ready" ]; do
  if ! kill -0 "$UP_PID" 2>/dev/null; then cat "$WORK/up.out" >&2; echo "smoke-test: up.sh failed" >&2; exit 1; fi
  [ $((SECONDS - T0)) -lt 240 ] || { cat "$WORK/up.out" >&2; echo "smoke-test: not ready in 240s" >&2; exit 1; }
  sleep 0.2
done
ok "up.sh ready in $((SECONDS - T0))s"
export KUBECONFIG="$DIR/kubeconfig"
check "DIR/env names the kubeconfig" grep -qx "KUBECONFIG=$DIR/kubeconfig" "$DIR/env"
check "get namespaces" kubectl get ns default kube-system -o name

echo "--- kubectl version"
kubectl version
check "the server is Kubernetes v$(. "$HERE/lib.sh"; echo "$K8S_VERSION")" \
  sh -c "'$KUBECTL' version -o json | grep -q '\"gitVersion\": \"v$(. "$HERE/lib.sh"; echo "$K8S_VERSION")\"'"

# --- the CRD, applied as users apply it ---
echo "--- kubectl apply -f crds/"
check "kubectl apply -f crds/" kubectl apply -f "$REPO/crds/"
# `kubectl wait --for condition=...` fails at once ("accessor error") when it reads the CRD
# before the server has written any condition: wait for the condition itself, with a deadline.
established() {
  local deadline=$((SECONDS + 60))
  until kubectl get crd jwtkeysets.jwt.keyrotator.dev \
      -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null | grep -qx True; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
check "CRD established" established
check "the examples pass the server's schema (server dry run)" \
  kubectl apply -f "$REPO/deploy/examples/" --dry-run=server
refused="$(printf 'apiVersion: jwt.keyrotator.dev/v1alpha1\nkind: JwtKeySet\nmetadata: {name: bad}\nspec: {rotationInterval: 1h, publishLead: 2h}\n' \
  | kubectl apply -f - 2>&1 || true)"
echo "$refused"
check "a CEL rule is enforced at admission" grep -q 'publishLead must be shorter than rotationInterval' <<<"$refused"

# --- Pod Security admission is on ---
kubectl create ns smoke-restricted >/dev/null
kubectl label ns smoke-restricted pod-security.kubernetes.io/enforce=restricted >/dev/null
refused="$(kubectl -n smoke-restricted run privileged --image=example --privileged 2>&1 || true)"
check "PodSecurity refuses a privileged pod in a restricted namespace" grep -q 'violates PodSecurity "restricted' <<<"$refused"

# --- namespace deletion (namespace controller) ---
kubectl create ns smoke-doomed >/dev/null
kubectl -n smoke-doomed create configmap x --from-literal=a=b >/dev/null
check "namespace deleted" kubectl delete ns smoke-doomed --timeout=90s
check "namespace gone" sh -c "! '$KUBECTL' get ns smoke-doomed >/dev/null 2>&1"

# --- garbage collection of an owned ConfigMap ---
kubectl create configmap owner --from-literal=k=v >/dev/null
uid="$(kubectl get configmap owner -o jsonpath='{.metadata.uid}')"
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: dependent
  ownerReferences:
  - {apiVersion: v1, kind: ConfigMap, name: owner, uid: "$uid"}
data: {x: "z"}
EOF
kubectl delete configmap owner >/dev/null
gone=0
for _ in $(seq 1 60); do
  kubectl get configmap dependent >/dev/null 2>&1 || { gone=1; break; }
  sleep 1
done
check "garbage collector removed the dependent ConfigMap" [ "$gone" = 1 ]

# --- lifeline: closing our end of stdin tears everything down ---
PIDS="$(cat "$DIR"/etcd.pid "$DIR"/kube-apiserver.pid "$DIR"/kube-controller-manager.pid)"
exec 7>&-
rc=0; wait "$UP_PID" || rc=$?
check "up.sh exited 0 after stdin EOF (rc=$rc)" [ "$rc" = 0 ]
left=""
for p in $PIDS; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
check "no component process left" [ -z "$left" ]
none_left() { ! pgrep -f -- "$DIR" >/dev/null; }
check "no process references $DIR" none_left
check "DIR/ready removed" [ ! -e "$DIR/ready" ]

trap - EXIT
cleanup
[ "$FAILED" = 0 ] && rm -rf "$WORK" || echo "state kept in $WORK"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
