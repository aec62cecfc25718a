# The two commands a newcomer needs: `make demo` (the main job) and `make test` (everything).
SHELL := /bin/bash
CLUSTER := e2e/controlplane/cluster.sh

.PHONY: demo test cluster-up cluster-down cluster-reset cluster-build cluster-status fmt lint

## demo: build and start the local control plane, then show its nodes and pods
demo: cluster-up
	@eval "$$($(CLUSTER) env)" && set -x && kubectl get nodes,pods -A -o wide
	@echo
	@echo "Use it:   eval \"\$$($(CLUSTER) env)\"; kubectl get nodes"
	@echo "Stop it:  make cluster-down      Wipe its state: make cluster-reset"

## test: static checks, unit tests and the e2e suites against the local control plane
test:
	@e2e/run-tests.sh

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
