#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback for the PostgreSQL tests.
#
#   bash .ci/services.d/postgres.sh start   # prints: export CJ_TEST_POSTGRES_URL=...
#   bash .ci/services.d/postgres.sh stop    # stops it and removes its folder
#
# `start` installs Debian's postgresql package when initdb/pg_ctl are nowhere to be found,
# creates a cluster in a temporary folder (owned by an unprivileged user when run as root:
# PostgreSQL refuses to run as root), starts it on 127.0.0.1 on a free port with trust
# authentication, and creates the database cj_test. Its folder is named after this
# checkout, so `stop` finds it without a state file in the repository. Everything but the
# export line goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."

key=$(printf '%s' "$PWD" | sha1sum | cut -c1-12)
base="${TMPDIR:-/tmp}/cj-runner-pg-$key"
state="$base/state"
log() { echo "postgres.sh: $*" >&2; }

pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
    echo "$dir"
    return 0
  fi
  return 1
}

# root's tools may live in sbin folders that a minimal PATH leaves out
export PATH="$PATH:/usr/sbin:/sbin"

# run a command as the cluster's owner (root cannot run PostgreSQL)
as_owner() {
  if [ "$(id -u)" != 0 ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$owner" -- "$@"
  else
    su -s /bin/sh "$owner" -c "$(printf '%q ' "$@")"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  if [ -f "$state" ]; then
    # shellcheck disable=SC1090
    . "$state"
    if as_owner "$bindir/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then
      log "already running on port $port"
      echo "export CJ_TEST_POSTGRES_URL=postgresql+asyncpg://cj@127.0.0.1:$port/cj_test"
      return 0
    fi
    stop
  fi
  if ! bindir=$(pg_bindir); then
    log "installing postgresql (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    bindir=$(pg_bindir) || { log "no initdb/pg_ctl after installing postgresql"; return 1; }
  fi
  owner=$(id -un)
  if [ "$(id -u)" = 0 ]; then
    owner=postgres
    if ! id -u "$owner" >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin "$owner"
    fi
  fi
  port=$(free_port)
  mkdir -p "$base"
  chmod 755 "$base"
  [ "$(id -u)" = 0 ] && chown "$owner" "$base"
  as_owner "$bindir/initdb" -D "$base/data" -U cj --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$base/initdb.log" 2>&1 || {
    log "initdb failed:"
    cat "$base/initdb.log" >&2
    return 1
  }
  # a test server: no fsync (speed), only loopback and a socket in its own folder
  as_owner "$bindir/pg_ctl" -D "$base/data" -l "$base/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $base -c fsync=off \
        -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >&2 || {
    log "the server did not start:"
    cat "$base/server.log" >&2
    return 1
  }
  printf 'bindir=%q\nowner=%q\nport=%q\n' "$bindir" "$owner" "$port" >"$state"
  as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U cj cj_test >&2
  log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($base)"
  echo "export CJ_TEST_POSTGRES_URL=postgresql+asyncpg://cj@127.0.0.1:$port/cj_test"
}

stop() {
  if [ -f "$state" ]; then
    # shellcheck disable=SC1090
    . "$state"
    as_owner "$bindir/pg_ctl" -D "$base/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$base"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
