#!/usr/bin/env bash
# browser.sh — install what the dashboard's browser tests and benchmark
# drive: Debian's Chromium, and playwright-core from the npm registry
# (internal/browsertest/driver/package-lock.json; it downloads no browser).
#
# Run as root. Idempotent: what is installed is left as it is.
#
#   eval "$(scripts/browser.sh --env)"   install; stdout has only the export line
set -euo pipefail
cd "$(dirname "$0")/.."

env_only=0
[ "${1:-}" = "--env" ] && env_only=1
say() { echo "browser.sh: $*" >&2; }

if [ ! -x /usr/bin/chromium ]; then
	say "installing Chromium from Debian's packages"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi
driver=internal/browsertest/driver
if [ ! -f "$driver/node_modules/playwright-core/package.json" ]; then
	say "installing playwright-core ($driver)"
	(cd "$driver" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
say "ready: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
if [ "$env_only" = 1 ]; then
	echo "export KILN_REQUIRE_BROWSER=1"
fi
