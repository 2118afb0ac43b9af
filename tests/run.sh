#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# On a fresh machine it first installs and builds what the tests need: the Debian packages,
# etcd, Kubernetes (control plane, node, kubectl) and helm from their Go modules (built once,
# cached outside the work tree), and the images the test node runs (the operator's, from the
# Dockerfile, without a Docker engine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
# This run's control planes keep their state under a directory of its own (the tests and
# smoke-test.sh make theirs in TMPDIR), so that the leftover check at the end counts this run's
# processes only, whatever else tests on the machine.
RUN_TMP="$(mktemp -d /tmp/jwt-rotator-run.XXXXXX)"
export TMPDIR="$RUN_TMP"
trap 'rm -rf "$RUN_TMP"' EXIT
# Each step shows the free disk: a full disk kills the linker with a bare "Bus error".
step() {
  printf '\n==> %s (%ss, %s free)\n' "$*" "$((SECONDS - started))" \
    "$(df -h --output=avail . 2>/dev/null | tail -n 1 | tr -d ' ')"
}

step "etcd, Kubernetes, kubectl, helm, containerd: install and build once (tests/control-plane/setup.sh)"
bash tests/control-plane/setup.sh

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }

step "the node's images: the operator (Dockerfile), the test workload, pause (tests/image/build.sh)"
bash tests/image/build.sh

step "the control plane as a user first meets it: kubectl version, kubectl apply -f crds/ (tests/control-plane/smoke-test.sh)"
bash tests/control-plane/smoke-test.sh

step "interop: openssl, PyJWT and jose as pinned (tests/interop/setup.sh)"
bash tests/interop/setup.sh

step "cargo fmt --check"
cargo fmt --all -- --check
(cd tests/workload && cargo fmt -- --check)

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
(cd tests/workload && CARGO_TARGET_DIR=../../target/musl cargo clippy --locked --all-targets -- -D warnings)

step "cargo test (unit, property and integration tests against the real control plane)"
cargo test --locked

# Every test binary tears its control plane and node down when it exits; prove nothing
# outlived the run.
step "nothing outlives the tests: processes, interfaces, cgroups, mounts, iptables, node state"
bash tests/control-plane/leftovers.sh 20 "$RUN_TMP/"

step "what the node measured (tests/workloads.rs)"
cat target/tmp/propagation.txt 2>/dev/null || echo "(no figures: tests/workloads.rs wrote none)"

step "all checks passed in $((SECONDS - started))s"
