# The two commands a newcomer needs: `make demo` (the main job) and `make test` (everything).
SHELL := /bin/bash
CLUSTER := e2e/controlplane/cluster.sh

.PHONY: demo test bench bench-operator cluster-up cluster-down cluster-reset cluster-build cluster-status fmt lint

## demo: the local control plane, the operator, examples/ applied and Ready, shown
demo:
	@e2e/demo.sh

## test: static checks, unit tests and the e2e suites against the local control plane
test:
	@e2e/run-tests.sh

## bench: every benchmark (figures beside a baseline measured in the same run; no pass/fail)
bench: bench-operator

## bench-operator: N tenants (XIN_BENCH_TENANTS, default 100) vs direct server-side apply
bench-operator: cluster-up
	@eval "$$($(CLUSTER) env)" && cargo bench -p xin-operator --bench operator

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
