#!/usr/bin/env bash
# A throwaway PostgreSQL for the workload tests, on 127.0.0.1 only.
#   postgres.sh start   install (apt-get) if missing, init and start; prints the URL
#   postgres.sh stop    stop it and remove its data
#   postgres.sh url     print the URL
# Settings: XIN_PG_PORT (default 16432), XIN_PG_DIR (default $TMPDIR/xin-postgres-<port>).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${XIN_PG_PORT:-16432}
# Outside the repository: the server runs as the postgres user, who may not reach it.
DIR=${XIN_PG_DIR:-${TMPDIR:-/tmp}/xin-postgres-$PORT}
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && echo "$d"
}

# initdb refuses to run as root: run the server as the postgres user then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

url() { echo "postgres://postgres@127.0.0.1:$PORT/postgres"; }

# The one superuser step of the platform database (docs/orchestrator.md, "Retrieval": the
# full-text index under row-level security), in template1 so every later database has it.
platform_setup() {
  "$(bin)/psql" -q -X -v ON_ERROR_STOP=1 "postgres://postgres@127.0.0.1:$PORT/template1" \
    -c 'ALTER FUNCTION pg_catalog.ts_match_vq(tsvector, tsquery) LEAKPROOF' >/dev/null
}

case "${1:-}" in
  start)
    if [ -z "$(bin)" ]; then
      say "installing PostgreSQL with apt-get"
      sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
      $sudo apt-get update -qq && $sudo apt-get install -y -qq postgresql >/dev/null
    fi
    B=$(bin)
    if [ -f "$DIR/data/postmaster.pid" ] && as_pg "$B/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      say "PostgreSQL already running on 127.0.0.1:$PORT"; platform_setup; url; exit 0
    fi
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
      as_pg "$B/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
    fi
    as_pg "$B/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
      -o "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR -c fsync=off -c max_connections=200" start >/dev/null \
      || { tail -20 "$DIR/postgres.log" >&2; exit 1; }
    say "PostgreSQL running on 127.0.0.1:$PORT (log $DIR/postgres.log)"
    platform_setup
    url
    ;;
  stop)
    B=$(bin) || true
    if [ -n "$B" ] && [ -f "$DIR/data/postmaster.pid" ]; then
      as_pg "$B/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    case "$DIR" in /|"$HOME"|"$REPO") echo "refusing to remove $DIR" >&2; exit 1 ;; esac
    rm -rf "$DIR"
    ;;
  url) url ;;
  *) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
