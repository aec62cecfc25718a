#!/usr/bin/env bash
# Container images of the operator and the four workload binaries, built without a container
# engine: each is an OCI image layout under target/images/<binary>/, assembled with umoci
# (Debian's package) from scratch — the binary, exactly the shared libraries `ldd` says it
# loads (glibc, libgcc_s, libm, and libstdc++ for the orchestrator's vector index), Debian's CA
# bundle and an /etc/passwd naming the non-root user 65532. No shell, no package manager.
#   images.sh build [release|dev]   build the binaries (cargo, that profile; default release)
#                                   and their images; prints each image's tags and digest
#   images.sh assemble [release|dev] the same from binaries already built (no cargo)
#   images.sh deps                  install umoci and runc with apt-get when missing
# One image per binary rather than one with all five: each workload pulls only its own binary
# (the orchestrator's is the largest), and a change to one binary changes one image.
# Tags: <version> and <version>-<commit> (12 hex digits, with -dirty when the work tree has
# changes). Beside each layout, <binary>.spdx.json: its SBOM (SPDX 2.3; e2e/sbom.py): the
# crates compiled into the binary (from Cargo.lock) and the Debian packages of the copied
# libraries. `make images` builds release binaries; `make test` installs umoci and runc
# (`deps`), and the OCI-runtime test (operator/tests/e2e_images.rs) assembles the images from
# the dev binaries `cargo test` has just built (`assemble dev`: the same assembly, a larger
# binary). A separate `cargo build -p …` there would compile the binaries and much of their
# dependency tree a second time, with the features of a smaller package set.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
BINS=(xin-operator xin-gateway xin-orchestrator xin-ingest xin-automation)
# The user the images run as (the operator's Deployments set the same in their security
# context).
USER_ID=65532

deps() {
  if ! command -v umoci >/dev/null || ! command -v runc >/dev/null; then
    say "installing umoci and runc with apt-get"
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq umoci runc >/dev/null
  fi
}

# Copies what `ldd` says $1 loads (and the dynamic loader) into rootfs $2, each at its path;
# prints the library paths.
copy_libs() {
  local bin=$1 rootfs=$2 lib
  while read -r lib; do
    [ -n "$lib" ] || continue
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    echo "$lib"
  done < <(ldd "$bin" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(/ {print $1}' | sort -u)
}

build() {
  local profile=${1:-release}
  case "$profile" in
    release) say "cargo build --release (the five binaries)"
      cargo build --release --locked -p xin-operator -p xin-gateway -p xin-orchestrator -p xin-ingest -p xin-automation --bins ;;
    dev) say "cargo build (the five binaries, dev profile)"
      cargo build --locked -p xin-operator -p xin-gateway -p xin-orchestrator -p xin-ingest -p xin-automation --bins ;;
    *) echo "error: profile must be release or dev, not $profile" >&2; exit 2 ;;
  esac
  assemble "$profile"
}

# The images from binaries already built (target/release or target/debug).
assemble() {
  local profile=${1:-release} dir
  case "$profile" in
    release) dir=release ;;
    dev) dir=debug ;;
    *) echo "error: profile must be release or dev, not $profile" >&2; exit 2 ;;
  esac
  deps
  local target=${CARGO_TARGET_DIR:-$REPO/target}
  local version commit epoch created out
  version=$(awk -F'"' '/^version = /{print $2; exit}' operator/Cargo.toml)
  commit=$(git rev-parse --short=12 HEAD)
  git diff --quiet HEAD -- 2>/dev/null || commit="$commit-dirty"
  epoch=$(git log -1 --format=%ct)
  created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
  out=$target/images
  mkdir -p "$out"
  local work; work=$(mktemp -d)
  # Once: a RETURN trap outlives its function and would fire again in the caller's return.
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  printf '%-18s %-28s %s\n' IMAGE TAGS DIGEST >&2
  for bin in "${BINS[@]}"; do
    local src=$target/$dir/$bin layout=$out/$bin rootfs=$work/$bin/rootfs bundle=$work/$bin/bundle
    [ -x "$src" ] || { echo "error: $src is missing (images.sh build $profile builds it)" >&2; exit 1; }
    mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
    install -m 0755 "$src" "$rootfs/usr/local/bin/$bin"
    copy_libs "$src" "$rootfs" >"$work/$bin.libs"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/:/sbin/nologin\n' "$USER_ID" "$USER_ID" >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnonroot:x:%s:\n' "$USER_ID" >"$rootfs/etc/group"
    chmod 1777 "$rootfs/tmp"
    # Every file dated at the commit: the same commit gives the same layer.
    find "$rootfs" -exec touch -h -d "@$epoch" {} +
    rm -rf "$layout"
    umoci init --layout "$layout"
    umoci new --image "$layout:$version"
    umoci unpack --rootless --image "$layout:$version" "$bundle" >/dev/null
    cp -a "$rootfs/." "$bundle/rootfs/"
    umoci repack --image "$layout:$version" --history.created "$created" \
      --history.created_by "e2e/images.sh: $bin and the libraries it loads" "$bundle"
    umoci config --no-history --image "$layout:$version" \
      --config.entrypoint "/usr/local/bin/$bin" --config.user "$USER_ID:$USER_ID" \
      --config.workingdir / --config.env PATH=/usr/local/bin \
      --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
      --os linux --architecture amd64 --created "$created" --author "Xin" \
      --config.label "org.opencontainers.image.title=$bin" \
      --config.label "org.opencontainers.image.version=$version" \
      --config.label "org.opencontainers.image.revision=$commit" \
      --config.label "org.opencontainers.image.licenses=Apache-2.0" \
      --manifest.annotation "org.opencontainers.image.version=$version" \
      --manifest.annotation "org.opencontainers.image.revision=$commit" \
      --manifest.annotation "org.opencontainers.image.created=$created"
    umoci tag --image "$layout:$version" "$version-$commit"
    umoci gc --layout "$layout"
    python3 "$REPO/e2e/sbom.py" --package "$bin" --version "$version" --commit "$commit" \
      --created "$created" --libs "$work/$bin.libs" >"$out/$bin.spdx.json"
    local digest
    digest=$(python3 -c 'import json,sys; m=[m for m in json.load(open(sys.argv[1]))["manifests"] if m.get("annotations",{}).get("org.opencontainers.image.ref.name")==sys.argv[2]]; print(m[0]["digest"])' "$layout/index.json" "$version")
    printf '%-18s %-28s %s\n' "$bin" "$version, $version-$commit" "$digest" >&2
    echo "$bin $version $version-$commit $digest" >>"$work/summary"
  done
  cp "$work/summary" "$out/images.txt"
  say "OCI layouts in $out/<image> (tags above), SBOMs in $out/<image>.spdx.json, the list in $out/images.txt"
}

case "${1:-}" in
  build) build "${2:-release}" ;;
  assemble) assemble "${2:-release}" ;;
  deps) deps ;;
  *) echo "usage: $0 build [release|dev] | assemble [release|dev] | deps" >&2; exit 2 ;;
esac
