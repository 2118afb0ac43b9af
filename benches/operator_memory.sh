#!/usr/bin/env bash
# Resident memory of the operator (release build): idle, then with N JwtKeySets (default 100)
# all Ready. Starts its own throwaway control plane; prints the figures; leaves nothing running.
# Usage: [ALG=RS256] benches/operator_memory.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${1:-100}"
ALG="${ALG:-ES256}"   # the algorithm of every set
DIR="$(mktemp -d /tmp/jwt-rotator-membench.XXXXXX)"
cleanup() {
  [ -n "${OP:-}" ] && kill "$OP" 2>/dev/null || true
  [ -n "${CP:-}" ] && kill "$CP" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

bash tests/control-plane/setup.sh >/dev/null
cargo build --release --locked --bin jwt-key-rotator 2>/dev/null
JWT_ROTATOR_CP_REMOVE_DIR=0 bash tests/control-plane/up.sh "$DIR/cp" >"$DIR/up.log" 2>&1 &
CP=$!
for _ in $(seq 1 900); do [ -f "$DIR/cp/ready" ] && break; sleep 0.2; done
[ -f "$DIR/cp/ready" ] || { tail "$DIR/up.log"; exit 1; }
export KUBECONFIG="$DIR/cp/kubeconfig"
KUBECTL="$(bash tests/control-plane/which.sh kubectl)"
kc() { "$KUBECTL" "$@" 2>/dev/null; }
kc apply -f crds/ >/dev/null
kc wait --for condition=established crd/jwtkeysets.jwt.keyrotator.dev >/dev/null

target/release/jwt-key-rotator run --metrics-addr 127.0.0.1:0 >"$DIR/operator.log" 2>&1 &
OP=$!
rss() { awk '/^VmRSS/ {print $2}' "/proc/$OP/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$OP/status"; }
for _ in $(seq 1 100); do grep -q "connected to the Kubernetes API server" "$DIR/operator.log" && break; sleep 0.1; done
sleep 3   # idle: watches established, nothing to do
echo "idle:               RSS $(rss) KiB"

start=$(date +%s%N)
for i in $(seq 1 "$N"); do
  printf 'apiVersion: jwt.keyrotator.dev/v1alpha1\nkind: JwtKeySet\nmetadata: {name: set-%s}\nspec: {algorithm: %s}\n---\n' "$i" "$ALG"
done | kc apply -f - >/dev/null
until [ "$(kc get jwtks -o jsonpath='{range .items[*]}{.status.conditions[0].status}{"\n"}{end}' | grep -c True)" -ge "$N" ]; do
  sleep 0.5
done
end=$(date +%s%N)
echo "$N $ALG sets Ready in    $(( (end - start) / 1000000 )) ms"
sleep 3
echo "with $N sets:      RSS $(rss) KiB (peak $(hwm) KiB)"
