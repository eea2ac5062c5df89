// edgemq console: one page, tabs by URL hash. Every value from the broker is rendered with
// textContent (never innerHTML): client ids, usernames and topics are client-controlled.
"use strict";

const TOKEN_KEY = "edgemq-admin-token";
const POLL_MS = 2000;
const HISTORY = 150; // samples kept: 5 minutes at one every 2 s
const COLORS = ["#2463eb", "#e8710a", "#2e7d32", "#c62828", "#8e24aa", "#00838f", "#6d4c41", "#546e7a"];

const $ = (id) => document.getElementById(id);

// ---- API -------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  if (response.status === 401) {
    showLogin(token ? "The token was not accepted." : "");
    throw new Unauthorized();
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  // /readyz answers 503 with its checks when not ready: that is data, not a failure.
  if (!response.ok && !(path === "/readyz" && body)) {
    throw new Error(`${options.method || "GET"} ${path}: ${response.status} ${(body && body.error) || ""}`);
  }
  return body;
}

function enc(s) {
  return encodeURIComponent(s);
}

function showError(e) {
  if (e instanceof Unauthorized) return;
  $("error").textContent = String(e.message || e);
}

// ---- login -----------------------------------------------------------------------------

function showLogin(message) {
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("token").focus();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  $("login").hidden = true;
  $("logout").hidden = false;
  poll();
  show(currentTab());
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

// ---- rendering helpers -----------------------------------------------------------------

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function button(label, cls, onClick) {
  const b = el("button", label, cls);
  b.type = "button";
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    onClick();
  });
  return b;
}

// Fill `tableId`'s body: one row per item, `cells(item)` gives strings or elements.
function fillTable(tableId, items, cells, onRowClick) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (items.length === 0) {
    const td = el("td", "none", "empty");
    td.colSpan = $(tableId).tHead.rows[0].cells.length;
    const tr = el("tr");
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const item of items) {
    const tr = el("tr");
    for (const c of cells(item)) {
      const td = el("td");
      if (c instanceof Node) td.append(c);
      else td.textContent = c === null || c === undefined ? "" : String(c);
      tr.append(td);
    }
    if (onRowClick) {
      tr.className = "clickable";
      tr.addEventListener("click", () => onRowClick(item, tr));
    }
    body.append(tr);
  }
}

function duration(secs) {
  if (secs === null || secs === undefined) return "";
  if (secs >= 86400) return `${Math.floor(secs / 86400)}d ${Math.floor((secs % 86400) / 3600)}h`;
  if (secs >= 3600) return `${Math.floor(secs / 3600)}h ${Math.floor((secs % 3600) / 60)}m`;
  if (secs >= 60) return `${Math.floor(secs / 60)}m ${secs % 60}s`;
  return `${secs}s`;
}

function bytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function yesNo(b) {
  return b ? "yes" : "no";
}

// ---- overview: poll, keep history, draw SVG ----------------------------------------------

const history = []; // { t, connections, inRate, outRate, drops: {reason: rate} }
let previous = null;

async function poll() {
  try {
    const o = await api("/api/v1/overview");
    const t = Date.now();
    const sample = { t, connections: o.clients_connected, inRate: 0, outRate: 0, drops: {} };
    if (previous) {
      const dt = Math.max((t - previous.t) / 1000, 0.001);
      // Counters only grow; a negative delta means the broker restarted.
      const rate = (a, b) => Math.max(a - b, 0) / dt;
      sample.inRate = rate(o.messages_received, previous.o.messages_received);
      sample.outRate = rate(o.messages_sent, previous.o.messages_sent);
      for (const [reason, n] of Object.entries(o.drops)) {
        sample.drops[reason] = rate(n, previous.o.drops[reason] || 0);
      }
    }
    previous = { t, o };
    history.push(sample);
    if (history.length > HISTORY) history.shift();
    $("status").textContent = `edgemq ${o.version} · up ${duration(o.uptime_secs)}`;
    $("error").textContent = "";
    renderOverview(o);
  } catch (e) {
    showError(e);
  }
}

function renderOverview(o) {
  const cards = [
    ["Clients connected", o.clients_connected],
    ["Client maximum", o.clients_maximum],
    ["Sessions", o.sessions],
    ["Subscriptions", o.subscriptions],
    ["Retained", `${o.retained_messages} (${bytes(o.retained_bytes)})`],
    ["Messages in", o.messages_received],
    ["Messages out", o.messages_sent],
    ["Bytes in / out", `${bytes(o.bytes_received)} / ${bytes(o.bytes_sent)}`],
    ["Connections accepted", o.connections_accepted],
    ["Drops", o.drops_total],
    ["Memory", `${bytes(o.memory.accounted_bytes)} of ${bytes(o.memory.budget_bytes)}`],
    ["Store", `${o.store.state}${o.store.budget_bytes ? " · " + bytes(o.store.bytes) : ""}`],
  ];
  $("cards").replaceChildren(
    ...cards.map(([label, value]) => {
      const card = el("div", null, "card");
      card.append(el("div", label, "label"), el("div", value, "value"));
      return card;
    })
  );
  chart($("chart-connections"), [{ name: "connected", values: history.map((s) => s.connections) }]);
  chart($("chart-messages"), [
    { name: "in", values: history.map((s) => s.inRate) },
    { name: "out", values: history.map((s) => s.outRate) },
  ]);
  const reasons = Object.keys(o.drops).filter((r) => history.some((s) => s.drops[r] > 0));
  chart(
    $("chart-drops"),
    reasons.length
      ? reasons.map((r) => ({ name: r, values: history.map((s) => s.drops[r] || 0) }))
      : [{ name: "none", values: history.map(() => 0) }]
  );
  fillTable("drops-table", Object.entries(o.drops), ([reason, n]) => [reason, n]);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

function niceMax(v) {
  if (v <= 1) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// A line chart of `series` (each { name, values }) over the last HISTORY samples.
function chart(container, series) {
  // Drawn at the container's pixel width so text is not stretched (400 while hidden).
  const W = container.clientWidth || 400, H = 160, L = 40, R = 8, T = 8, B = 18;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  for (const f of [0, 0.5, 1]) {
    const y = T + (H - T - B) * (1 - f);
    root.append(svg("line", { x1: L, x2: W - R, y1: y, y2: y, class: "axis" }));
    const label = svg("text", { x: L - 4, y: y + 3, "text-anchor": "end" });
    label.textContent = formatNumber(max * f);
    root.append(label);
  }
  // The x axis spans the history kept so far (up to HISTORY samples), newest at the right.
  const n = Math.max(...series.map((s) => s.values.length), 0);
  const span = svg("text", { x: W - R, y: H - 4, "text-anchor": "end" });
  span.textContent = `last ${duration(Math.round((Math.max(n - 1, 0) * POLL_MS) / 1000))}`;
  root.append(span);
  series.forEach((s, i) => {
    if (s.values.length === 0) return;
    const points = s.values.map((v, j) => {
      const x = L + ((W - L - R) * (n - s.values.length + j)) / Math.max(n - 1, 1);
      const y = T + (H - T - B) * (1 - v / max);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = svg("polyline", { points: points.join(" "), stroke: COLORS[i % COLORS.length] });
    if (i % 2) line.setAttribute("stroke-dasharray", "5 3"); // overlapping series stay visible
    root.append(line);
  });
  const legend = el("div", null, "legend");
  series.forEach((s, i) => {
    const item = el("span", `■ ${s.name}: ${formatNumber(s.values[s.values.length - 1] || 0)}`);
    item.style.color = COLORS[i % COLORS.length];
    legend.append(item);
  });
  container.replaceChildren(root, legend);
}

function formatNumber(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(1);
}

// ---- clients ---------------------------------------------------------------------------

async function loadClients() {
  const q = $("clients-search").value;
  const { clients } = await api(`/api/v1/clients?search=${enc(q)}`);
  fillTable(
    "clients-table",
    clients,
    (s) => [
      s.client_id,
      s.client.address,
      s.client.listener,
      s.client.protocol,
      s.client.username,
      new Date(s.client.connected_at_unix_ms).toLocaleString(),
      button("Disconnect", "danger disconnect", () => disconnectClient(s.client_id)),
    ],
    (s, tr) => inspectClient(s.client_id, tr)
  );
}

async function inspectClient(id, tr) {
  for (const row of $("clients-table").tBodies[0].rows) row.classList.remove("selected");
  tr.classList.add("selected");
  $("client-detail").hidden = false;
  $("client-detail-id").textContent = id;
  $("client-detail-body").textContent = "loading…";
  try {
    const c = await api(`/api/v1/clients/${enc(id)}`);
    $("client-detail-body").textContent = JSON.stringify({ state: c.state, client: c.client }, null, 2);
  } catch (e) {
    $("client-detail-body").textContent = String(e.message || e);
  }
}

async function disconnectClient(id) {
  if (!confirm(`Disconnect client "${id}"? It gets DISCONNECT 0x98 (Administrative action).`)) return;
  try {
    await api(`/api/v1/clients/${enc(id)}/disconnect`, { method: "POST" });
    $("client-detail").hidden = true;
  } catch (e) {
    showError(e);
  }
  await loadClients().catch(showError);
}

// ---- sessions, subscriptions, retained, listeners, health --------------------------------

async function loadSessions() {
  const { sessions } = await api(`/api/v1/sessions?search=${enc($("sessions-search").value)}`);
  fillTable("sessions-table", sessions, (s) => {
    const off = s.offline;
    return [
      s.client_id,
      s.connected ? "connected" : "offline",
      off ? off.queued : "",
      off ? off.inflight : "",
      off ? (off.expires_in_secs === null ? "never" : duration(off.expires_in_secs)) : "",
      off ? off.subscriptions.length : "",
      button("End session", "danger end-session", () => endSession(s.client_id)),
    ];
  });
}

async function endSession(id) {
  if (!confirm(`End the session of "${id}"? Its subscriptions and queued messages are discarded.`)) return;
  try {
    await api(`/api/v1/sessions/${enc(id)}`, { method: "DELETE" });
  } catch (e) {
    showError(e);
  }
  await loadSessions().catch(showError);
}

async function loadSubscriptions() {
  const { subscriptions } = await api(`/api/v1/subscriptions?search=${enc($("subscriptions-search").value)}`);
  fillTable("subscriptions-table", subscriptions, (s) => [
    s.client_id,
    s.filter,
    s.qos,
    yesNo(s.no_local),
    yesNo(s.retain_as_published),
    s.subscription_id,
  ]);
}

async function loadRetained() {
  const filter = $("retained-filter").value.trim() || "#";
  const r = await api(`/api/v1/retained?filter=${enc(filter)}`);
  $("retained-total").textContent = `${r.total} matching`;
  fillTable("retained-table", r.retained, (m) => [
    m.topic,
    m.qos,
    m.bytes,
    m.payload_text === null ? `(${bytes(m.bytes)} binary or long)` : m.payload_text,
    button("Delete", "danger delete-retained", () => deleteRetained(m.topic)),
  ]);
}

async function deleteRetained(topic) {
  if (!confirm(`Delete the retained message of "${topic}"?`)) return;
  try {
    await api(`/api/v1/retained?topic=${enc(topic)}`, { method: "DELETE" });
  } catch (e) {
    showError(e);
  }
  await loadRetained().catch(showError);
}

async function loadListeners() {
  const { listeners } = await api("/api/v1/listeners");
  const expiry = (s) => (s == null ? "–" : new Date(s * 1000).toISOString().slice(0, 16).replace("T", " "));
  fillTable("listeners-table", listeners, (l) => [
    l.name, l.address, l.transport, String(l.connections), l.authentication, expiry(l.certificate_expires_unix_s),
  ]);
}

async function loadHealth() {
  const r = await api("/readyz");
  $("ready").textContent = r.ready ? "Ready" : "Not ready";
  $("ready").className = "ready " + (r.ready ? "ok" : "bad");
  $("health-store").textContent = r.store;
  const body = $("health-table").tBodies[0];
  body.replaceChildren();
  for (const [name, ok] of Object.entries(r.checks)) {
    const tr = el("tr");
    tr.append(el("td", name), el("td", ok ? "pass" : "fail", ok ? "ok" : "bad"));
    body.append(tr);
  }
  const config = await api("/api/v1/config");
  $("config-source").textContent = config.source || "–";
  $("config-outcome").textContent = (config.last_load && config.last_load.outcome) || "–";
  const diagnostics = (config.last_load && config.last_load.diagnostics) || [];
  fillTable("config-table", diagnostics, (d) => [d]);
}

// ---- tabs ------------------------------------------------------------------------------

const LOADERS = {
  overview: async () => {},
  clients: loadClients,
  sessions: loadSessions,
  subscriptions: loadSubscriptions,
  retained: loadRetained,
  listeners: loadListeners,
  health: loadHealth,
};

function currentTab() {
  const tab = location.hash.slice(1);
  return tab in LOADERS ? tab : "overview";
}

function show(tab) {
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === tab);
  for (const name of Object.keys(LOADERS)) $("page-" + name).hidden = name !== tab;
  $("error").textContent = "";
  LOADERS[tab]().catch(showError);
}

for (const name of ["clients", "sessions", "subscriptions", "retained"]) {
  $(name + "-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    LOADERS[name]().catch(showError);
  });
}

window.addEventListener("hashchange", () => show(currentTab()));

if (sessionStorage.getItem(TOKEN_KEY)) $("logout").hidden = false;
show(currentTab());
poll();
setInterval(() => {
  if ($("login").hidden) poll();
}, POLL_MS);
