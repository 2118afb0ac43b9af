#!/bin/bash
# Usage: up.sh DIR [--lifeline-stdin] [--node]
#
# Runs a throwaway Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager,
# no nodes) on free loopback ports, all state in DIR, configured as a kubeadm cluster is: a
# cluster CA and client certificates, the Node and RBAC authorizers, the default admission
# plugins (PodSecurity, ValidatingAdmissionPolicy and the webhooks among them) plus
# NodeRestriction, a service-account issuer and signing key, the front proxy of the
# aggregation layer, and controllers that each run as their own ServiceAccount.
# When it is usable, writes DIR/kubeconfig (cluster-admin), DIR/env and finally DIR/ready,
# then stays in the foreground supervising:
#   - any component dies        -> tear everything down, exit 1
#   - SIGTERM / SIGINT / SIGHUP -> tear everything down, exit 0
#   - --lifeline-stdin and EOF on stdin -> tear down, exit 0
#     (a test holds the write end of the pipe; if the test panics or is
#     SIGKILLed, the pipe closes and the control plane goes away with it)
# Components get PDEATHSIG=KILL, so even a SIGKILLed supervisor leaves nothing.
#
# --node adds one node that runs pods (root only): kube-scheduler beside the control plane,
# and node.sh as PID 1 of its own PID, network and mount namespaces, running containerd + runc
# (Debian's), the CNI bridge, the kubelet and kube-proxy, with the images of
# tests/image/build.sh imported (JWT_ROTATOR_IMAGES, default target/images). The node's only
# link to the host is a veth pair on a /30 of 10.253.0.0/16 chosen free; the API server
# listens on the host's end of it (not on 127.0.0.1) and advertises that address, so pods
# reach it through the `kubernetes` Service; nothing is routed anywhere else. Everything the
# node makes (processes, interfaces, iptables rules, mounts) lives in its namespaces and
# vanishes with it; its cgroups (cgroupfs, under /jwt-rotator-node-PID) are removed on
# tear-down, and stale ones from a SIGKILLed up.sh at the next start.
# Binaries come from setup.sh's cache (JWT_ROTATOR_CACHE); this never builds.
# Env: JWT_ROTATOR_CP_TIMEOUT = seconds to wait for readiness (default 180);
#      JWT_ROTATOR_CP_REMOVE_DIR=1 removes DIR on tear-down;
#      JWT_ROTATOR_KUBELET_SYNC_FREQUENCY = the kubelet's syncFrequency (default 1m, the
#      kubelet's own): how often it refreshes mounted Secrets and ConfigMaps.
#      JWT_ROTATOR_CP_APISERVER_ARGS = extra kube-apiserver flags, one a line (an audit
#      policy, an encryption configuration).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"

usage() { echo "usage: $0 DIR [--lifeline-stdin] [--node]" >&2; exit 2; }
DIR=""; LIFELINE=0; NODE=0
for a in "$@"; do
  case "$a" in
    --lifeline-stdin) LIFELINE=1 ;;
    --node) NODE=1 ;;
    -h|--help) usage ;;
    -*) usage ;;
    *) [ -z "$DIR" ] || usage; DIR="$a" ;;
  esac
done
[ -n "$DIR" ] || usage
TIMEOUT="${JWT_ROTATOR_CP_TIMEOUT:-180}"

# ---- preconditions -----------------------------------------------------------
for component in etcd kubernetes; do
  cp_built "$component" || cp_die "$component $(cp_version "$component") is not built in $(cp_dir "$component"): run $HERE/setup.sh first (builds it once, several minutes)"
done
ETCD="$(cp_bin etcd)"
APISERVER="$(cp_bin kube-apiserver)"
KCM="$(cp_bin kube-controller-manager)"
for c in openssl python3 curl setpriv; do
  command -v "$c" >/dev/null || cp_die "'$c' not found: run $HERE/setup.sh first"
done
if [ "$NODE" = 1 ]; then
  [ "$(id -u)" = 0 ] || cp_die "--node needs root (namespaces, containerd, iptables)"
  for c in containerd containerd-shim-runc-v2 runc ctr iptables-save unshare nsenter ip pgrep flock shuf; do
    command -v "$c" >/dev/null || cp_die "'$c' not found: run $HERE/setup.sh first"
  done
  [ -x "$CP_CNI_BIN/bridge" ] || cp_die "no CNI plugins in $CP_CNI_BIN: run $HERE/setup.sh first"
  [ -f "$CP_IMAGES/pause.tar" ] || cp_die "no images in $CP_IMAGES: run tests/image/build.sh first"
  KUBELET_SYNC="${JWT_ROTATOR_KUBELET_SYNC_FREQUENCY:-1m}"
fi

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
case "$DIR" in *[[:space:]]*) cp_die "DIR must not contain whitespace: '$DIR'" ;; esac

if [ -f "$DIR/supervisor.pid" ]; then
  old="$(cat "$DIR/supervisor.pid" 2>/dev/null || true)"
  if [ -n "$old" ] && cp_alive "$old" && grep -qa 'up.sh' "/proc/$old/cmdline" 2>/dev/null; then
    cp_die "a control plane is already running in $DIR (supervisor pid $old); use down.sh $DIR"
  fi
fi
# Fresh state every time: an old etcd member would carry stale peer ports.
rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/node" "$DIR/flexvolume" "$DIR/ready" "$DIR/kubeconfig" "$DIR/env" "$DIR"/*.conf "$DIR"/*.log "$DIR"/*.pid
echo $$ >"$DIR/supervisor.pid"

# ---- tear-down -----------------------------------------------------------------
PIDS=()      # component pids, in start order
NAMES=()
LIFELINE_PID=""
NODE_PID=""  # node.sh, PID 1 of the node's namespaces (its unshare parent is in PIDS)
CGROUP="$CP_CGROUP_PREFIX$$"
TORN_DOWN=0
teardown() {
  [ "$TORN_DOWN" = 0 ] || return 0
  TORN_DOWN=1
  trap '' PIPE       # the reader of our stderr may be gone already
  rm -f "$DIR/ready"
  local i pid deadline alive
  # unshare ignores TERM while it waits for its child: stop the node through its PID 1.
  [ -z "$NODE_PID" ] || kill -TERM "$NODE_PID" 2>/dev/null || true
  # reverse order (controller-manager, apiserver, etcd), all at once: state is throwaway
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  [ -z "$LIFELINE_PID" ] || kill -TERM "$LIFELINE_PID" 2>/dev/null || true
  deadline=$((SECONDS + 5))
  while :; do
    alive=0
    for pid in "${PIDS[@]}"; do cp_alive "$pid" && alive=1; done
    if [ "$alive" = 0 ] || [ "$SECONDS" -ge "$deadline" ]; then break; fi
    sleep 0.1
  done
  [ -z "$NODE_PID" ] || kill -KILL "$NODE_PID" 2>/dev/null || true
  for pid in "${PIDS[@]}" $LIFELINE_PID; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$NODE" = 0 ] || remove_cgroups "$CGROUP"
  rm -f "$DIR/supervisor.pid" "$DIR"/*.pid
  # Tests run throwaway control planes: they ask for the state to go with them.
  if [ "${JWT_ROTATOR_CP_REMOVE_DIR:-0}" = 1 ]; then rm -rf "$DIR"; fi
  cp_log "control plane in $DIR stopped" || true
}
EXIT_CODE=1   # any exit not caused by a stop request is a failure
trap 'teardown; exit $EXIT_CODE' EXIT
trap 'EXIT_CODE=0; exit 0' TERM INT HUP

lifeline_closed() {
  [ -n "$LIFELINE_PID" ] && ! cp_alive "$LIFELINE_PID"
}
if [ "$LIFELINE" = 1 ]; then
  # A child that exits at EOF on our stdin, so `wait -n` wakes up then.
  # Started first, so a test dying during start-up is noticed too.
  exec 3<&0
  setpriv --pdeathsig KILL -- cat <&3 >/dev/null &
  LIFELINE_PID=$!
  exec 3<&-
fi

# Starts "$@" in the background, logging to DIR/NAME.log, killed if we die.
start() {
  local name="$1"; shift
  setpriv --pdeathsig KILL -- "$@" </dev/null >"$DIR/$name.log" 2>&1 &
  PIDS+=("$!"); NAMES+=("$name")
  echo "$!" >"$DIR/$name.pid"
}

fail_with_log() {  # NAME MESSAGE
  echo "----- last lines of $DIR/$1.log -----" >&2
  tail -n 30 "$DIR/$1.log" >&2 || true
  echo "-----" >&2
  # A node that died takes its network namespace, and the veth the API server listens on,
  # with it: the API server's failure to bind then hides the node's own.
  if [ "$1" != node ] && [ -n "${NODE_PID:-}" ] && ! cp_alive "$NODE_PID"; then
    echo "----- the node (node.sh) died: last lines of $DIR/node.log and its components' -----" >&2
    tail -n 30 "$DIR/node.log" >&2 || true
    for log in "$DIR"/node/*.log; do
      [ -e "$log" ] && { echo "-- $log" >&2; tail -n 15 "$log" >&2; }
    done
    echo "-----" >&2
  fi
  cp_die "$2"
}

# Polls CHECK-COMMAND until it succeeds; fails if NAME's process died or the
# overall deadline passed.
DEADLINE=$((SECONDS + TIMEOUT))
wait_for() {  # NAME PID DESCRIPTION CHECK-COMMAND...
  local name="$1" pid="$2" what="$3"; shift 3
  until "$@" >/dev/null 2>&1; do
    cp_alive "$pid" || fail_with_log "$name" "$name exited while waiting for $what"
    if lifeline_closed; then cp_log "stdin closed (--lifeline-stdin) during start-up: tearing down"; exit 1; fi
    [ "$SECONDS" -lt "$DEADLINE" ] || fail_with_log "$name" "timed out after ${TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}

# ---- the node's namespaces and its link to the host ------------------------------------------
# cgroup hierarchies: every v1 controller (and the named systemd one), or the v2 root.
cgroup_roots() {
  local m
  for m in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [ -e "$m/cgroup.procs" ] && echo "${m%/}"
  done
  return 0
}
# Removes the cgroup tree NAME in every hierarchy (deepest first), once its processes are gone.
remove_cgroups() {
  local root deadline=$((SECONDS + 10))
  for root in $(cgroup_roots); do
    [ -d "$root/$1" ] || continue
    until find "$root/$1" -depth -type d -exec rmdir {} + 2>/dev/null; [ ! -d "$root/$1" ]; do
      [ "$SECONDS" -lt "$deadline" ] || { cp_log "could not remove cgroup $root/$1"; break; }
      sleep 0.1
    done
  done
}
# The kubelet's cgroup root must exist; a v1 cpuset needs its CPUs and memory nodes set, a v2
# group the controllers of its parent.
create_cgroups() {
  local root
  for root in $(cgroup_roots); do
    mkdir -p "$root/$1"
    if [ -e "$root/cgroup.controllers" ]; then
      [ "$root" != /sys/fs/cgroup ] ||
        sed 's/\([a-z_]\+\)/+\1/g' "$root/cgroup.subtree_control" >"$root/$1/cgroup.subtree_control"
    elif [ -e "$root/cpuset.cpus" ]; then
      cat "$root/cpuset.cpus" >"$root/$1/cpuset.cpus"
      cat "$root/cpuset.mems" >"$root/$1/cpuset.mems"
    fi
  done
}

start_node_namespaces() {
  local stale n unshare_pid deadline
  # Cgroups left by an up.sh that was SIGKILLed (its pid gone) go first.
  for stale in $(cgroup_roots | while read -r root; do ls -d "$root/$CP_CGROUP_PREFIX"* 2>/dev/null; done); do
    n="${stale##*"$CP_CGROUP_PREFIX"}"
    cp_alive "$n" || remove_cgroups "${stale##*/}"
  done
  create_cgroups "$CGROUP"
  mkdir -p "$DIR/node"
  cp_log "starting the node's namespaces (node.sh: containerd, images from $CP_IMAGES)"
  start node setpriv --pdeathsig KILL -- unshare --pid --fork --kill-child --net --mount \
    --mount-proc --propagation private -- bash "$HERE/node.sh" "$DIR/node" "$CP_IMAGES"
  unshare_pid=$!
  deadline=$((SECONDS + 10))
  until NODE_PID="$(pgrep -P "$unshare_pid")"; do
    cp_alive "$unshare_pid" || fail_with_log node "node.sh exited at once"
    [ "$SECONDS" -lt "$deadline" ] || fail_with_log node "node.sh did not start"
    sleep 0.05
  done
  echo "$NODE_PID" >"$DIR/node.sh.pid"
  # The link: a /30 not yet on this host, chosen under a lock shared by concurrent runs.
  VETH="jkr$$"
  mkdir -p "$CP_CACHE"
  (
    flock 8
    addresses="$(ip -4 -o addr show)"
    for n in $(shuf -i 1-254); do
      # Not `| grep -q`: under pipefail, grep's early exit can fail the pipeline (SIGPIPE),
      # and a /30 in use would look free.
      grep -q " $CP_LINK_PREFIX\.$n\.[0-9]*/" <<<"$addresses" && continue
      ip link add "$VETH" type veth peer name eth0 netns "$NODE_PID" &&
        ip addr add "$CP_LINK_PREFIX.$n.1/30" dev "$VETH" &&
        ip link set "$VETH" up &&
        nsenter -t "$NODE_PID" -n ip addr add "$CP_LINK_PREFIX.$n.2/30" dev eth0 &&
        nsenter -t "$NODE_PID" -n ip link set eth0 up &&
        echo "$n" >"$DIR/node/link"
      exit
    done
  ) 8>"$CP_CACHE/node-links.lock"
  [ -s "$DIR/node/link" ] || fail_with_log node "could not set up the veth pair to the node"
  n="$(cat "$DIR/node/link")"
  HOST_IP="$CP_LINK_PREFIX.$n.1"
  NODE_IP="$CP_LINK_PREFIX.$n.2"
}
NODE_NAME=""
BIND_IP=127.0.0.1
if [ "$NODE" = 1 ]; then
  NODE_NAME=jwt-rotator-node
  start_node_namespaces
  BIND_IP="$HOST_IP"
fi

# ---- ports -------------------------------------------------------------------------
# Free loopback ports: bound to port 0 all at once (so they are distinct), then
# released for the components. The window for a clash is tiny.
read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
[ -n "$SCHED_PORT" ] || cp_die "could not pick free ports with python3"
API="https://$BIND_IP:$API_PORT"

# ---- certificates and keys, as kubeadm lays them out ---------------------------------
# ECDSA P-256 throughout (kubeadm's encryptionAlgorithm: ECDSA-P256): a key costs
# milliseconds, and every test binary starts a control plane of its own.
PKI="$DIR/pki"
mkdir -p "$PKI"
key() {  # NAME
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$1.key" 2>/dev/null \
    || cp_die "openssl genpkey ($1.key) failed"
}
ca() {  # NAME CN
  key "$1"
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 2 -out "$PKI/$1.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    2>/dev/null || cp_die "openssl req ($1.crt) failed"
}
cert() {  # NAME CA SUBJECT EXTENDED-KEY-USAGE [SUBJECT-ALT-NAMES]
  key "$1"
  openssl req -new -key "$PKI/$1.key" -subj "$3" 2>/dev/null \
    | openssl x509 -req -CA "$PKI/$2.crt" -CAkey "$PKI/$2.key" -CAcreateserial -days 2 -out "$PKI/$1.crt" \
        -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n%s\n' \
                     "$4" "${5:+subjectAltName=$5}") 2>/dev/null \
    || cp_die "openssl x509 ($1.crt) failed"
}
ca ca kubernetes
cert apiserver ca /CN=kube-apiserver serverAuth \
  "IP:$BIND_IP,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client ca "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client" clientAuth
cert admin ca "/O=kubeadm:cluster-admins/CN=kubernetes-admin" clientAuth
cert super-admin ca "/O=system:masters/CN=kubernetes-super-admin" clientAuth
cert controller-manager ca /CN=system:kube-controller-manager clientAuth
ca front-proxy-ca front-proxy-ca
cert front-proxy-client front-proxy-ca /CN=front-proxy-client clientAuth
key sa
openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null || cp_die "openssl pkey -pubout (sa.pub) failed"

kubeconfig() {  # FILE CERT-NAME
  ( umask 077; cat >"$1" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: $API
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: $2@kubernetes
  context:
    cluster: kubernetes
    user: $2
    namespace: default
current-context: $2@kubernetes
EOK
  )
}
kubeconfig "$DIR/super-admin.conf" super-admin
kubeconfig "$DIR/controller-manager.conf" controller-manager
if [ "$NODE" = 1 ]; then
  cert scheduler ca /CN=system:kube-scheduler clientAuth
  cert kubelet ca "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  cert kube-proxy ca /CN=system:kube-proxy clientAuth
  kubeconfig "$DIR/scheduler.conf" scheduler
  kubeconfig "$DIR/node/kubelet.conf" kubelet
  kubeconfig "$DIR/node/kube-proxy.conf" kube-proxy
fi

# ---- etcd ----------------------------------------------------------------------
cp_log "starting etcd $ETCD_VERSION on 127.0.0.1:$ETCD_PORT"
start etcd "$ETCD" --name cp \
  --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "cp=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state new
ETCD_PID=$!
wait_for etcd "$ETCD_PID" "etcd /health" \
  sh -c "curl -sf http://127.0.0.1:$ETCD_PORT/health | grep -q '\"health\":\"true\"'"

# ---- kube-apiserver ------------------------------------------------------------
# kubeadm's flags. The admission plugins on by default stay on (NamespaceLifecycle,
# ServiceAccount, PodSecurity, ValidatingAdmissionPolicy, the admission webhooks, ResourceQuota
# and the rest); NodeRestriction is added as kubeadm adds it. One departure, about the host:
# it listens and advertises on one local address only. Without a node that is loopback, and
# the `kubernetes` Service gets no endpoints (--endpoint-reconciler-type none), since an
# endpoint on 127.0.0.1 is invalid; with a node it is the host's end of the node's veth, which
# the Service's endpoints name as kubeadm's do, so pods reach it at 10.96.0.1:443.
# Extra flags, one a line, from JWT_ROTATOR_CP_APISERVER_ARGS (the audit log and encryption
# at rest tests).
if [ "$NODE" = 1 ]; then RECONCILER=lease; else RECONCILER=none; fi
EXTRA_APISERVER_ARGS=()
[ -z "${JWT_ROTATOR_CP_APISERVER_ARGS:-}" ] || mapfile -t EXTRA_APISERVER_ARGS <<<"$JWT_ROTATOR_CP_APISERVER_ARGS"
cp_log "starting kube-apiserver $K8S_VERSION on $API"
start kube-apiserver "$APISERVER" "${EXTRA_APISERVER_ARGS[@]}" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address "$BIND_IP" \
  --secure-port "$API_PORT" \
  --advertise-address "$BIND_IP" \
  --endpoint-reconciler-type "$RECONCILER" \
  --allow-privileged=true \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction \
  --enable-bootstrap-token-auth=true \
  --client-ca-file "$PKI/ca.crt" \
  --tls-cert-file "$PKI/apiserver.crt" \
  --tls-private-key-file "$PKI/apiserver.key" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP,ExternalIP,Hostname \
  --proxy-client-cert-file "$PKI/front-proxy-client.crt" \
  --proxy-client-key-file "$PKI/front-proxy-client.key" \
  --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --requestheader-group-headers X-Remote-Group \
  --requestheader-username-headers X-Remote-User \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/12
API_PID=$!
CURL_ADMIN=(curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/super-admin.crt" --key "$PKI/super-admin.key")
wait_for kube-apiserver "$API_PID" "kube-apiserver /readyz" \
  sh -c "$(printf '%q ' "${CURL_ADMIN[@]}") $API/readyz | grep -qx ok"

# kubernetes-admin is cluster-admin through a ClusterRoleBinding of its group, as kubeadm
# binds it (system:masters, which bypasses RBAC, is kept for super-admin.conf).
"${CURL_ADMIN[@]}" -X POST -H 'Content-Type: application/json' \
  "$API/apis/rbac.authorization.k8s.io/v1/clusterrolebindings" -d '{
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
    "metadata": {"name": "kubeadm:cluster-admins"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "kubeadm:cluster-admins"}]}' \
  >/dev/null || fail_with_log kube-apiserver "could not bind kubeadm:cluster-admins to cluster-admin"
kubeconfig "$DIR/kubeconfig.tmp" admin
mv "$DIR/kubeconfig.tmp" "$DIR/kubeconfig"
# the bootstrap controller creates the `default` namespace shortly after /readyz
wait_for kube-apiserver "$API_PID" "namespace 'default' and cluster-admin for kubernetes-admin" \
  curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$API/api/v1/namespaces/default"

# ---- kube-controller-manager ---------------------------------------------------
# kubeadm's flags: its own identity (system:kube-controller-manager), each controller as its
# own ServiceAccount, leader election, the cluster CA for signing and for the root CA
# ConfigMap. --flex-volume-plugin-dir: the default is created under /usr/libexec otherwise.
cp_log "starting kube-controller-manager (secure port $KCM_PORT)"
start kube-controller-manager "$KCM" \
  --kubeconfig "$DIR/controller-manager.conf" \
  --authentication-kubeconfig "$DIR/controller-manager.conf" \
  --authorization-kubeconfig "$DIR/controller-manager.conf" \
  --bind-address 127.0.0.1 \
  --secure-port "$KCM_PORT" \
  --client-ca-file "$PKI/ca.crt" \
  --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" \
  --cluster-name kubernetes \
  --cluster-signing-cert-file "$PKI/ca.crt" \
  --cluster-signing-key-file "$PKI/ca.key" \
  --controllers '*,bootstrapsigner,tokencleaner' \
  --leader-elect=true \
  --root-ca-file "$PKI/ca.crt" \
  --service-account-private-key-file "$PKI/sa.key" \
  --use-service-account-credentials=true \
  --flex-volume-plugin-dir "$DIR/flexvolume"
KCM_PID=$!
wait_for kube-controller-manager "$KCM_PID" "kube-controller-manager /healthz" \
  sh -c "curl -sfk https://127.0.0.1:$KCM_PORT/healthz | grep -qx ok"
# /healthz is up before the controllers run (and before it leads); the garbage collector is
# what the tests rely on, so wait until it has started.
wait_for kube-controller-manager "$KCM_PID" "the garbage collector to start" \
  grep -q 'Starting controller.*controller="garbagecollector"' "$DIR/kube-controller-manager.log"

# ---- the node: kube-scheduler, then the kubelet and kube-proxy in node.sh ----------------------
start_node() {
  local sched_pid unshare_pid failcg=""
  cp_log "starting kube-scheduler (secure port $SCHED_PORT)"
  start kube-scheduler "$(cp_bin kube-scheduler)" \
    --kubeconfig "$DIR/scheduler.conf" \
    --authentication-kubeconfig "$DIR/scheduler.conf" \
    --authorization-kubeconfig "$DIR/scheduler.conf" \
    --bind-address 127.0.0.1 \
    --secure-port "$SCHED_PORT" \
    --leader-elect=true
  sched_pid=$!
  wait_for kube-scheduler "$sched_pid" "kube-scheduler /healthz" \
    sh -c "curl -sfk https://127.0.0.1:$SCHED_PORT/healthz | grep -qx ok"

  # kubeadm's kubelet settings, less what needs systemd, plus what keeps the node to itself:
  # its cgroups under a root of its own, its files in DIR/node, no cluster DNS (none runs), and
  # neither disk-pressure eviction nor image garbage collection (no image can be pulled again).
  # Kubernetes 1.35+ refuses cgroup v1 unless failCgroupV1 is false.
  [ -e /sys/fs/cgroup/cgroup.controllers ] || failcg="failCgroupV1: false"
  cat >"$DIR/node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
$failcg
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
containerRuntimeEndpoint: unix://$DIR/node/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
resolvConf: ""
syncFrequency: $KUBELET_SYNC
volumePluginDir: $DIR/node/volume-plugins
failSwapOn: false
rotateCertificates: false
evictionHard: {memory.available: 100Mi, nodefs.available: 0%, imagefs.available: 0%, nodefs.inodesFree: 0%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  cat >"$DIR/node/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $DIR/node/kube-proxy.conf}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $CP_POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
nodePortAddresses: [primary]
EOF
  echo "$NODE_NAME" >"$DIR/node/name"
  echo "$NODE_IP" >"$DIR/node/ip"
  : >"$DIR/node/start"
  cp_log "starting the kubelet and kube-proxy on node $NODE_NAME ($NODE_IP)"
  unshare_pid="$(cat "$DIR/node.pid")"
  wait_for node "$unshare_pid" "the node (kubelet, kube-proxy; logs in $DIR/node)" test -e "$DIR/node/ready"
  wait_for node "$unshare_pid" "node $NODE_NAME Ready" sh -c \
    "$(printf '%q ' "${CURL_ADMIN[@]}") $API/api/v1/nodes/$NODE_NAME | python3 -c '
import json, sys
conditions = json.load(sys.stdin)[\"status\"].get(\"conditions\", [])
sys.exit(0 if any(c[\"type\"] == \"Ready\" and c[\"status\"] == \"True\" for c in conditions) else 1)'"
}
[ "$NODE" = 0 ] || start_node

# ---- ready -----------------------------------------------------------------------
cat >"$DIR/env.tmp" <<EOF
KUBECONFIG=$DIR/kubeconfig
KUBE_APISERVER=$API
ETCD_ENDPOINT=http://127.0.0.1:$ETCD_PORT
KUBECTL=$(cp_bin kubectl)
HELM=$(cp_bin helm)
CONTROL_PLANE_PID=$$
NODE_NAME=$NODE_NAME
NODE_CONTAINERD=${NODE_NAME:+$DIR/node/containerd.sock}
EOF
mv "$DIR/env.tmp" "$DIR/env"
: >"$DIR/ready"
cp_log "ready in ${SECONDS}s: export KUBECONFIG=$DIR/kubeconfig"

# ---- supervise -------------------------------------------------------------------
while :; do
  wait -n || true   # returns when any child exits, or on a trapped signal
  for i in "${!PIDS[@]}"; do
    if ! cp_alive "${PIDS[$i]}"; then
      st=0; wait "${PIDS[$i]}" 2>/dev/null || st=$?
      fail_with_log "${NAMES[$i]}" "${NAMES[$i]} exited unexpectedly (status $st); tearing the control plane down"
    fi
  done
  if lifeline_closed; then
    cp_log "stdin closed (--lifeline-stdin): tearing down"
    EXIT_CODE=0
    exit 0
  fi
done
