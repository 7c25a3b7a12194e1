#!/usr/bin/env bash
# demo.sh — Kiln's main job, end to end, on its embedded defaults:
# `kiln up` (SQLite, local files, the local container engine) receives a
# signed GitHub push webhook for an example repository and builds that
# commit in fresh sandboxes, streaming the log live, then prints the result.
#
# Run as root on a fresh Debian machine: it installs and starts Docker
# (scripts/engines.sh) and builds the base image locally, since no registry
# needs to be reachable. Set KILN_ENGINE to use an engine you already run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${KILN_ENGINE:-}" ]; then
	scripts/engines.sh --only docker >&2
	KILN_ENGINE=unix:///run/kiln-docker.sock
fi
echo "==> building kiln" >&2
go build -o bin/kiln ./cmd/kiln

work=$(mktemp -d)
export KILN_HOME=$work/kiln KILN_SERVER=http://127.0.0.1:${KILN_DEMO_PORT:-8088}
trap 'kill $kiln_pid 2>/dev/null; wait $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT

echo "==> kiln up (data in $KILN_HOME)" >&2
bin/kiln up -listen "${KILN_SERVER#http://}" -engine "$KILN_ENGINE" >"$work/kiln.log" 2>&1 &
kiln_pid=$!
for _ in $(seq 100); do
	grep -q "listening on" "$work/kiln.log" 2>/dev/null && [ -s "$KILN_HOME/admin-token" ] && break
	kill -0 $kiln_pid 2>/dev/null || { cat "$work/kiln.log"; exit 1; }
	sleep 0.1
done
sed -n '1,12p' "$work/kiln.log" | grep -v '^time=' || true

echo "==> an example repository" >&2
repo=$work/hello
cp -r examples/hello "$repo"
git -C "$repo" init -q -b main
git -C "$repo" add -A
git -C "$repo" -c user.name=Demo -c user.email=demo@kiln.invalid commit -q -m "hello kiln"
commit=$(git -C "$repo" rev-parse HEAD)

secret=demo-webhook-secret-0123456789
bin/kiln project add hello -url "$repo" -webhook-secret "$secret"

echo "==> a GitHub push webhook for $commit" >&2
body=$(printf '{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000","after":"%s","deleted":false,"repository":{"full_name":"demo/hello","clone_url":"%s"},"head_commit":{"id":"%s","message":"hello kiln","author":{"name":"Demo"}},"pusher":{"name":"demo"}}' "$commit" "$repo" "$commit")
sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
answer=$(curl -sS -X POST "$KILN_SERVER/hooks/github/hello" -H "Content-Type: application/json" \
	-H "X-GitHub-Event: push" -H "X-GitHub-Delivery: demo-$(date +%s%N)" -H "X-Hub-Signature-256: sha256=$sig" --data-binary "$body")
echo "$answer"
build=$(printf '%s' "$answer" | sed -n 's/.*"build_id":\([0-9]*\).*/\1/p')
[ -n "$build" ] || { echo "no build started"; exit 1; }

echo "==> build $build, live log" >&2
bin/kiln logs -f "$build"
