// Shared by the scenarios: Chromium launched as this machine needs it,
// and small waits. Every wait has a deadline: a scenario that hangs
// fails with what it waited for.
import { chromium } from "playwright-core";

export async function launch() {
  return chromium.launch({
    executablePath: process.env.KILN_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    // As root in a container, without GPU; no background connections
    // (this machine's network is closed: they would fail at every start).
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
}

export function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
}

// A page that fails the scenario on a dialog it did not expect (an
// injected alert) and on a script error.
export async function newPage(browser, opts = {}) {
  const context = await browser.newContext({ viewport: opts.viewport || { width: 1280, height: 900 }, ...opts.context });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (err) => page.errors.push(String(err)));
  page.on("dialog", async (d) => {
    if (page.expectDialog) { page.expectDialog = false; await d.accept(); return; }
    page.errors.push(`unexpected dialog: ${d.type()} ${d.message()}`);
    await d.dismiss();
  });
  return { context, page };
}

export async function screenshot(page, name) {
  const dir = process.env.KILN_SCREENSHOTS;
  if (dir) await page.screenshot({ path: `${dir}/${name}.png`, fullPage: false });
}
