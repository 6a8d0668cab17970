#!/usr/bin/env bash
# A throw-away PostgreSQL server for the sweep's multi-worker test (tests/sweep/test_sweep.py), listening on 127.0.0.1
# only, with its data in a temporary folder and a random password.
#
#   eval "$(bash scripts/postgres-test-server.sh start)"   # exports LORACLF_TEST_POSTGRES and LORACLF_PGTEST_DIR
#   bash scripts/postgres-test-server.sh stop "$LORACLF_PGTEST_DIR"
#
# `start` installs Debian's postgresql package when it is missing (apt-get, as root or through sudo), creates a
# cluster with initdb (as the postgres user when run as root: PostgreSQL refuses to run as root), starts it with
# pg_ctl on a free port and creates the database loraclf_test. Only the two export lines go to stdout.
set -euo pipefail

log() { echo "postgres-test-server: $*" >&2; }
as_owner() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && echo "$d"
}

install_postgres() {
  [ -n "$(bindir)" ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing Debian's postgresql package"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
  [ -n "$(bindir)" ] || { log "postgresql installed, but no initdb under /usr/lib/postgresql/*/bin"; exit 1; }
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  install_postgres
  local bin dir port password
  bin=$(bindir)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/loraclf-pgtest.XXXXXX")
  chmod 755 "$dir"
  password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
  printf '%s\n' "$password" > "$dir/pwfile"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$dir"; fi
  as_owner "$bin/initdb" -D "$dir/data" -U loraclf --pwfile="$dir/pwfile" -A scram-sha-256 -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  rm -f "$dir/pwfile"
  for attempt in 1 2 3; do
    port=$(free_port)
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=50 -c fsync=off" start >&2; then
      break
    fi
    [ "$attempt" -eq 3 ] && { cat "$dir/server.log" >&2; exit 1; }
  done
  PGPASSWORD=$password "$bin/createdb" -h 127.0.0.1 -p "$port" -U loraclf loraclf_test
  log "server on 127.0.0.1:$port, data in $dir"
  echo "export LORACLF_TEST_POSTGRES=postgresql://loraclf:$password@127.0.0.1:$port/loraclf_test"
  echo "export LORACLF_PGTEST_DIR=$dir"
}

stop() {
  local dir=${1:?usage: $0 stop DIR}
  [ -d "$dir/data" ] || { log "no server data in $dir"; return 0; }
  as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
