#!/usr/bin/env bash
# Prometheus and Jaeger for the demo and the tests, on 127.0.0.1 only: the binaries that
# `e2e/controlplane/cluster.sh build-tools prometheus jaeger` builds (and caches under
# ~/.cache/xin), and the prometheus-operator CRD manifests that `build-tools
# prometheus-operator-crds` copies there. This script builds nothing: it says what to run.
#   observability.sh paths                     print prometheus=BIN promtool=BIN jaeger=BIN crds=DIR
#   observability.sh crds                      print crds=DIR (needs only the CRDs)
#   observability.sh start-jaeger              start Jaeger v2 (in-memory traces); prints the line below
#   observability.sh stop-jaeger               stop it and remove its run dir
#   observability.sh start-prometheus CONFIG   start Prometheus with that config (running with it:
#                                              reload it); prints url=URL
#   observability.sh stop-prometheus           stop it and remove its run dir (and its TSDB)
# Settings: XIN_JAEGER_OTLP_PORT (17318), XIN_JAEGER_QUERY_PORT (17686), XIN_JAEGER_GRPC_PORT
# (query's gRPC API, the query port - 1), XIN_PROMETHEUS_PORT (17090).
# Jaeger's line: otlp=http://127.0.0.1:P query=http://127.0.0.1:Q
#   OTLP/HTTP: POST otlp/v1/traces (protobuf or JSON). Query API: query/api/services,
#   query/api/traces/<hex trace id>. Nothing is kept on disk; stop loses every trace.
# Prometheus: --web.enable-lifecycle (POST url/-/reload re-reads CONFIG, url/-/quit stops it);
#   API: url/api/v1/query?query=up. Its TSDB is a throwaway directory in the run dir. The web
#   UI pages do not work (its assets are not in the Go module); the API and /-/ready do.
# Run dirs (logs, pid, config, data): ${TMPDIR:-/tmp}/xin-jaeger-Q and xin-prometheus-P.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=controlplane/versions.env
. "$HERE/controlplane/versions.env"
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xin
PROMETHEUS=$CACHE/prometheus-$PROMETHEUS_VERSION/bin/prometheus
PROMTOOL=$CACHE/prometheus-$PROMETHEUS_VERSION/bin/promtool
JAEGER=$CACHE/jaeger-$JAEGER_VERSION/bin/jaeger
CRDS=$CACHE/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION
OTLP_PORT=${XIN_JAEGER_OTLP_PORT:-17318}
QUERY_PORT=${XIN_JAEGER_QUERY_PORT:-17686}
GRPC_PORT=${XIN_JAEGER_GRPC_PORT:-$((QUERY_PORT - 1))}
PROM_PORT=${XIN_PROMETHEUS_PORT:-17090}
JAEGER_RUN=${TMPDIR:-/tmp}/xin-jaeger-$QUERY_PORT
PROM_RUN=${TMPDIR:-/tmp}/xin-prometheus-$PROM_PORT
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# need <file> <build-tools tool>: fail, naming the command that builds it, when it is missing.
need() {
  [ -e "$1" ] || die "$1 is missing: build it with 'e2e/controlplane/cluster.sh build-tools $2' (cached afterwards)"
}

jaeger_line() { echo "otlp=http://127.0.0.1:$OTLP_PORT query=http://127.0.0.1:$QUERY_PORT"; }
jaeger_up() { curl -fsS -o /dev/null "http://127.0.0.1:$QUERY_PORT/api/services" 2>/dev/null; }
prom_url() { echo "http://127.0.0.1:$PROM_PORT"; }
prom_up() { curl -fsS -o /dev/null "$(prom_url)/-/ready" 2>/dev/null; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Who listens on a port (for the error when it is taken): ss's process column, if it says.
port_holder() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:.*' | head -1; }

# stop <run dir> <what>: kill the recorded PID (SIGTERM, then SIGKILL after 10 s) and remove
# the run dir. Only a PID whose command line is the binary this script started is killed.
stop() {
  local run=$1 what=$2 pid
  pid=$(cat "$run/pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "/$what "; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped $what (pid $pid)"
  else
    say "$what was not running (run dir $run)"
  fi
  case "$run" in /|"$HOME") die "refusing to remove $run" ;; esac
  rm -rf "$run"
}

# wait_up <check function> <run dir> <log name> <what>: up to 60 s; fail with the log's tail
# when the process exits or the time runs out.
wait_up() {
  local check=$1 run=$2 log=$3 what=$4
  for _ in $(seq 1 240); do
    "$check" && return 0
    kill -0 "$(cat "$run/pid")" 2>/dev/null || { tail -n 30 "$run/$log" >&2; die "$what exited during start; its log is $run/$log"; }
    sleep 0.25
  done
  tail -n 30 "$run/$log" >&2
  die "timed out after 60 s waiting for $what; its log is $run/$log"
}

cmd_start_jaeger() {
  need "$JAEGER" jaeger
  if jaeger_up && [ -f "$JAEGER_RUN/pid" ]; then
    say "Jaeger already running (query on 127.0.0.1:$QUERY_PORT)"; jaeger_line; return 0
  fi
  for p in "$OTLP_PORT" "$QUERY_PORT" "$GRPC_PORT"; do
    port_busy "$p" && die "port 127.0.0.1:$p (for Jaeger) is in use by another process ($(port_holder "$p")); set XIN_JAEGER_OTLP_PORT, XIN_JAEGER_QUERY_PORT or XIN_JAEGER_GRPC_PORT"
  done
  rm -rf "$JAEGER_RUN"
  mkdir -p "$JAEGER_RUN"
  # Jaeger v2 is an OpenTelemetry Collector: one pipeline, the OTLP/HTTP receiver into the
  # in-memory store, which the jaeger_query extension serves (HTTP API, and gRPC because the
  # extension always listens there). No batch processor, so a span is queryable as soon as the
  # POST returned; the collector's own metrics (by default on :8888) are off.
  cat >"$JAEGER_RUN/config.yaml" <<EOF
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:$QUERY_PORT
    grpc:
      endpoint: 127.0.0.1:$GRPC_PORT
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$OTLP_PORT
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
  setsid "$JAEGER" --config "$JAEGER_RUN/config.yaml" >"$JAEGER_RUN/jaeger.log" 2>&1 </dev/null &
  echo $! >"$JAEGER_RUN/pid"
  wait_up jaeger_up "$JAEGER_RUN" jaeger.log Jaeger
  # The query API answers once the extensions are up; the receiver starts after them.
  for _ in $(seq 1 40); do port_busy "$OTLP_PORT" && break; sleep 0.25; done
  port_busy "$OTLP_PORT" || die "Jaeger's OTLP receiver is not listening on 127.0.0.1:$OTLP_PORT; its log is $JAEGER_RUN/jaeger.log"
  say "Jaeger $JAEGER_VERSION (in-memory) running, log $JAEGER_RUN/jaeger.log"
  jaeger_line
}

cmd_start_prometheus() {
  local config=${1:-}
  [ -n "$config" ] || die "usage: observability.sh start-prometheus <config-file>"
  [ -f "$config" ] || die "no such Prometheus config: $config"
  need "$PROMETHEUS" prometheus
  if prom_up && [ -f "$PROM_RUN/pid" ]; then
    # Running already: with the same config file it re-reads it (new targets, new rules).
    if [ "$(cat "$PROM_RUN/config" 2>/dev/null)" = "$(cd "$(dirname "$config")" && pwd)/$(basename "$config")" ]; then
      curl -fsS -X POST "$(prom_url)/-/reload" >/dev/null || die "Prometheus on $(prom_url) refused to reload $config; its log: $PROM_RUN/prometheus.log"
      say "Prometheus already running on $(prom_url): reloaded $config"
      echo "url=$(prom_url)"; return 0
    fi
    die "Prometheus already runs on $(prom_url) with $(cat "$PROM_RUN/config" 2>/dev/null); stop it first (observability.sh stop-prometheus)"
  fi
  port_busy "$PROM_PORT" && die "port 127.0.0.1:$PROM_PORT (for Prometheus) is in use by another process ($(port_holder "$PROM_PORT")); set XIN_PROMETHEUS_PORT"
  config=$(cd "$(dirname "$config")" && pwd)/$(basename "$config")
  rm -rf "$PROM_RUN"
  mkdir -p "$PROM_RUN/data"
  echo "$config" >"$PROM_RUN/config"
  setsid "$PROMETHEUS" --config.file "$config" --web.listen-address "127.0.0.1:$PROM_PORT" \
    --web.enable-lifecycle --storage.tsdb.path "$PROM_RUN/data" \
    >"$PROM_RUN/prometheus.log" 2>&1 </dev/null &
  echo $! >"$PROM_RUN/pid"
  wait_up prom_up "$PROM_RUN" prometheus.log Prometheus
  say "Prometheus $PROMETHEUS_VERSION running with $config, log $PROM_RUN/prometheus.log"
  echo "url=$(prom_url)"
}

case "${1:-}" in
  crds)
    need "$CRDS/monitoring.coreos.com_servicemonitors.yaml" prometheus-operator-crds
    echo "crds=$CRDS"
    ;;
  paths)
    need "$PROMETHEUS" prometheus
    need "$PROMTOOL" prometheus
    need "$JAEGER" jaeger
    need "$CRDS/monitoring.coreos.com_servicemonitors.yaml" prometheus-operator-crds
    echo "prometheus=$PROMETHEUS promtool=$PROMTOOL jaeger=$JAEGER crds=$CRDS"
    ;;
  start-jaeger) cmd_start_jaeger ;;
  stop-jaeger) stop "$JAEGER_RUN" jaeger ;;
  start-prometheus) shift; cmd_start_prometheus "$@" ;;
  stop-prometheus) stop "$PROM_RUN" prometheus ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
