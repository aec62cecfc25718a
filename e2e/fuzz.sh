#!/usr/bin/env bash
# `make fuzz`: runs each cargo-fuzz target of fuzz/ for XIN_FUZZ_SECONDS (default 60), seeded
# from fuzz/seeds/<target>; new corpus entries go to fuzz/corpus/<target> (not committed).
# Needs the nightly toolchain (rustup) and cargo-fuzz, installed here when missing; the
# explicit `+nightly` overrides the repository's rust-toolchain.toml (the cargo that cargo-fuzz
# runs inherits it through RUSTUP_TOOLCHAIN). Dependencies come from fuzz/Cargo.lock,
# unchanged: cargo-fuzz has no --locked, so `cargo fetch --locked` checks the lock first and
# fails when it would have to change. The instrumented build is cached outside the repository
# (like the control-plane binaries), so a fresh clone does not rebuild every dependency.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_EACH=${XIN_FUZZ_SECONDS:-60}
TARGET_DIR=${XIN_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/xin/fuzz-target}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
cd "$REPO/fuzz"
if ! cargo +nightly --version >/dev/null 2>&1; then
  say "installing the nightly toolchain (rustup toolchain install nightly --profile minimal)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi
say "checking fuzz/Cargo.lock (cargo fetch --locked)"
cargo +nightly fetch --locked --target "$(rustc +nightly -vV | sed -n 's/^host: //p')"
for target in providers widget_session; do
  mkdir -p "corpus/$target"
  seeds=()
  [ -d "seeds/$target" ] && seeds=("seeds/$target")
  say "fuzzing $target for ${SECONDS_EACH}s"
  cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$SECONDS_EACH" 2>&1 | tail -3
done
