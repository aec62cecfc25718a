#!/usr/bin/env bash
# EXPERIMENTAL, run by hand (not part of make test yet): a real node in the demo's local
# cluster — a kubelet built from the control plane's Kubernetes module, containerd 2.4.2 built
# from its Go module, Debian's runc, the CNI bridge plugins — running the images `make images`
# (or `e2e/images.sh assemble dev`) built. docs/images.md ("A real node") says what works.
#   realnode.sh build   build kubelet, containerd (+ shim, ctr) and the CNI plugins into
#                       ~/.cache/xin/realnode-<versions>/bin (Go module proxy; minutes, once)
#   realnode.sh up      start containerd and the kubelet (node xin-real-1) against the demo
#                       cluster (make cluster-up first), import a pause image and the Xin images
#   realnode.sh down    stop them (the Node object stays NotReady; kubectl delete node xin-real-1)
# Everything lives under $TMPDIR/xin-realnode. Needs root (runc, cgroups).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/e2e/controlplane/versions.env"
CONTAINERD_VERSION=v2.4.2
CNI_PLUGINS_VERSION=v1.10.0
BIN=${XDG_CACHE_HOME:-$HOME/.cache}/xin/realnode-$KUBE_VERSION-$CONTAINERD_VERSION/bin
RUN=${TMPDIR:-/tmp}/xin-realnode
NODE=xin-real-1
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

build() {
  mkdir -p "$BIN"
  if [ ! -x "$BIN/kubelet" ]; then
    say "building kubelet $KUBE_VERSION (the control plane's module, with cmd/kubelet added)"
    local mod; mod=$(mktemp -d)
    cp "$REPO/e2e/controlplane/gomod/kube/go.mod" "$REPO/e2e/controlplane/gomod/kube/go.sum" "$mod/"
    sed -i 's|^\tk8s.io/kubernetes/cmd/kubectl$|\tk8s.io/kubernetes/cmd/kubectl\n\tk8s.io/kubernetes/cmd/kubelet|' "$mod/go.mod"
    (cd "$mod" && go mod tidy && go build -o "$BIN/" k8s.io/kubernetes/cmd/kubelet)
    rm -rf "$mod"
  fi
  if [ ! -x "$BIN/containerd" ]; then
    say "building containerd $CONTAINERD_VERSION, its runc shim and ctr"
    GOBIN=$BIN go install -tags no_btrfs "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
  fi
  if [ ! -x "$BIN/bridge" ]; then
    say "building the CNI plugins bridge, host-local and loopback $CNI_PLUGINS_VERSION"
    GOBIN=$BIN go install "github.com/containernetworking/plugins/plugins/main/bridge@$CNI_PLUGINS_VERSION" \
      "github.com/containernetworking/plugins/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
      "github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_PLUGINS_VERSION"
  fi
  say "built into $BIN"
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
  (cd "$d/src" && CGO_ENABLED=0 go build -o "$d/pause" .)
  umoci init --layout "$d/layout"
  umoci new --image "$d/layout:3.10.2"
  umoci unpack --rootless --image "$d/layout:3.10.2" "$d/bundle" >/dev/null
  cp "$d/pause" "$d/bundle/rootfs/pause"
  umoci repack --image "$d/layout:3.10.2" "$d/bundle"
  umoci config --image "$d/layout:3.10.2" --config.entrypoint /pause --os linux --architecture amd64
  tar -C "$d/layout" -cf "$d/pause.tar" .
  "$BIN/ctr" -a "$RUN/containerd.sock" -n k8s.io images import --base-name registry.k8s.io/pause "$d/pause.tar"
}

up() {
  [ -x "$BIN/kubelet" ] || build
  local kubeconfig=$REPO/.cluster/demo/kubeconfig
  [ -f "$kubeconfig" ] || { echo "error: no demo cluster (make cluster-up)" >&2; exit 1; }
  mkdir -p "$RUN/cni/conf" "$RUN/kubelet"
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
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$BIN"]
    conf_dir = "$RUN/cni/conf"
EOF
  # Pods get addresses on a bridge in network namespaces of their own; the tests reach them
  # through loopback (hostNetwork or kubectl port-forward), never by these addresses.
  cat >"$RUN/cni/conf/10-xin.conflist" <<'EOF'
{"cniVersion": "1.0.0", "name": "xin-real",
 "plugins": [{"type": "bridge", "bridge": "xin-cni0", "isGateway": true, "ipMasq": false,
              "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.99.0/24"}]]}}]}
EOF
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine mounts cgroup v1 (hybrid): Kubernetes 1.35+ refuses it unless told.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$RUN/containerd.sock
address: 127.0.0.1
port: 18250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 18248
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
failSwapOn: false
resolvConf: /etc/resolv.conf
# containerd reports no image filesystem capacity here: without this the node is DiskPressure.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "0%"}
EOF
  say "containerd (log $RUN/containerd.log)"
  PATH=$BIN:$PATH setsid "$BIN/containerd" --config "$RUN/containerd.toml" >"$RUN/containerd.log" 2>&1 </dev/null &
  echo $! >"$RUN/containerd.pid"
  for _ in $(seq 1 60); do [ -S "$RUN/containerd.sock" ] && break; sleep 0.5; done
  pause_image
  local target=${CARGO_TARGET_DIR:-$REPO/target}
  for i in xin-operator xin-gateway xin-orchestrator xin-ingest xin-automation; do
    [ -f "$target/images/$i/index.json" ] || continue
    tar -C "$target/images/$i" -cf "$RUN/$i.tar" .
    "$BIN/ctr" -a "$RUN/containerd.sock" -n k8s.io images import --base-name "xin.local/$i" "$RUN/$i.tar"
  done
  say "kubelet, node $NODE (log $RUN/kubelet.log)"
  setsid "$BIN/kubelet" --config "$RUN/kubelet.yaml" --kubeconfig "$kubeconfig" --hostname-override "$NODE" \
    --root-dir "$RUN/kubelet" --cert-dir "$RUN/kubelet/pki" >"$RUN/kubelet.log" 2>&1 </dev/null &
  echo $! >"$RUN/kubelet.pid"
  say "kubectl get node $NODE; images as xin.local/<binary>:<tag> (imagePullPolicy: Never)"
}

down() {
  for p in kubelet containerd; do
    [ -f "$RUN/$p.pid" ] && kill "$(cat "$RUN/$p.pid")" 2>/dev/null || true
    rm -f "$RUN/$p.pid"
  done
  # The shims outlive containerd and keep their pods' processes: they go too.
  pkill -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" 2>/dev/null || true
  say "stopped; state in $RUN"
}

case "${1:-}" in
  build) build ;;
  up) up ;;
  down) down ;;
  *) echo "usage: $0 build|up|down" >&2; exit 2 ;;
esac
