// A tiny CLI around the real @actions/cache client, for Kiln's cache tests.
//
//   node client.mjs save KEY PATH...
//   node client.mjs restore KEY [RESTOREKEY...] -- PATH...
//
// The package folder to load @actions/cache from is $CACHE_CLIENT_DIR
// (v2/ or v1/ beside this file). The client itself reads its configuration
// from the environment (ACTIONS_RUNTIME_TOKEN, ACTIONS_RESULTS_URL,
// ACTIONS_CACHE_URL, ACTIONS_CACHE_SERVICE_V2, RUNNER_TEMP, GITHUB_WORKSPACE).
//
// Output, on its own line: "saved ID" (ID -1 when the client did not save),
// "matched KEY" or "miss". The client's own log lines (::warning:: …) are
// printed too; the Go tests read them.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = path.resolve(process.env.CACHE_CLIENT_DIR || path.join(import.meta.dirname ?? '.', 'v2'));
const pkgDir = path.join(dir, 'node_modules', '@actions', 'cache');
const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const mod = await import(pathToFileURL(path.join(pkgDir, pkg.main)).href);
const cache = mod.saveCache ? mod : mod.default;

const [cmd, ...args] = process.argv.slice(2);
try {
  if (cmd === 'save') {
    const [key, ...paths] = args;
    const id = await cache.saveCache(paths, key);
    console.log(`saved ${id}`);
  } else if (cmd === 'restore') {
    const sep = args.indexOf('--');
    if (sep < 1) throw new Error('usage: restore KEY [RESTOREKEY...] -- PATH...');
    const [key, ...restoreKeys] = args.slice(0, sep);
    const paths = args.slice(sep + 1);
    const matched = await cache.restoreCache(paths, key, restoreKeys);
    console.log(matched === undefined ? 'miss' : `matched ${matched}`);
  } else {
    throw new Error(`unknown command ${cmd}: want save or restore`);
  }
} catch (err) {
  console.log(`error: ${err.name}: ${err.message}`);
  process.exit(1);
}
