#!/usr/bin/env bash
# The local Kubernetes control plane Xin is tested and demonstrated against: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake nodes), built from the
# Go module proxy, cached outside the repository and run on 127.0.0.1 only.
#
#   cluster.sh build           build (or find in the cache) the control plane and helm
#   cluster.sh up              build if needed, start, wait for Ready nodes, print usage
#   cluster.sh down            stop the processes this script started (by recorded PID)
#   cluster.sh reset           down, then wipe the state directory (certificates, etcd data)
#   cluster.sh status          say what runs; exit 1 when the cluster is not up
#   cluster.sh env             print `export` lines for KUBECONFIG and PATH
#   cluster.sh dir             print the state directory
#   cluster.sh go-env          print `export` lines for the Go settings the builds use (their
#                              module and build caches; e2e/realnode.sh builds with them)
#   cluster.sh check-versions  fail when gomod/*/go.mod disagree with versions.env
#   cluster.sh build-tools [tool...]
#                              build (or find in the cache) the test tools, all when none is
#                              named: cyclonus (the NetworkPolicy engine that
#                              operator/tests/network_policy.rs runs), cargo-deny (the
#                              dependency licence/ban/source check of `make test`), cargo-fuzz
#                              (e2e/fuzz.sh's, with its own build lock), prometheus
#                              (prometheus and promtool), jaeger (v2, in-memory traces) and
#                              prometheus-operator-crds (the monitoring.coreos.com CRD
#                              manifests, a directory); e2e/observability.sh runs the first two
#
# Two clusters, each with its own state and ports, so the demo never shows what the test
# suites create and both can run at once. XIN_CLUSTER picks one:
#   demo (the default; `make demo`)  state <repo>/.cluster/demo, ports 17379 17380 17443 17257 17259 17247
#   test (`make test`)               state <repo>/.cluster/test, ports 16379 16380 16443 16257 16259 16247
#   real (the real-node suite)       state <repo>/.cluster/real, ports 15379 15380 15443 15257 15259 15247
#                                    (operator/tests/e2e_realnode.rs adds a real node: e2e/realnode.sh)
# Overrides (environment): XIN_CLUSTER_DIR (state directory), the ports XIN_ETCD_PORT,
# XIN_ETCD_PEER_PORT, XIN_APISERVER_PORT, XIN_KCM_PORT, XIN_SCHEDULER_PORT, XIN_KWOK_PORT, and
# XDG_CACHE_HOME (binaries under $XDG_CACHE_HOME/xin, default ~/.cache/xin, shared by both).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=versions.env
. "$HERE/versions.env"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/xin
KUBE_BIN=$CACHE_ROOT/kube-$KUBE_VERSION/bin
ETCD_BIN=$CACHE_ROOT/etcd-$ETCD_VERSION/bin
KWOK_BIN=$CACHE_ROOT/kwok-$KWOK_VERSION/bin
HELM_BIN=$CACHE_ROOT/helm-$HELM_VERSION/bin
CYCLONUS_BIN=$CACHE_ROOT/cyclonus-$CYCLONUS_VERSION/bin
CARGO_DENY_ROOT=$CACHE_ROOT/cargo-deny-$CARGO_DENY_VERSION
CARGO_FUZZ_ROOT=$CACHE_ROOT/cargo-fuzz-$CARGO_FUZZ_VERSION
PROMETHEUS_BIN=$CACHE_ROOT/prometheus-$PROMETHEUS_VERSION/bin
JAEGER_BIN=$CACHE_ROOT/jaeger-$JAEGER_VERSION/bin
PROMETHEUS_OPERATOR_CRDS=$CACHE_ROOT/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION

CLUSTER_NAME=${XIN_CLUSTER:-demo}
case "$CLUSTER_NAME" in
  demo) P=17 ;;
  test) P=16 ;;
  real) P=15 ;;
  *) die "XIN_CLUSTER is 'demo', 'test' or 'real', not '$CLUSTER_NAME'" ;;
esac
STATE=${XIN_CLUSTER_DIR:-$REPO/.cluster/$CLUSTER_NAME}
ETCD_PORT=${XIN_ETCD_PORT:-${P}379}
ETCD_PEER_PORT=${XIN_ETCD_PEER_PORT:-${P}380}
APISERVER_PORT=${XIN_APISERVER_PORT:-${P}443}
KCM_PORT=${XIN_KCM_PORT:-${P}257}
SCHEDULER_PORT=${XIN_SCHEDULER_PORT:-${P}259}
KWOK_PORT=${XIN_KWOK_PORT:-${P}247}
# What to put before `make cluster-…` to address this cluster again.
SELECT=""
[ "$CLUSTER_NAME" = demo ] || SELECT="XIN_CLUSTER=$CLUSTER_NAME "
[ -z "${XIN_CLUSTER_DIR:-}" ] || SELECT="${SELECT}XIN_CLUSTER_DIR=$STATE "
NODES=(xin-node-1 xin-node-2)
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

ensure_tools() {
  local missing=()
  command -v go >/dev/null || die "the Go toolchain is needed to build the control plane (https://go.dev/dl)"
  for t in openssl curl; do command -v "$t" >/dev/null || missing+=("$t"); done
  if ((${#missing[@]})); then
    say "installing ${missing[*]} with apt-get"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

go_env() {
  export GOMODCACHE=$CACHE_ROOT/go/mod GOCACHE=$CACHE_ROOT/go/build
  export GOFLAGS=-trimpath GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
}

# go_build <module dir> <output dir> <ldflags> <package> <binary name>...
# Builds into a temporary directory and moves the binaries into place only when all succeeded,
# so an interrupted build never leaves a half-written binary that looks cached.
go_build() {
  local mod=$1 out=$2 ldflags=$3 pkgs=() names=() tmp start ticker rc=0
  shift 3
  while (($#)); do pkgs+=("$1"); names+=("$2"); shift 2; done
  local need=0
  for n in "${names[@]}"; do [ -x "$out/$n" ] || need=1; done
  if ((need == 0)); then say "cached: ${names[*]} in $out"; return 0; fi
  # The build lock only when there is something to build (`up` comes through `build`, and
  # make test's background builds hold the lock for minutes); then look again: whoever held
  # it may have built these meanwhile.
  if [ -z "$lock_held" ]; then
    build_lock
    need=0
    for n in "${names[@]}"; do [ -x "$out/$n" ] || need=1; done
    if ((need == 0)); then say "cached: ${names[*]} in $out"; return 0; fi
  fi
  mkdir -p "$out"
  tmp=$(mktemp -d "$out/.build.XXXXXX")
  start=$(date +%s)
  say "building ${names[*]} (cold: minutes; progress every 60 s)"
  ( while sleep 60; do echo "    ... still building ${names[*]}: $(( ($(date +%s) - start) / 60 )) min" >&2; done ) &
  ticker=$!
  # Interrupted (Ctrl-C) or failed: the progress ticker goes with us.
  trap 'kill "$ticker" 2>/dev/null' EXIT INT TERM
  (cd "$HERE/gomod/$mod" && go build -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}") || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  trap - EXIT INT TERM
  if ((rc != 0)); then rm -rf "$tmp"; die "go build failed in e2e/controlplane/gomod/$mod (exit $rc)"; fi
  if ((${#pkgs[@]} == 1)); then
    # one package: go names the binary after the path (".../server/v3" gives "server").
    mv "$tmp"/* "$out/${names[0]}"
  else
    for i in "${!pkgs[@]}"; do mv "$tmp/$(basename "${pkgs[$i]}")" "$out/${names[$i]}"; done
  fi
  rm -rf "$tmp"
  say "built ${names[*]} in $(( $(date +%s) - start )) s"
}

cmd_check_versions() {
  local bad=0
  grep -q "^\s*k8s.io/kubernetes $KUBE_VERSION\b" "$HERE/gomod/kube/go.mod" || { echo "gomod/kube: k8s.io/kubernetes is not $KUBE_VERSION" >&2; bad=1; }
  if grep -E '^\s+k8s\.io/[a-z-]+ => ' "$HERE/gomod/kube/go.mod" | grep -v "$KUBE_STAGING_VERSION\$" >&2; then
    echo "gomod/kube: the staging replaces above are not $KUBE_STAGING_VERSION" >&2; bad=1
  fi
  grep -q "^\s*go.etcd.io/etcd/server/v3 $ETCD_VERSION\b" "$HERE/gomod/etcd/go.mod" || { echo "gomod/etcd: etcd is not $ETCD_VERSION" >&2; bad=1; }
  grep -q "^\s*sigs.k8s.io/kwok $KWOK_VERSION\b" "$HERE/gomod/kube/go.mod" || { echo "gomod/kube: kwok is not $KWOK_VERSION" >&2; bad=1; }
  grep -q "^\s*helm.sh/helm/v3 $HELM_VERSION\b" "$HERE/gomod/kube/go.mod" || { echo "gomod/kube: helm is not $HELM_VERSION" >&2; bad=1; }
  grep -q "^\s*github.com/mattfenwick/cyclonus $CYCLONUS_VERSION\b" "$HERE/gomod/kube/go.mod" || { echo "gomod/kube: cyclonus is not $CYCLONUS_VERSION" >&2; bad=1; }
  grep -q "^\s*github.com/prometheus/prometheus $PROMETHEUS_VERSION\b" "$HERE/gomod/prometheus/go.mod" || { echo "gomod/prometheus: prometheus is not $PROMETHEUS_VERSION" >&2; bad=1; }
  grep -q "^\s*github.com/jaegertracing/jaeger $JAEGER_VERSION\b" "$HERE/gomod/jaeger/go.mod" || { echo "gomod/jaeger: jaeger is not $JAEGER_VERSION" >&2; bad=1; }
  grep -q "^\s*github.com/prometheus-operator/prometheus-operator $PROMETHEUS_OPERATOR_VERSION\b" "$HERE/gomod/prometheus-operator-crds/go.mod" || { echo "gomod/prometheus-operator-crds: prometheus-operator is not $PROMETHEUS_OPERATOR_VERSION" >&2; bad=1; }
  ((bad == 0)) && echo "versions.env and gomod/*/go.mod agree"
  return "$bad"
}

# One build at a time per cache (the demo's and the test cluster may start together): a
# second caller waits, then finds the binaries cached. Released (exec 9>&-) before anything
# is started, so the cluster's processes do not inherit the lock.
# build_lock [name]: one build at a time per lock. The Go builds share one (and the Go caches);
# each cargo install has its own, so make test's background build of cargo-fuzz (at nice 19)
# never holds up cargo-deny, nor Prometheus and Jaeger.
lock_held=
build_lock() {
  lock_held=1
  mkdir -p "$CACHE_ROOT"
  if command -v flock >/dev/null; then
    exec 9>"$CACHE_ROOT/.${1:-build}.lock"
    if ! flock -n 9; then
      say "another cluster.sh is building the binaries; waiting for it to finish"
      flock 9
    fi
  fi
}

cmd_build() {
  ensure_tools
  go_env
  cmd_check_versions >/dev/null
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local kube_ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  say "[1/4] Kubernetes $KUBE_VERSION"
  go_build kube "$KUBE_BIN" "$kube_ld" \
    k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl kubectl
  say "[2/4] etcd $ETCD_VERSION"
  go_build etcd "$ETCD_BIN" "-s -w" go.etcd.io/etcd/server/v3 etcd
  say "[3/4] kwok $KWOK_VERSION"
  # kwok and helm from the Kubernetes module (gomod/kube): its client-go, already compiled.
  go_build kube "$KWOK_BIN" "-s -w" sigs.k8s.io/kwok/cmd/kwok kwok
  say "[4/4] helm $HELM_VERSION"
  go_build kube "$HELM_BIN" "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" helm.sh/helm/v3/cmd/helm helm
  exec 9>&- && lock_held=
}

# cargo_install <crate> <version> <root>: `cargo install --locked` (the crate's own lockfile) of
# a pinned version into <root>/bin, like go_build: into a temporary root first and moved into
# place only when it succeeded. The build's target directory is a temporary one under the cache,
# deleted afterwards (success, failure or interruption), so only the binary stays.
cargo_install() {
  local crate=$1 version=$2 root=$3 tmp start ticker rc=0
  if [ -x "$root/bin/$crate" ]; then say "cached: $crate in $root/bin"; return 0; fi
  command -v cargo >/dev/null || die "cargo is needed to build $crate (https://rustup.rs)"
  mkdir -p "$CACHE_ROOT"
  tmp=$(mktemp -d "$CACHE_ROOT/.cargo-install.XXXXXX")
  start=$(date +%s)
  say "building $crate $version (cold: minutes; progress every 60 s)"
  ( while sleep 60; do echo "    ... still building $crate: $(( ($(date +%s) - start) / 60 )) min" >&2; done ) &
  ticker=$!
  trap 'kill "$ticker" 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
  # From the repository, so rust-toolchain.toml's pinned toolchain builds it. Test tooling, so
  # built for a short compile rather than the fastest binary: cargo-deny's own release profile
  # asks for fat LTO in one codegen unit, which on 2 cores is minutes of a cold run; opt-level 1
  # without LTO is plenty for a check of this workspace's few hundred crates.
  (cd "$REPO" && CARGO_TARGET_DIR="$tmp/target" CARGO_PROFILE_RELEASE_LTO=off \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install --quiet --locked --no-track \
    "$crate" --version "$version" --root "$tmp/root") || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  trap - EXIT INT TERM
  if ((rc != 0)); then rm -rf "$tmp"; die "cargo install $crate $version failed (exit $rc)"; fi
  mkdir -p "$root/bin"
  mv "$tmp/root/bin/$crate" "$root/bin/$crate"
  rm -rf "$tmp"
  say "built $crate in $(( $(date +%s) - start )) s"
}

# fetch_prometheus_operator_crds: the CRD manifests of the release gomod/prometheus-operator-crds
# pins (example/prometheus-operator-crd/, the v1 and v1alpha1 APIs without the conversion
# webhook that the -full variant's v1beta1 AlertmanagerConfig needs), from its module zip (go
# verifies it against go.sum), copied into $PROMETHEUS_OPERATOR_CRDS. Like go_build: into a
# temporary directory, renamed into place only when complete.
fetch_prometheus_operator_crds() {
  local out=$PROMETHEUS_OPERATOR_CRDS mod=github.com/prometheus-operator/prometheus-operator dir tmp
  if [ -f "$out/monitoring.coreos.com_servicemonitors.yaml" ]; then say "cached: CRDs in $out"; return 0; fi
  dir=$(cd "$HERE/gomod/prometheus-operator-crds" && go mod download "$mod" && go list -m -f '{{.Dir}}' "$mod") ||
    die "go mod download $mod failed in e2e/controlplane/gomod/prometheus-operator-crds"
  [ -f "$dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" ] ||
    die "no example/prometheus-operator-crd/ in $dir"
  mkdir -p "$CACHE_ROOT"
  tmp=$(mktemp -d "$CACHE_ROOT/.prometheus-operator-crds.XXXXXX")
  install -m 644 "$dir"/example/prometheus-operator-crd/*.yaml "$tmp/"
  chmod 755 "$tmp"
  rm -rf "$out"
  mv "$tmp" "$out"
  say "copied $(find "$out" -name '*.yaml' | wc -l) CRD manifests into $out"
}

# Only the test suites need these (the demo does not): `make test` builds them. Cyclonus comes
# from the Kubernetes module after the control plane: with kwok and helm, 35 s on 2 cores (62 s
# of CPU) once the control plane is built, where each from a module of its own took 100-120 s.
# cargo-deny needs only cargo, not Go: a release build of its ~200 crates (at opt-level 1
# without LTO, cargo_install), plus downloading them with an empty cargo registry cache;
# `make test` builds it in its static checks, before the cluster starts.
# The observability tools, each measured with empty Go caches on 2 cores that another build
# kept busy (load 3-6), module downloads included: prometheus (prometheus and promtool) 542 s
# (with Kubernetes discovery, since dropped), jaeger 294 s, prometheus-operator-crds 1 s (a 31 MB module zip, nothing built); each needs
# about 1.1-1.2 GB of modules and 1.2-1.6 GB of build cache under the cache's go/. In the
# cache: prometheus 125 MB, jaeger 82 MB, the CRDs 4.5 MB. `make test` builds prometheus and
# jaeger in the background (nice 19) while its suites run; the suites that need them wait.
cmd_build_tools() {
  local tools=("$@") t
  ((${#tools[@]})) || tools=(cyclonus cargo-deny cargo-fuzz prometheus jaeger prometheus-operator-crds)
  local lock=${tools[*]}
  lock=${lock// /-}
  for t in "${tools[@]}"; do
    case "$t" in
      cargo-deny | cargo-fuzz) ;;
      cyclonus | prometheus | jaeger | prometheus-operator-crds) lock=build ;;
      *) die "build-tools: unknown tool '$t' (cyclonus, cargo-deny, cargo-fuzz, prometheus, jaeger, prometheus-operator-crds)" ;;
    esac
  done
  build_lock "$lock"
  for t in "${tools[@]}"; do
    case "$t" in
      cyclonus)
        ensure_tools
        go_env
        cmd_check_versions >/dev/null
        say "cyclonus $CYCLONUS_VERSION (NetworkPolicy engine)"
        go_build kube "$CYCLONUS_BIN" "-s -w" github.com/mattfenwick/cyclonus/cmd/cyclonus cyclonus
        ;;
      cargo-deny)
        say "cargo-deny $CARGO_DENY_VERSION (dependency licences, bans, sources)"
        cargo_install cargo-deny "$CARGO_DENY_VERSION" "$CARGO_DENY_ROOT"
        ;;
      cargo-fuzz)
        say "cargo-fuzz $CARGO_FUZZ_VERSION (the fuzz targets' runner, e2e/fuzz.sh)"
        cargo_install cargo-fuzz "$CARGO_FUZZ_VERSION" "$CARGO_FUZZ_ROOT"
        ;;
      prometheus)
        ensure_tools
        go_env
        cmd_check_versions >/dev/null
        say "prometheus $PROMETHEUS_VERSION (prometheus and promtool)"
        # Module v0.MMM.P is Prometheus M.MM.P: the version `prometheus --version` reports.
        local pv=${PROMETHEUS_VERSION#v0.}
        pv="${pv:0:1}.$((10#${pv:1:2})).${pv#*.}"
        # Without the builtinassets tag (the web UI is not in the module zip) the binary looks
        # for the UI on disk and the UI pages fail, but the HTTP API (/api/v1/...) and /-/ready
        # work. remove_all_sd drops the optional service discoveries (cloud SDKs, and
        # Kubernetes' with client-go: minutes of a cold build); the tests and the demo scrape
        # static targets, and static, file and http SD stay.
        GOFLAGS="$GOFLAGS -tags=remove_all_sd" go_build prometheus "$PROMETHEUS_BIN" \
          "-s -w -X github.com/prometheus/common/version.Version=$pv" \
          github.com/prometheus/prometheus/cmd/prometheus prometheus \
          github.com/prometheus/prometheus/cmd/promtool promtool
        ;;
      jaeger)
        ensure_tools
        go_env
        cmd_check_versions >/dev/null
        say "jaeger $JAEGER_VERSION (v2: OTLP receiver, in-memory storage, query API)"
        # The UI assets are not in the module zip either: / serves a placeholder page, the
        # query API (/api/traces/<id>, /api/services) works.
        go_build jaeger "$JAEGER_BIN" \
          "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$JAEGER_VERSION" \
          github.com/jaegertracing/jaeger/cmd/jaeger jaeger
        ;;
      prometheus-operator-crds)
        ensure_tools
        go_env
        cmd_check_versions >/dev/null
        say "prometheus-operator CRDs $PROMETHEUS_OPERATOR_VERSION (monitoring.coreos.com)"
        fetch_prometheus_operator_crds
        ;;
    esac
  done
  exec 9>&- && lock_held=
}

pid_of() { cat "$STATE/pids/$1.pid" 2>/dev/null || true; }

# alive <component>: its recorded PID runs the binary we started (not a recycled PID).
alive() {
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "/$1 "
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local name=$1 bin=$2; shift 2
  mkdir -p "$STATE/logs" "$STATE/pids"
  setsid "$bin" "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name.pid"
}

wait_for() {
  local what=$1 timeout=$2 log=$3 i; shift 3
  for ((i = 0; i < timeout * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    # kill -0, not alive(): right after the fork the child may not have exec'd its binary yet.
    [ -n "$log" ] && ! kill -0 "$(pid_of "$log")" 2>/dev/null && { tail -n 30 "$STATE/logs/$log.log" >&2; die "$log exited during start; its log is $STATE/logs/$log.log"; }
    sleep 0.5
  done
  [ -n "$log" ] && tail -n 30 "$STATE/logs/$log.log" >&2
  die "timed out after ${timeout}s waiting for $what"
}

gen_pki() {
  local pki=$STATE/pki
  [ -f "$pki/tokens.csv" ] && return 0
  say "generating certificates, service-account keys and tokens in $pki"
  mkdir -p "$pki"; chmod 700 "$STATE" "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
      -subj "/CN=xin-local-ca" 2>/dev/null
    cat >apiserver.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 3650 -extfile apiserver.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    {
      echo "$(openssl rand -hex 32),admin,admin,system:masters"
      echo "$(openssl rand -hex 32),system:kube-controller-manager,system:kube-controller-manager"
      echo "$(openssl rand -hex 32),system:kube-scheduler,system:kube-scheduler"
      echo "$(openssl rand -hex 32),xin:kwok,xin:kwok,system:masters"
    } >tokens.csv
    chmod 600 ./*.key tokens.csv
  )
}

# The API server's client certificate for the kubelets (logs, exec, port-forward on a real
# node: e2e/realnode.sh); made on its own so state directories from before it get one too.
# No group: the API server itself would take it as a user with no rights; the kubelet lets any
# client with a certificate from the cluster's CA in.
gen_kubelet_client_cert() {
  local pki=$STATE/pki
  [ -f "$pki/kubelet-client.crt" ] && ! grep -q system:masters <(openssl x509 -in "$pki/kubelet-client.crt" -noout -subject) && return 0
  (
    cd "$pki"
    openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr \
      -subj "/CN=kube-apiserver-kubelet-client" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >kubelet-client.ext
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out kubelet-client.crt -days 3650 -extfile kubelet-client.ext 2>/dev/null
    chmod 600 kubelet-client.key
  )
}

token_for() { awk -F, -v u="$1" '$2 == u { print $1 }' "$STATE/pki/tokens.csv"; }

write_kubeconfig() {
  local file=$1 user=$2
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: xin-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $user
  user:
    token: $(token_for "$user")
contexts:
- name: xin-local
  context: {cluster: xin-local, user: $user}
current-context: xin-local
EOF
  chmod 600 "$file"
}

apiserver_ready() {
  curl -fsS --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(token_for admin)" \
    "https://127.0.0.1:$APISERVER_PORT/readyz"
}

# The API server a kubeconfig points at (the ports of a running cluster are the ones it was
# started with, whatever the environment says now).
server_of() { awk '$1 == "server:" { print $2; exit }' "$1" 2>/dev/null; }

print_usage() {
  cat <<EOF

The $CLUSTER_NAME cluster is up (Kubernetes $KUBE_VERSION on $(server_of "$STATE/kubeconfig"), state $STATE).
  export KUBECONFIG=$STATE/kubeconfig PATH=$KUBE_BIN:\$PATH
  kubectl get nodes,pods -A
Logs: $STATE/logs/<component>.log   Stop: ${SELECT}make cluster-down   Wipe: ${SELECT}make cluster-reset
EOF
}

cmd_up() {
  if [ -f "$STATE/pids/etcd.pid" ] || [ -f "$STATE/pids/kube-apiserver.pid" ]; then
    local up=() down=()
    for c in "${COMPONENTS[@]}"; do if alive "$c"; then up+=("$c"); else down+=("$c"); fi; done
    if ((${#down[@]} == 0)); then
      say "the $CLUSTER_NAME cluster is already running (state $STATE); not starting a second one"
      print_usage; return 0
    fi
    if ((${#up[@]})); then
      die "a partial $CLUSTER_NAME cluster is running (${up[*]} up, ${down[*]} down); run '${SELECT}make cluster-down' first"
    fi
    rm -f "$STATE"/pids/*.pid
  fi
  for p in "$ETCD_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$SCHEDULER_PORT" "$KWOK_PORT"; do
    port_busy "$p" && die "port 127.0.0.1:$p (for the $CLUSTER_NAME cluster) is already in use by another process; set the XIN_*_PORT variables (see docs/development.md)"
  done
  cmd_build
  local t0; t0=$(date +%s)
  gen_pki
  gen_kubelet_client_cert
  local pki=$STATE/pki
  say "starting etcd on 127.0.0.1:$ETCD_PORT"
  start etcd "$ETCD_BIN/etcd" --name xin-local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "xin-local=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync \
    --quota-backend-bytes 2147483648 --log-level warn
  wait_for "etcd health" 60 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  say "starting kube-apiserver on 127.0.0.1:$APISERVER_PORT"
  start kube-apiserver "$KUBE_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --authorization-mode RBAC --allow-privileged=true \
    --kubelet-client-certificate "$pki/kubelet-client.crt" --kubelet-client-key "$pki/kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-cluster-ip-range 10.0.0.0/16 --endpoint-reconciler-type none \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --profiling=false --v 1
  wait_for "kube-apiserver /readyz" 120 kube-apiserver apiserver_ready

  write_kubeconfig "$STATE/kubeconfig" admin
  write_kubeconfig "$STATE/kcm.kubeconfig" system:kube-controller-manager
  write_kubeconfig "$STATE/scheduler.kubeconfig" system:kube-scheduler
  write_kubeconfig "$STATE/kwok.kubeconfig" xin:kwok

  say "starting kube-controller-manager, kube-scheduler and kwok"
  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kcm.kubeconfig" \
    --authentication-kubeconfig "$STATE/kcm.kubeconfig" --authorization-kubeconfig "$STATE/kcm.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
    --controllers '*' --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --cluster-name xin-local --service-cluster-ip-range 10.0.0.0/16 \
    --horizontal-pod-autoscaler-sync-period 5s --profiling=false --v 1
  start kube-scheduler "$KUBE_BIN/kube-scheduler" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false --profiling=false --v 1
  start kwok "$KWOK_BIN/kwok" \
    --kubeconfig "$STATE/kwok.kubeconfig" --config "$HERE/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds 40 --cidr 10.244.0.0/16 --node-ip 10.1.0.1 \
    --server-address "127.0.0.1:$KWOK_PORT"
  local kc=(env KUBECONFIG="$STATE/kubeconfig" "$KUBE_BIN/kubectl")
  wait_for "kube-controller-manager /healthz" 60 kube-controller-manager \
    curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
  wait_for "kube-scheduler /healthz" 60 kube-scheduler curl -fsSk "https://127.0.0.1:$SCHEDULER_PORT/healthz"

  say "creating fake nodes ${NODES[*]}"
  for n in "${NODES[@]}"; do
    "${kc[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: $n, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
spec: {}
EOF
  done
  wait_for "nodes Ready" 90 kwok "${kc[@]}" wait --for=condition=Ready node --all --timeout=1s
  wait_for "the default ServiceAccount" 60 kube-controller-manager "${kc[@]}" get serviceaccount default -n default
  say "$CLUSTER_NAME cluster ready in $(( $(date +%s) - t0 )) s"
  print_usage
}

cmd_down() {
  local any=0 all=("${COMPONENTS[@]}" xin-operator xin-demo-messages)
  # Reverse start order; the demo's workloads (xin-demo-messages) and operator, if any, go first.
  for ((i = ${#all[@]} - 1; i >= 0; i--)); do
    local c=${all[$i]} pid
    pid=$(pid_of "$c")
    [ -n "$pid" ] || continue
    if alive "$c"; then
      any=1
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 40); do alive "$c" || break; sleep 0.25; done
      if alive "$c"; then kill -9 "$pid" 2>/dev/null || true; fi
      say "stopped $c (pid $pid)"
    fi
    rm -f "$STATE/pids/$c.pid"
  done
  ((any)) || say "no process of the $CLUSTER_NAME cluster was running (state $STATE)"
}

cmd_reset() {
  cmd_down
  case "$STATE" in /|"$HOME"|"$REPO") die "refusing to wipe $STATE" ;; esac
  rm -rf "$STATE"
  say "wiped $STATE"
}

cmd_status() {
  local rc=0
  say "$CLUSTER_NAME cluster, state $STATE"
  for c in "${COMPONENTS[@]}"; do
    if alive "$c"; then echo "$c: running (pid $(pid_of "$c"))"; else echo "$c: not running"; rc=1; fi
  done
  return "$rc"
}

cmd_env() {
  printf 'export KUBECONFIG=%q\n' "$STATE/kubeconfig"
  printf 'export PATH=%q:%q:"$PATH"\n' "$KUBE_BIN" "$HELM_BIN"
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  reset) cmd_reset ;;
  status) cmd_status ;;
  env) cmd_env ;;
  dir) echo "$STATE" ;;
  go-env) go_env; for v in GOMODCACHE GOCACHE GOFLAGS GOWORK GOTOOLCHAIN CGO_ENABLED; do printf 'export %s=%q\n' "$v" "${!v}"; done ;;
  check-versions) cmd_check_versions ;;
  build-tools) shift; cmd_build_tools "$@" ;;
  *) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
