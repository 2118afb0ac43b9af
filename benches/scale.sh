#!/usr/bin/env bash
# The operator at scale, on a throwaway local control plane, in one run: for each N, N
# JwtKeySets created at once in a namespace of their own, then
#   - the time until all are Ready,
#   - the API requests per set to converge, by verb and resource, from the API server's own
#     apiserver_request_total (our Secrets, ConfigMaps, JwtKeySets and Events; the bench's own
#     creates and its Ready polls (LIST) left out),
#   - the operator's resident memory (calm, after the run), and the writes while calm,
# and beside it the floor (benches/floor.rs): a client making only the minimal writes of the
# same sets (a key, one Secret create, one ConfigMap create, one status write) with the same
# concurrency as the operator's reconciles.
# MODE=herd instead: N sets created at once with a 2-minute rotationInterval (1-minute
# publishLead, 20 s retention), brought to Ready, then one whole rotation of all of them watched
# by benches/herd.rs: how late each activation is against its due time, and the API requests a
# set's rotation costs (its pending key, its activation, its old key's expiry). Twice: as
# created (due over the seconds creating them took), then frozen: the operator stopped (SIGSTOP)
# once every next key is published, and continued when all are due, so all fall due at once.
# Usage: [ALG=ES256] [MODE=both|operator|floor|herd] [OPERATOR=binary] benches/scale.sh [N ...]
#        (default N: 100 1000; OPERATOR: the release build of this checkout)
#        WRAP="heaptrack -o /tmp/op" runs the operator under a profiler; OPERATOR_ARGS adds
#        flags to its command line (--max-concurrent-reconciles 64); HERD_RUNS="frozen" runs
#        one of the two herds (default: "created frozen").
# Leaves nothing running; prints the figures, and a log directory under /tmp on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZES=("${@:-100 1000}")
read -r -a SIZES <<<"${SIZES[*]}"
ALG="${ALG:-ES256}"
MODE="${MODE:-both}"
DIR="$(mktemp -d /tmp/jwt-rotator-scale.XXXXXX)"
OP=""; CP=""
cleanup() {
  # A frozen operator (MODE=herd) must be continued to act on SIGTERM.
  [ -n "$OP" ] && { kill "$OP"; kill -CONT "$OP"; } 2>/dev/null || true
  [ -n "$CP" ] && kill "$CP" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

bash tests/control-plane/setup.sh >/dev/null
if [ -z "${OPERATOR:-}" ] && [ "$MODE" != floor ]; then
  cargo build --release --locked --bin jwt-key-rotator 2>/dev/null
fi
OPERATOR="${OPERATOR:-target/release/jwt-key-rotator}"
# The path of a bench client's binary, built.
bench_binary() {
  local path
  path="$(cargo bench --locked --no-run --bench "$1" 2>&1 | sed -n "s/.*Executable benches\/$1.rs (\(.*\))\$/\1/p")"
  [ -x "$path" ] || { echo "could not build benches/$1.rs" >&2; exit 1; }
  echo "$path"
}
FLOOR=""; HERD=""
case "$MODE" in
  operator) ;;
  herd) HERD="$(bench_binary herd)" ;;
  *) FLOOR="$(bench_binary floor)" ;;
esac
JWT_ROTATOR_CP_REMOVE_DIR=0 bash tests/control-plane/up.sh "$DIR/cp" >"$DIR/up.log" 2>&1 &
CP=$!
for _ in $(seq 1 900); do [ -f "$DIR/cp/ready" ] && break; sleep 0.2; done
[ -f "$DIR/cp/ready" ] || { tail "$DIR/up.log"; exit 1; }
export KUBECONFIG="$DIR/cp/kubeconfig"
KUBECTL="$(bash tests/control-plane/which.sh kubectl)"
kc() { "$KUBECTL" "$@"; }
kc apply --server-side -f crds/ >/dev/null
kc wait --for condition=established crd/jwtkeysets.jwt.keyrotator.dev >/dev/null

# apiserver_request_total summed by "VERB resource[/subresource]" over the resources a set's
# reconcile touches, one "key count" a line.
requests() {
  kc get --raw /metrics | awk '
    /^apiserver_request_total\{/ {
      verb = ""; res = ""; sub_ = ""
      n = split(substr($1, 25), labels, ",")
      for (i = 1; i <= n; i++) {
        split(labels[i], kv, "=")
        gsub(/[}"]/, "", kv[2])
        if (kv[1] == "verb") verb = kv[2]
        if (kv[1] == "resource") res = kv[2]
        if (kv[1] == "subresource") sub_ = kv[2]
      }
      if (res !~ /^(secrets|configmaps|jwtkeysets|events)$/) next
      if (sub_ != "") res = res "/" sub_
      total[verb " " res] += $2
    }
    END { for (k in total) print k, total[k] }' | sort
}

# Refused requests (codes 4xx and 5xx) to the resources a set's reconcile touches, by code.
refused() {
  kc get --raw /metrics | awk '
    /^apiserver_request_total\{/ && /resource="(secrets|configmaps|jwtkeysets|events)"/ {
      if (match($1, /code="[45][0-9][0-9]"/)) n[substr($1, RSTART + 6, 3)] += $2
    }
    END { for (c in n) printf "%s:%d ", c, n[c] }'
}

# The difference of two `requests` snapshots, per set, less the bench's own requests: its N
# creates and its LISTs; WATCHes are long-lived and not per set.
per_set() {
  local before="$1" after="$2" n="$3"
  join -a 2 -e 0 -o 0,1.2,2.2 -1 1 -2 1 \
    <(sed 's/ /:/' "$before" | sort) <(sed 's/ /:/' "$after" | sort) |
    awk -v n="$n" '{
      split($1, k, ":"); d = $3 - $2
      if (k[1] == "POST" && k[2] == "jwtkeysets") d -= n
      if (k[1] == "LIST" || k[1] == "WATCH" || d <= 0) next
      printf "  %-7s %-22s %6.2f\n", k[1], k[2], d / n
      if (k[2] != "events") { all += d; if (k[1] != "GET") w += d }
      else ev += d
    } END { printf "  total (Events aside) %.2f per set, of which writes %.2f; Events %.2f per set\n", all / n, w / n, ev / n }'
}

# N sets, each with SPEC (YAML flow mappings' fields) beside its algorithm.
create_sets() {
  local ns="$1" n="$2" spec="${3:-}"
  for i in $(seq 1 "$n"); do
    printf 'apiVersion: jwt.keyrotator.dev/v1alpha1\nkind: JwtKeySet\nmetadata: {name: set-%s, namespace: %s}\nspec: {algorithm: %s%s}\n---\n' "$i" "$ns" "$ALG" "$spec"
  done | kc create -f - >/dev/null
}

# Polls the sets' Ready conditions (a LIST of all of them: less often for many).
wait_ready() {
  local ns="$1" n="$2" every=0.2
  [ "$n" -le 1000 ] || every=1
  until [ "$(kc get jwtks -n "$ns" -o jsonpath='{range .items[*]}{.status.conditions[0].status}{"\n"}{end}' | grep -c True)" -ge "$n" ]; do
    sleep "$every"
  done
}

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# Starts the operator on namespace $1 (log: $2), its watches established.
start_operator() {
  # shellcheck disable=SC2086 # OPERATOR_ARGS: words
  ${WRAP:-} "$OPERATOR" run --namespace "$1" --metrics-addr 127.0.0.1:0 ${OPERATOR_ARGS:-} >"$2" 2>&1 &
  OP=$!
  for _ in $(seq 1 100); do grep -q "connected to the Kubernetes API server" "$2" && break; sleep 0.1; done
  # Under a wrapper, the operator is the wrapper's child: measure and stop that process.
  [ -z "${WRAP:-}" ] || OP="$(ps --ppid "$OP" -o pid=,args= | awk -v op="$OPERATOR" '$2 == op {print $1}')"
  sleep 2
}

rss() { awk -v f="$1" '$1 == f":" {print $2}' "/proc/$OP/status"; }

run_operator() {
  local n="$1" ns="op-$1-$(echo "$ALG" | tr 'A-Z' 'a-z')"
  kc create namespace "$ns" >/dev/null
  start_operator "$ns" "$DIR/operator-$n.log"
  local idle; idle=$(rss VmRSS)
  requests >"$DIR/before"
  local start; start=$(date +%s%N)
  create_sets "$ns" "$n"
  wait_ready "$ns" "$n"
  local took; took=$(ms_since "$start")
  sleep 5   # follow-up passes (its own writes' watch events) settle
  requests >"$DIR/after"
  echo "operator, $n $ALG sets: all Ready in $took ms; RSS idle $idle KiB"
  per_set "$DIR/before" "$DIR/after" "$n"
  requests >"$DIR/calm-before"
  sleep 10
  requests >"$DIR/calm-after"
  local calm
  calm=$(join <(sed 's/ /:/' "$DIR/calm-before") <(sed 's/ /:/' "$DIR/calm-after") |
    awk '{ split($1, k, ":"); if (k[1] !~ /^(GET|LIST|WATCH)$/) w += $3 - $2 } END { print w + 0 }')
  echo "  calm over 10 s: $calm writes; RSS $(awk '/^VmRSS/ {print $2}' "/proc/$OP/status") KiB (peak $(awk '/^VmHWM/ {print $2}' "/proc/$OP/status") KiB)"
  kill "$OP"; wait "$OP" 2>/dev/null || true; OP=""
}

run_floor() {
  local n="$1" ns="floor-$1-$(echo "$ALG" | tr 'A-Z' 'a-z')"
  kc create namespace "$ns" >/dev/null
  requests >"$DIR/before"
  local start; start=$(date +%s%N)
  create_sets "$ns" "$n"
  "$FLOOR" --namespace "$ns" --sets "$n" --alg "$ALG" 2>"$DIR/floor-$n.log" >/dev/null
  wait_ready "$ns" "$n"
  local took; took=$(ms_since "$start")
  requests >"$DIR/after"
  echo "floor, $n $ALG sets: all Ready in $took ms"
  per_set "$DIR/before" "$DIR/after" "$n"
}

# The herd's schedule: a rotation every 2 minutes, its key published 1 minute ahead, a retired
# key kept 20 s (so the old key expires before the next pending key is made).
HERD_INTERVAL=120 HERD_LEAD=60
HERD_SPEC=", rotationInterval: ${HERD_INTERVAL}s, publishLead: ${HERD_LEAD}s, propagationDelay: 5s, tokenTTL: 10s, clockSkew: 5s"

run_herd() {
  local n="$1" how="$2" ns="herd-$2-$1-$(echo "$ALG" | tr 'A-Z' 'a-z')"
  kc create namespace "$ns" >/dev/null
  start_operator "$ns" "$DIR/operator-herd-$how-$n.log"
  local start; start=$(date +%s%N)
  create_sets "$ns" "$n" "$HERD_SPEC"
  wait_ready "$ns" "$n"
  echo "herd ($how), $n $ALG sets (rotationInterval ${HERD_INTERVAL}s, publishLead ${HERD_LEAD}s): all Ready in $(ms_since "$start") ms"
  sleep 5   # follow-up passes settle
  requests >"$DIR/before"
  local hwm refused_before; hwm=$(rss VmHWM); refused_before=$(refused)
  local freeze=(); [ "$how" = created ] || freeze=(--freeze "$OP")
  "$HERD" --namespace "$ns" --sets "$n" --interval "$HERD_INTERVAL" --lead "$HERD_LEAD" "${freeze[@]}" 2>"$DIR/herd-$how-$n.log" ||
    { cat "$DIR/herd-$how-$n.log" >&2; exit 1; }
  sleep 5
  requests >"$DIR/after"
  echo "  requests for one rotation (pending key, activation, expiry), per set:"
  per_set "$DIR/before" "$DIR/after" "$n"
  echo "  refused requests (code:count), before: ${refused_before:-none}; after: $(refused)"
  echo "  RSS $(rss VmRSS) KiB; peak $hwm KiB while creating, $(rss VmHWM) KiB after the rotation"
  kill "$OP"; wait "$OP" 2>/dev/null || true; OP=""
}

for n in "${SIZES[@]}"; do
  case "$MODE" in
    operator) run_operator "$n" ;;
    floor) run_floor "$n" ;;
    herd) for how in ${HERD_RUNS:-created frozen}; do run_herd "$n" "$how"; done ;;
    *) run_operator "$n"; run_floor "$n" ;;
  esac
done
