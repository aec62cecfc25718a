#!/usr/bin/env bash
# The web widget's JavaScript (widget/: embed.js; widget/react/: the React wrapper package)
# and the browser its tests run in.
#   widget.sh check    install the npm dev dependencies (npm ci, cached), check that the
#                      committed widget/dist/embed.js is exactly what widget/src builds to,
#                      type-check and run the widget's unit tests (node --test), then build and
#                      test the React package (in jsdom)
#   widget.sh build    rebuild widget/dist/embed.js from widget/src (then commit it)
#   widget.sh browser  install Debian's chromium and chromium-driver with apt-get when missing
#                      (the browser tests, operator/tests/e2e_widget.rs, drive them)
# Building the Rust workspace needs none of this: the gateway embeds the committed file.
# npm's cache: ~/.cache/xin/npm (XDG_CACHE_HOME respected).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export npm_config_cache=${XDG_CACHE_HOME:-$HOME/.cache}/xin/npm
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_node() {
  command -v node >/dev/null && command -v npm >/dev/null || {
    echo "error: Node.js 20 or later (node and npm) is needed for the widget (https://nodejs.org)" >&2
    exit 1
  }
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || { echo "error: Node.js 20 or later is needed, found $(node --version)" >&2; exit 1; }
}

# npm ci in $1 unless its node_modules was installed from the same lockfile.
deps() {
  local dir=$1 stamp=$1/node_modules/.xin-lock
  if [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json"; then return; fi
  say "npm ci in ${dir#"$REPO"/}"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  cp "$dir/package-lock.json" "$stamp"
}

case "${1:-}" in
  check)
    need_node
    deps "$REPO/widget"
    deps "$REPO/widget/react"
    say "widget: dist/embed.js up to date, types, unit tests"
    (cd "$REPO/widget" && node build.mjs --check && node build.mjs --test)
    say "widget/react: build and tests"
    (cd "$REPO/widget/react" && node build.mjs --test)
    ;;
  build)
    need_node
    deps "$REPO/widget"
    (cd "$REPO/widget" && node build.mjs)
    ;;
  browser)
    if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
      say "installing Chromium and its WebDriver with apt-get (chromium, chromium-driver)"
      sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
      $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
    /usr/bin/chromium --version >&2
    ;;
  *)
    echo "usage: $0 check|build|browser" >&2
    exit 2
    ;;
esac
