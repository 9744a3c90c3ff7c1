#!/usr/bin/env bash
# Runs a command next to a private, throwaway PostgreSQL server: the store's tests run on it
# as well as on SQLite (ARF_TEST_POSTGRES names it; ARF_REQUIRE_POSTGRES makes a test that
# cannot reach it fail rather than skip). The server listens on 127.0.0.1 on a free port, keeps
# its data in a temporary folder, and is stopped and removed when the command ends.
#
#   scripts/with-postgres.sh cargo test --workspace --locked
#
# PostgreSQL comes from Debian's packages (installed with apt-get when missing; needs root).
set -euo pipefail

pg_bin() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$found" ] && [ -x "$found/initdb" ] && echo "$found"
}

bin=$(pg_bin || true)
if [ -z "$bin" ]; then
  echo "with-postgres: PostgreSQL is not installed; installing Debian's package" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "with-postgres: apt-get needs root: run 'apt-get install -y postgresql' first" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
  bin=$(pg_bin)
fi

dir=$(mktemp -d /tmp/arf-postgres.XXXXXX)
# PostgreSQL refuses to run as root: as root, the server runs as the package's postgres user.
as_owner=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres: "$dir"
  as_owner=(runuser -u postgres --)
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

stop() {
  "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT

"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -U arf --auth=trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
  { cat "$dir/initdb.log" >&2; exit 1; }
# fsync off: the server is thrown away after the tests, and durability there proves nothing.
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=300" \
  start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
echo "with-postgres: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $dir)" >&2

export ARF_TEST_POSTGRES="postgres://arf@127.0.0.1:$port/postgres"
# A test that restarts its server starts one of its own from these (arf/tests/support/postgres.rs).
export ARF_TEST_PG_BIN="$bin"
export ARF_REQUIRE_POSTGRES=1
"$@"
