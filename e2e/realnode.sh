#!/usr/bin/env bash
# A real node in a local cluster (XIN_CLUSTER, default `real`; start it with cluster.sh up):
# a kubelet and kube-proxy built from the control plane's Kubernetes module, containerd 2.4.2
# built from its Go module, Debian's runc, the CNI bridge plugins, and CoreDNS for the cluster's
# names — running the images `make images` (or `e2e/images.sh assemble dev`) built.
# operator/tests/e2e_realnode.rs (in make test) runs the chart and the examples on it;
# docs/images.md ("On a real node") says how it is put together.
#   realnode.sh deps    apt-get what it needs when missing (runc, nftables, socat, umoci)
#   realnode.sh build   build kubelet, kube-proxy, containerd (+ shim, ctr), CoreDNS and the CNI
#                       plugins into ~/.cache/xin/<component>-<version>/bin (Go module proxy;
#                       minutes, once; the control plane's Go caches)
#   realnode.sh up      start them (node xin-real-1), import a pause image and the Xin images
#   realnode.sh down    remove its pods, stop it, undo its network settings and rules, unmount,
#                       delete the bridge and the Node object
# Networking stays on this machine: the pods get addresses on a bridge of their own
# (xin-cni0, 10.245.0.0/24, the node itself 10.245.0.1), and a table of nftables rules of its
# own drops traffic for that range from any other interface, and the pods' traffic to
# anywhere but the bridge and this machine. On the bridge address only: the kubelet, CoreDNS,
# and a relay to the API server (which listens on 127.0.0.1), the `kubernetes` Service's
# endpoint. Tests reach pods through loopback (kubectl port-forward). State and logs live
# under $TMPDIR/xin-realnode-<cluster>. Needs root (runc, cgroups, the bridge, nftables).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/e2e/controlplane/versions.env"
CONTAINERD_VERSION=v2.4.2
CNI_PLUGINS_VERSION=v1.10.0
COREDNS_VERSION=v1.15.0
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/xin
NODE_BIN=$CACHE_ROOT/kube-node-$KUBE_VERSION/bin
CONTAINERD_BIN=$CACHE_ROOT/containerd-$CONTAINERD_VERSION/bin
CNI_BIN=$CACHE_ROOT/cni-plugins-$CNI_PLUGINS_VERSION/bin
COREDNS_BIN=$CACHE_ROOT/coredns-$COREDNS_VERSION/bin
CLUSTER_NAME=${XIN_CLUSTER:-real}
STATE=$(XIN_CLUSTER=$CLUSTER_NAME "$REPO/e2e/controlplane/cluster.sh" dir)
KUBECONFIG_FILE=$STATE/kubeconfig
RUN=${TMPDIR:-/tmp}/xin-realnode-$CLUSTER_NAME
NODE=xin-real-1
BRIDGE=xin-cni0
NODE_ADDR=10.245.0.1
POD_CIDR=10.245.0.0/24
NFT_TABLE=xin_realnode
# This node's own ports (the kubelet's on the bridge address, the rest on loopback).
KUBELET_PORT=18250 KUBELET_HEALTHZ_PORT=18248 PROXY_HEALTHZ_PORT=18256 PROXY_METRICS_PORT=18249
DNS_HEALTH_PORT=18281 DNS_READY_PORT=18282
PROCESSES=(kubelet kube-proxy coredns apiserver-relay containerd)
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

deps() {
  local missing=()
  command -v runc >/dev/null || missing+=(runc)
  command -v nft >/dev/null || missing+=(nftables)
  command -v socat >/dev/null || missing+=(socat)
  command -v umoci >/dev/null || missing+=(umoci)
  if ((${#missing[@]})); then
    say "installing ${missing[*]} with apt-get"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# The control plane's Go settings (`cluster.sh go-env`): its module and build caches, so the
# Kubernetes packages the control plane compiled are reused, not downloaded and built again;
# static (CGO off) like it, except containerd (build_containerd).
go_env() { eval "$("$REPO/e2e/controlplane/cluster.sh" go-env)"; }

# built <dir> <binary>...: whether all are there.
built() { local d=$1 b; shift; for b in "$@"; do [ -x "$d/$b" ] || return 1; done; }

# into <dir> <command...>: runs the command with $OUT a temporary directory beside <dir>, and
# moves what it built into <dir> only when it succeeded (an interrupted build leaves nothing
# that looks cached).
into() {
  local dir=$1 rc=0; shift
  mkdir -p "$(dirname "$dir")"
  OUT=$(mktemp -d "$(dirname "$dir")/.tmp-XXXXXX")
  "$@" || rc=$?
  if ((rc == 0)); then mkdir -p "$dir" && mv "$OUT"/* "$dir/"; fi
  rm -rf "$OUT"
  return "$rc"
}

build_kube_node() {
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  # The version the node reports, stamped as the control plane's binaries are.
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  # From the control plane's own module (kubelet and kube-proxy are among its tools), static
  # like the control plane, so all they share with it is already compiled.
  (cd "$REPO/e2e/controlplane/gomod/kube" && go build -ldflags "$ld" -o "$OUT/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
}

build_coredns() {
  local mod; mod=$(mktemp -d)
  cat >"$mod/main.go" <<'EOF'
// CoreDNS with the cluster's plugins only (the full build compiles every cloud provider's).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "cache", "kubernetes"}
}

func main() { coremain.Run() }
EOF
  printf 'module xin.local/coredns\n\ngo 1.26\n' >"$mod/go.mod"
  (cd "$mod" && go get "github.com/coredns/coredns@$COREDNS_VERSION" && go mod tidy \
    && go build -ldflags "-s -w" -o "$OUT/coredns" .)
  local rc=$?
  rm -rf "$mod"
  return "$rc"
}

build_containerd() {
  # With Go's own cgo default, as containerd is usually built.
  GOBIN=$OUT env -u CGO_ENABLED go install -ldflags "-s -w" -tags no_btrfs \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
}

build_cni() {
  GOBIN=$OUT go install -ldflags "-s -w" \
    "github.com/containernetworking/plugins/plugins/main/bridge@$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_PLUGINS_VERSION"
}

build() {
  go_env
  if built "$NODE_BIN" kubelet kube-proxy; then say "cached: kubelet, kube-proxy in $NODE_BIN"; else
    say "building kubelet and kube-proxy $KUBE_VERSION (from the control plane's module)"
    into "$NODE_BIN" build_kube_node
  fi
  if built "$COREDNS_BIN" coredns; then say "cached: coredns in $COREDNS_BIN"; else
    say "building CoreDNS $COREDNS_VERSION with only the plugins the node needs (kubernetes, cache, bind, errors, health, ready)"
    into "$COREDNS_BIN" build_coredns
  fi
  if built "$CONTAINERD_BIN" containerd containerd-shim-runc-v2 ctr; then say "cached: containerd in $CONTAINERD_BIN"; else
    say "building containerd $CONTAINERD_VERSION, its runc shim and ctr"
    into "$CONTAINERD_BIN" build_containerd
  fi
  if built "$CNI_BIN" bridge host-local loopback; then say "cached: CNI plugins in $CNI_BIN"; else
    say "building the CNI plugins bridge, host-local and loopback $CNI_PLUGINS_VERSION"
    into "$CNI_BIN" build_cni
  fi
}

all_built() {
  built "$NODE_BIN" kubelet kube-proxy && built "$COREDNS_BIN" coredns \
    && built "$CONTAINERD_BIN" containerd containerd-shim-runc-v2 ctr \
    && built "$CNI_BIN" bridge host-local loopback
}

# A pod sandbox image (registry.k8s.io/pause:3.10.2 is containerd 2.4's default; nothing can be
# pulled here): a static program that waits for SIGTERM.
pause_image() {
  local d=$RUN/pause
  rm -rf "$d" && mkdir -p "$d/src"
  printf 'module pause\ngo 1.22\n' >"$d/src/go.mod"
  cat >"$d/src/main.go" <<'EOF'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
}
EOF
  (go_env && cd "$d/src" && go build -o "$d/pause" .)
  umoci init --layout "$d/layout"
  umoci new --image "$d/layout:3.10.2"
  umoci unpack --rootless --image "$d/layout:3.10.2" "$d/bundle" >/dev/null
  cp "$d/pause" "$d/bundle/rootfs/pause"
  umoci repack --image "$d/layout:3.10.2" "$d/bundle"
  umoci config --image "$d/layout:3.10.2" --config.entrypoint /pause --os linux --architecture amd64
  tar -C "$d/layout" -cf "$d/pause.tar" .
  ctr images import --base-name registry.k8s.io/pause "$d/pause.tar" >/dev/null
}

kc() { "$KUBE_BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" "$@"; }
ctr() { "$CONTAINERD_BIN/ctr" -a "$RUN/containerd.sock" -n k8s.io "$@"; }

start_bg() { # name, command...: started in its own session, pid and log under $RUN
  local name=$1; shift
  setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# running <name>: the pid of the process start_bg started, when it still runs that program.
running() {
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$RUN\|$NODE_ADDR" || return 1
  echo "$pid"
}

stop() { # name: TERM, then KILL after 5 s
  local pid
  if pid=$(running "$1"); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/$1.pid"
}

wait_until() { # what, seconds, command...
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { echo "error: timed out waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}

up() {
  [ "$(id -u)" = 0 ] || { echo "error: a real node needs root (runc, cgroups, the bridge, nftables)" >&2; exit 1; }
  deps
  all_built || build
  . <(XIN_CLUSTER=$CLUSTER_NAME "$REPO/e2e/controlplane/cluster.sh" env)
  KUBE_BIN=$(dirname "$(command -v kubectl)")
  [ -f "$KUBECONFIG_FILE" ] || { echo "error: no $CLUSTER_NAME cluster (XIN_CLUSTER=$CLUSTER_NAME e2e/controlplane/cluster.sh up)" >&2; exit 1; }
  local p
  for p in "${PROCESSES[@]}"; do
    running "$p" >/dev/null && { echo "error: a real node already runs ($p; state $RUN): realnode.sh down first" >&2; exit 1; }
  done
  local server apiserver_port
  server=$(awk '$1 == "server:" { print $2; exit }' "$KUBECONFIG_FILE")
  apiserver_port=${server##*:}
  mkdir -p "$RUN/cni/conf" "$RUN/kubelet" "$RUN/pod-logs"
  set -E
  trap 'echo "error: realnode.sh up failed (logs in $RUN); realnode.sh down stops what it started" >&2' ERR

  say "bridge $BRIDGE ($NODE_ADDR, pods in $POD_CIDR), reachable from this machine only"
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr flush dev "$BRIDGE"
  ip addr add "$NODE_ADDR/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Pods reach each other and Services (kube-proxy's DNAT) through this host; `down` puts the
  # setting back as it was.
  [ -f "$RUN/ip_forward.before" ] || cat /proc/sys/net/ipv4/ip_forward >"$RUN/ip_forward.before"
  sysctl -qw net.ipv4.ip_forward=1
  # Nothing from another interface reaches the node's range (the kubelet, the relay, CoreDNS,
  # PostgreSQL's bridge address, the pods), and the pods reach nothing beyond this machine.
  nft -f - <<EOF
table ip $NFT_TABLE
delete table ip $NFT_TABLE
table ip $NFT_TABLE {
  chain input {
    type filter hook input priority -10; policy accept;
    ip daddr $POD_CIDR iifname != { "lo", "$BRIDGE" } drop
  }
  chain forward {
    type filter hook forward priority -10; policy accept;
    ip daddr $POD_CIDR iifname != "$BRIDGE" drop
    ip saddr $POD_CIDR oifname != "$BRIDGE" drop
  }
}
EOF

  cat >"$RUN/containerd.toml" <<EOF
version = 3
root = "$RUN/root"
state = "$RUN/state"
[grpc]
  address = "$RUN/containerd.sock"
[plugins.'io.containerd.cri.v1.runtime']
  # Here root cannot lower oom_score_adj (no CAP_SYS_RESOURCE), and runc fails a pod
  # sandbox's -998 with "can't get final child's PID from pipe: EOF": clamp it instead.
  restrict_oom_score_adj = true
  # The pods' network namespaces under the state directory, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUN/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI_BIN"]
    conf_dir = "$RUN/cni/conf"
EOF
  cat >"$RUN/cni/conf/10-xin.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "xin-real",
 "plugins": [{"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "isDefaultGateway": true,
              "ipMasq": false, "hairpinMode": true,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_ADDR"}]],
                       "dataDir": "$RUN/cni/ipam"}}]}
EOF
  say "containerd $CONTAINERD_VERSION (log $RUN/containerd.log)"
  PATH=$CONTAINERD_BIN:$PATH start_bg containerd "$CONTAINERD_BIN/containerd" --config "$RUN/containerd.toml"
  wait_until "containerd's socket" 30 test -S "$RUN/containerd.sock"
  pause_image
  local target=${CARGO_TARGET_DIR:-$REPO/target}
  for i in xin-operator xin-gateway xin-orchestrator xin-ingest xin-automation; do
    [ -f "$target/images/$i/index.json" ] || continue
    tar -C "$target/images/$i" -cf "$RUN/$i.tar" .
    ctr images import --base-name "xin.local/$i" "$RUN/$i.tar" >/dev/null
    rm -f "$RUN/$i.tar"
  done
  ctr images ls -q | grep '^xin.local/' >&2 || true

  # The `kubernetes` Service (10.0.0.1:443) for pods: its endpoint is a relay on the bridge
  # address to the API server, which listens on loopback only (the API server's certificate
  # names 10.0.0.1, so in-cluster clients verify it as usual).
  say "the kubernetes Service's endpoint: $NODE_ADDR:$apiserver_port, relayed to 127.0.0.1:$apiserver_port"
  start_bg apiserver-relay socat "TCP-LISTEN:$apiserver_port,bind=$NODE_ADDR,reuseaddr,fork" "TCP:127.0.0.1:$apiserver_port"
  kc apply --server-side --force-conflicts --field-manager xin-realnode -f - >/dev/null <<EOF
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes-xin-realnode
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: xin-realnode}
addressType: IPv4
endpoints: [{addresses: ["$NODE_ADDR"], conditions: {ready: true}}]
ports: [{name: https, port: $apiserver_port, protocol: TCP}]
EOF

  say "CoreDNS on $NODE_ADDR:53 for cluster.local (log $RUN/coredns.log)"
  cat >"$RUN/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
  bind $NODE_ADDR
  errors
  health 127.0.0.1:$DNS_HEALTH_PORT
  ready 127.0.0.1:$DNS_READY_PORT
  kubernetes cluster.local in-addr.arpa ip6.arpa {
    kubeconfig $KUBECONFIG_FILE
    pods insecure
    fallthrough in-addr.arpa ip6.arpa
  }
  cache 5
}
EOF
  start_bg coredns "$COREDNS_BIN/coredns" -conf "$RUN/Corefile"
  wait_until "CoreDNS ready" 60 curl -fsS "http://127.0.0.1:$DNS_READY_PORT/ready"

  say "kube-proxy (nftables; log $RUN/kube-proxy.log)"
  cat >"$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: "$KUBECONFIG_FILE"}
hostnameOverride: $NODE
clusterCIDR: $POD_CIDR
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
# NodePorts (none in Xin's objects) only on the node's bridge address, never on this
# machine's other interfaces.
nodePortAddresses: ["$NODE_ADDR/32"]
# Leave this machine's conntrack settings as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start_bg kube-proxy "$NODE_BIN/kube-proxy" --config "$RUN/kube-proxy.yaml"

  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1 (hybrid): Kubernetes 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$RUN/containerd.sock
address: $NODE_ADDR
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
# Only the API server (its client certificate from the cluster's CA) talks to the kubelet.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$STATE/pki/ca.crt"}
authorization: {mode: AlwaysAllow}
clusterDNS: ["$NODE_ADDR"]
clusterDomain: cluster.local
failSwapOn: false
resolvConf: /etc/resolv.conf
podLogsDir: $RUN/pod-logs
# No iptables chains of the kubelet's own in this machine's tables.
makeIPTablesUtilChains: false
# containerd reports no image filesystem capacity here: without this the node is DiskPressure.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "0%"}
EOF
  say "kubelet $KUBE_VERSION, node $NODE (log $RUN/kubelet.log)"
  start_bg kubelet "$NODE_BIN/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$KUBECONFIG_FILE" \
    --hostname-override "$NODE" --node-ip "$NODE_ADDR" \
    --root-dir "$RUN/kubelet" --cert-dir "$RUN/kubelet/pki"
  wait_until "node $NODE Ready" 120 kc wait --for=condition=Ready "node/$NODE" --timeout=1s
  wait_until "kube-proxy healthy" 60 curl -fsS "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz"
  trap - ERR
  say "node $NODE Ready; images as xin.local/<binary>:<tag>"
}

# Whether containerd runs no container (a pod's sandbox included) any more.
no_tasks() { [ -z "$(ctr tasks ls -q 2>/dev/null)" ]; }

# The pod UIDs this node's kubelet ran (its pods directory).
our_pods() { ls "$RUN/kubelet/pods" 2>/dev/null || true; }

# The processes in the cgroups of this node's pods (cgroupfs: .../kubepods/<qos>/pod<uid>/...).
pod_processes() {
  local uid
  for uid in $(our_pods); do
    find /sys/fs/cgroup/ -path "*/kubepods*/pod$uid/*" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done | sort -u
}

down() {
  # Best effort, to the end: one step failing (a process gone meanwhile) must not leave the rest.
  set +e
  . <(XIN_CLUSTER=$CLUSTER_NAME "$REPO/e2e/controlplane/cluster.sh" env) 2>/dev/null
  KUBE_BIN=$(dirname "$(command -v kubectl 2>/dev/null || echo /nonexistent/kubectl)")
  local api=0
  [ -f "$KUBECONFIG_FILE" ] && [ -x "$KUBE_BIN/kubectl" ] && kc get --raw /readyz >/dev/null 2>&1 && api=1
  if running kubelet >/dev/null && ((api)); then
    # The kubelet removes the pods itself (containers, network namespaces, addresses) once
    # their objects are gone.
    say "removing the pods on $NODE"
    kc cordon "$NODE" >/dev/null 2>&1
    kc delete pods -A --field-selector "spec.nodeName=$NODE" --grace-period=0 --force --wait=false >/dev/null 2>&1
    wait_until "the kubelet to remove its pods" 60 no_tasks
  fi
  stop kubelet
  # Whatever is left of the pods (the kubelet was not running, or too slow): killed by their
  # cgroups, which then go.
  local procs
  for _ in $(seq 1 40); do
    procs=$(pod_processes)
    [ -z "$procs" ] && break
    kill -9 $procs 2>/dev/null
    sleep 0.25
  done
  [ -z "$procs" ] || echo "warning: processes left in this node's pod cgroups: $procs" >&2
  local uid
  for uid in $(our_pods); do
    find /sys/fs/cgroup/ -depth -type d -path "*/kubepods*/pod$uid*" -exec rmdir {} + 2>/dev/null
  done
  local p
  for p in kube-proxy coredns apiserver-relay containerd; do stop "$p"; done
  pkill -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" 2>/dev/null
  # kube-proxy's table, ours, the bridge (its pods' veths went with their namespaces).
  [ -x "$NODE_BIN/kube-proxy" ] && "$NODE_BIN/kube-proxy" --cleanup >/dev/null 2>&1
  nft delete table ip "$NFT_TABLE" 2>/dev/null
  ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1 \
    | while read -r l; do ip link del "$l" 2>/dev/null; done
  ip link del "$BRIDGE" 2>/dev/null
  if [ -f "$RUN/ip_forward.before" ]; then
    sysctl -qw "net.ipv4.ip_forward=$(cat "$RUN/ip_forward.before")"
    rm -f "$RUN/ip_forward.before"
  fi
  # What the kubelet and containerd mounted (volumes, rootfs, network namespaces), deepest first.
  awk -v r="$RUN/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
  done
  # The addresses the IPAM plugin handed out, and the pods' state: the next `up` starts clean.
  rm -rf "$RUN/cni/ipam" "$RUN/kubelet/pods" "$RUN/runc" "$RUN/root" "$RUN/state"
  if ((api)); then
    kc delete node "$NODE" --ignore-not-found --wait=false >/dev/null 2>&1
    kc delete endpointslice -n default kubernetes-xin-realnode --ignore-not-found >/dev/null 2>&1
  fi
  say "node $NODE stopped; logs in $RUN"
}

case "${1:-}" in
  deps) deps ;;
  build) build ;;
  up) up ;;
  down) down ;;
  *) echo "usage: $0 deps|build|up|down" >&2; exit 2 ;;
esac
