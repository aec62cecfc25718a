#!/usr/bin/env bash
# `make demo`: the main job, end to end on this machine.
#   1. the demo cluster (XIN_CLUSTER=demo: state .cluster/demo, its own ports; `make test`
#      uses another), built and started if needed
#   2. PostgreSQL (the platform database), and the operator, built from this checkout and run
#      out of cluster (like a dev loop) with PostgreSQL's admin URL: it provisions each example
#      Tenant's own database and roles and runs the migrations step
#   3. the CRDs and examples/ applied with kubectl, as a platform team would
#   4. wait for every object to be Ready, then show them, their children and the metrics
#   5. each example IngestionJob run by the ingestion worker (xin-ingest) as its Job is
#      configured (the local cluster's node only pretends to run pods, so the IngestionJobs wait
#      for the worker's report until then); both tenants' gateways and orchestrators as local
#      processes configured as the operator rendered them; a signed widget message and a
#      Telegram update to acme, a signed WhatsApp message to globex, each answered from its own
#      knowledge; acme's automation worker (xin-automation) runs the example rules, their
#      receivers pointed at local stand-ins: a digest webhook run now and a CRM ticket for a
#      handoff (e2e/src/bin/xin-demo-messages.rs); then the workloads keep running, with a page
#      on http://localhost:18090 that embeds acme's web widget (until `make cluster-down`)
# With XIN_DEMO_OBSERVABILITY=1 (`make demo-observability`) also: Jaeger and Prometheus
# (e2e/observability.sh; built once from their Go modules), the operator and the workloads
# exporting their spans to Jaeger, the workloads kept running, and Prometheus scraping them and
# the operator with the chart's alert and recording rules; it prints where to look.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=$REPO/e2e/controlplane/cluster.sh
export XIN_CLUSTER=demo
STATE=$("$CLUSTER" dir)
METRICS_ADDR=${XIN_DEMO_METRICS_ADDR:-127.0.0.1:18080}
cd "$REPO"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
OBS=${XIN_DEMO_OBSERVABILITY:-0}
OBS_SCRIPT=$REPO/e2e/observability.sh
otel=()
if [ "$OBS" = 1 ]; then
  say "Prometheus and Jaeger (built once from their Go modules, then cached)"
  "$CLUSTER" build-tools prometheus jaeger
  jaeger=$("$OBS_SCRIPT" start-jaeger)
  otlp=$(sed -n 's/.*otlp=\([^ ]*\).*/\1/p' <<<"$jaeger")
  traces=$(sed -n 's/.*query=\([^ ]*\).*/\1/p' <<<"$jaeger")
  # The operator's own spans, and the endpoint it renders into every workload.
  otel=(OTEL_EXPORTER_OTLP_ENDPOINT="$otlp" XIN_OTEL_EXPORTER_ENDPOINT="$otlp")
fi

"$CLUSTER" up
eval "$("$CLUSTER" env)"
export KUBECONFIG PATH

say "building the operator and the workloads (cargo build)"
cargo build -q -p xin-operator -p xin-gateway -p xin-orchestrator -p xin-ingest -p xin-automation -p xin-e2e --bins

say "installing the CRDs and the operator's namespace"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
# Polled rather than `kubectl wait --for=condition=Established`, which fails at once on a
# just-created CRD whose status.conditions is still null (kubernetes/kubernetes#66439).
for crd in tenants channels automationrules ingestionjobs; do
  for _ in $(seq 120); do
    [ "$(kubectl get crd "$crd.xin.dev" \
      -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ] && continue 2
    sleep 0.5
  done
  echo "crd/$crd.xin.dev is not Established after 60 s" >&2
  exit 1
done
kubectl create namespace xin-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null

pidfile=$STATE/pids/xin-operator.pid
if [ -f "$pidfile" ] && { tr '\0' ' ' <"/proc/$(cat "$pidfile")/cmdline"; } 2>/dev/null | grep -q xin-operator; then
  say "stopping the previous demo operator (pid $(cat "$pidfile")) to run this build"
  kill "$(cat "$pidfile")" 2>/dev/null || true
  sleep 1
fi
say "PostgreSQL, the platform database"
XIN_DATABASE_ADMIN_URL=$("$REPO/e2e/postgres.sh" start)
export XIN_DATABASE_ADMIN_URL
say "starting the operator (logs: $STATE/logs/xin-operator.log, metrics: http://$METRICS_ADDR/metrics)"
# No Telegram in the demo: the example bot token is made up, so the operator's setWebhook call
# (completing a key rotation) goes nowhere and the channel says so (TelegramWebhookRegistered).
# The example automation rules' receivers are stand-ins on loopback (xin-demo-messages points
# the rules at them): the demo's platform allows that destination, as a platform team would
# allow an on-premises receiver (--outbound-allow).
env "${otel[@]}" XIN_METRICS_ADDR=$METRICS_ADDR XIN_LEASE_NAMESPACE=xin-system XIN_RESYNC_SECONDS=60 \
  XIN_OUTBOUND_ALLOW=127.0.0.1/32 \
  XIN_TELEGRAM_API_BASE=${XIN_TELEGRAM_API_BASE:-http://127.0.0.1:9} \
  setsid target/debug/xin-operator >"$STATE/logs/xin-operator.log" 2>&1 </dev/null &
echo $! >"$pidfile"
for _ in $(seq 1 120); do
  curl -fsS "http://$METRICS_ADDR/readyz" >/dev/null 2>&1 && break
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$STATE/logs/xin-operator.log" >&2; echo "error: the operator exited; log: $STATE/logs/xin-operator.log" >&2; exit 1; }
  sleep 0.5
done

say "kubectl apply -R -f examples/"
kubectl apply -R -f examples/

say "waiting for every object to be Ready"
# The examples' objects by name: the demo cluster holds what you applied to it as well.
kubectl wait --for=condition=Ready tenant/acme tenant/globex --timeout=180s
kubectl wait --for=condition=Ready channel --all -n xin-acme --timeout=180s
kubectl wait --for=condition=Ready automationrule --all -n xin-acme --timeout=180s
kubectl wait --for=condition=Ready channel --all -n xin-globex --timeout=180s

set -x
kubectl get xin -A
kubectl get deployments,services,hpa,pdb,networkpolicies,ingresses,jobs,secrets -n xin-acme
kubectl get deployments,services,hpa,secrets -n xin-globex
kubectl get tenants -o custom-columns='TENANT:.metadata.name,DATABASE:.status.database.name,MODE:.status.database.mode,SCHEMA:.status.database.schemaVersion'
{ set +x; } 2>/dev/null
say "the operator's metrics"
curl -fsS "http://$METRICS_ADDR/metrics" | { grep -E '^xin_operator_(reconciles|reconcile_failures|write_requests)_total' || true; } | sort | sed -n '1,40p'  # not head: it would close the pipe early (SIGPIPE under pipefail)

say "ingestion, the message paths, then automations: each tenant's workers, gateway and orchestrator with the configuration the operator rendered"
# The workloads stay up afterwards (the widget's page, and Prometheus with
# demo-observability): xin-demo-messages holds them until $hold is removed or
# `make cluster-down`.
hold=$STATE/demo-targets.json
holdpid=$STATE/pids/xin-demo-messages.pid
# The previous run's holder (if it is still that program) stops its workloads first.
if [ -f "$holdpid" ] && { tr '\0' ' ' <"/proc/$(cat "$holdpid")/cmdline"; } 2>/dev/null | grep -q xin-demo-messages; then
  kill "$(cat "$holdpid")"
  for _ in $(seq 1 120); do kill -0 "$(cat "$holdpid")" 2>/dev/null || break; sleep 0.5; done
fi
rm -f "$hold"
XIN_DEMO_HOLD=$hold XIN_DEMO_INGEST_METRICS=$OBS XIN_DEMO_WIDGET_PAGE=1 setsid target/debug/xin-demo-messages >"$STATE/logs/xin-demo-messages.log" 2>&1 </dev/null &
echo $! >"$holdpid"
for _ in $(seq 1 600); do
  [ -f "$hold" ] && break
  kill -0 "$(cat "$holdpid")" 2>/dev/null || { cat "$STATE/logs/xin-demo-messages.log" >&2; echo "error: xin-demo-messages exited" >&2; exit 1; }
  sleep 0.5
done
[ -f "$hold" ] || { echo "error: the demo's workloads did not start; log: $STATE/logs/xin-demo-messages.log" >&2; exit 1; }
sed -n '/^===/,$p' "$STATE/logs/xin-demo-messages.log"
widget_page=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["widget_page"])' "$hold")
if [ "$OBS" = 1 ]; then
  # Prometheus: the operator and each workload, with the labels the chart's monitors add.
  python3 - "$hold" "$METRICS_ADDR" "$REPO/charts/xin/files/prometheus-rules.yaml" >"$STATE/prometheus.yml" <<'PY'
import json, sys
targets, operator, rules = json.load(open(sys.argv[1]))["targets"], sys.argv[2], sys.argv[3]
jobs = [{"job_name": "xin-operator", "honor_labels": True,
         "static_configs": [{"targets": [operator], "labels": {"component": "operator", "namespace": "xin-system"}}]}]
for t in targets:
    jobs.append({"job_name": f'{t["tenant"]}-{t["component"]}',
                 "static_configs": [{"targets": [t["metrics"]], "labels": {
                     "tenant": t["tenant"], "component": t["component"], "namespace": f'xin-{t["tenant"]}'}}],
                 "metric_relabel_configs": [{"action": "labeldrop", "regex": "exported_tenant"}]})
print(json.dumps({"global": {"scrape_interval": "15s", "evaluation_interval": "30s"},
                  "rule_files": [rules], "scrape_configs": jobs}, indent=1))
PY
  prom=$("$OBS_SCRIPT" start-prometheus "$STATE/prometheus.yml" | sed -n 's/.*url=\([^ ]*\).*/\1/p')
fi
set -x
kubectl get ingestionjobs -A
kubectl get automationrules -A
{ set +x; } 2>/dev/null

cat <<EOT

Poke at it:
  eval "\$(e2e/controlplane/cluster.sh env)"
  kubectl describe tenant acme
  kubectl annotate channel telegram -n xin-acme xin.dev/rotate-webhook-key=\$(date +%s)   # rotate a key
  kubectl get channel telegram -n xin-acme -o yaml   # previousKeys held until Telegram acknowledges (none here)
  kubectl patch tenant acme --type=merge -p '{"spec":{"suspend":true}}'                  # suspend
  curl -s http://$METRICS_ADDR/metrics | grep xin_operator
  target/debug/xin-gateway --help; target/debug/xin-orchestrator --help; target/debug/xin-ingest --help   # their configuration
  kubectl get ingestionjob faq-2026-11 -n xin-acme -o yaml   # the worker's report: counts, failures, status.worker
  kubectl annotate tenant acme xin.dev/rotate-database-password=\$(date +%s)              # new database password
  kubectl get xar weekday-digest -n xin-acme -o yaml       # the worker's report: counts, recentRuns, operations
  kubectl get channel web -n xin-acme -o jsonpath='{.status.widget.snippet}'; echo       # the snippet a site pastes
Tear down:  make cluster-down   (stops the operator and the workloads too)   Wipe: make cluster-reset   PostgreSQL: e2e/postgres.sh stop

The web widget, answering from acme's knowledge through its gateway and orchestrator:
  $widget_page      (English)
  ${widget_page}fa    (Persian, right to left)
  Open it in a browser on this machine; the workloads keep running until: rm $hold
EOT
if [ "$OBS" != 1 ]; then
  cat <<EOT
Metrics in Prometheus (the chart's alerts and recording rules) and traces in Jaeger, the
workloads kept running:  make demo-observability   (builds Prometheus and Jaeger once; docs/observability.md)
EOT
else
  cat <<EOT

Observability (docs/observability.md):
  Prometheus API  $prom  (no web UI: its assets are not in the Go module)
    curl -s '$prom/api/v1/targets' | python3 -m json.tool | grep -E '"(health|scrapeUrl)"'
    curl -s '$prom/api/v1/query' --data-urlencode 'query=xin_operator_object_condition{condition="Ready"}'
    curl -s '$prom/api/v1/query' --data-urlencode 'query=gateway_inbox_pending'
    curl -s '$prom/api/v1/alerts'                    # kill an orchestrator (pids in $hold) and watch
  Jaeger          $traces/search   (API: $traces/api/services, $traces/api/traces?service=xin-gateway)
  Dashboards      charts/xin/files/dashboards/*.json: import into a Grafana with this Prometheus as its datasource
  Stop:  rm $hold   (the workloads)   e2e/observability.sh stop-prometheus; e2e/observability.sh stop-jaeger
EOT
fi
