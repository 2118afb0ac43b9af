#!/bin/bash
# Usage: node.sh NODE-DIR IMAGES-DIR   (started by up.sh --node; not meant to be run by hand)
#
# The inside of the test cluster's one node. up.sh starts this script as PID 1 of new PID,
# network and mount namespaces:
#   setpriv --pdeathsig KILL -- unshare --pid --fork --kill-child --net --mount --mount-proc \
#     --propagation private -- node.sh NODE-DIR IMAGES-DIR
# so that everything the node starts (containerd, its shims, every container, the kubelet,
# kube-proxy) dies with it, whatever kills it: when PID 1 of a PID namespace exits, the kernel
# kills every other process in it. The network namespace holds the node's whole network (the
# pods' bridge, their veths, kube-proxy's and the CNI plugins' iptables rules) and vanishes
# with the last process in it; the mount namespace holds every mount the node makes (container
# root filesystems, Secret and ConfigMap volumes, the pods' network namespaces), released the
# same way. The only link to the host is the veth pair up.sh adds (eth0 in here).
#
# Steps: private tmpfs over the host paths that containerd, the kubelet and the CNI plugins
# write to whatever they are told (/run, /var/lib, /var/log); containerd with its state in
# NODE-DIR; every IMAGES-DIR/*.tar (OCI archive, full name in the .ref file beside it) imported
# into containerd's k8s.io namespace; then, once up.sh has written NODE-DIR/start (the
# configurations of the kubelet and kube-proxy), both; NODE-DIR/ready when kube-proxy has
# programmed the `kubernetes` Service. Then it supervises: any component that dies takes the
# node down (exit 1); SIGTERM stops it (exit 0).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
[ $# -eq 2 ] || cp_die "usage: $0 NODE-DIR IMAGES-DIR"
NODE="$1"
IMAGES="$2"
[ "$$" = 1 ] || cp_die "must run as PID 1 of its own PID namespace (see up.sh --node)"
POD_CIDR="$CP_POD_CIDR"

PIDS=()
NAMES=()
stop() {
  trap '' TERM INT
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  # PID 1 exiting kills whatever is left (shims, containers) at once.
  exit "${1:-0}"
}
trap 'stop 0' TERM INT HUP

start() {  # NAME COMMAND...
  local name="$1"; shift
  "$@" </dev/null >"$NODE/$name.log" 2>&1 &
  PIDS+=("$!"); NAMES+=("$name")
}
wait_for() {  # DESCRIPTION SECONDS CHECK-COMMAND...
  local what="$1" deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    for i in "${!PIDS[@]}"; do
      cp_alive "${PIDS[$i]}" || { tail -n 30 "$NODE/${NAMES[$i]}.log" >&2; cp_die "${NAMES[$i]} exited while waiting for $what"; }
    done
    [ "$SECONDS" -lt "$deadline" ] || cp_die "timed out after $2s waiting for $what"
    sleep 0.2
  done
}

# ---- mounts: nothing the node writes reaches the host's /run, /var/lib or /var/log ------------
mount --make-rprivate /
for path in /run /var/lib /var/log; do mount -t tmpfs -o mode=0755 "node-$path" "$path"; done

# ---- network: loopback, and eth0 once up.sh has moved it in and addressed it -------------------
ip link set lo up
wait_for "eth0 (the veth up.sh adds)" 60 sh -c 'ip -4 addr show dev eth0 | grep -q inet'

# ---- containerd --------------------------------------------------------------------------------
mkdir -p "$NODE/cni/net.d" "$NODE/containerd/tmp"
# The pods' bridge: host-local addresses from POD_CIDR, masqueraded behind eth0's address when
# they leave the node (so the host needs no route back), no default route out of the node.
cat >"$NODE/cni/net.d/10-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
PAUSE_IMAGE="$(cat "$IMAGES/pause.ref")"
cat >"$NODE/containerd.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
temp = "$NODE/containerd/tmp"
[grpc]
  address = "$NODE/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  # No AppArmor in these kernels; and without CAP_SYS_RESOURCE (dropped in this sandbox) no
  # oom_score_adj below containerd's own.
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CP_CNI_BIN"
    conf_dir = "$NODE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "$NODE/runc"
EOF
start containerd containerd --config "$NODE/containerd.toml"
CTR=(ctr --address "$NODE/containerd.sock" --namespace k8s.io)
wait_for "containerd" 60 "${CTR[@]}" version

# ---- images: built here (tests/image/build.sh), never pulled ------------------------------------
for archive in "$IMAGES"/*.tar; do
  ref="$(cat "${archive%.tar}.ref")"
  "${CTR[@]}" images import --base-name "${ref%:*}" "$archive" >>"$NODE/images.log" 2>&1 \
    || { tail -n 20 "$NODE/images.log" >&2; cp_die "importing $archive as $ref failed"; }
  # The list is read whole before it is searched: with pipefail, `ctr ... | grep -q` fails
  # whenever grep's early exit cuts ctr off mid-list (SIGPIPE), an import that did succeed.
  listed="$("${CTR[@]}" images ls -q)"
  grep -qxF "$ref" <<<"$listed" || cp_die "$archive did not import as $ref"
done
: >"$NODE/images-imported"

# ---- kubelet and kube-proxy, once up.sh has configured them -------------------------------------
wait_for "up.sh to write $NODE/start" 300 test -e "$NODE/start"
start kubelet "$(cp_bin kubelet)" \
  --config "$NODE/kubelet.yaml" \
  --kubeconfig "$NODE/kubelet.conf" \
  --root-dir "$NODE/kubelet" \
  --cert-dir "$NODE/kubelet/pki" \
  --hostname-override "$(cat "$NODE/name")" \
  --node-ip "$(cat "$NODE/ip")"
start kube-proxy "$(cp_bin kube-proxy)" --config "$NODE/kube-proxy.yaml"
wait_for "kube-proxy to program the kubernetes Service" 120 \
  sh -c 'iptables-save -t nat | grep -q "default/kubernetes:https"'
: >"$NODE/ready"

# ---- supervise --------------------------------------------------------------------------------
while :; do
  wait -n || true   # returns when a child exits (orphans reaped too), or on a trapped signal
  for i in "${!PIDS[@]}"; do
    if ! cp_alive "${PIDS[$i]}"; then
      echo "----- last lines of $NODE/${NAMES[$i]}.log -----" >&2
      tail -n 30 "$NODE/${NAMES[$i]}.log" >&2 || true
      cp_log "${NAMES[$i]} exited unexpectedly: stopping the node"
      stop 1
    fi
  done
done
