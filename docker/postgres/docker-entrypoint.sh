#!/bin/bash
# Entrypoint of elephant-tunnel's locally built Postgres image (scripts/build-postgres-image.sh).
#
# Behaves like the official `postgres` image's entrypoint for what tests rely on:
#
#   POSTGRES_USER              superuser to create (default: postgres)
#   POSTGRES_PASSWORD          its password (required unless POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_DB                database to create (default: $POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  pg_hba.conf method for TCP connections from anywhere
#                              (default: scram-sha-256; md5 also stores the password as md5)
#   POSTGRES_INITDB_ARGS       extra initdb arguments
#   *_FILE                     POSTGRES_PASSWORD_FILE etc. read the value from a file
#   PGDATA                     data directory (default: /var/lib/postgresql/data)
#   /docker-entrypoint-initdb.d/*.sql and *.sh  run once, against the temporary server
#
# On an empty data directory it runs initdb as the `postgres` account, starts a temporary server
# listening only on the Unix socket, creates the database, stops it, then execs the real server
# on 0.0.0.0:5432 (listen_addresses = '*'). As in the official image, both servers print
# "database system is ready to accept connections" (to stderr), so that line appears TWICE on a
# fresh container: a wait strategy must not take the first one as ready (fixtures waits for the
# line, then for a TCP `pg_isready`, which only the real server answers).
set -Eeuo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
export PATH="/usr/lib/postgresql/$PG_MAJOR/bin:$PATH"
export PGDATA="${PGDATA:-/var/lib/postgresql/data}"

say() { printf 'entrypoint: %s\n' "$*"; }
die() {
  printf 'entrypoint: error: %s\n' "$*" >&2
  exit 1
}

# VAR_FILE -> VAR, as the official image does (secrets mounted as files).
file_env() {
  local var="$1" file_var="${1}_FILE" default="${2:-}"
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    die "both $var and $file_var are set (they are exclusive)"
  fi
  local value="$default"
  if [ -n "${!var:-}" ]; then
    value="${!var}"
  elif [ -n "${!file_var:-}" ]; then
    value="$(<"${!file_var}")"
  fi
  export "$var"="$value"
  unset "$file_var"
}

# `docker run IMAGE -c fsync=off` means `postgres -c fsync=off`.
if [ "${1:-}" = "" ] || [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi
if [ "$1" != postgres ]; then
  exec "$@"
fi
# `postgres --version` and friends need no data directory (as in the official image).
for arg in "${@:2}"; do
  case "$arg" in
    -'?' | --help | --describe-config | -V | --version) exec "$@" ;;
  esac
done

if [ "$(id -u)" = 0 ]; then
  # Postgres refuses to run as root: prepare the directories, then re-run this script as postgres.
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  chmod 2775 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  file_env POSTGRES_USER postgres
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  method="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"

  if [ -z "$POSTGRES_PASSWORD" ] && [ "$method" != trust ]; then
    cat >&2 <<'EOF'
entrypoint: error: the database is uninitialized and no superuser password is set.
  Pass -e POSTGRES_PASSWORD=... (or POSTGRES_PASSWORD_FILE), or -e POSTGRES_HOST_AUTH_METHOD=trust
  to allow every connection without a password (never do that outside a test).
EOF
    exit 1
  fi
  if [ "$method" = trust ]; then
    say "WARNING: POSTGRES_HOST_AUTH_METHOD=trust: every TCP connection is accepted without a password"
  fi

  say "initdb as $(id -un) into $PGDATA (superuser $POSTGRES_USER, host auth $method)"
  initdb_args=(--username="$POSTGRES_USER" --pgdata="$PGDATA" --encoding=UTF8 --locale=C.UTF-8
    --auth-local=trust --auth-host="$method")
  if [ -n "$POSTGRES_PASSWORD" ]; then
    # The password goes through a pipe, never through argv or the log.
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is split on purpose, as upstream does
    initdb "${initdb_args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") $POSTGRES_INITDB_ARGS
  else
    # shellcheck disable=SC2086
    initdb "${initdb_args[@]}" $POSTGRES_INITDB_ARGS
  fi

  {
    echo
    echo "# Added by docker-entrypoint.sh: TCP connections from anywhere."
    echo "host all all all $method"
  } >>"$PGDATA/pg_hba.conf"
  {
    echo
    echo "# Added by docker-entrypoint.sh."
    echo "listen_addresses = '*'"
    if [ "$method" = md5 ]; then
      echo "password_encryption = md5"
    fi
  } >>"$PGDATA/postgresql.conf"

  # Temporary server on the Unix socket only: nothing outside sees it before setup is done.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
  psql=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc -X -q --username="$POSTGRES_USER")

  if [ "$method" = md5 ] && [ -n "$POSTGRES_PASSWORD" ]; then
    # initdb stored a SCRAM secret; md5 authentication needs an md5 one.
    "${psql[@]}" --dbname=postgres <<'EOSQL'
\getenv pw POSTGRES_PASSWORD
SET password_encryption = 'md5';
SELECT current_user AS me \gset
ALTER ROLE :"me" PASSWORD :'pw';
EOSQL
  fi

  if [ "$POSTGRES_DB" != postgres ]; then
    "${psql[@]}" --dbname=postgres --set=db="$POSTGRES_DB" <<'EOSQL'
CREATE DATABASE :"db";
EOSQL
  fi

  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        say "running $f"
        # shellcheck disable=SC1090
        . "$f"
        ;;
      *.sql)
        say "running $f"
        "${psql[@]}" --dbname="$POSTGRES_DB" -f "$f"
        ;;
      *) say "ignoring $f" ;;
    esac
  done

  pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD POSTGRES_PASSWORD
  say "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
