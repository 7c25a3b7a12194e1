// A job's log on the build page: the stored lines fetched in pages, then
// (while the build runs) new ones from the server-sent event stream. Only
// the rows in view are in the document (a 200,000-line log stays light),
// each made with textContent: log text is never parsed as HTML.
"use strict";
(function () {
  const view = document.getElementById("log");
  if (!view) return;
  const buildID = view.dataset.build, jobID = view.dataset.job;
  const space = view.querySelector(".logspace");
  const rows = document.createElement("div");
  rows.className = "logrows";
  space.appendChild(rows);
  const LINE = 18; // px: .ll's height in kiln.css
  const $ = (id) => document.getElementById(id);
  const followBox = $("log-follow"), timesBox = $("log-times"), search = $("log-search"), count = $("log-count");

  let lines = []; // {seq, time, text, attempt}
  let attempt = 0, lastSeq = 0;
  let follow = followBox ? followBox.checked : true;
  let matches = [], cur = -1, query = "";
  let marked = -1; // the index of the line the URL's #job-J-L<seq> names
  let frame = 0, autoScrolling = false;

  // --- ANSI SGR colours: classes for the 16 colours, CSSOM for the rest.
  const ESC = /\x1b\[([0-9;]*)m/g;
  const OTHER = /\x1b\[[0-9;?]*[ -\/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]/g;
  function rgb256(n) {
    if (n < 232) { n -= 16; const c = [0, 95, 135, 175, 215, 255]; return `rgb(${c[Math.floor(n / 36)]},${c[Math.floor(n / 6) % 6]},${c[n % 6]})`; }
    const g = 8 + (n - 232) * 10; return `rgb(${g},${g},${g})`;
  }
  function applySGR(st, params) {
    const p = params === "" ? [0] : params.split(";").map((x) => parseInt(x || "0", 10));
    for (let i = 0; i < p.length; i++) {
      const n = p[i];
      if (n === 0) { st.fg = st.bg = null; st.b = st.d = st.i = st.u = false; }
      else if (n === 1) st.b = true; else if (n === 2) st.d = true; else if (n === 3) st.i = true; else if (n === 4) st.u = true;
      else if (n === 22) st.b = st.d = false; else if (n === 23) st.i = false; else if (n === 24) st.u = false;
      else if (n >= 30 && n <= 37) st.fg = n - 30; else if (n >= 90 && n <= 97) st.fg = n - 90 + 8; else if (n === 39) st.fg = null;
      else if (n >= 40 && n <= 47) st.bg = n - 40; else if (n >= 100 && n <= 107) st.bg = n - 100; else if (n === 49) st.bg = null;
      else if (n === 38 || n === 48) {
        let c = null;
        if (p[i + 1] === 5 && i + 2 < p.length) { const k = p[i + 2]; c = k < 16 ? k : rgb256(k); i += 2; }
        else if (p[i + 1] === 2 && i + 4 < p.length) { c = `rgb(${p[i + 2] & 255},${p[i + 3] & 255},${p[i + 4] & 255})`; i += 4; }
        if (n === 38) st.fg = c; else st.bg = typeof c === "number" ? c % 8 : c;
      }
    }
  }
  function span(parent, text, st) {
    text = text.replace(OTHER, "");
    if (!text) return;
    if (st.fg === null && st.bg === null && !st.b && !st.d && !st.i && !st.u) { parent.appendChild(document.createTextNode(text)); return; }
    const s = document.createElement("span");
    const cls = [];
    if (typeof st.fg === "number") cls.push("f" + st.fg); else if (st.fg) s.style.color = st.fg;
    if (typeof st.bg === "number") cls.push("b" + st.bg); else if (st.bg) s.style.backgroundColor = st.bg;
    if (st.b) cls.push("a-b"); if (st.d) cls.push("a-d"); if (st.i) cls.push("a-i"); if (st.u) cls.push("a-u");
    s.className = cls.join(" ");
    s.textContent = text;
    parent.appendChild(s);
  }
  function ansi(parent, text) {
    const st = { fg: null, bg: null, b: false, d: false, i: false, u: false };
    let last = 0, m;
    ESC.lastIndex = 0;
    while ((m = ESC.exec(text)) !== null) {
      span(parent, text.slice(last, m.index), st);
      applySGR(st, m[1]);
      last = ESC.lastIndex;
    }
    span(parent, text.slice(last), st);
  }
  const plain = (l) => l.plain !== undefined ? l.plain : (l.plain = l.text.replace(ESC, "").replace(OTHER, "").toLowerCase());

  // --- rendering: the rows in view, and a margin.
  function rowOf(i) {
    const l = lines[i];
    const div = document.createElement("div");
    div.className = "ll";
    div.id = `job-${jobID}-L${l.seq}`;
    if (i === marked) div.classList.add("cur");
    else if (cur >= 0 && matches[cur] === i) div.classList.add("cur");
    else if (query && plain(l).includes(query)) div.classList.add("hit");
    const a = document.createElement("a");
    a.className = "ln";
    a.href = "#" + div.id;
    a.textContent = l.seq;
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.textContent = l.time ? l.time.slice(11, 23) : "";
    const tx = document.createElement("span");
    tx.className = "tx";
    ansi(tx, l.text);
    div.append(a, ts, tx);
    return div;
  }
  function render() {
    frame = 0;
    space.style.height = lines.length * LINE + "px";
    const first = Math.max(0, Math.floor(view.scrollTop / LINE) - 30);
    const last = Math.min(lines.length, Math.ceil((view.scrollTop + view.clientHeight) / LINE) + 30);
    rows.style.transform = `translateY(${first * LINE}px)`;
    const out = [];
    for (let i = first; i < last; i++) out.push(rowOf(i));
    rows.replaceChildren(...out);
  }
  const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };
  function scrollToIndex(i) {
    autoScrolling = true;
    view.scrollTop = Math.max(0, i * LINE - view.clientHeight / 2);
    schedule();
  }
  function toBottom() {
    autoScrolling = true;
    space.style.height = lines.length * LINE + "px";
    view.scrollTop = view.scrollHeight;
  }
  view.addEventListener("scroll", () => {
    if (autoScrolling) { autoScrolling = false; } else if (followBox) {
      follow = view.scrollTop + view.clientHeight >= view.scrollHeight - LINE;
      followBox.checked = follow;
    }
    schedule();
  });
  window.addEventListener("resize", schedule);
  if (followBox) followBox.addEventListener("change", () => { follow = followBox.checked; if (follow) toBottom(); });
  if (timesBox) timesBox.addEventListener("change", () => view.classList.toggle("times", timesBox.checked));

  // --- search: every line holding the text, case-insensitive.
  function find() {
    query = search.value.toLowerCase();
    matches = [];
    cur = -1;
    if (query) lines.forEach((l, i) => { if (plain(l).includes(query)) matches.push(i); });
    count.textContent = query ? `${matches.length} found` : "";
    schedule();
  }
  function step(dir) {
    if (!matches.length) return;
    cur = (cur + dir + matches.length) % matches.length;
    count.textContent = `${cur + 1} of ${matches.length}`;
    follow = false;
    if (followBox) followBox.checked = false;
    scrollToIndex(matches[cur]);
  }
  let debounce = 0;
  if (search) {
    search.addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(find, 200); });
    search.addEventListener("keydown", (ev) => { if (ev.key === "Enter") { ev.preventDefault(); clearTimeout(debounce); if (query !== search.value.toLowerCase()) find(); step(ev.shiftKey ? -1 : 1); } });
    $("log-next").addEventListener("click", () => step(1));
    $("log-prev").addEventListener("click", () => step(-1));
  }

  // --- #job-J-L<seq>: the line the URL names.
  function markFromHash() {
    const m = new RegExp(`^#job-${jobID}-L(\\d+)$`).exec(window.location.hash);
    if (!m) return false;
    const seq = parseInt(m[1], 10);
    let lo = 0, hi = lines.length - 1;
    while (lo <= hi) { const mid = (lo + hi) >> 1; if (lines[mid].seq < seq) lo = mid + 1; else hi = mid - 1; }
    if (lo >= lines.length || lines[lo].seq !== seq) return false;
    marked = lo;
    follow = false;
    if (followBox) followBox.checked = false;
    scrollToIndex(lo);
    return true;
  }
  window.addEventListener("hashchange", markFromHash);

  // --- lines in.
  function add(batch) {
    for (const l of batch) {
      if (l.attempt !== attempt) { // a retry starts a new log
        if (attempt !== 0 && l.attempt < attempt) continue;
        if (attempt !== 0) { lines = []; lastSeq = 0; marked = -1; }
        attempt = l.attempt;
      }
      if (l.seq <= lastSeq) continue;
      lastSeq = l.seq;
      lines.push({ seq: l.seq, time: l.time, text: l.text, attempt: l.attempt });
      if (query && plain(lines[lines.length - 1]).includes(query)) matches.push(lines.length - 1);
    }
    if (query) count.textContent = cur >= 0 ? `${cur + 1} of ${matches.length}` : `${matches.length} found`;
    view.dispatchEvent(new CustomEvent("kiln:lines", { detail: batch.map((l) => l.seq) }));
    if (follow && marked < 0) toBottom();
    schedule();
  }

  async function load() {
    let after = 0;
    for (;;) {
      const resp = await fetch(`/api/v1/builds/${buildID}/logs?job=${jobID}&after=${after}&limit=10000`, { credentials: "same-origin" });
      if (!resp.ok) { view.dataset.error = String(resp.status); return false; }
      const page = (await resp.json())[0];
      add(page.lines || []);
      if (!page.truncated) return true;
      after = page.next;
    }
  }

  function stream() {
    const es = new EventSource(`/api/v1/builds/${buildID}/logs/stream?job=${jobID}&attempt=${attempt}&after=${lastSeq}`);
    es.addEventListener("line", (ev) => add([JSON.parse(ev.data)]));
    es.addEventListener("status", (ev) => document.dispatchEvent(new CustomEvent("kiln:status", { detail: JSON.parse(ev.data) })));
    es.addEventListener("end", (ev) => {
      es.close();
      view.dataset.live = "false";
      document.dispatchEvent(new CustomEvent("kiln:end", { detail: JSON.parse(ev.data) }));
    });
  }

  load().then((ok) => {
    view.dataset.loaded = String(lines.length);
    if (!markFromHash() && follow) toBottom();
    render();
    if (ok && view.dataset.live === "true") stream();
  });
})();
