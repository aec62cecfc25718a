#!/usr/bin/env bash
# `make fuzz`: runs each cargo-fuzz target of fuzz/ for XIN_FUZZ_SECONDS (default 60), seeded
# from fuzz/seeds/<target>; new corpus entries go to fuzz/corpus/<target> (not committed).
# `e2e/fuzz.sh build` only builds the targets (make test does that in the background, at the
# lowest priority, while its suites run, and fuzzes at the end).
# Needs the nightly toolchain (rustup; installed here when missing) and cargo-fuzz (pinned in
# e2e/controlplane/versions.env, built once by `cluster.sh build-tools cargo-fuzz` and cached
# under ~/.cache/xin). The explicit `+nightly` overrides the repository's rust-toolchain.toml
# (the cargo that cargo-fuzz runs inherits it through RUSTUP_TOOLCHAIN). The targets depend on
# xin-gateway-input (the parsers alone), so the instrumented build is a few small crates.
# Dependencies come from fuzz/Cargo.lock, unchanged: cargo-fuzz has no --locked, so
# `cargo fetch --locked` checks the lock first and fails when it would have to change. The
# instrumented build is cached outside the repository (like the control-plane binaries), so a
# fresh clone does not rebuild it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODE=${1:-run}
case "$MODE" in run | build) ;; *) echo "usage: $0 [run|build]" >&2; exit 2 ;; esac
SECONDS_EACH=${XIN_FUZZ_SECONDS:-60}
CACHE_ROOT=${XDG_CACHE_HOME:-$HOME/.cache}/xin
TARGET_DIR=${XIN_FUZZ_TARGET_DIR:-$CACHE_ROOT/fuzz-target}
TARGETS=(providers widget_session)
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
if ! cargo +nightly --version >/dev/null 2>&1; then
  say "installing the nightly toolchain (rustup toolchain install nightly --profile minimal)"
  rustup toolchain install nightly --profile minimal
fi
"$REPO/e2e/controlplane/cluster.sh" build-tools cargo-fuzz
PATH=$CACHE_ROOT/cargo-fuzz-$(. "$REPO/e2e/controlplane/versions.env" && echo "$CARGO_FUZZ_VERSION")/bin:$PATH
cd "$REPO/fuzz"
say "checking fuzz/Cargo.lock (cargo fetch --locked)"
cargo +nightly fetch --locked --target "$(rustc +nightly -vV | sed -n 's/^host: //p')"
if [ "$MODE" = build ]; then
  start=$(date +%s)
  for target in "${TARGETS[@]}"; do
    cargo +nightly fuzz build --target-dir "$TARGET_DIR" "$target"
  done
  say "built the fuzz targets in $(( $(date +%s) - start )) s"
  exit 0
fi
for target in "${TARGETS[@]}"; do
  mkdir -p "corpus/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  say "fuzzing $target for ${SECONDS_EACH}s"
  cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$SECONDS_EACH" 2>&1 | tail -3
done
