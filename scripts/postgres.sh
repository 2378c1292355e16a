#!/usr/bin/env bash
# Makes a PostgreSQL server available for the tests and prints its URL (a user that may create
# databases). With TERN_TEST_POSTGRES_URL set, that server is used as it is. Otherwise Debian's
# `postgresql` is installed when missing (we run as root on CI and fresh machines), its cluster
# is started, and a `tern_test` role is created on 127.0.0.1:5432.
set -euo pipefail

if [[ -n "${TERN_TEST_POSTGRES_URL:-}" ]]; then
  echo "$TERN_TEST_POSTGRES_URL"
  exit 0
fi

log() { printf '%s\n' "$*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  log "installing Debian's postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || log "apt-get update failed; trying the install with the package lists at hand"
  apt-get install -y -qq postgresql >&2
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -1)
cluster=$(pg_lsclusters --no-header 2>/dev/null | awk -v v="$version" '$1 == v { print $2; exit }')
if [[ -z "$cluster" ]]; then
  cluster=main
  pg_createcluster "$version" "$cluster" >&2
fi
port=$(pg_lsclusters --no-header | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c { print $3 }')
if ! pg_lsclusters --no-header | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c { print $4 }' | grep -q online; then
  log "starting PostgreSQL $version/$cluster on port $port"
  pg_ctlcluster "$version" "$cluster" start >&2
fi

# A role for the tests, with a password for TCP on 127.0.0.1 (peer authentication on the
# socket would need an OS user of the same name).
su postgres -c "psql -q -p $port -v ON_ERROR_STOP=1" >&2 <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tern_test') THEN
    CREATE ROLE tern_test LOGIN CREATEDB PASSWORD 'tern_test';
  END IF;
END $$;
SQL
echo "postgres://tern_test:tern_test@127.0.0.1:$port/postgres"
