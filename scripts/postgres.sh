#!/usr/bin/env bash
# postgres.sh — install and start a PostgreSQL server for Kiln's tests, on
# a Unix socket of its own (no TCP port: nothing else on the machine is
# disturbed, nothing outside it can reach it), and print the URL tests
# read from KILN_TEST_POSTGRES.
#
# Run as root. Idempotent: an installed package, a made cluster or a
# running server is left as it is.
#
#   eval "$(scripts/postgres.sh --env)"   start it; stdout has only the export line
#
# The cluster lives in /var/lib/kiln-postgres and belongs to the postgres
# user Debian's package creates; tests connect as that user over the
# socket with trust authentication (no TCP listener; the socket
# directory is 0750, so only root and postgres can reach it).
set -euo pipefail

DIR=/var/lib/kiln-postgres
SOCK_DIR=/run/kiln-postgres
LOG=/var/log/kiln-postgres.log
PORT=5432 # names the socket file (.s.PGSQL.5432); no TCP listener

env_only=0
[ "${1:-}" = "--env" ] && env_only=1
say() { echo "postgres.sh: $*" >&2; }

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/postgres" ]; then
	say "installing PostgreSQL from Debian's packages"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
	bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

install -d -o postgres -g postgres -m 0750 "$SOCK_DIR"
if [ ! -f "$DIR/PG_VERSION" ]; then
	say "making a cluster in $DIR"
	install -d -o postgres -g postgres -m 0700 "$DIR"
	runuser -u postgres -- "$bin/initdb" -D "$DIR" -A trust -U postgres --no-sync >&2
fi
if ! runuser -u postgres -- "$bin/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
	say "starting PostgreSQL on $SOCK_DIR"
	touch "$LOG" && chown postgres "$LOG"
	# fsync off: a test server's data need not survive a power loss, and
	# every test makes and drops a database of its own.
	runuser -u postgres -- "$bin/pg_ctl" -D "$DIR" -l "$LOG" -w -t 60 start \
		-o "-c listen_addresses='' -c unix_socket_directories=$SOCK_DIR -p $PORT -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" >&2
fi

url="postgres://postgres@/postgres?host=$SOCK_DIR&port=$PORT"
if [ $env_only = 1 ]; then
	echo "export KILN_TEST_POSTGRES='$url'"
else
	say "ready: KILN_TEST_POSTGRES=$url"
fi
