#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL server for the test suite (Debian's postgresql package,
# installed here if missing). Data lives in a temp dir; it listens on 127.0.0.1:$PGPORT only.
#   scripts/pg.sh start   -> prints the SQLAlchemy URL to use
#   scripts/pg.sh stop
set -euo pipefail
# one cluster per checkout (two clones testing at once must not share, or stop, one server)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGDATA=${PGDATA:-${TMPDIR:-/tmp}/creditbridge-pg-$(printf %s "$ROOT" | sha1sum | cut -c1-10)}
if [ -z "${PGPORT:-}" ]; then
  if [ -f "$PGDATA/postmaster.pid" ]; then
    PGPORT=$(sed -n 4p "$PGDATA/postmaster.pid")
  else
    PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  fi
fi

pgbin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_pg() {  # the server refuses to run as root: use the 'postgres' system user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
start)
  BIN=$(pgbin)
  if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
    echo "pg.sh: installing Debian postgresql" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    BIN=$(pgbin)
  fi
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
  fi
  if [ -f "$PGDATA/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    :
  else
    rm -rf "$PGDATA"; mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
    as_pg "$BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >/dev/null
    as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDATA -c fsync=off -c max_connections=200" start >/dev/null
  fi
  as_pg "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='creditbridge_test'" | grep -q 1 || \
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres creditbridge_test
  echo "postgresql+asyncpg://postgres@127.0.0.1:$PGPORT/creditbridge_test"
  ;;
stop)
  BIN=$(pgbin)
  if [ -n "$BIN" ] && [ -d "$PGDATA" ]; then
    as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$PGDATA"
  fi
  ;;
*) echo "usage: pg.sh start|stop" >&2; exit 2 ;;
esac
