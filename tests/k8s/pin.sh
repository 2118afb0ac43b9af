#!/bin/bash
# Usage: tests/k8s/pin.sh
# Rewrites the go.mod and go.sum of each module here for the versions set in
# tests/control-plane/lib.sh (K8S_VERSION, ETCD_VERSION, HELM_VERSION); commit what it writes.
# The Kubernetes module gets a replace of every k8s.io/* staging module that the release's own
# go.mod points at its tree, to the published v0.X.Y of the same release
# (kubernetes/kubernetes#79384).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../control-plane/lib.sh
. "$HERE/../control-plane/lib.sh"
export GOTOOLCHAIN=auto GOFLAGS=-mod=mod

# Prints the go.mod of MODULE@VERSION from the module proxy's copy.
upstream_go_mod() {
  cat "$(go mod download -json "$1" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
}

pin() {  # COMPONENT MODULE
  local component="$1" module="$2" version dir header go_line
  version="v$(cp_version "$component")"
  dir="$HERE/$component"
  header="$(grep '^//' "$dir/go.mod" || true)"
  go_line="$(upstream_go_mod "$module@$version" | grep -m1 '^go ')"
  {
    [ -z "$header" ] || echo "$header"
    echo "module jwt-key-rotator/tests/k8s/$component"
    echo
    echo "$go_line"
    if [ "$component" = kubernetes ]; then
      upstream_go_mod "$module@$version" | grep '^godebug' | sed 's/^/\n/' || true
      echo
      echo "require $module $version"
      echo
      echo "replace ("
      upstream_go_mod "$module@$version" | sed -n '/^replace (/,/^)/p' \
        | awk -v v="v0.${version#v1.}" '$2 == "=>" { printf "\t%s => %s %s\n", $1, $1, v }'
      echo ")"
    fi
  } >"$dir/go.mod"
  rm -f "$dir/go.sum"
  # shellcheck disable=SC2046
  (cd "$dir" && go get -tool $(cp_packages "$component" | sed "s|\$|@$version|") && go mod tidy)
  echo "tests/k8s/$component: $module $version"
}

pin etcd go.etcd.io/etcd/server/v3
pin etcdctl go.etcd.io/etcd/etcdctl/v3
pin kubernetes k8s.io/kubernetes
pin helm helm.sh/helm/v4
