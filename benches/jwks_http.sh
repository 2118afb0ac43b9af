#!/usr/bin/env bash
# The JWKS over HTTP under load, beside nginx serving the same bytes as a static file, in one
# run: a throwaway local control plane, one ES256 JwtKeySet with spec.jwks.http, the operator's
# release build serving it on loopback, and wrk (Debian) against each in turn with the same
# connections, threads and duration. Prints requests/s and latency percentiles of both, and
# the operator's share of nginx's throughput.
# Usage: [CONNECTIONS=64] [THREADS=2] [DURATION=15s] [OPERATOR=binary] benches/jwks_http.sh
# Installs wrk and nginx with apt-get when missing. Leaves nothing running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
DURATION="${DURATION:-15s}"
DIR="$(mktemp -d /tmp/jwt-rotator-jwks-bench.XXXXXX)"
OP=""; CP=""; NGINX=""
cleanup() {
  [ -n "$OP" ] && kill "$OP" 2>/dev/null || true
  [ -n "$NGINX" ] && kill "$NGINX" 2>/dev/null || true
  [ -n "$CP" ] && kill "$CP" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash tests/control-plane/setup.sh >/dev/null
if [ -z "${OPERATOR:-}" ]; then
  cargo build --release --locked --bin jwt-key-rotator 2>/dev/null
fi
OPERATOR="${OPERATOR:-target/release/jwt-key-rotator}"

JWT_ROTATOR_CP_REMOVE_DIR=0 bash tests/control-plane/up.sh "$DIR/cp" >"$DIR/up.log" 2>&1 &
CP=$!
for _ in $(seq 1 900); do [ -f "$DIR/cp/ready" ] && break; sleep 0.2; done
[ -f "$DIR/cp/ready" ] || { tail "$DIR/up.log"; exit 1; }
export KUBECONFIG="$DIR/cp/kubeconfig"
KUBECTL="$(bash tests/control-plane/which.sh kubectl)"
kc() { "$KUBECTL" "$@"; }
kc apply --server-side -f crds/ >/dev/null
kc wait --for condition=established crd/jwtkeysets.jwt.keyrotator.dev >/dev/null
kc create namespace bench >/dev/null

"$OPERATOR" run --namespace bench --metrics-addr 127.0.0.1:0 --jwks-addr 127.0.0.1:18081 \
  >"$DIR/operator.log" 2>&1 &
OP=$!
kc apply --server-side -f - >/dev/null <<'EOF'
apiVersion: jwt.keyrotator.dev/v1alpha1
kind: JwtKeySet
metadata: {name: api, namespace: bench}
spec:
  algorithm: ES256
  jwks: {http: {issuer: "http://127.0.0.1:18081/api"}}
EOF
kc -n bench wait --for condition=Ready jwtks/api --timeout=60s >/dev/null
URL="http://127.0.0.1:18081/jwks/bench/api.json"
for _ in $(seq 1 100); do curl -fsS -o "$DIR/jwks.json" "$URL" 2>/dev/null && break; sleep 0.1; done
[ -s "$DIR/jwks.json" ] || { echo "the operator did not serve $URL" >&2; tail "$DIR/operator.log"; exit 1; }

# nginx: the same bytes, a static file, one worker per core as wrk gets.
mkdir -p "$DIR/www/jwks/bench" "$DIR/nginx"
cp "$DIR/jwks.json" "$DIR/www/jwks/bench/api.json"
# nginx's workers run as an unprivileged user: let them read the file (mktemp made DIR private).
chmod a+x "$DIR" && chmod -R a+rX "$DIR/www"
cat >"$DIR/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $DIR/nginx; proxy_temp_path $DIR/nginx; fastcgi_temp_path $DIR/nginx;
  uwsgi_temp_path $DIR/nginx; scgi_temp_path $DIR/nginx;
  types { application/jwk-set+json json; }
  server {
    listen 127.0.0.1:18082;
    root $DIR/www;
    add_header Cache-Control "public, max-age=600";
  }
}
EOF
/usr/sbin/nginx -c "$DIR/nginx.conf" -e "$DIR/nginx/error.log" &
NGINX=$!
for _ in $(seq 1 50); do curl -fsS -o /dev/null http://127.0.0.1:18082/jwks/bench/api.json 2>/dev/null && break; sleep 0.1; done
cmp -s "$DIR/jwks.json" <(curl -fsS http://127.0.0.1:18082/jwks/bench/api.json) \
  || { echo "nginx does not serve the same bytes" >&2; exit 1; }

# requests/s, then p50 p90 p99 in ms, from wrk --latency.
load() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1" >"$DIR/wrk.out"
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) } /^ +90%/ { p90 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { bad = $NF }
    END { printf "%.0f %.2f %.2f %.2f %d\n", rps, p50, p90, p99, bad }' "$DIR/wrk.out"
}
# Warm both up the same way, then measure.
wrk -t1 -c4 -d2s "$URL" >/dev/null
wrk -t1 -c4 -d2s http://127.0.0.1:18082/jwks/bench/api.json >/dev/null
read -r op_rps op_p50 op_p90 op_p99 op_bad < <(load "$URL")
read -r ng_rps ng_p50 ng_p90 ng_p99 ng_bad < <(load http://127.0.0.1:18082/jwks/bench/api.json)
[ "$op_bad" = 0 ] && [ "$ng_bad" = 0 ] || { echo "non-2xx responses: operator $op_bad, nginx $ng_bad" >&2; exit 1; }

echo "one JWKS ($(wc -c <"$DIR/jwks.json") bytes) over loopback; wrk -t$THREADS -c$CONNECTIONS -d$DURATION; $(nproc) cores"
printf '%-10s %12s %8s %8s %8s\n' server "requests/s" "p50 ms" "p90 ms" "p99 ms"
printf '%-10s %12s %8s %8s %8s\n' operator "$op_rps" "$op_p50" "$op_p90" "$op_p99"
printf '%-10s %12s %8s %8s %8s\n' nginx "$ng_rps" "$ng_p50" "$ng_p90" "$ng_p99"
awk -v a="$op_rps" -v b="$ng_rps" 'BEGIN { printf "operator / nginx throughput: %.2f\n", a / b }'
