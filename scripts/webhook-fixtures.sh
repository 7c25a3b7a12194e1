#!/usr/bin/env bash
# webhook-fixtures.sh regenerates the real GitHub webhook payloads that the
# tests of internal/forge sign and parse, from the npm package
# @octokit/webhooks-examples (payloads contributed to octokit/webhooks,
# MIT licensed), pinned below.
#
# It writes internal/forge/testdata/github/push.N.json and ping.N.json, one file
# per example of api.github.com/index.json, in the package's order, and
# pull_request.ACTION.json, the first example of each pull_request action; then
# rewrites the fuzz seed corpora under internal/forge/testdata/fuzz/ from the
# fixtures. Run it from anywhere; it needs npm, node and go.
set -euo pipefail

VERSION=7.6.1 # @octokit/webhooks-examples; keep in step with testdata/README.md
EVENTS="push ping"
PER_ACTION="pull_request" # one example per action: the package has many of each

root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/internal/forge/testdata/github"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

npm install --prefix "$tmp" --no-save --no-audit --no-fund --ignore-scripts \
	"@octokit/webhooks-examples@$VERSION" >/dev/null
index="$tmp/node_modules/@octokit/webhooks-examples/api.github.com/index.json"

mkdir -p "$out"
for ev in $EVENTS $PER_ACTION; do
	rm -f "$out/$ev".*.json
done

# The index is a list of {name, examples: [payload, ...]}, one entry per event.
node - "$index" "$out" "$PER_ACTION" $EVENTS <<'JS'
const fs = require("fs");
const path = require("path");
const [index, out, perAction, ...events] = process.argv.slice(2);
const defs = JSON.parse(fs.readFileSync(index, "utf8"));
const examples = (ev) => {
  const def = defs.find((d) => d.name === ev);
  if (!def || !def.examples || def.examples.length === 0) {
    console.error(`no examples for event ${ev} in ${index}`);
    process.exit(1);
  }
  return def.examples;
};
const write = (name, example) => {
  const file = path.join(out, name);
  fs.writeFileSync(file, JSON.stringify(example, null, 2) + "\n");
  console.log(path.relative(process.cwd(), file));
};
for (const ev of events) {
  examples(ev).forEach((example, i) => write(`${ev}.${i}.json`, example));
}
for (const ev of perAction.split(" ").filter(Boolean)) {
  const seen = new Set();
  for (const example of examples(ev)) {
    if (!seen.has(example.action)) {
      seen.add(example.action);
      write(`${ev}.${example.action}.json`, example);
    }
  }
}
JS

cd "$root"
go test ./internal/forge -run '^TestFuzzSeeds$' -update-seeds
