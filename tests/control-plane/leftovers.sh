#!/bin/bash
# Usage: leftovers.sh [SECONDS] [PATTERN]
#
# Fails, listing them, if anything a test control plane or its node made outlives it: a
# process (etcd, an API server, up.sh, node.sh, containerd, a shim, a container, ...), a host
# interface (the node's veth), a cgroup, a mount, an iptables rule or chain in the host's
# network namespace, or containerd, kubelet or CNI state in the host's default paths. Waits up
# to SECONDS (default 20) for processes that are still exiting. A process counts when its
# command line matches PATTERN (an extended regex; default: any test control plane's or the
# local cluster's directory); tests/run.sh passes its own run's directory, so that other
# checkouts testing on the same machine are not counted.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

deadline=$((SECONDS + ${1:-20}))
PATTERN="${2:-/jwt-rotator-cp-|/jwt-key-rotator-local}"
# Matching processes, less this script and its subshells (PATTERN is on their command line).
procs() { pgrep -af -- "$PATTERN" | grep -v '/leftovers\.sh '; }
while [ -n "$(procs)" ] && [ "$SECONDS" -lt "$deadline" ]; do
  sleep 0.5
done

found=0
report() { echo "left behind: $*" >&2; found=1; }
while read -r line; do report "process $line"; done < <(procs)
while read -r line; do report "interface $line"; done < <(ip -o link show 2>/dev/null | grep -E '^[0-9]+: jkr[0-9]+[@:]')
while read -r line; do report "cgroup $line"; done < <(ls -d /sys/fs/cgroup/*/"$CP_CGROUP_PREFIX"* /sys/fs/cgroup/"$CP_CGROUP_PREFIX"* 2>/dev/null)
while read -r line; do report "mount $line"; done < <(grep -E 'jwt-rotator|containerd|kubelet' /proc/self/mountinfo)
if command -v iptables-save >/dev/null; then
  while read -r line; do report "iptables $line"; done < <(iptables-save 2>/dev/null | grep -E 'KUBE-|CNI-')
fi
for path in /run/containerd /var/lib/containerd /var/lib/kubelet /var/lib/cni /var/log/pods /var/log/containers /etc/cni /usr/libexec/kubernetes; do
  [ ! -e "$path" ] || report "path $path"
done
if [ "$found" = 0 ]; then
  echo "nothing left behind: no process, interface, cgroup, mount, iptables rule or node state"
fi
exit "$found"
