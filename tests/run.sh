#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# On a fresh machine it first installs and builds what the tests need: the Debian packages,
# and etcd, Kubernetes (control plane, kubectl) and helm from their Go modules (built once,
# cached outside the work tree).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "etcd, Kubernetes, kubectl, helm: install and build once (tests/control-plane/setup.sh)"
bash tests/control-plane/setup.sh

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }

step "the control plane as a user first meets it: kubectl version, kubectl apply -f crds/ (tests/control-plane/smoke-test.sh)"
bash tests/control-plane/smoke-test.sh

step "interop: openssl, PyJWT and jose as pinned (tests/interop/setup.sh)"
bash tests/interop/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test (unit, property and integration tests against the real control plane)"
cargo test --locked

# Every test binary tears its control plane down when it exits; prove nothing outlived the run.
step "no control-plane process outlives the tests"
deadline=$((SECONDS + 20))
while pgrep -f '/jwt-rotator-cp-' >/dev/null; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "left behind after the tests:" >&2
    pgrep -af '/jwt-rotator-cp-' >&2
    exit 1
  fi
  sleep 0.5
done

step "all checks passed in $((SECONDS - started))s"
