#!/bin/bash
# Usage: tests/image/build.sh [OUT-DIR]
#
# Builds, without a Docker engine and without pulling anything, the images the test node runs
# (tests/control-plane/up.sh --node imports them), as OCI archives in OUT-DIR (default
# $JWT_ROTATOR_IMAGES, else target/images), each with its full reference in NAME.ref:
#
#   jwt-key-rotator.tar  localhost/jwt-key-rotator:APPVERSION  the operator, from the Dockerfile
#   workload.tar         localhost/jwt-key-rotator-workload:test  tests/workload (signer, verifier)
#   pause.tar            localhost/jwt-key-rotator-pause:1.0   the pods' sandbox (pause.c)
#
# The operator's image follows the Dockerfile: its build stage's command runs here (the same
# `cargo build --release --locked --target ARCH-unknown-linux-musl`, musl-gcc for ring's C),
# its result is put where that stage leaves it (/jwt-key-rotator, and Debian's CA bundle at
# /etc/ssl/certs/ca-certificates.crt) in a local image named `build`, and buildah runs the
# Dockerfile's final stage itself, unchanged, against it. So the image tested is the one users
# build with `docker build .`, but for the base of the build stage (this machine's Debian 12
# and Rust, not the rust:bookworm image).
#
# Needs: cargo with the musl target (`rustup target add x86_64-unknown-linux-musl`, which this
# script runs), musl-tools, buildah (Debian's), all installed when missing. buildah's storage
# is a scratch directory removed on exit: nothing is left in /var/lib/containers or /etc/cni.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-${JWT_ROTATOR_IMAGES:-$REPO/target/images}}"
ARCH="$(uname -m)"
TARGET="$ARCH-unknown-linux-musl"
CARGO_OUT="$REPO/target/musl"   # apart from target/: a running `cargo test` holds that lock
log() { printf '[build.sh] %s\n' "$*" >&2; }
die() { printf '[build.sh] ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
command -v buildah >/dev/null || missing+=(buildah)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
  log "apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi
command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain first"
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  log "rustup target add $TARGET"
  rustup target add "$TARGET" >&2 || die "rustup target add $TARGET failed"
fi

# ---- static binaries ---------------------------------------------------------------------------
export CC_x86_64_unknown_linux_musl=musl-gcc CC_aarch64_unknown_linux_musl=musl-gcc
export CARGO_TARGET_DIR="$CARGO_OUT"
log "cargo build --release --locked --target $TARGET --bin jwt-key-rotator (the Dockerfile's build stage)"
(cd "$REPO" && cargo build --release --locked --target "$TARGET" --bin jwt-key-rotator)
log "cargo build --release --locked --target $TARGET (tests/workload)"
(cd "$REPO/tests/workload" && cargo build --release --locked --target "$TARGET")
mkdir -p "$CARGO_OUT/pause"
musl-gcc -Os -static -s -o "$CARGO_OUT/pause/pause" "$REPO/tests/image/pause.c"

# ---- images ------------------------------------------------------------------------------------
WORK="$(mktemp -d /tmp/jwt-rotator-image.XXXXXX)"
# buildah keeps its images in WORK; what it would write elsewhere stays out of the host: its
# CNI configuration directory (moved by containers.conf) and its blob cache in /var/lib
# (a private tmpfs, in a mount namespace of its own).
printf '[network]\nnetwork_config_dir = "%s/cni"\n' "$WORK" >"$WORK/containers.conf"
export CONTAINERS_CONF="$WORK/containers.conf"
bah() {
  unshare --mount --propagation private -- sh -c 'mount -t tmpfs buildah /var/lib && exec "$@"' sh \
    buildah --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs "$@"
}
cleanup() {
  # vfs layers are plain directories; buildah mounts nothing that outlives it.
  bah rm --all >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
STAGE="$WORK/out"
mkdir -p "$STAGE" "$WORK/context"

# An image FROM scratch holding FILES (SOURCE:DEST...), with a user and an entrypoint.
scratch_image() {  # NAME USER ENTRYPOINT-JSON SOURCE:DEST...
  local name="$1" user="$2" entrypoint="$3" c spec; shift 3
  c="$(bah from scratch)"
  for spec in "$@"; do bah copy "$c" "${spec%%:*}" "${spec#*:}" >/dev/null; done
  [ -z "$user" ] || bah config --user "$user" "$c"
  [ -z "$entrypoint" ] || bah config --entrypoint "$entrypoint" --cmd '' "$c"
  bah commit --quiet "$c" "$name" >/dev/null
  bah rm "$c" >/dev/null
}
# OCI archive FILE.tar of local image REF, FILE.ref naming it.
archive() {  # REF FILE
  rm -f "$STAGE/$2.tar"
  bah push --quiet "$1" "oci-archive:$STAGE/$2.tar:${1##*:}" >/dev/null
  echo "$1" >"$STAGE/$2.ref"
}

VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$REPO/charts/jwt-key-rotator/Chart.yaml")"
[ -n "$VERSION" ] || die "no appVersion in charts/jwt-key-rotator/Chart.yaml"
OPERATOR="localhost/jwt-key-rotator:$VERSION"
log "$OPERATOR: the Dockerfile's final stage, run by buildah"
scratch_image localhost/build "" "" \
  "$CARGO_OUT/$TARGET/release/jwt-key-rotator:/jwt-key-rotator" \
  "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt"
# The final stage: from its FROM to the end of the Dockerfile.
awk '/^FROM scratch/ { final = 1 } final' "$REPO/Dockerfile" >"$WORK/Dockerfile.final"
grep -q '^COPY --from=build ' "$WORK/Dockerfile.final" || die "the Dockerfile's final stage copies nothing from 'build'"
bah bud --quiet --pull-never --layers=false -f "$WORK/Dockerfile.final" -t "$OPERATOR" "$WORK/context" >/dev/null
archive "$OPERATOR" jwt-key-rotator

log "localhost/jwt-key-rotator-workload:test (tests/workload)"
scratch_image localhost/jwt-key-rotator-workload:test 65532:65532 '["/jwt-workload"]' \
  "$CARGO_OUT/$TARGET/release/jwt-workload:/jwt-workload"
archive localhost/jwt-key-rotator-workload:test workload

log "localhost/jwt-key-rotator-pause:1.0 (tests/image/pause.c)"
scratch_image localhost/jwt-key-rotator-pause:1.0 65535:65535 '["/pause"]' "$CARGO_OUT/pause/pause:/pause"
archive localhost/jwt-key-rotator-pause:1.0 pause

# What the operator's image holds, for the record: its size and its files.
bah inspect --type image "$OPERATOR" >"$STAGE/jwt-key-rotator.inspect.json"
mkdir -p "$OUT"
for f in "$STAGE"/*; do mv -f "$f" "$OUT/"; done
log "images in $OUT:"
for f in "$OUT"/*.tar; do
  printf '  %-55s %s\n' "$(cat "${f%.tar}.ref")" "$(du -h "$f" | cut -f1) (archive)" >&2
done
