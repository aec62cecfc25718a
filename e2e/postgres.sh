#!/usr/bin/env bash
# A throwaway PostgreSQL for the workload tests, on 127.0.0.1 only (and XIN_PG_ALSO_LISTEN).
#   postgres.sh start   install (apt-get) if missing, init and start; prints the URL
#   postgres.sh stop    stop it and remove its data
#   postgres.sh url     print the URL
# Settings: XIN_PG_PORT (default 16432), XIN_PG_DIR (default $TMPDIR/xin-postgres-<port>),
# XIN_PG_FSYNC (default off: the tests' server skips flushes to disk; the benchmarks that
# measure durable writes start one with `on`, and then synchronous_commit is on too),
# XIN_PG_ALSO_LISTEN (an address/prefix such as 10.245.0.1/24: listen on that address too and
# take password logins from its network — the real node's pods, e2e/realnode.sh).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${XIN_PG_PORT:-16432}
FSYNC=${XIN_PG_FSYNC:-off}
case "$FSYNC" in on|off) ;; *) echo "XIN_PG_FSYNC must be on or off, got '$FSYNC'" >&2; exit 2 ;; esac
# Outside the repository: the server runs as the postgres user, who may not reach it.
DIR=${XIN_PG_DIR:-${TMPDIR:-/tmp}/xin-postgres-$PORT}
ALSO=${XIN_PG_ALSO_LISTEN:-}
LISTEN=127.0.0.1 ALSO_NET=""
if [ -n "$ALSO" ]; then
  ALSO_NET=$(python3 -c 'import ipaddress, sys; i = ipaddress.ip_interface(sys.argv[1]); print(i.ip, i.network)' "$ALSO") \
    || { echo "XIN_PG_ALSO_LISTEN must be an address/prefix such as 10.245.0.1/24, got '$ALSO'" >&2; exit 2; }
  LISTEN="127.0.0.1,${ALSO_NET% *}" ALSO_NET=${ALSO_NET#* }
fi
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

bin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$d" ] && echo "$d"
}

# initdb refuses to run as root: run the server as the postgres user then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Password authentication over TCP for every role but the admin, as a real server has it: the
# tenant boundary's tests log in as tenants' roles and must be refused a role or a password that
# is not theirs. The admin (this throwaway server's superuser, on loopback only) is trusted, so
# a URL printed by an earlier version of this script keeps working; the URL carries its
# password all the same.
PASSWORD=xin-test-admin
url() { echo "postgres://postgres:$PASSWORD@127.0.0.1:$PORT/postgres"; }

auth_setup() {
  printf '%s\n' "local all all trust" "host all postgres 127.0.0.1/32 trust" \
    "host all all 127.0.0.1/32 scram-sha-256" \
    "host all all ::1/128 scram-sha-256" ${ALSO_NET:+"host all all $ALSO_NET scram-sha-256"} >"$DIR/data/pg_hba.conf"
  [ "$(id -u)" = 0 ] && chown postgres "$DIR/data/pg_hba.conf"
  "$(bin)/psql" -q -X -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres postgres \
    -c "SET password_encryption = 'scram-sha-256'" -c "ALTER ROLE postgres PASSWORD '$PASSWORD'" >/dev/null
  as_pg "$(bin)/pg_ctl" -D "$DIR/data" reload >/dev/null
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
      running=$("$B/psql" -X -At -h "$DIR" -p "$PORT" -U postgres postgres -c "SHOW fsync")
      if [ "$running" != "$FSYNC" ]; then
        echo "error: the PostgreSQL on 127.0.0.1:$PORT runs with fsync=$running, not XIN_PG_FSYNC=$FSYNC; stop it first (XIN_PG_PORT=$PORT e2e/postgres.sh stop)" >&2
        exit 1
      fi
      say "PostgreSQL already running on 127.0.0.1:$PORT"; auth_setup; url; exit 0
    fi
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres "$DIR"
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
      as_pg "$B/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 \
        || { cat "$DIR/initdb.log" >&2; exit 1; }
    fi
    as_pg "$B/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
      -o "-p $PORT -c listen_addresses=$LISTEN -k $DIR -c fsync=$FSYNC -c synchronous_commit=on -c max_connections=200" start >/dev/null \
      || { tail -20 "$DIR/postgres.log" >&2; exit 1; }
    say "PostgreSQL running on $LISTEN:$PORT, fsync $FSYNC (log $DIR/postgres.log)"
    auth_setup
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
