#!/bin/bash
# Usage: which.sh TOOL
# Prints the path of a binary that setup.sh built (etcd, kube-apiserver, kubectl, helm, ...);
# fails, saying how to build it, when it is not there.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
[ $# -eq 1 ] || { echo "usage: $0 TOOL" >&2; exit 2; }
path="$(cp_bin "$1")" || cp_die "no tool named '$1' is built by setup.sh"
[ -x "$path" ] || cp_die "$1 is not built ($path): run $HERE/setup.sh first"
echo "$path"
