// The dashboard in a real browser, against a real Kiln whose builds run
// on a real engine (internal/e2e/dashboard_test.go sets them up and
// passes their ids). Prints the results the Go test checks as its last
// line.
import assert from "node:assert/strict";
import { launch, need, newPage, screenshot } from "./lib.mjs";

const base = need("KILN_URL");
const token = need("KILN_TOKEN");
const live = need("KILN_LIVE_BUILD"), slow = need("KILN_SLOW_BUILD"), done = need("KILN_DONE_BUILD"), waiting = need("KILN_WAITING_BUILD");
const project = need("KILN_PROJECT");
const viewerCookie = need("KILN_VIEWER_SESSION");
const results = {};
const T = 60_000; // the longest any one wait may take

const browser = await launch();
try {
  const { context, page } = await newPage(browser);

  // --- sign in with the token: a page asked for sends the browser to the
  // sign-in form, and back to the page after it.
  await page.goto(`${base}/builds/${live}`);
  assert.match(page.url(), /\/login\?next=%2Fbuilds%2F/);
  await screenshot(page, "signin");
  await page.fill("#token", token);
  await page.click("form[action='/login'] button[type=submit]");
  await page.waitForURL(`${base}/builds/${live}`, { timeout: T });
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "kiln_session");
  assert.ok(session && session.httpOnly, "the session cookie is HttpOnly");
  assert.equal(await page.evaluate(() => document.cookie.includes("kiln_session")), false, "script cannot read the session cookie");

  // --- a running build's log: lines appear as they are written, and the
  // view follows them to the bottom.
  await page.waitForSelector("#log .ll", { timeout: T });
  const count = () => page.evaluate(() => document.querySelectorAll("#log .ll").length && Number(document.querySelector("#log .ll:last-child .ln").textContent));
  const first = await count();
  await page.waitForFunction((n) => {
    const last = document.querySelector("#log .ll:last-child .ln");
    return last && Number(last.textContent) > n + 3;
  }, first, { timeout: T });
  results.liveGrewFrom = first;
  results.followedToBottom = await page.evaluate(() => { const v = document.getElementById("log"); return v.scrollTop + v.clientHeight >= v.scrollHeight - 40; });
  await page.waitForFunction(() => document.getElementById("build-status").textContent === "success", null, { timeout: T });
  results.liveEndedAs = await page.textContent("#build-status");
  results.liveLastLine = await page.evaluate(() => document.querySelector("#log .ll:last-child .tx").textContent);
  await screenshot(page, "build");

  // --- a finished build: the <script> line is text, the ANSI colour a
  // class, a line's link marks it, search finds.
  await page.goto(`${base}/builds/${done}`);
  await page.waitForFunction(() => document.getElementById("log").dataset.loaded, null, { timeout: T });
  const scriptLine = page.locator("#log .tx", { hasText: "<script>alert(1)</script>" });
  assert.equal(await scriptLine.count(), 1, "the <script> line is shown as text");
  assert.equal(await page.evaluate(() => document.querySelectorAll("#log script").length), 0, "no script element in the log");
  results.redClass = await page.evaluate(() => { const s = [...document.querySelectorAll("#log .tx span")].find((e) => e.textContent === "red"); return s ? s.className : ""; });
  const jobID = await page.getAttribute("#log", "data-job");
  await page.goto(`${base}/builds/${done}#job-${jobID}-L2`);
  await page.waitForSelector(`#log .ll.cur#job-${jobID}-L2`, { timeout: T });
  await page.fill("#log-search", "marker-");
  await page.waitForFunction(() => document.getElementById("log-count").textContent === "3 found", null, { timeout: T });
  await page.press("#log-search", "Enter");
  results.searchCount = await page.textContent("#log-count");
  results.rawLog = await page.evaluate(async (href) => (await fetch(href)).text(), await page.getAttribute("a[download]", "href"));

  // --- retry: a new build of the same commit, and the browser goes there.
  await page.click("button[data-action$='/retry']");
  await page.waitForURL((u) => /\/builds\/\d+$/.test(u.pathname) && !u.pathname.endsWith(`/${done}`), { timeout: T });
  results.retried = Number(new URL(page.url()).pathname.split("/").pop());

  // --- the builds list: the retried build's row changes without a reload.
  await page.goto(`${base}/builds?project=${project}`);
  await page.evaluate(() => { window.__notReloaded = true; });
  const rowStatus = () => page.evaluate((id) => { const a = document.querySelector(`#builds a[href="/builds/${id}"].st`); return a ? a.textContent : ""; }, results.retried);
  results.retriedRowFirst = await rowStatus();
  await page.waitForFunction((id) => { const a = document.querySelector(`#builds a[href="/builds/${id}"].st`); return a && a.textContent === "success"; }, results.retried, { timeout: T });
  results.retriedRowLast = await rowStatus();
  results.listNotReloaded = await page.evaluate(() => window.__notReloaded === true);
  await screenshot(page, "builds");

  // --- cancel a running build: it ends as canceled on the open page.
  await page.goto(`${base}/builds/${slow}`);
  await page.waitForFunction(() => document.getElementById("build-status").textContent === "running", null, { timeout: T });
  page.expectDialog = true; // the confirmation
  await page.click("button[data-action$='/cancel']");
  await page.waitForFunction(() => document.getElementById("build-status").textContent === "canceled", null, { timeout: T });
  results.canceled = await page.textContent("#build-status");

  // --- approve a fork's waiting build.
  await page.goto(`${base}/builds/${waiting}`);
  assert.match(await page.textContent("dl.meta"), /waiting/);
  await page.click("button[data-action$='/approve']");
  await page.waitForLoadState("load");
  await page.waitForFunction(() => !document.querySelector("button[data-action$='/approve']"), null, { timeout: T });
  results.approved = await page.evaluate(async (id) => (await (await fetch(`/api/v1/builds/${id}`)).json()).approval, waiting);

  // --- the other pages.
  await page.goto(`${base}/`);
  results.projectsPage = await page.textContent("table.projects");
  // The badge: drawn, and what it says.
  const badge = page.locator("table.projects img").first();
  await badge.waitFor({ timeout: T });
  await page.waitForFunction(() => { const i = document.querySelector("table.projects img"); return i && i.complete && i.naturalWidth > 0; }, null, { timeout: T });
  results.badge = await page.evaluate(async () => (await fetch(document.querySelector("table.projects img").getAttribute("src"))).text());
  await screenshot(page, "projects");
  // Insights: the page's figures are the API's for the same window
  // (read when no build finished in between: the fork's may still run).
  const apiInsights = () => page.evaluate(async (p) => {
    const v = await (await fetch(`/api/v1/insights?project=${p}&days=7`)).json();
    delete v.until; // now: different at each call
    return JSON.stringify(v);
  }, project);
  let api;
  for (let i = 0; i < 20; i++) {
    const before = await apiInsights();
    await page.goto(`${base}/insights?project=${project}&days=7`);
    if ((await apiInsights()) === before) { api = JSON.parse(before); break; }
  }
  assert.ok(api, "the insights kept changing");
  results.insights = {
    builds: await page.textContent("#f-builds"), apiBuilds: api.builds.total,
    failure: await page.textContent("#f-failure"),
    apiFailure: api.failure_rate === null ? "–" : `${(api.failure_rate * 100).toFixed(1)}%`,
    charts: await page.locator("svg.chart").count(),
    jobsRows: await page.locator("#jobs tbody tr").count(), apiJobs: api.jobs.length,
  };
  await screenshot(page, "insights");
  await page.goto(`${base}/agents`);
  results.agentsPage = await page.textContent("table.agents");
  await screenshot(page, "agents");
  await page.goto(`${base}/projects/${project}/caches`);
  await screenshot(page, "caches");
  // Delete a keyed entry (a maintainer's button, confirmed).
  results.cacheEntriesBefore = await page.locator("table.caches tbody tr").count();
  page.expectDialog = true;
  await page.click("table.caches button[data-method=DELETE]");
  await page.waitForFunction((n) => document.querySelectorAll("table.caches tbody tr").length < n, results.cacheEntriesBefore, { timeout: T });
  results.cacheEntriesAfter = await page.locator("table.caches tbody tr").count();

  // --- an admin's settings: a secret set (never shown again), the badge
  // made public, a token made (shown once) and revoked.
  await page.goto(`${base}/projects/${project}/settings`);
  await page.fill("form[data-method=PUT] input[name=name]", "DEPLOY_KEY");
  await page.fill("form[data-method=PUT] input[name=value]", "browser-set-secret-value");
  await page.click("form[data-method=PUT] button[type=submit]");
  await page.waitForSelector("table.secrets code:text-is('DEPLOY_KEY')", { timeout: T });
  results.secretValueShown = (await page.content()).includes("browser-set-secret-value");
  await page.selectOption("form[data-method=PATCH] select[name=badge]", "public");
  await page.click("form[data-method=PATCH] button[type=submit]");
  await page.waitForFunction(() => document.querySelector("select[name=badge]").value === "public" && document.readyState === "complete", null, { timeout: T });
  await page.waitForSelector("text=Badge for a README", { timeout: T });
  await screenshot(page, "settings");
  await page.goto(`${base}/tokens`);
  await page.fill("form[data-api='/api/v1/tokens'] input[name=name]", "from-the-browser");
  await page.click("form[data-api='/api/v1/tokens'] button[type=submit]");
  await page.waitForSelector("#new-token:not([hidden])", { timeout: T });
  results.newToken = await page.textContent("#new-token");
  await page.reload();
  page.expectDialog = true;
  await page.click("tr:has-text('from-the-browser') button[data-method=DELETE]");
  await page.waitForFunction(() => !document.body.textContent.includes("from-the-browser"), null, { timeout: T });
  results.tokenRevoked = true;

  // --- a phone's width: nothing wider than the screen, the log there.
  const phone = await newPage(browser, { viewport: { width: 390, height: 844 }, context: { storageState: await context.storageState() } });
  await phone.page.goto(`${base}/builds/${done}`);
  await phone.page.waitForFunction(() => document.getElementById("log").dataset.loaded, null, { timeout: T });
  results.phoneOverflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  results.phoneLogLines = await phone.page.evaluate(() => document.querySelectorAll("#log .ll").length);
  await screenshot(phone.page, "phone");
  await phone.context.close();

  // --- sign out: the session ends; a page then asks to sign in again.
  await page.click("form[action='/logout'] button");
  await page.waitForURL(`${base}/login`, { timeout: T });
  await page.goto(`${base}/builds`);
  assert.match(page.url(), /\/login\?next=/);
  results.signedOut = true;
  assert.deepEqual(page.errors, [], "no script errors, no dialogs");
  await context.close();

  // --- a viewer: sees the build, no buttons, and the API refuses them.
  const viewer = await newPage(browser);
  await viewer.context.addCookies([{ name: "kiln_session", value: viewerCookie, url: base, httpOnly: true, sameSite: "Lax" }]);
  await viewer.page.goto(`${base}/builds/${done}`);
  results.viewerTitle = await viewer.page.title();
  results.viewerButtons = await viewer.page.locator("button[data-action]").count();
  results.viewerCancel = await viewer.page.evaluate(async (id) => {
    const csrf = document.querySelector('meta[name="kiln-csrf"]').content;
    return (await fetch(`/api/v1/builds/${id}/retry`, { method: "POST", headers: { "X-Kiln-CSRF": csrf } })).status;
  }, done);
  assert.deepEqual(viewer.page.errors, []);
  await viewer.context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
