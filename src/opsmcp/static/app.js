// opsmcp console. At load it reads what the server already knows (approval requests, DLQ
// failure groups, the last hour of queue depths, key metrics, writes from the audit log,
// alerts); then the /events SSE feed keeps every panel current. fetch() is used for both
// (EventSource cannot send an Authorization header): the bearer token lives in this tab's
// sessionStorage only and goes in the Authorization header of every request, Approve and
// Deny included (POSTs; no cookies, so no CSRF). Text from outside (alert annotations,
// failure signatures, previews, arguments) is only ever set with textContent.
// No build step: uPlot (static/vendor/) draws the charts.
"use strict";

const state = {
  queues: new Map(), lastId: null, connected: false,
  groups: null,            // [{queue, depth, ..., groups: [...]}] from /api/console/groups
  depth: new Map(),        // DLQ -> [[epoch s, depth], ...]
  metricCharts: [],        // [{title, unit, lines: [{label, points}]}]
  approvals: [], focus: null,
};
const WINDOW = 3600;
const PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#57606a"];
const charts = new Map(); // element id -> uPlot
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ DOM helpers ----
function el(tag, value, cls) {
  const node = document.createElement(tag);
  if (value !== undefined) node.textContent = value === null ? "–" : String(value);
  if (cls) node.className = cls;
  return node;
}

function when(iso) {
  if (!iso) return "–";
  const t = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
  return isNaN(t) ? String(iso) : t.toLocaleTimeString();
}

function ago(iso) {
  const t = new Date(iso).getTime();
  if (isNaN(t)) return "";
  const s = Math.round((Date.now() - t) / 1000);
  const span = Math.abs(s) < 90 ? `${Math.abs(s)} s` : Math.abs(s) < 5400 ? `${Math.round(Math.abs(s) / 60)} min`
    : `${Math.round(Math.abs(s) / 3600)} h`;
  return s >= 0 ? `${span} ago` : `in ${span}`;
}

function table(headers, rows) {
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const h of headers) head.append(el("th", h));
  const body = t.createTBody();
  for (const cells of rows) {
    const tr = body.insertRow();
    for (const c of cells) tr.append(c instanceof Node ? c : el("td", c));
  }
  return t;
}

function note(container, text, cls = "muted") {
  container.replaceChildren(el("p", text, cls));
}

// ------------------------------------------------------------------ HTTP ----------
function headers(extra = {}) {
  const token = sessionStorage.getItem("opsmcp_token");
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { cache: "no-store", ...options, headers: headers(options.headers) });
  let body = null;
  try { body = await response.json(); } catch (err) { body = null; }
  if (!response.ok) {
    const message = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    throw Object.assign(new Error(message), { status: response.status });
  }
  return body;
}

const timers = new Map();
function soon(key, fn, ms) { // run fn once, ms after the last call for key
  clearTimeout(timers.get(key));
  timers.set(key, setTimeout(fn, ms));
}

// ------------------------------------------------------------------ queues --------
function renderQueues() {
  const body = $("queues").querySelector("tbody");
  body.replaceChildren();
  for (const name of [...state.queues.keys()].sort()) {
    const q = state.queues.get(name);
    const tr = document.createElement("tr");
    tr.dataset.queue = name;
    if (q.is_dlq) tr.className = "dlq";
    const hot = (value) => (value || 0) > 0 ? "n hot" : "n";
    tr.append(el("td", name), el("td", q.visible, q.is_dlq ? hot(q.visible) : "n"), el("td", q.in_flight, "n"),
              el("td", q.delayed, "n"), el("td", q.dlq), el("td", q.dlq_depth, hot(q.dlq_depth)));
    body.append(tr);
  }
}

// ------------------------------------------------------------------ charts --------
function chartBox(container, id) {
  let box = document.getElementById(id);
  if (!box) {
    box = el("div", undefined, "chart");
    box.id = id;
    container.append(box);
  }
  return box;
}

function drawChart(box, title, labels, data, opts = {}) {
  // data: [xs, ys1, ys2...]; one uPlot per box, re-created when its series change.
  let plot = charts.get(box.id);
  const key = JSON.stringify(labels);
  if (plot && plot._opsmcpKey !== key) { plot.destroy(); plot = null; }
  if (!plot) {
    const series = [{}, ...labels.map((label, i) => ({
      label, stroke: opts.colors ? opts.colors[i] : PALETTE[i % PALETTE.length], width: 2,
      paths: opts.stepped ? uPlot.paths.stepped({ align: 1 }) : undefined, spanGaps: false,
      points: { show: false },
    }))];
    box.replaceChildren();
    plot = new uPlot({
      title, width: opts.width || 340, height: opts.height || 150, series,
      scales: { x: { time: true, range: () => [Date.now() / 1000 - WINDOW, Date.now() / 1000] },
                y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
      axes: [{ space: 50 }, { size: 56 }],
      legend: { show: labels.length > 1 || !!opts.legend, live: false },
      cursor: { drag: { x: false, y: false } },
    }, data, box);
    plot._opsmcpKey = key;
    charts.set(box.id, plot);
  } else {
    plot.setData(data);
  }
  box.dataset.points = String(data.slice(1).reduce((n, ys) => n + ys.filter((v) => v !== null).length, 0));
}

function renderDepthCharts() {
  const container = $("depth-charts");
  const now = Date.now() / 1000;
  const names = [...state.depth.keys()].sort();
  if (!names.length) { container.replaceChildren(el("p", "no DLQ sampled yet", "muted")); return; }
  container.querySelector("p")?.remove();
  for (const name of names) {
    const points = state.depth.get(name).filter(([t]) => t >= now - WINDOW);
    if (points.length) points.push([now, points[points.length - 1][1]]); // the depth holds until now
    const box = chartBox(container, `depth-${name}`);
    box.dataset.queue = name;
    drawChart(box, name, ["depth"], [points.map((p) => p[0]), points.map((p) => p[1])],
              { stepped: true, colors: ["#cf222e"], width: 300, height: 130 });
  }
}

function addDepthPoint(name, at, depth) {
  const points = state.depth.get(name) || [];
  const last = points[points.length - 1];
  if (last && last[0] > at) return;
  points.push([at, depth]);
  while (points.length && points[0][0] < at - WINDOW) points.shift();
  state.depth.set(name, points);
}

function renderMetricCharts() {
  const container = $("metric-charts");
  if (!state.metricCharts.length) return;
  container.querySelector("p")?.remove();
  state.metricCharts.forEach((chart, i) => {
    const box = chartBox(container, `metric-${i}`);
    if (chart.error) { box.replaceChildren(el("p", `${chart.title}: ${chart.error}`, "error")); return; }
    if (!chart.lines.length) {
      charts.get(box.id)?.destroy(); charts.delete(box.id);
      box.replaceChildren(el("p", `${chart.title}: no data in the last hour (${chart.namespace}/${chart.metric})`,
                              "muted"));
      return;
    }
    const xs = [...new Set(chart.lines.flatMap((l) => l.points.map((p) => p[0])))].sort((a, b) => a - b);
    const ys = chart.lines.map((l) => {
      const at = new Map(l.points.map((p) => [p[0], p[1]]));
      return xs.map((x) => (at.has(x) ? at.get(x) : null));
    });
    const title = chart.unit ? `${chart.title} (${chart.stat}, ${chart.unit})` : chart.title;
    drawChart(box, title, chart.lines.map((l) => l.label), [xs, ...ys], { width: 520, height: 200, legend: true });
  });
}

function mergeMetrics(event) {
  for (const update of event.charts || []) {
    const chart = state.metricCharts.find((c) => c.title === update.title);
    if (!chart) continue;
    chart.error = update.error;
    for (const line of update.lines || []) {
      let mine = chart.lines.find((l) => l.label === line.label);
      if (!mine) { mine = { label: line.label, points: [] }; chart.lines.push(mine); }
      const byTime = new Map(mine.points.map((p) => [p[0], p[1]]));
      for (const [t, v] of line.points) byTime.set(t, v);
      const cutoff = Date.now() / 1000 - WINDOW;
      mine.points = [...byTime.entries()].filter(([t]) => t >= cutoff).sort((a, b) => a[0] - b[0]);
    }
  }
}

// ------------------------------------------------------------------ failure groups
function renderGroups() {
  const container = $("groups");
  if (!state.groups) return;
  if (!state.groups.available) { note(container, state.groups.reason || "not available"); return; }
  container.replaceChildren();
  if (!state.groups.dlqs.length) container.append(el("p", "no DLQ found", "muted"));
  for (const d of state.groups.dlqs) {
    const section = el("div");
    section.dataset.queue = d.queue;
    const read = d.messages_read < d.approximate_total ? ` (read ${d.messages_read} of ~${d.approximate_total})` : "";
    section.append(el("h3", `${d.queue}: ${d.depth} message(s)${read}`));
    if (d.error) section.append(el("p", d.error, "error"));
    if (!d.groups.length && !d.error) section.append(el("p", "empty", "muted"));
    if (d.groups.length) {
      section.append(table(["count", "failure signature", "order ids", "last sent"], d.groups.map((g) => [
        el("td", g.count, "n"), el("td", g.signature), el("td", (g.order_ids || []).join(", ") || "–", "ids"),
        el("td", when(g.last_sent))])));
    }
    for (const text of d.notes || []) section.append(el("p", text, "muted"));
    container.append(section);
  }
  for (const text of state.groups.notes || []) container.append(el("p", text, "muted"));
}

function mergeDeadLetters(event) { // a dlq_message event: new dead letters by signature
  if (!state.groups || !state.groups.available) return;
  let d = state.groups.dlqs.find((x) => x.queue === event.queue);
  if (!d) {
    d = { queue: event.queue, depth: 0, messages_read: 0, approximate_total: 0, notes: [], groups: [] };
    state.groups.dlqs.push(d);
  }
  d.depth = event.depth ?? d.depth;
  for (const s of event.signatures || []) {
    let g = d.groups.find((x) => x.signature === s.signature);
    if (!g) { g = { signature: s.signature, count: 0, order_ids: [], last_sent: null }; d.groups.push(g); }
    g.count += s.count;
    for (const m of event.samples || []) {
      if (m.signature === s.signature && m.order_id && !g.order_ids.includes(m.order_id) && g.order_ids.length < 5) {
        g.order_ids.push(m.order_id);
      }
    }
    g.last_sent = new Date((event.at || Date.now() / 1000) * 1000).toISOString();
  }
  d.groups.sort((a, b) => b.count - a.count);
}

// ------------------------------------------------------------------ alerts / writes
function renderAlerts(answer) {
  const container = $("alerts");
  if (!answer.available) { note(container, answer.reason || "not available"); return; }
  if (!answer.alerts.length) { note(container, "no alerts received"); return; }
  container.replaceChildren(table(["status", "alert", "severity", "summary", "since"], answer.alerts.map((a) => [
    el("td", a.status, a.status === "firing" ? "hot" : ""), el("td", a.alertname || a.fingerprint),
    el("td", a.severity), el("td", a.summary), el("td", when(a.starts_at))])));
  if (answer.truncated) container.append(el("p", `${answer.total} alerts in all; the newest are shown`, "muted"));
}

function argsText(args) {
  if (!args || typeof args !== "object") return "";
  return Object.entries(args).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
}

const COUNTS = ["matched", "moved", "failed", "remaining", "changed", "ok", "unreachable"];
function countsText(counts) { // the numbers a person reads first, in a fixed order
  if (!counts || typeof counts !== "object") return "";
  return COUNTS.filter((k) => typeof counts[k] === "number").map((k) => `${k} ${counts[k]}`).join(", ");
}

const PHASES = { requested: "waiting for approval", approved: "approved, running", intent: "running",
                 denied: "denied", expired: "expired" };

function renderWrites(answer) {
  const container = $("writes");
  if (!answer.available) { note(container, answer.reason || "not available"); return; }
  if (!answer.writes.length) { note(container, "no writes in the audit log"); return; }
  container.replaceChildren(table(["time", "write", "who", "outcome"], answer.writes.map((w) => {
    const what = el("td");
    what.append(el("strong", w.tool), el("span", w.dry_run ? " (preview) " : " "), el("code", argsText(w.arguments)));
    const who = w.approver ? `${w.caller}, approved by ${w.approver}` : w.caller;
    const status = w.phase === "outcome" ? w.outcome : PHASES[w.phase] || w.outcome || w.phase;
    const outcome = [status, countsText(w.counts)].filter(Boolean).join(": ");
    const row = [el("td", when(w.time)), what, el("td", who), el("td", outcome)];
    return row;
  })));
  container.querySelectorAll("tbody tr").forEach((tr, i) => { tr.dataset.callId = answer.writes[i].call_id; });
  for (const text of answer.notes || []) container.append(el("p", text, "muted"));
}

// ------------------------------------------------------------------ approvals -----
function approvalCard(r) {
  const card = el("article", undefined, "approval");
  card.dataset.id = r.id;
  card.dataset.status = r.status;
  const head = el("div");
  head.append(el("strong", r.tool), el("span", " "), el("span", r.status, "status"),
              el("span", ` requested by ${r.requester} ${ago(r.created_at)}`, "muted"));
  if (r.status === "pending") head.append(el("span", `, expires ${ago(r.expires_at)}`, "muted"));
  card.append(head, el("div", argsText(r.arguments), "args"));
  if (r.bound) card.append(el("div", `held to ${r.bound.argument} ≤ ${r.bound.value} (what the preview showed)`,
                              "muted"));
  card.append(el("pre", r.preview || "", "preview"));
  if (r.status === "pending") {
    const actions = el("div", undefined, "actions");
    const approve = el("button", "Approve", "approve");
    const reason = el("input");
    reason.className = "reason";
    reason.placeholder = "reason (for deny)";
    reason.maxLength = 500;
    const deny = el("button", "Deny", "deny");
    const message = el("span", "", "message");
    approve.type = deny.type = "button";
    approve.addEventListener("click", () => decide(r.id, "approve", {}, card));
    deny.addEventListener("click", () => decide(r.id, "deny", { reason: reason.value.trim() || null }, card));
    actions.append(approve, reason, deny, message);
    card.append(actions);
  } else {
    const by = r.approver ? ` by ${r.approver}` : "";
    const result = r.result ? countsText(r.result) : "";
    const text = [`${r.status}${by}${r.decided_at ? " " + ago(r.decided_at) : ""}`, result, r.reason, r.error]
      .filter(Boolean).join(" · ");
    card.append(el("div", text, "outcome"));
  }
  return card;
}

async function decide(id, action, body, card) {
  const buttons = card.querySelectorAll("button");
  const message = card.querySelector(".message");
  buttons.forEach((b) => { b.disabled = true; });
  message.className = "message muted";
  message.textContent = action === "approve" ? "approving; the write runs now…" : "denying…";
  try {
    const decided = await api(`api/approvals/${encodeURIComponent(id)}/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    card.replaceWith(approvalCard(decided));
  } catch (err) {
    message.className = "message error";
    message.textContent = err.message;
    buttons.forEach((b) => { b.disabled = err.status === 409; });
  }
  soon("approvals", loadApprovals, 200);
}

function renderApprovals() {
  const pending = state.approvals.filter((r) => r.status === "pending");
  const decided = state.approvals.filter((r) => r.status !== "pending").slice(0, 10);
  $("pending-count").textContent = `${pending.length} pending`;
  const inbox = $("inbox");
  inbox.replaceChildren(...pending.map(approvalCard));
  if (!pending.length) inbox.append(el("p", "nothing waits for approval", "muted"));
  $("decided-list").replaceChildren(...decided.map(approvalCard));
  const focusBox = $("approval-focus");
  focusBox.replaceChildren();
  if (state.focus) {
    const inList = document.querySelector(`#approvals-panel .approval[data-id="${CSS.escape(state.focus.id)}"]`);
    const card = inList || approvalCard(state.focus);
    if (!inList) focusBox.append(card);
    card.classList.add("focused");
  }
}

async function loadApprovals() {
  try {
    state.approvals = (await api("api/approvals?status=all&limit=50")).approvals;
    const id = focusedId();
    if (id) {
      try { state.focus = await api(`api/approvals/${encodeURIComponent(id)}`); }
      catch (err) { state.focus = null; $("approval-focus").replaceChildren(el("p", `${id}: ${err.message}`, "error")); }
    } else {
      state.focus = null;
    }
    renderApprovals();
  } catch (err) {
    note($("inbox"), `approvals: ${err.message}`, "error");
  }
}

function focusedId() {
  const m = /^#\/approvals\/([A-Za-z0-9_-]{1,80})$/.exec(location.hash);
  return m ? m[1] : null;
}

// ------------------------------------------------------------------ loading -------
async function loadPanel(path, apply, container) {
  try {
    apply(await api(path));
  } catch (err) {
    if (container) note(container, `${path}: ${err.message}`, "error");
  }
}

function loadGroups() {
  return loadPanel("api/console/groups", (a) => { state.groups = a; renderGroups(); }, $("groups"));
}
function loadWrites() { return loadPanel("api/console/writes?limit=30", renderWrites, $("writes")); }
function loadAlerts() { return loadPanel("api/console/alerts?limit=30", renderAlerts, $("alerts")); }

function loadAll() {
  loadApprovals();
  loadPanel("api/console/depths", (a) => {
    if (!a.available) { $("depth-note").textContent = a.reason || ""; return; }
    for (const name of a.dlqs) {
      const had = state.depth.get(name) || [];
      const earlier = Array.isArray(a.cloudwatch?.[name]) ? a.cloudwatch[name] : [];
      const merged = new Map([...earlier, ...(a.queues[name] || []), ...had].map((p) => [p[0], p[1]]));
      state.depth.set(name, [...merged.entries()].sort((x, y) => x[0] - y[0]));
    }
    const cloud = Object.values(a.cloudwatch || {}).some((v) => Array.isArray(v) && v.length);
    $("depth-note").textContent = a.since ? `(live samples since ${when(a.since)}${cloud ? "; before: CloudWatch" : ""})`
      : cloud ? "(CloudWatch until the first live sample)" : "";
    renderDepthCharts();
  }, $("depth-charts"));
  loadPanel("api/console/metrics", (a) => {
    if (!a.available) { note($("metric-charts"), a.reason || "not available"); return; }
    state.metricCharts = a.charts;
    renderMetricCharts();
  }, $("metric-charts"));
  loadGroups();
  loadWrites();
  loadAlerts();
}

// ------------------------------------------------------------------ the feed ------
function apply(type, data) {
  if (type === "queue_depth") {
    const before = state.queues.get(data.queue);
    state.queues.set(data.queue, data);
    renderQueues();
    if (data.is_dlq) {
      const depth = data.visible + data.in_flight;
      addDepthPoint(data.queue, data.at || Date.now() / 1000, depth);
      soon("depth", renderDepthCharts, 100);
      // Fewer dead letters (moved away): read the groups again once the depth has held still
      // for a while, so the read (analyze_dlq hides what it reads for a moment) never races a redrive.
      if (before && depth < before.visible + before.in_flight) soon("groups", loadGroups, 15000);
    }
  } else if (type === "dlq_message") {
    mergeDeadLetters(data);
    renderGroups();
  } else if (type === "alert") {
    soon("alerts", loadAlerts, 500);
  } else if (type === "write") {
    soon("writes", loadWrites, 500);
    if (data.phase === "outcome" && !data.dry_run) soon("groups", loadGroups, 1000); // a write finished
  } else if (type === "approval") {
    soon("approvals", loadApprovals, 200);
  } else if (type === "metrics") {
    mergeMetrics(data);
    renderMetricCharts();
  } else if (type === "snapshot") {
    for (const q of data.queues || []) state.queues.set(q.queue, q);
    renderQueues();
  }
}

function setStatus(ok, message) {
  const node = $("status");
  node.className = ok ? "ok" : "bad";
  node.textContent = message;
}

async function connect() {
  const extra = { Accept: "text/event-stream" };
  if (state.lastId !== null) extra["Last-Event-ID"] = state.lastId;
  let response;
  try {
    response = await fetch("events", { headers: headers(extra), cache: "no-store" });
  } catch (err) {
    setStatus(false, `cannot reach the server (${err}); retrying`);
    return setTimeout(connect, 2000);
  }
  if (response.status === 401) {
    setStatus(false, "this server needs a bearer token");
    $("auth").hidden = false;
    return;
  }
  if (!response.ok) {
    let why = "";
    try { why = (await response.json()).error || ""; } catch (err) { why = ""; }
    setStatus(false, `feed answered HTTP ${response.status}${why ? ": " + why : ""}; retrying`);
    return setTimeout(connect, response.status === 503 ? 30000 : 3000);
  }
  $("auth").hidden = true;
  setStatus(true, "live");
  loadAll();
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    let chunk;
    try { chunk = await reader.read(); } catch (err) { break; }
    if (chunk.done) break;
    buffered += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffered.indexOf("\n\n")) >= 0) {
      const frame = buffered.slice(0, cut);
      buffered = buffered.slice(cut + 2);
      let type = "message", id = null;
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        else if (line.startsWith("id:")) id = line.slice(3).trim();
      }
      if (id) state.lastId = id;
      if (!data.length) continue;
      let parsed;
      try { parsed = JSON.parse(data.join("\n")); } catch (err) { continue; }
      apply(type, parsed);
    }
  }
  setStatus(false, "feed closed; reconnecting");
  setTimeout(connect, 1000);
}

$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("opsmcp_token", $("token").value.trim());
  $("token").value = "";
  connect();
});
window.addEventListener("hashchange", () => soon("approvals", loadApprovals, 0));
setInterval(() => { if (state.depth.size) renderDepthCharts(); }, 5000); // the window slides with the clock

renderQueues();
connect();
