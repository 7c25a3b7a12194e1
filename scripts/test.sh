#!/usr/bin/env bash
# test.sh — the whole test suite, on a fresh Debian machine, as root.
# Installs and starts what the tests need (Docker, Podman, the base image,
# Distribution's docker-registry and skopeo for the image pull tests,
# git, openssl, Node's npm for the real @actions/cache client, Chromium for
# the dashboard, iproute2 for the multi-host test's network namespaces),
# then runs
# every Go test, including the end-to-end tests on both engines and the
# fuzz targets' committed seed corpora.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for cmd in git node npm openssl curl tar zstd ip docker-registry skopeo; do
	command -v "$cmd" >/dev/null || need+=("$cmd")
done
if [ ${#need[@]} -gt 0 ]; then
	pkgs=()
	for c in "${need[@]}"; do
		case "$c" in node) pkgs+=(nodejs) ;; ip) pkgs+=(iproute2) ;; *) pkgs+=("$c") ;; esac
	done
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
fi

eval "$(scripts/engines.sh --env)"
export KILN_REQUIRE_ENGINES=1
# A PostgreSQL server on a socket of its own (KILN_TEST_POSTGRES): the
# tests that need one (two replicas on one database) run in the first
# pass; the second pass runs every package that opens a store again, on
# PostgreSQL (storetest gives each test a database of its own there).
eval "$(scripts/postgres.sh --env)"
# An S3-compatible server (versitygw on 127.0.0.1:39070, KILN_TEST_S3*;
# built from the Go module proxy into /var/cache/kiln-tools once): the blob
# store's conformance suite and the cache's S3 tests run against it.
eval "$(scripts/s3.sh --env)"
# Debian's Chromium and playwright-core: the dashboard's browser test
# (internal/e2e, TestDashboardInBrowser) runs in it.
eval "$(scripts/browser.sh --env)"

go vet ./...
# -p 1: one package at a time. The end-to-end, conformance and cache suites
# each start many containers; side by side on a 2-core machine they starve
# each other (heartbeats, exec) and take longer in total than in turn.
go test -p 1 -count=1 -timeout 45m "$@" ./...
KILN_TEST_STORE=postgres go test -p 1 -count=1 -timeout 20m "$@" \
	./internal/store/... ./internal/leader/ ./internal/cache/ ./internal/cacheclient/ ./internal/scheduler/ ./internal/actions/ ./internal/forgestatus/ ./internal/api/ ./internal/server/ ./internal/agent/
