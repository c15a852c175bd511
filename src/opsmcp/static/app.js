// opsmcp live page: reads the /events SSE feed with fetch (EventSource cannot send an
// Authorization header), keeps a small model of queues, DLQ groups, alerts and writes, and
// redraws it. No build step, no dependencies. The token lives in sessionStorage only.
"use strict";

const state = { queues: new Map(), groups: new Map(), alerts: [], writes: [], lastId: null };
const KEEP = 20;
const $ = (id) => document.getElementById(id);

function text(tag, value, cls) {
  const el = document.createElement(tag);
  el.textContent = value === null || value === undefined ? "–" : String(value);
  if (cls) el.className = cls;
  return el;
}

function renderQueues() {
  const body = $("queues").querySelector("tbody");
  body.replaceChildren();
  const names = [...state.queues.keys()].sort();
  for (const name of names) {
    const q = state.queues.get(name);
    const tr = document.createElement("tr");
    tr.dataset.queue = name;
    if (q.is_dlq) tr.className = "dlq";
    const hot = (value) => (value || 0) > 0 ? "n hot" : "n";
    tr.append(text("td", name), text("td", q.visible, q.is_dlq ? hot(q.visible) : "n"), text("td", q.in_flight, "n"),
              text("td", q.delayed, "n"), text("td", q.dlq), text("td", q.dlq_depth, hot(q.dlq_depth)));
    body.append(tr);
  }
}

function renderList(id, items, line) {
  const ul = $(id);
  ul.replaceChildren();
  if (!items.length) { ul.append(text("li", "none", "muted")); return; }
  for (const item of items) ul.append(text("li", line(item)));
}

function render() {
  renderQueues();
  const groups = [...state.groups.values()].sort((a, b) => b.count - a.count);
  renderList("groups", groups, (g) => `${g.queue}: ${g.signature} ×${g.count}`);
  renderList("alerts", state.alerts, (a) =>
    `${a.status || "firing"} ${a.labels?.alertname || a.fingerprint || "alert"} ${a.labels?.severity || ""} ${a.annotations?.summary || ""}`);
  renderList("writes", state.writes, (w) =>
    `${w.time || ""} ${w.tool} ${w.phase} ${w.outcome}${w.dry_run ? " (dry run)" : ""} by ${w.caller}`);
}

function apply(type, data) {
  if (type === "queue_depth") {
    state.queues.set(data.queue, data);
  } else if (type === "dlq_message") {
    for (const s of data.signatures || []) {
      const key = `${data.queue}\u0000${s.signature}`;
      const g = state.groups.get(key) || { queue: data.queue, signature: s.signature, count: 0 };
      g.count += s.count;
      state.groups.set(key, g);
    }
  } else if (type === "alert") {
    state.alerts = [data, ...state.alerts.filter((a) => a.fingerprint !== data.fingerprint)].slice(0, KEEP);
  } else if (type === "write") {
    state.writes = [data, ...state.writes].slice(0, KEEP);
  } else if (type === "snapshot") {
    for (const q of data.queues || []) state.queues.set(q.queue, q);
    for (const e of data.dlq_messages || []) apply("dlq_message", e);
    for (const a of (data.alerts || []).slice().reverse()) apply("alert", a);
    for (const w of (data.writes || []).slice().reverse()) apply("write", w);
  }
}

function setStatus(ok, message) {
  const el = $("status");
  el.className = ok ? "ok" : "bad";
  el.textContent = message;
}

async function connect() {
  const token = sessionStorage.getItem("opsmcp_token");
  const headers = { Accept: "text/event-stream" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (state.lastId !== null) headers["Last-Event-ID"] = state.lastId;
  let response;
  try {
    response = await fetch("events", { headers, cache: "no-store" });
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
    setStatus(false, `feed answered HTTP ${response.status}; retrying`);
    return setTimeout(connect, 3000);
  }
  $("auth").hidden = true;
  setStatus(true, "live");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
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
      try { apply(type, JSON.parse(data.join("\n"))); } catch (err) { continue; }
      render();
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

render();
connect();
