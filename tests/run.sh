#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# On a fresh machine it first installs and builds what the tests need: the Debian packages
# and the local Kubernetes control plane (built once, cached outside the work tree).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
step() { printf '\n==> %s (%ss)\n' "$*" "$((SECONDS - started))"; }

step "control plane: install and build once (tests/control-plane/setup.sh)"
bash tests/control-plane/setup.sh

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }

step "Helm 4 (its Go SDK, through Python) and kubectl for the install tests"
python3 -c 'import helm_python' 2>/dev/null || python3 -m pip install --quiet helm-python-sdk==0.2.2
command -v kubectl >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client; }

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
