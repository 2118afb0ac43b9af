# shellcheck shell=bash
# Shared settings for setup.sh / up.sh / down.sh (sourced, not executed).
# The Kubernetes binaries are built once per machine into a cache outside the
# work tree, so every checkout and CI run on the machine reuses them.

K8S_VERSION=1.20.2
CP_CACHE="${JWT_ROTATOR_CACHE:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache/jwt-key-rotator}"
K8S_DIR="$CP_CACHE/kubernetes-$K8S_VERSION"
K8S_BIN="$K8S_DIR/bin"
K8S_BINARIES=(kube-apiserver kube-controller-manager)

cp_log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
cp_die() { printf '[%s] ERROR: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# Path of etcd (Debian's etcd-server installs /usr/bin/etcd); empty if absent.
cp_find_etcd() {
  command -v etcd 2>/dev/null || { [ -x /usr/bin/etcd ] && echo /usr/bin/etcd; } || true
}

# True when both Kubernetes binaries are in the cache.
cp_have_k8s_bins() {
  local b
  for b in "${K8S_BINARIES[@]}"; do [ -x "$K8S_BIN/$b" ] || return 1; done
}

# True if PID is running (a zombie awaiting its parent's wait() counts as gone).
cp_alive() {
  local stat
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}
