// bench/dashbench's browser side: the big log's page loaded KILN_RUNS
// times, then the live page opened; prints READY, records each live
// line's arrival until DONE comes on stdin, and prints the results.
import { createInterface } from "node:readline";
import { launch, need, newPage } from "./lib.mjs";

const base = need("KILN_URL"), token = need("KILN_TOKEN");
const big = need("KILN_BIG_BUILD"), live = need("KILN_LIVE_BUILD");
const runs = Number(need("KILN_RUNS")), lines = Number(need("KILN_LINES"));
const T = 300_000;

const browser = await launch();
const out = { runs: [], arrivals: {} };
try {
  const { context, page } = await newPage(browser);
  await page.goto(`${base}/login`);
  await page.fill("#token", token);
  await page.click("form[action='/login'] button[type=submit]");
  await page.waitForURL(`${base}/`);
  for (let i = 0; i < runs; i++) {
    const p = await context.newPage();
    const t0 = Date.now();
    await p.goto(`${base}/builds/${big}`, { waitUntil: "commit" });
    await p.waitForSelector("#log .ll", { timeout: T });
    const firstRow = Date.now() - t0;
    await p.waitForFunction((n) => Number(document.getElementById("log").dataset.loaded) === n, lines, { timeout: T, polling: 50 });
    const allLoaded = Date.now() - t0;
    const jump = await p.evaluate(() => new Promise((resolve) => {
      const v = document.getElementById("log"), t = performance.now();
      v.scrollTop = v.scrollHeight / 2;
      requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t)));
    }));
    const ts = Date.now();
    await p.fill("#log-search", "needle");
    await p.waitForFunction((n) => document.getElementById("log-count").textContent === `${n} found`, Math.floor(lines / 1000), { timeout: T, polling: 20 });
    const search = Date.now() - ts - 200; // less the search box's 200 ms debounce
    const rawFetch = await p.evaluate(async (href) => {
      const t = performance.now();
      await (await fetch(href)).text();
      return performance.now() - t;
    }, await p.getAttribute("a[download]", "href"));
    const dom = await p.evaluate(() => ({ nodes: document.getElementsByTagName("*").length, rows: document.querySelectorAll("#log .ll").length, heap: performance.memory ? performance.memory.usedJSHeapSize : 0 }));
    out.runs.push({ FirstRow: firstRow, AllLoaded: allLoaded, Jump: jump, Search: search, RawFetch: rawFetch, Nodes: dom.nodes, Rows: dom.rows, HeapMiB: dom.heap / (1 << 20) });
    await p.close();
  }

  out.insights = [];
  for (let i = 0; i < runs; i++) {
    const p = await context.newPage();
    let t0 = Date.now();
    await p.goto(`${base}/insights?days=30`, { waitUntil: "commit", timeout: T });
    await p.waitForSelector("#figures", { timeout: T });
    await p.waitForSelector("svg.chart", { timeout: T });
    const page = Date.now() - t0;
    t0 = Date.now();
    await p.goto(`${base}/api/v1/insights?days=30`, { waitUntil: "load", timeout: T });
    out.insights.push({ Page: page, JSON: Date.now() - t0 });
    await p.close();
  }

  const p = await context.newPage();
  await p.goto(`${base}/builds/${live}`);
  await p.waitForFunction(() => document.getElementById("log").dataset.loaded !== undefined, null, { timeout: T });
  await p.exposeFunction("kilnArrived", (seqs, at) => { for (const s of seqs) out.arrivals[s] = at; });
  await p.evaluate(() => document.getElementById("log").addEventListener("kiln:lines", (ev) => window.kilnArrived(ev.detail, performance.timeOrigin + performance.now())));
  // The stream opens once the stored lines are read: give it a moment.
  await p.waitForTimeout(1000);
  console.log("READY");
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) if (line === "DONE") break;
  rl.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
process.exit(0);
