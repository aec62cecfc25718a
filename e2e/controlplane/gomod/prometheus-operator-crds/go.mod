// Wrapper module: pins the prometheus-operator release whose CRD manifests (ServiceMonitor,
// PodMonitor, PrometheusRule, ...: example/prometheus-operator-crd/ in its module zip) that
// `cluster.sh build-tools prometheus-operator-crds` copies out; nothing is built from it.
module xin.dev/e2e/prometheus-operator-crds

go 1.26.0

require (
	github.com/prometheus-operator/prometheus-operator v0.94.1
)
