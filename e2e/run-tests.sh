#!/usr/bin/env bash
# `make test`: every check and every suite, as CI runs it (.ci/run).
#   1. static checks: versions agree, cargo fmt, cargo clippy -D warnings (while the control
#      plane and cargo-deny build in the background unless cached), then cargo-deny on the
#      workspace's dependencies with deny.toml: licences, bans, sources (not advisories: the
#      RustSec database needs GitHub; docs/development.md); the web widget (e2e/widget.sh
#      check: the committed widget/dist/embed.js is what widget/src builds to, its types and
#      unit tests, the React wrapper package built and tested)
#   2. (the S3 and SMTP stand-ins' Python packages installed in the background from the start)
#      Chromium and chromedriver from Debian's packages for the widget's browser tests
#      (apt-get, when missing); the test cluster (XIN_CLUSTER=test: state .cluster/test, its
#      own ports; never the demo's), a throwaway PostgreSQL and an S3-compatible server (moto, e2e/s3.sh, the
#      ingestion tests' stand-in for a bucket) and an SMTP relay with STARTTLS (aiosmtpd,
#      e2e/smtp.sh, the e-mail tests'): started here unless running; the test tools
#      (cyclonus, the NetworkPolicy engine; the Prometheus Operator's CRDs): built unless
#      cached; Prometheus, promtool and Jaeger built in the background (see below)
#   3. every test binary of cargo test --workspace (built in the background from the end of
#      clippy on; run in cargo's order, except that the three suites that wait for a background
#      build run last, e2e/list-suites.py), then its doc tests: unit
#      tests, the e2e suites against that cluster (among them the container images, assembled
#      as `make images` does from the dev binaries cargo test built, run by runc; umoci and
#      runc installed with apt-get when missing), and the
#      workload tests against that PostgreSQL; the real-node suite (e2e_realnode) starts a
#      cluster of its own (XIN_CLUSTER=real) with a real node (e2e/realnode.sh: kubelet,
#      kube-proxy, containerd, CoreDNS, built in the background from the start of this step),
#      its own PostgreSQL (port 15432), installs the chart with helm and runs the examples on it
#   4. the cargo-fuzz targets (dependencies from fuzz/Cargo.lock, --locked), XIN_FUZZ_SECONDS
#      each (default 15; `make fuzz` runs longer); the nightly toolchain, cargo-fuzz and the
#      instrumented targets are fetched and built in the background (nice 19) from the start
# Exits non-zero on any failure; stops the test cluster again if it started it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=$REPO/e2e/controlplane/cluster.sh
export XIN_CLUSTER=test
cd "$REPO"

t0=$(date +%s)
# Each step with the time since the start, so a slow run says where the time went.
say() { printf '\033[1m==> [%4ss] %s\033[0m\n' "$(($(date +%s) - t0))" "$*" >&2; }
command -v cargo >/dev/null || { echo "error: cargo is needed (https://rustup.rs)" >&2; exit 1; }

say "checking pinned versions, formatting and lints"
"$CLUSTER" check-versions
cargo fmt --all -- --check
# The fuzz step's tools and build (cold: the nightly toolchain, cargo-fuzz and the instrumented
# parsers, a few minutes of CPU) at the lowest priority, in the time the steps below leave
# idle; the fuzz step waits for it. Cached afterwards, then it is done at once.
fuzz_log=$(mktemp)
setsid nice -n 19 "$REPO/e2e/fuzz.sh" build >"$fuzz_log" 2>&1 &
fuzz_pid=$!
# On a cold cache the control plane (Kubernetes, etcd, kwok and helm from Go modules: the
# longest step of a first run), then cyclonus and the Prometheus Operator's CRDs, and cargo-deny
# (from crates.io) build in the background while clippy runs, instead of one after the other:
# downloads and single-threaded links leave cores idle. The dependency check and `cluster.sh
# up` below wait for them. Cached: done at once.
cp_log=$(mktemp) deny_log=$(mktemp)
setsid nice -n 5 bash -c '"$1" build && "$1" build-tools cyclonus prometheus-operator-crds' _ "$CLUSTER" >"$cp_log" 2>&1 &
cp_pid=$!
setsid nice -n 5 "$CLUSTER" build-tools cargo-deny >"$deny_log" 2>&1 &
deny_pid=$!
# The S3 and SMTP stand-ins' virtualenvs (pip; cold: a minute or two, mostly downloads), for
# the same reason; their `start` below waits for nothing then.
py_log=$(mktemp)
setsid bash -c '"$1" install && "$2" install' _ "$REPO/e2e/s3.sh" "$REPO/e2e/smtp.sh" >"$py_log" 2>&1 &
py_pid=$!
obs_pid= realnode_pid= test_build_pid= test_build_json=
# wait_build <pid> <log> <what>: the background build's outcome; its log's end when it failed.
wait_build() {
  if wait "$1"; then rm -f "$2"; else
    echo "error: building $3 failed; its log:" >&2; tail -n 30 "$2" >&2; exit 1
  fi
}
cleanup_background() {
  # Unfinished background builds go with us (redone next time).
  local p
  for p in "$fuzz_pid" "$cp_pid" "$deny_pid" "$py_pid" "$obs_pid" "$realnode_pid" "$test_build_pid"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill -TERM -- "-$p" 2>/dev/null || true; fi
  done
}
trap cleanup_background EXIT
cargo clippy --workspace --all-targets --locked -- -D warnings
# The suites' build (cold: most of a first run's compiling) starts now, while the checks below
# run and the control plane finishes building; `cargo test` then starts running at once.
test_build_log=$(mktemp) test_build_json=$(mktemp)
setsid cargo test --workspace --locked --no-run --message-format=json-render-diagnostics \
  >"$test_build_json" 2>"$test_build_log" &
test_build_pid=$!
# cargo-deny, pinned in versions.env and cached like cyclonus
# (~/.cache/xin/cargo-deny-<version>/bin). A cold cache (fresh CI machine) builds it first from
# crates.io (started above): about 6 minutes on 2 busy cores, once; its target directory is
# deleted afterwards.
say "checking dependencies: licences, bans, sources (cargo deny with deny.toml)"
wait_build "$deny_pid" "$deny_log" cargo-deny
deny_pid=
deny_version=$(. "$REPO/e2e/controlplane/versions.env" && echo "$CARGO_DENY_VERSION")
if ! PATH=${XDG_CACHE_HOME:-$HOME/.cache}/xin/cargo-deny-$deny_version/bin:$PATH \
  cargo deny --locked check licenses bans sources; then
  echo "error: cargo deny: a dependency breaks deny.toml's policy (a licence not allowed, a banned crate, or a source other than crates.io); see above" >&2
  exit 1
fi
say "the web widget: embed.js up to date, its unit tests, the React package (e2e/widget.sh check)"
"$REPO/e2e/widget.sh" check

# The demo has a cluster of its own, so no demo operator acts on the suites' objects; only
# XIN_CLUSTER_DIR pointing both at one state directory could bring them together.
demo_pid=$("$CLUSTER" dir)/pids/xin-operator.pid
if [ -f "$demo_pid" ] && { tr '\0' ' ' <"/proc/$(cat "$demo_pid")/cmdline"; } 2>/dev/null | grep -q xin-operator; then
  echo "error: a demo operator (pid $(cat "$demo_pid")) runs against the test cluster $("$CLUSTER" dir) and would act on the suites' objects; give 'make demo' and 'make test' different XIN_CLUSTER_DIR (or none)" >&2
  exit 1
fi
started=0
if ! "$CLUSTER" status >/dev/null 2>&1; then
  started=1
fi
pg_started=0
if ! psql "$("$REPO/e2e/postgres.sh" url)" -c 'select 1' >/dev/null 2>&1; then
  pg_started=1
fi
smtp_started=0
if ! "$REPO/e2e/smtp.sh" url >/dev/null 2>&1; then
  smtp_started=1
fi
s3_started=0
if ! curl -fsS -o /dev/null "$("$REPO/e2e/s3.sh" url)/moto-api/" 2>/dev/null; then
  s3_started=1
fi
cleanup() {
  cleanup_background
  rm -f "$test_build_json"
  if ((started)); then say "stopping the test cluster this run started"; "$CLUSTER" down; fi
  if ((pg_started)); then "$REPO/e2e/postgres.sh" stop; fi
  if ((s3_started)); then "$REPO/e2e/s3.sh" stop; fi
  if ((smtp_started)); then "$REPO/e2e/smtp.sh" stop; fi
}
trap cleanup EXIT
say "Chromium and chromedriver for the widget's browser tests (apt-get when missing)"
"$REPO/e2e/widget.sh" browser
wait_build "$py_pid" "$py_log" "the S3 and SMTP stand-ins' virtualenvs (e2e/s3.sh install, e2e/smtp.sh install)"
py_pid=
say "PostgreSQL for the workload tests"
XIN_TEST_DATABASE_URL=$("$REPO/e2e/postgres.sh" start)
export XIN_TEST_DATABASE_URL
say "an S3-compatible server for the ingestion tests (moto)"
XIN_TEST_S3_ENDPOINT=$("$REPO/e2e/s3.sh" start)
export XIN_TEST_S3_ENDPOINT
say "an SMTP relay with STARTTLS for the e-mail tests (aiosmtpd, e2e/smtp.sh)"
"$REPO/e2e/smtp.sh" start >/dev/null
say "the control plane's binaries, cyclonus (built in the background since the start)"
wait_build "$cp_pid" "$cp_log" "the control plane and cyclonus (cluster.sh build, build-tools)"
cp_pid=
"$CLUSTER" up
"$CLUSTER" build-tools cyclonus cargo-deny prometheus-operator-crds
# Prometheus (with promtool) and Jaeger: with empty Go caches about 10 minutes of CPU, so they
# build in the background at the lowest priority while the suites compile and run (much of a
# suite's time is waiting on the API server); the two suites that need them
# (monitoring_rules, e2e_observability) wait for this build (XIN_OBSERVABILITY_BUILD_PID).
# Cached afterwards: then it is done at once.
obs_log=$(mktemp)
setsid nice -n 19 "$CLUSTER" build-tools prometheus jaeger >"$obs_log" 2>&1 &
obs_pid=$!
export XIN_OBSERVABILITY_BUILD_PID=$obs_pid XIN_OBSERVABILITY_BUILD_LOG=$obs_log
# The real node's binaries (kubelet and kube-proxy from the control plane's module, containerd,
# CoreDNS, the CNI plugins; e2e/realnode.sh build): the same way, for the real-node suite
# (e2e_realnode), which waits for it (XIN_REALNODE_BUILD_PID).
realnode_log=$(mktemp)
setsid nice -n 19 "$REPO/e2e/realnode.sh" build >"$realnode_log" 2>&1 &
realnode_pid=$!
export XIN_REALNODE_BUILD_PID=$realnode_pid XIN_REALNODE_BUILD_LOG=$realnode_log
eval "$("$CLUSTER" env)"
export KUBECONFIG PATH

say "cargo test --workspace (unit tests and e2e suites)"
# Starting twice must be detected, not a second cluster on top.
second=$("$CLUSTER" up 2>&1)
grep -q "already running" <<<"$second" || { echo "error: a second 'cluster.sh up' was not detected:" >&2; echo "$second" >&2; exit 1; }

say "umoci and runc for the images' OCI-runtime test, nftables and socat for the real node (apt-get when missing)"
"$REPO/e2e/images.sh" deps
"$REPO/e2e/realnode.sh" deps

say "the suites' build (cargo test --no-run, started after clippy)"
wait_build "$test_build_pid" "$test_build_log" "the suites (cargo test --workspace --no-run)"
test_build_pid=
# Every test binary that `cargo test --workspace` runs, run here from the build's list
# (e2e/list-suites.py) in cargo's order, except that the suites which wait for a background
# build go last: while the others run (much of it waiting on the API server), that build gets
# the cores they leave idle, instead of a suite holding up all that follow it. Each runs from
# its package's directory, as cargo runs it; a failing binary does not stop the others. Then
# the doc tests, as `cargo test` ends with them.
log=$(mktemp)
suites=$(python3 "$REPO/e2e/list-suites.py" --last e2e_realnode,monitoring_rules,e2e_observability <"$test_build_json")
failed_suites=()
while IFS=$'\t' read -r suite dir exe; do
  printf '     Running %s (%s)\n' "$suite" "${exe#"$REPO"/}" | tee -a "$log"
  if ! (cd "$dir" && CARGO_MANIFEST_DIR=$dir "$exe" </dev/null) 2>&1 | tee -a "$log"; then
    failed_suites+=("$suite")
  fi
done <<<"$suites"
cargo test --workspace --locked --doc 2>&1 | tee -a "$log" || failed_suites+=("doc tests")
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
rm -f "$log"
if ((${#failed_suites[@]})); then
  echo "error: failing test binaries: ${failed_suites[*]} ($passed passed, $failed failed)" >&2
  exit 1
fi
# The background build has ended by now unless no suite waited for it (a filtered run): say
# how it went either way.
wait_build "$obs_pid" "$obs_log" "Prometheus and Jaeger"
obs_pid=
wait_build "$realnode_pid" "$realnode_log" "the real node's binaries"
realnode_pid=
wait_build "$fuzz_pid" "$fuzz_log" "the fuzz targets"
fuzz_pid=
say "fuzzing the gateway's parsers and session tokens (e2e/fuzz.sh)"
XIN_FUZZ_SECONDS=${XIN_FUZZ_SECONDS:-15} "$REPO/e2e/fuzz.sh"
say "all tests: $passed passed, $failed failed, in $(( $(date +%s) - t0 )) s"
