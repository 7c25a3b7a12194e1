// Kiln's dashboard: the buttons (through the REST API, with the session's
// CSRF token), the builds list's live rows, and a build's job list kept
// current. Server-rendered HTML stays the source: live parts are fetched
// as HTML the server rendered (and escaped), never built from strings here.
"use strict";

const csrf = () => (document.querySelector('meta[name="kiln-csrf"]') || {}).content || "";

function showAlert(msg) {
  const el = document.querySelector(".alert");
  if (!el) return;
  el.textContent = msg;
  el.hidden = !msg;
}

// Buttons with data-action call the API: POST (or data-method) with the
// CSRF header; the page then shows the new state.
document.addEventListener("click", async (ev) => {
  const btn = ev.target.closest("button[data-action]");
  if (!btn) return;
  if (btn.dataset.confirm && !window.confirm(btn.dataset.confirm)) return;
  btn.disabled = true;
  try {
    const resp = await fetch(btn.dataset.action, {
      method: btn.dataset.method || "POST",
      headers: { "X-Kiln-CSRF": csrf(), "Accept": "application/json" },
      credentials: "same-origin",
    });
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try { const body = await resp.json(); if (body.error) msg = body.error; } catch (_) { /* not JSON */ }
      showAlert(msg);
      btn.disabled = false;
      return;
    }
    let next = window.location.href;
    try {
      const body = await resp.json();
      // A retry is a new build: go to it.
      if (btn.dataset.action.endsWith("/retry") && body && body.id) next = "/builds/" + body.id;
    } catch (_) { /* 204 */ }
    window.location.assign(next);
  } catch (err) {
    showAlert(String(err));
    btn.disabled = false;
  }
});

// Forms with data-api send their fields to the API as JSON (data-method,
// POST by default; {field} in the URL takes that field's value), with the
// CSRF header; then the page shows the new state, or (data-show) the
// answer's field in the data-output element — a token made, shown once.
document.addEventListener("submit", async (ev) => {
  const form = ev.target.closest("form[data-api]");
  if (!form) return;
  ev.preventDefault();
  const body = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === "checkbox") body[el.name] = el.checked;
    else if (el.dataset.type === "int") { if (el.value !== "") body[el.name] = parseInt(el.value, 10); }
    else body[el.name] = el.value;
  }
  const url = form.dataset.api.replace(/\{(\w+)\}/g, (_, k) => { const v = body[k]; delete body[k]; return encodeURIComponent(v); });
  const button = form.querySelector("button[type=submit]");
  if (button) button.disabled = true;
  try {
    const resp = await fetch(url, {
      method: form.dataset.method || "POST",
      headers: { "X-Kiln-CSRF": csrf(), "Content-Type": "application/json", "Accept": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify(body),
    });
    let answer = null;
    try { answer = await resp.json(); } catch (_) { /* 204 */ }
    if (!resp.ok) {
      showAlert((answer && answer.error) || `${resp.status} ${resp.statusText}`);
      return;
    }
    if (form.dataset.show && answer) {
      const out = document.getElementById(form.dataset.output);
      out.textContent = answer[form.dataset.show];
      out.hidden = false;
      form.reset();
      return;
    }
    window.location.reload();
  } catch (err) {
    showAlert(String(err));
  } finally {
    if (button) button.disabled = false;
  }
});

// replaceFrom fetches url (HTML the server rendered) and puts its element
// matching selector in place of target. Table rows are parsed inside a
// table: the HTML parser drops them anywhere else.
async function replaceFrom(url, selector, target) {
  const resp = await fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } });
  if (!resp.ok) return false;
  let html = await resp.text();
  if (selector === "tbody") html = "<table>" + html + "</table>";
  const doc = new DOMParser().parseFromString(html, "text/html");
  const fresh = doc.querySelector(selector);
  if (!fresh) return false;
  target.replaceWith(document.adoptNode(fresh));
  return true;
}

// The builds list: its rows are fetched again every few seconds, so
// builds appear, start and finish without a reload. Polling the store is
// what works whichever replica answers.
const builds = document.getElementById("builds");
if (builds && builds.dataset.rows) {
  const refresh = async () => {
    const body = builds.querySelector("tbody");
    if (body && !document.hidden) {
      try { await replaceFrom(builds.dataset.rows, "tbody", body); } catch (_) { /* try again */ }
    }
    setTimeout(refresh, 3000);
  };
  setTimeout(refresh, 3000);
}

// A build's jobs and steps: log.js sends kiln:status when the build
// changed; the job list is fetched again (at most one fetch at a time).
const jobs = document.getElementById("jobs");
if (jobs) {
  let busy = false, again = false;
  const refreshJobs = async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const cur = document.getElementById("jobs").firstElementChild;
      await replaceFrom(jobs.dataset.partial, ".jobpart", cur);
    } catch (_) { /* next event */ }
    busy = false;
    if (again) { again = false; refreshJobs(); }
  };
  document.addEventListener("kiln:status", (ev) => {
    const st = document.getElementById("build-status"), b = ev.detail;
    if (st && b && b.status) {
      st.textContent = b.status;
      st.className = "st st-" + b.status;
    }
    const dur = document.getElementById("build-duration");
    if (dur && b && b.started_at) {
      const secs = Math.round(((b.finished_at ? Date.parse(b.finished_at) : Date.now()) - Date.parse(b.started_at)) / 1000);
      dur.textContent = secs < 60 ? `${secs}s` : secs < 3600 ? `${Math.floor(secs / 60)}m ${String(secs % 60).padStart(2, "0")}s` : `${Math.floor(secs / 3600)}h ${String(Math.floor(secs / 60) % 60).padStart(2, "0")}m`;
    }
    refreshJobs();
  });
  // At the end too: the buttons change (cancel goes, retry comes).
  document.addEventListener("kiln:end", refreshJobs);
  // A build still being planned has no job, so no log stream to follow:
  // its page asks again every few seconds, and shows itself whole once
  // the jobs are there.
  if (jobs.dataset.untilJobs) {
    const poll = async () => {
      try {
        const resp = await fetch(jobs.dataset.partial, { credentials: "same-origin" });
        if (resp.ok && (await resp.text()).includes('data-job="')) { window.location.reload(); return; }
      } catch (_) { /* again */ }
      setTimeout(poll, 3000);
    };
    setTimeout(poll, 3000);
  }
}
