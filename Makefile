# The two commands a newcomer needs: `make demo` (the main job) and `make test` (everything).
SHELL := /bin/bash
CLUSTER := e2e/controlplane/cluster.sh

.PHONY: demo demo-observability test widget images bench bench-operator bench-orchestrator bench-gateway bench-store bench-ingest bench-automation fuzz cluster-up cluster-down cluster-reset cluster-build cluster-status fmt lint

## demo: the local control plane, the operator, examples/ applied and Ready, shown
demo:
	@e2e/demo.sh

## demo-observability: the demo plus Prometheus (the chart's rules) and Jaeger, workloads kept up
demo-observability:
	@XIN_DEMO_OBSERVABILITY=1 e2e/demo.sh

## test: static checks, unit tests and the e2e suites against the local control plane
test:
	@e2e/run-tests.sh

## widget: rebuild widget/dist/embed.js from widget/src (commit it; `make test` fails while it is stale)
widget:
	@e2e/widget.sh build

## images: OCI images of the operator and the workloads from release builds, in
## target/images/<binary> with an SBOM each (umoci and runc installed with apt-get; docs/images.md)
images:
	@e2e/images.sh build release

## bench: every benchmark (figures beside a baseline measured in the same run; no pass/fail)
bench: bench-operator bench-gateway bench-orchestrator bench-store bench-ingest bench-automation

## bench-operator: N tenants (XIN_BENCH_TENANTS, default 100) vs direct server-side apply, on
## the test cluster (the demo's shows only examples/); the tenants bring their own database (one,
## shared), so N tenants do not mean N databases
bench-operator:
	@export XIN_CLUSTER=test && $(CLUSTER) up && eval "$$($(CLUSTER) env)" && \
		XIN_TEST_DATABASE_URL=$$(e2e/postgres.sh start) && export XIN_TEST_DATABASE_URL && \
		cargo bench -p xin-operator --bench operator

## bench-orchestrator: retrieval over 100k chunks (XIN_BENCH_CHUNKS; recall and memory of the
## embedding index, one replica's start); two tenants' orchestrators
## at the runbook's spike load and an open-loop sweep to saturation, against a 300 ms LLM
## stand-in vs the stand-in alone, with CPU per message
bench-orchestrator:
	@XIN_TEST_DATABASE_URL=$$(e2e/postgres.sh start) && export XIN_TEST_DATABASE_URL && \
		cargo bench -p xin-orchestrator --bench orchestrator

## bench-gateway: signed WhatsApp webhooks through the gateway (group commit, and one commit per
## request as before it) vs a bare hyper server (XIN_BENCH_SECONDS per phase, default 10), on a
## PostgreSQL of its own with fsync and synchronous_commit on (port 16434, removed afterwards)
bench-gateway:
	@export XIN_PG_PORT=16434 XIN_PG_FSYNC=on && trap 'e2e/postgres.sh stop' EXIT && \
		u=$$(e2e/postgres.sh start) && XIN_TEST_DATABASE_URL=$$u cargo bench -p xin-gateway --bench gateway

## bench-store: provisioning a tenant database (database, two roles, rights, migrations), one and
## XIN_BENCH_PROVISION (default 100) in a row, vs a bare CREATE DATABASE in the same run
bench-store:
	@XIN_TEST_DATABASE_URL=$$(e2e/postgres.sh start) cargo bench -p xin-store --bench provision

## bench-ingest: XIN_BENCH_DOCUMENTS (default 10,000) Markdown documents of ~2 KB through the
## ingestion pipeline (read, parse, chunk, write; lexical only) vs the same rows in one COPY
bench-ingest:
	@XIN_TEST_DATABASE_URL=$$(e2e/postgres.sh start) cargo bench -p xin-ingest --bench ingest

## bench-automation: XIN_BENCH_RUNS (default 10,000) event-triggered webhooks to a local sink vs a
## bare SKIP LOCKED dequeue-and-ack loop on the same table, then the queue depth under 200 tenants'
## mix (XIN_BENCH_TENANTS, 5/min each, 60 % webhook / 20 % CRM / 20 % e-mail) for XIN_BENCH_SECONDS (60)
bench-automation:
	@XIN_TEST_DATABASE_URL=$$(e2e/postgres.sh start) && export XIN_TEST_DATABASE_URL && \
		e2e/smtp.sh start >/dev/null && \
		cargo bench -p xin-automation --bench automation

## fuzz: the cargo-fuzz targets (nightly + cargo-fuzz, installed when missing), XIN_FUZZ_SECONDS each (default 60)
fuzz:
	@e2e/fuzz.sh

## cluster-up, cluster-down, cluster-reset, cluster-status: the demo's cluster (.cluster/demo);
## XIN_CLUSTER=test for the one `make test` uses (.cluster/test): make cluster-down XIN_CLUSTER=test
cluster-build:
	@$(CLUSTER) build

cluster-up:
	@$(CLUSTER) up

cluster-down:
	@$(CLUSTER) down

cluster-reset:
	@$(CLUSTER) reset

cluster-status:
	@$(CLUSTER) status

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
