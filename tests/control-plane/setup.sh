#!/bin/bash
# Provision a local Kubernetes control plane for the integration tests:
#   - installs the Debian packages it needs (only when something is missing),
#   - builds kube-apiserver and kube-controller-manager 1.20.2 from Debian's
#     `kubernetes` source package ONCE into a per-machine cache
#     (${JWT_ROTATOR_CACHE:-$HOME/.cache/jwt-key-rotator}/kubernetes-1.20.2/bin).
# No Docker and no download besides Debian's archive is needed. Re-running is
# cheap: with the binaries cached it only checks and prints their paths.
# An interrupted build leaves nothing half-done in bin/: the build happens in a
# scratch dir and bin/ appears by one atomic rename at the end.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0

apt_install() {
  [ "$(id -u)" = 0 ] || cp_die "need root to apt-get install: $*"
  if [ "$APT_UPDATED" = 0 ]; then
    cp_log "apt-get update"
    apt-get update -qq >/dev/null || cp_die "step 'apt-get update' failed"
    APT_UPDATED=1
  fi
  cp_log "apt-get install $*"
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || cp_die "step 'apt-get install $*' failed"
}

# ---- 1. runtime tools (needed by up.sh on every run) ------------------------
missing=()
[ -n "$(cp_find_etcd)" ]          || missing+=(etcd-server)
command -v openssl >/dev/null     || missing+=(openssl)
command -v python3 >/dev/null     || missing+=(python3)
command -v curl >/dev/null        || missing+=(curl ca-certificates)
command -v setpriv >/dev/null     || missing+=(util-linux)
command -v flock >/dev/null       || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  # shellcheck disable=SC2207
  missing=($(printf '%s\n' "${missing[@]}" | sort -u))
  apt_install "${missing[@]}"
fi
ETCD="$(cp_find_etcd)"
[ -n "$ETCD" ] || cp_die "etcd not found after installing etcd-server (expected /usr/bin/etcd)"

print_paths() {
  echo "etcd:                    $ETCD"
  echo "kube-apiserver:          $K8S_BIN/kube-apiserver"
  echo "kube-controller-manager: $K8S_BIN/kube-controller-manager"
}

if cp_have_k8s_bins; then
  cp_log "Kubernetes $K8S_VERSION binaries already built (cache: $K8S_DIR)"
  print_paths
  exit 0
fi

# ---- 2. build, under a lock so concurrent setup.sh runs build only once -----
mkdir -p "$K8S_DIR"
exec 9>"$K8S_DIR/.lock"
flock -n 9 || { cp_log "another setup.sh is building (lock $K8S_DIR/.lock): waiting"; flock 9; }
if cp_have_k8s_bins; then   # another run finished the build while we waited
  print_paths
  exit 0
fi

SCRATCH="$K8S_DIR/build"          # fixed path: a stale one from an interrupted run is simply wiped
LOG="$K8S_DIR/build.log"          # kept outside SCRATCH so it survives a failure
rm -rf "$SCRATCH" "$K8S_DIR/bin.tmp"
mkdir -p "$SCRATCH"
: >"$LOG"
START=$(date +%s)

fail_build() {
  echo "----- last lines of $LOG -----" >&2
  tail -n 40 "$LOG" >&2 || true
  cp_die "step '$1' failed (full log: $LOG)"
}

# Build tools. Debian's own Go 1.19 is used (its path is pinned below, as
# debian/rules does), whatever other Go may be on PATH.
GOCODE=/usr/share/gocode/src/github.com
missing=()
[ -x /usr/lib/go/bin/go ]                   || missing+=(golang-go)
command -v rsync >/dev/null                 || missing+=(rsync)
command -v jq >/dev/null                    || missing+=(jq)
command -v make >/dev/null                  || missing+=(make)
command -v dpkg-source >/dev/null           || missing+=(dpkg-dev)
command -v xz >/dev/null                    || missing+=(xz-utils)
[ -f "$GOCODE/modern-go/reflect2/reflect2.go" ] || missing+=(golang-github-modern-go-reflect2-dev)
[ -f "$GOCODE/json-iterator/go/jsoniter.go" ]   || missing+=(golang-github-json-iterator-go-dev)
[ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"

# -- 2a. fetch Debian's kubernetes source package.
# deb-src entries are derived from the machine's own apt config (same archive
# URIs and suites of this Debian release) and used through a PRIVATE apt
# config, so the system's sources and package lists are left untouched.
cp_log "fetching Debian source package 'kubernetes'"
APTDIR="$SCRATCH/apt"
mkdir -p "$APTDIR/parts" "$APTDIR/lists/partial"
CODENAME="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"

derive_deb_src() {  # $1 = 1: keep only suites of this release; 0: keep all
  local only="$1" f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v cn="$CODENAME" -v only="$only" '
      $1 == "deb" {
        i = 2
        if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }  # skip [options]
        suite = $(i + 1)
        if (only && !(cn != "" && (suite == cn || index(suite, cn "-") == 1 || index(suite, cn "/") == 1))) next
        $1 = "deb-src"; print
      }' "$f"
  done >"$APTDIR/parts/deb-src.list"
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    # deb822: copy every stanza of type "deb" verbatim, with Types: deb-src.
    awk -v cn="$CODENAME" -v only="$only" 'BEGIN { RS = ""; FS = "\n" }
      {
        isdeb = 0; ok = !only; out = ""
        for (j = 1; j <= NF; j++) {
          line = $j
          if (line ~ /^#/) continue
          if (tolower(line) ~ /^types:/) {
            if (line ~ /[: ]deb( |$)/) isdeb = 1
            line = "Types: deb-src"
          } else if (tolower(line) ~ /^suites:/) {
            n = split(substr(line, index(line, ":") + 1), s, " ")
            for (k = 1; k <= n; k++)
              if (cn != "" && (s[k] == cn || index(s[k], cn "-") == 1 || index(s[k], cn "/") == 1)) ok = 1
          }
          out = out line "\n"
        }
        if (isdeb && ok) printf "%s\n", out
      }' "$f"
  done >"$APTDIR/parts/deb-src.sources"
  [ -s "$APTDIR/parts/deb-src.list" ] || [ -s "$APTDIR/parts/deb-src.sources" ]
}
derive_deb_src 1 || derive_deb_src 0 || cp_die "step 'derive deb-src': no 'deb' entries found in /etc/apt"

APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APTDIR/parts"
          -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=")
apt-get "${APT_OPTS[@]}" update >>"$LOG" 2>&1 || fail_build "apt-get update (deb-src)"
SRC_VERSION="$(apt-cache "${APT_OPTS[@]}" showsrc kubernetes 2>>"$LOG" | awk '/^Version:/ { print $2 }' | sort -V | tail -n1)"
[ -n "$SRC_VERSION" ] || fail_build "find source package 'kubernetes' in the deb-src indexes"
case "$SRC_VERSION" in
  "$K8S_VERSION"-* | *really"$K8S_VERSION"-*) ;;
  *) cp_die "Debian's kubernetes source is $SRC_VERSION, expected upstream $K8S_VERSION (update K8S_VERSION in lib.sh and re-check the reflect2 fix)" ;;
esac
mkdir -p "$SCRATCH/dl"
(cd "$SCRATCH/dl" && apt-get "${APT_OPTS[@]}" source --download-only "kubernetes=$SRC_VERSION") >>"$LOG" 2>&1 \
  || fail_build "apt-get source kubernetes=$SRC_VERSION"
SRC="$SCRATCH/src"
dpkg-source -x "$SCRATCH"/dl/kubernetes_*.dsc "$SRC" >>"$LOG" 2>&1 || fail_build "dpkg-source -x (unpack + Debian patches)"
rm -rf "$SCRATCH/dl" "$APTDIR"

# -- 2b. reflect2 fix. Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, whose
# map iteration segfaults under Go >= 1.18 (kube-apiserver crashes on the
# first custom resource). Swap in Debian's reflect2 1.0.2 and the matching
# json-iterator 1.1.12. The build runs in GOPATH mode (hack/lib/init.sh sets
# GO111MODULE=off), so vendor/modules.txt and go.mod are not consulted and
# are left as they are.
cp_log "replacing vendored reflect2/json-iterator with Debian's"
for pkg in modern-go/reflect2 json-iterator/go; do
  rm -rf "$SRC/vendor/github.com/$pkg"
  mkdir -p "$SRC/vendor/github.com/$pkg"
  # top-level package files only: the upstream test dirs/files are not needed
  find "$GOCODE/$pkg" -maxdepth 1 -type f ! -name '*_test.go' -exec cp -t "$SRC/vendor/github.com/$pkg" {} + \
    || fail_build "copy $GOCODE/$pkg into vendor/"
done
# reflect2 >= 1.0.2 has the Go 1.18 map-iteration fix in go_above_118.go
[ -f "$SRC/vendor/github.com/modern-go/reflect2/go_above_118.go" ] \
  || cp_die "step 'reflect2 fix': Debian's reflect2 lacks go_above_118.go; is golang-github-modern-go-reflect2-dev >= 1.0.2?"

# -- 2c. build, the way debian/rules does (GOPATH layout, static binaries).
cp_log "building ${K8S_BINARIES[*]} (several minutes; log: $LOG)"
mkdir -p "$SRC/.go/src/k8s.io"
ln -sfn "$SRC" "$SRC/.go/src/k8s.io/kubernetes"
WHAT="$(printf 'cmd/%s ' "${K8S_BINARIES[@]}")"
WHAT="${WHAT% }"
# In its own process group, so that INT/TERM to this script stops the whole
# build (a signal to this shell alone would leave make and go running, and an
# orphaned build keeps the lock). Kubernetes' scripts put the Go build cache
# under _output/, i.e. inside SCRATCH, so nothing is left outside it.
setsid env -C "$SRC" PATH="/usr/lib/go/bin:$PATH" GOPATH="$SRC/.go" CGO_ENABLED=0 \
  HOME="$SCRATCH" make WHAT="$WHAT" >>"$LOG" 2>&1 &
BUILD_PID=$!
trap 'kill -TERM -- "-$BUILD_PID" 2>/dev/null; cp_die "interrupted; build stopped"' INT TERM
wait "$BUILD_PID" || fail_build "make WHAT=\"$WHAT\""
trap - INT TERM

# -- 2d. publish atomically.
mkdir -p "$K8S_DIR/bin.tmp"
for b in "${K8S_BINARIES[@]}"; do
  cp "$SRC/_output/bin/$b" "$K8S_DIR/bin.tmp/$b" || fail_build "copy _output/bin/$b"
  "$K8S_DIR/bin.tmp/$b" --version >>"$LOG" 2>&1 || fail_build "run $b --version"
done
rm -rf "$K8S_BIN"
mv -T "$K8S_DIR/bin.tmp" "$K8S_BIN"
rm -rf "$SCRATCH"
cp_log "built in $(( $(date +%s) - START ))s"
print_paths
