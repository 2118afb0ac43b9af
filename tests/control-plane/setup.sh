#!/bin/bash
# Provisions what the integration tests run, once per machine:
#   - the Debian packages up.sh needs, its node's included (containerd, runc, the CNI
#     plugins, iptables, conntrack), only when something is missing;
#   - etcd and etcdctl, the Kubernetes components (kube-apiserver, kube-controller-manager, kubectl, and
#     kube-scheduler, kubelet, kube-proxy for a node) and helm, each built from its release's
#     Go module through the modules under tests/k8s/ (versions in lib.sh), into a cache
#     outside the work tree: ${JWT_ROTATOR_CACHE:-$HOME/.cache/jwt-key-rotator}/NAME-VERSION-HASH/bin.
# Re-running is cheap: with the binaries cached it only checks and prints their paths.
# Concurrent runs build each component once (a lock per component), and an interrupted build
# publishes nothing: it builds in a scratch directory that becomes the cache entry by one
# atomic rename. Every failure names the step that failed and keeps its log.
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

# ---- 1. tools: what up.sh needs on every run, and Go to build ---------------------------
missing=()
command -v openssl >/dev/null   || missing+=(openssl)
command -v python3 >/dev/null   || missing+=(python3)
command -v curl >/dev/null      || missing+=(curl ca-certificates)
command -v setpriv >/dev/null   || missing+=(util-linux)
command -v flock >/dev/null     || missing+=(util-linux)
command -v sha256sum >/dev/null || missing+=(coreutils)
# The node (up.sh --node): containerd and runc, the CNI plugins, iptables for kube-proxy and
# the bridge plugin, conntrack for kube-proxy, unshare/nsenter and ip for the namespaces.
command -v containerd >/dev/null   || missing+=(containerd)
command -v runc >/dev/null         || missing+=(runc)
[ -x "$CP_CNI_BIN/bridge" ]        || missing+=(containernetworking-plugins)
command -v iptables-save >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null    || missing+=(conntrack)
command -v unshare >/dev/null      || missing+=(util-linux)
command -v ip >/dev/null           || missing+=(iproute2)
command -v pgrep >/dev/null        || missing+=(procps)
if [ "${#missing[@]}" -gt 0 ]; then
  # shellcheck disable=SC2207
  missing=($(printf '%s\n' "${missing[@]}" | sort -u))
  apt_install "${missing[@]}"
fi

# Go: the machine's, else Debian's. Any go >= 1.21 fetches, as a module, the toolchain that
# a go.mod under tests/k8s asks for when it is newer than itself (GOTOOLCHAIN=auto).
find_go() {
  command -v go 2>/dev/null || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true
}
need_go() {
  GO="$(find_go)"
  if [ -z "$GO" ]; then
    apt_install golang-go
    GO="$(find_go)"
    [ -n "$GO" ] || cp_die "step 'install Go': no go command after installing golang-go"
  fi
  export GOTOOLCHAIN=auto GOFLAGS="${GOFLAGS:-} -buildvcs=false" CGO_ENABLED=0
}

print_paths() {
  local component b
  for component in "${CP_COMPONENTS[@]}"; do
    for b in $(cp_binaries "$component"); do
      printf '%-24s %s\n' "$b:" "$(cp_dir "$component")/bin/$b"
    done
  done
}

# ---- 2. the versions in lib.sh are the ones the modules pin --------------------------------
check_pin() {  # COMPONENT MODULE-PATH
  local pinned
  pinned="$(awk -v m="$2" '$1 == m || ($1 == "require" && $2 == m) { v = ($1 == m) ? $2 : $3 } END { print v }' \
              "$CP_MODULES/$1/go.mod")"
  [ "$pinned" = "v$(cp_version "$1")" ] \
    || cp_die "step 'check pins': tests/k8s/$1/go.mod requires $2 ${pinned:-(nothing)}, lib.sh says v$(cp_version "$1"): run tests/k8s/pin.sh"
}
check_pin kubernetes k8s.io/kubernetes
check_pin etcd go.etcd.io/etcd/server/v3
check_pin etcdctl go.etcd.io/etcd/etcdctl/v3
check_pin helm helm.sh/helm/v4

# ---- 3. build each component once, under its own lock --------------------------------------
build() {  # COMPONENT
  local component="$1" dir scratch log started pkgs b
  dir="$(cp_dir "$component")"
  cp_built "$component" && return 0
  mkdir -p "$CP_CACHE"
  exec 9>"$dir.lock"
  flock -n 9 || { cp_log "another setup.sh is building $component (lock $dir.lock): waiting"; flock 9; }
  if cp_built "$component"; then exec 9>&-; return 0; fi   # built while we waited

  need_go
  scratch="$dir.tmp"          # fixed path: a stale one from an interrupted run is wiped
  log="$dir.build.log"        # beside it, so that it outlives a failure
  rm -rf "$scratch"
  mkdir -p "$scratch/bin"
  : >"$log"
  started=$SECONDS
  mapfile -t pkgs < <(cp_packages "$component")
  fail() {
    echo "----- last lines of $log -----" >&2
    tail -n 40 "$log" >&2 || true
    cp_die "step '$1' of $component $(cp_version "$component") failed (full log: $log)"
  }
  # In its own process group, so that INT/TERM stops the whole build (an orphaned compiler
  # would keep the lock).
  run() {  # STEP COMMAND...
    local step="$1"; shift
    echo "+ $*" >>"$log"
    setsid env -C "$CP_MODULES/$component" "$@" >>"$log" 2>&1 &
    local pid=$!
    trap 'kill -TERM -- "-$pid" 2>/dev/null; cp_die "interrupted during $step of $component; nothing published"' INT TERM
    wait "$pid" || fail "$step"
    trap - INT TERM
  }
  cp_log "$component $(cp_version "$component"): downloading its modules (log: $log)"
  run "go mod download" "$GO" list -mod=readonly -deps "${pkgs[@]}"
  cp_log "$component $(cp_version "$component"): compiling $(cp_binaries "$component" | tr '\n' ' ')"
  if [[ "$component" = etcd* ]]; then   # one package, whose directory is named v3
    run "go build" "$GO" build -mod=readonly -trimpath -ldflags "$(cp_ldflags "$component")" -o "$scratch/bin/$component" "${pkgs[@]}"
  else
    run "go build" "$GO" build -mod=readonly -trimpath -ldflags "$(cp_ldflags "$component")" -o "$scratch/bin/" "${pkgs[@]}"
  fi
  for b in $(cp_binaries "$component"); do
    case "$b" in
      helm) run "run helm version" "$scratch/bin/helm" version ;;
      kubectl) run "run kubectl version --client" "$scratch/bin/kubectl" version --client ;;
      etcdctl) run "run etcdctl version" "$scratch/bin/etcdctl" version ;;
      *) run "run $b --version" "$scratch/bin/$b" --version ;;
    esac
  done
  rm -rf "$dir"
  mv -T "$scratch" "$dir" || fail "publish $dir"
  cp_log "$component $(cp_version "$component") built in $((SECONDS - started))s"
  exec 9>&-
}

for component in "${CP_COMPONENTS[@]}"; do
  if cp_built "$component"; then
    cp_log "$component $(cp_version "$component") already built (cache: $(cp_dir "$component"))"
  else
    build "$component"
  fi
done
print_paths
