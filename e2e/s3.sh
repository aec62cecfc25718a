#!/usr/bin/env bash
# A throwaway S3-compatible server for the ingestion tests (the stand-in for a cloud bucket):
# moto's server from PyPI, in a virtualenv cached under ~/.cache/xin, on 127.0.0.1 only.
#   s3.sh install install into the cache if missing (start does it too)
#   s3.sh start   install if missing, start; prints the endpoint URL
#   s3.sh stop    stop it
#   s3.sh url     print the endpoint URL
# Settings: XIN_S3_PORT (default 16900). moto accepts any access key; state is in memory.
set -euo pipefail
PORT=${XIN_S3_PORT:-16900}
MOTO_VERSION=5.2.5
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/xin
VENV=$CACHE/moto-$MOTO_VERSION
RUN=${TMPDIR:-/tmp}/xin-s3-$PORT
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
url() { echo "http://127.0.0.1:$PORT"; }
up() { curl -fsS -o /dev/null "$(url)/moto-api/" 2>/dev/null; }

install() {
  # The stamp is written last: an interrupted install is redone, not half used.
  if [ ! -f "$VENV/.installed" ]; then
    say "installing moto[server] $MOTO_VERSION into $VENV (pip)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
    touch "$VENV/.installed"
  fi
}

case "${1:-}" in
  install) install ;;
  start)
    install
    if up; then say "S3 stand-in already running on $(url)"; url; exit 0; fi
    mkdir -p "$RUN"
    setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$RUN/moto.log" 2>&1 </dev/null &
    echo $! >"$RUN/pid"
    for _ in $(seq 1 100); do up && break; sleep 0.2; done
    up || { tail -20 "$RUN/moto.log" >&2; echo "error: the S3 stand-in did not start" >&2; exit 1; }
    say "S3 stand-in (moto) running on $(url) (log $RUN/moto.log)"
    url
    ;;
  stop)
    [ -f "$RUN/pid" ] && kill "$(cat "$RUN/pid")" 2>/dev/null || true
    rm -rf "$RUN"
    ;;
  url) url ;;
  *) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
