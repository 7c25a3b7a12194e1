#!/usr/bin/env bash
# s3.sh — build and start an S3-compatible server for Kiln's tests
# (versitygw serving a directory: a real S3 API over HTTP, SigV4 and
# presigned URLs included), on 127.0.0.1 only, with a bucket for the
# tests, and print the settings tests read from KILN_TEST_S3*.
#
# Run as root. Idempotent: a built binary, made keys, a running server or
# an existing bucket are left as they are.
#
#   eval "$(scripts/s3.sh --env)"   start it; stdout has only export lines
#
# versitygw is built with `go install` (through the configured GOPROXY)
# into a tools directory outside the clone, once. Data lives in
# /var/lib/kiln-s3 (one directory per bucket); the keys are made there on
# the first run (0600) and passed to the server through its environment,
# never its argv.
set -euo pipefail

VERSION=v1.8.0
TOOLS=${KILN_TOOLS_DIR:-/var/cache/kiln-tools}
BIN=$TOOLS/bin/versitygw
DIR=/var/lib/kiln-s3
DATA=$DIR/data
KEYS=$DIR/keys
PIDFILE=/run/kiln-s3.pid
LOG=/var/log/kiln-s3.log
ADDR=127.0.0.1:39070
BUCKET=kiln-test

env_only=0
[ "${1:-}" = "--env" ] && env_only=1
say() { echo "s3.sh: $*" >&2; }

# `go install` builds carry no version (versitygw --version says "git"):
# a stamp beside the binary says which one it is.
STAMP=$TOOLS/bin/.versitygw.version
if [ ! -x "$BIN" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$VERSION" ]; then
	say "building versitygw $VERSION into $TOOLS/bin (a few minutes, once)"
	install -d "$TOOLS/bin"
	GOBIN=$TOOLS/bin go install "github.com/versity/versitygw/cmd/versitygw@$VERSION" >&2
	echo "$VERSION" > "$STAMP"
fi

install -d -m 0700 "$DIR" "$DATA"
if [ ! -s "$KEYS" ]; then
	say "making keys in $KEYS"
	umask 077
	printf 'ACCESS=kiln%s\nSECRET=%s\n' "$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
		"$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$KEYS"
fi
# shellcheck disable=SC1090
. "$KEYS"

running() { [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answering() { curl -s -o /dev/null "http://$ADDR/" 2>/dev/null; }

if ! running; then
	if answering; then
		say "something else already listens on $ADDR: stop it or change ADDR"
		exit 1
	fi
	say "starting versitygw on $ADDR, data in $DATA"
	ROOT_ACCESS_KEY=$ACCESS ROOT_SECRET_KEY=$SECRET setsid "$BIN" --port "$ADDR" --quiet posix "$DATA" \
		>>"$LOG" 2>&1 </dev/null &
	echo $! > "$PIDFILE"
	for _ in $(seq 1 100); do
		answering && break
		running || { say "versitygw exited; see $LOG"; tail -5 "$LOG" >&2; exit 1; }
		sleep 0.1
	done
	answering || { say "versitygw does not answer on $ADDR; see $LOG"; exit 1; }
fi

# Create the bucket through the S3 API (so the server records its owner);
# the keys go to curl on stdin, not argv. 409: it exists already.
code=$(printf 'user = "%s:%s"\n' "$ACCESS" "$SECRET" | curl -s -o /dev/null -w '%{http_code}' -K - \
	--aws-sigv4 "aws:amz:us-east-1:s3" -X PUT \
	-H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" "http://$ADDR/$BUCKET")
case $code in
200 | 409) ;;
*) say "creating bucket $BUCKET answered HTTP $code"; exit 1 ;;
esac

if [ $env_only = 1 ]; then
	echo "export KILN_TEST_S3='http://$ADDR/$BUCKET'"
	echo "export KILN_TEST_S3_ACCESS_KEY='$ACCESS'"
	echo "export KILN_TEST_S3_SECRET_KEY='$SECRET'"
else
	say "ready: KILN_TEST_S3=http://$ADDR/$BUCKET (keys in $KEYS)"
fi
