// Single sign-on in a real browser: the dashboard's sign-in page, the
// OpenID provider's own login form, and back to the page asked for, signed
// in with the roles the user's groups give; then sign-out.
import assert from "node:assert/strict";
import { launch, need, newPage } from "./lib.mjs";

const base = need("KILN_URL"), user = need("KILN_SSO_USER"), password = need("KILN_SSO_PASSWORD");
const T = 60_000;
const results = {};
const browser = await launch();
try {
  const { page } = await newPage(browser);
  await page.goto(`${base}/builds?project=web`);
  assert.match(page.url(), /\/login\?next=/);
  await page.click("a[href^='/auth/login']");
  await page.waitForSelector("input[name=username]", { timeout: T }); // the provider's page
  results.providerHost = new URL(page.url()).host;
  await page.fill("input[name=username]", user);
  await page.fill("input[name=password]", password);
  await page.click("form button");
  await page.waitForURL((u) => u.origin === base && u.pathname === "/builds", { timeout: T });
  results.landedOn = new URL(page.url()).pathname + new URL(page.url()).search;
  results.who = (await page.textContent("form.who span")).trim();
  results.session = await page.evaluate(async () => (await (await fetch("/auth/session")).json()).roles);
  await page.click("form[action='/logout'] button");
  await page.waitForURL(`${base}/login`, { timeout: T });
  results.afterSignOut = (await page.evaluate(async () => (await fetch("/auth/session")).status));
  assert.deepEqual(page.errors, []);
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
