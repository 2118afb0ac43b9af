# shellcheck shell=bash
# Shared settings for setup.sh / up.sh / down.sh / which.sh (sourced, not executed).
#
# The releases the tests run. Each is pinned by the go.mod and go.sum of its module under
# tests/k8s/; to move one, change it here, run tests/k8s/pin.sh, and commit what it writes.
K8S_VERSION=1.37.2   # kube-apiserver, kube-controller-manager, kubectl (+ kubelet, kube-proxy, kube-scheduler)
ETCD_VERSION=3.6.16  # etcd, from go.etcd.io/etcd/server/v3; etcdctl, from go.etcd.io/etcd/etcdctl/v3
HELM_VERSION=4.3.2   # helm, from helm.sh/helm/v4

CP_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CP_MODULES="$CP_REPO/tests/k8s"
# Built once per machine into a cache outside the work tree, so every checkout and CI run on
# the machine reuses the binaries.
CP_CACHE="${JWT_ROTATOR_CACHE:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/jwt-key-rotator}"

# What each module under tests/k8s/ builds: its version, its packages, the binaries they
# become (in package order), and the linker flags (the version stamp each release's own
# build sets).
cp_version() {
  case "$1" in
    kubernetes) echo "$K8S_VERSION" ;;
    etcd | etcdctl) echo "$ETCD_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
  esac
}
cp_packages() {
  case "$1" in
    kubernetes)
      local c
      for c in "${CP_K8S_BINARIES[@]}"; do echo "k8s.io/kubernetes/cmd/$c"; done ;;
    etcd) echo go.etcd.io/etcd/server/v3 ;;
    etcdctl) echo go.etcd.io/etcd/etcdctl/v3 ;;
    helm) echo helm.sh/helm/v4/cmd/helm ;;
  esac
}
CP_K8S_BINARIES=(kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy)
cp_binaries() {
  case "$1" in
    kubernetes) printf '%s\n' "${CP_K8S_BINARIES[@]}" ;;
    etcd) echo etcd ;;
    etcdctl) echo etcdctl ;;
    helm) echo helm ;;
  esac
}
cp_ldflags() {
  local v="$K8S_VERSION" flags="-s -w" pkg minor="${K8S_VERSION#*.}"
  minor="${minor%%.*}"
  case "$1" in
    kubernetes)
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=v$v -X $pkg.gitMajor=${v%%.*} -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=archive"
      done ;;
    helm)
      flags+=" -X helm.sh/helm/v4/internal/version.version=v$HELM_VERSION"
      flags+=" -X helm.sh/helm/v4/internal/version.metadata= -X helm.sh/helm/v4/internal/version.gitTreeState=archive" ;;
  esac
  echo "$flags"
}
CP_COMPONENTS=(etcd etcdctl kubernetes helm)

# The cache directory of a component: its name, version, and a hash of its go.mod, go.sum
# and build recipe, so that any change to them builds anew.
cp_dir() {
  local hash
  hash="$( { grep -v "^//" "$CP_MODULES/$1/go.mod"; cat "$CP_MODULES/$1/go.sum"; cp_packages "$1"; cp_ldflags "$1"; } \
           | sha256sum | cut -c1-12)"
  echo "$CP_CACHE/$1-$(cp_version "$1")-$hash"
}

# Path of a built binary (etcd, kube-apiserver, kubectl, helm, ...), or nothing.
cp_bin() {
  local component
  for component in "${CP_COMPONENTS[@]}"; do
    # Not `| grep -q`: under pipefail, grep's early exit can fail the pipeline (SIGPIPE).
    if grep -qx -- "$1" <<<"$(cp_binaries "$component")"; then
      echo "$(cp_dir "$component")/bin/$1"
      return 0
    fi
  done
  return 1
}

# True when every binary of the component is in the cache.
cp_built() {
  local dir b
  dir="$(cp_dir "$1")"
  for b in $(cp_binaries "$1"); do [ -x "$dir/bin/$b" ] || return 1; done
}

# The node (up.sh --node): Debian's containerd, runc and CNI plugins, run by the kubelet built
# above. Where Debian installs the CNI plugins:
CP_CNI_BIN=/usr/lib/cni
CP_NODE_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack util-linux iproute2)
# The images a node runs, built by tests/image/build.sh: OCI archives NAME.tar, each with its
# full reference in NAME.ref. Outside the work tree's sources, beside cargo's output.
CP_IMAGES="${JWT_ROTATOR_IMAGES:-$CP_REPO/target/images}"
# Each node's cgroups live under a root of its own, named after the up.sh that made it, so a
# stale one (up.sh SIGKILLed) can be recognised and removed.
CP_CGROUP_PREFIX=jwt-rotator-node-
# The pods' addresses: inside the node's network namespace only (masqueraded when they leave
# it), so every node may use the same range.
CP_POD_CIDR=10.244.0.0/24
# The host-to-node veth pairs: one /30 a node out of this /16, chosen free at start-up.
CP_LINK_PREFIX=10.253

cp_log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
cp_die() { printf '[%s] ERROR: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# True if PID is running (a zombie awaiting its parent's wait() counts as gone).
cp_alive() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}
