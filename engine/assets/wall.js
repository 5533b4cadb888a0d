// citybrain wall display: live over Server-Sent Events, no dependencies, no CDN.
"use strict";

const state = { alerts: new Map(), kpis: { time: 0, values: {} }, status: null, config: null, lastMessage: 0, fresh: new Set() };
const HISTORY_MS = 3600 * 1000;
const history = new Map(); // tile id -> [[wall ms, value]]

const DISTRICTS = [
  // A stylised cartogram of Ordos' nine districts and banners (column, row).
  ["hangjin", "Hangjin", 0, 0], ["dalad", "Dalad", 1, 0], ["jungar", "Jungar", 2, 0],
  ["otog", "Otog", 0, 1], ["dongsheng", "Dongsheng", 1, 1], ["ejin-horo", "Ejin Horo", 2, 1],
  ["otog-front", "Otog Front", 0, 2], ["uxin", "Uxin", 1, 2], ["kangbashi", "Kangbashi", 2, 2],
];

function kpi(name, group) {
  const groups = state.kpis.values[name];
  if (!groups) return null;
  if (group === undefined) {
    const values = Object.values(groups);
    return values.length ? values.reduce((a, b) => a + b, 0) : 0;
  }
  return groups[group] ?? null;
}

function activeWhere(pred) {
  let n = 0;
  for (const t of state.alerts.values()) if (pred(t)) n++;
  return n;
}

function distinctWhere(pred, label) {
  const seen = new Set();
  for (const t of state.alerts.values()) if (pred(t) && t.labels[label]) seen.add(t.labels[label]);
  return seen.size;
}

const TILES = [
  { id: "critical", label: "Critical alerts", unit: "", alarm: v => v > 0,
    value: () => activeWhere(t => t.severity === "critical") },
  { id: "faces", label: "Faces in CH4 alarm", unit: "", alarm: v => v > 0,
    value: () => kpi("faces_in_alarm") ?? distinctWhere(t => t.labels.metric === "ch4" && t.severity === "critical", "face") },
  { id: "irrigation", label: "Greenhouses needing water", unit: "",
    value: () => kpi("irrigation_needed") ?? distinctWhere(t => t.labels.metric === "soil_water", "greenhouse") },
  { id: "fever", label: "Animals with fever", unit: "", alarm: v => v > 0,
    value: () => kpi("animals_with_fever") ?? activeWhere(t => t.labels.metric === "body_temp") },
  { id: "backlog", label: "Open citizen reports", unit: "", value: () => kpi("open_backlog") },
  { id: "closure", label: "Closure rate", unit: "%", upIsGood: true,
    value: () => { const r = kpi("closure_rate", ""); return r === null ? null : Math.round(r * 1000) / 10; } },
  { id: "overdue", label: "Open reports overdue", unit: "%",
    value: () => { const r = kpi("overdue_share", ""); return r === null ? null : Math.round(r * 1000) / 10; } },
];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function buildTiles() {
  const root = document.getElementById("tiles");
  for (const tile of TILES) {
    const spark = svg("svg", { viewBox: "0 0 200 44", preserveAspectRatio: "none" });
    spark.append(svg("polyline", { points: "" }));
    root.append(el("div", { class: "tile", id: "tile-" + tile.id, "data-tile": tile.id },
      el("div", { class: "label" }, tile.label),
      el("div", { class: "row" }, el("span", { class: "value" }, "–"), el("span", { class: "unit" }, tile.unit),
        el("span", { class: "trend flat" }, "▶")),
      spark));
  }
}

function renderTiles() {
  const now = Date.now();
  for (const tile of TILES) {
    const node = document.getElementById("tile-" + tile.id);
    const v = tile.value();
    node.querySelector(".value").textContent = v === null || v === undefined ? "–" : String(v);
    node.classList.toggle("alarm", v !== null && !!tile.alarm && tile.alarm(v));
    if (v === null || v === undefined) continue;
    const h = history.get(tile.id) || [];
    h.push([now, v]);
    while (h.length && h[0][0] < now - HISTORY_MS) h.shift();
    history.set(tile.id, h);
    const past = h.find(p => p[0] >= now - 5 * 60 * 1000) || h[0];
    const trend = node.querySelector(".trend");
    const delta = v - past[1];
    trend.textContent = delta > 0 ? "▲" : delta < 0 ? "▼" : "▶";
    // Amber for a change the wrong way, green for the right way.
    const good = tile.upIsGood ? delta > 0 : delta < 0;
    trend.className = "trend " + (delta === 0 ? "flat" : good ? "down" : "up");
    const values = h.map(p => p[1]);
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    // The x axis spans the history we have, up to an hour.
    const t0 = Math.max(now - HISTORY_MS, h[0][0]);
    const width = Math.max(1, now - t0);
    node.querySelector("polyline").setAttribute("points",
      h.map(([t, y]) => `${((t - t0) / width * 200).toFixed(1)},${(40 - (y - lo) / span * 36).toFixed(1)}`).join(" "));
  }
}

function age(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

const SEVERITY_ORDER = { critical: 0, warning: 1, info: 2 };
const UNITS = { ch4: "%", co: "ppm", air_velocity: "m/s", airflow: "m³/min", temperature: "°C", air_temp: "°C",
  humidity: "%", soil_water: "%", soil_temp: "°C", body_temp: "°C" };
const TIME = { hour12: false, timeZone: "Asia/Shanghai" };

function renderAlerts() {
  const rows = document.getElementById("alert-rows");
  const list = [...state.alerts.values()].sort((a, b) =>
    (SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity]) || (b.event_time - a.event_time));
  document.getElementById("alert-count").textContent = String(list.length);
  rows.replaceChildren();
  if (!list.length) rows.append(el("tr", { class: "empty" }, el("td", { colspan: "6" }, "no active alerts")));
  const now = Date.now();
  for (const t of list.slice(0, 16)) {
    // The place, then the sensor: five sensors of one face must not look alike.
    const place = t.labels.face || t.labels.greenhouse || t.labels.animal || t.labels.district;
    const sensor = t.entity.split("/").pop();
    const where = place && place !== t.entity ? `${place} · ${sensor}` : t.entity;
    const key = t.rule + "|" + t.entity;
    const row = el("tr", { class: t.severity + (state.fresh.has(key) ? " fresh" : ""), "data-alert": key },
      el("td", {}, el("span", { class: "sev" }, t.severity)),
      el("td", { title: t.summary }, t.summary || t.rule),
      el("td", { title: t.entity }, where),
      el("td", {}, String(t.value) + (UNITS[t.labels.metric] ? " " + UNITS[t.labels.metric] : "")),
      el("td", {}, age(now - t.event_time)),
      el("td", {}, t.labels.level || t.labels.escalation_level || "–"));
    rows.append(row);
  }
  state.fresh.clear();
}

function renderMines() {
  const faces = new Map(); // face -> {mine, ch4, severity}
  for (const [face, value] of Object.entries(state.kpis.values.max_ch4_per_face || {})) {
    faces.set(face, { mine: face.split("/")[0], ch4: value, severity: "" });
  }
  for (const t of state.alerts.values()) {
    if (t.labels.metric !== "ch4" || !t.labels.face) continue;
    const f = faces.get(t.labels.face) || { mine: t.labels.mine || t.labels.face.split("/")[0], ch4: null, severity: "" };
    if (f.severity !== "critical") f.severity = t.severity === "critical" ? "critical" : "warning";
    if (f.ch4 === null || t.value > f.ch4) f.ch4 = t.value;
    faces.set(t.labels.face, f);
  }
  const mines = new Map();
  for (const [face, f] of [...faces.entries()].sort()) {
    if (!mines.has(f.mine)) mines.set(f.mine, []);
    mines.get(f.mine).push([face, f]);
  }
  const root = document.getElementById("mines");
  root.replaceChildren();
  if (!mines.size) root.append(el("div", { class: "mine" }, "no mine data yet"));
  for (const [mine, list] of mines) {
    const facesNode = el("div", { class: "faces" });
    for (const [face, f] of list) {
      facesNode.append(el("div", { class: "face " + f.severity, "data-face": face },
        face.split("/").slice(1).join("/") || face, el("b", {}, f.ch4 === null ? "–" : f.ch4.toFixed(2) + "%")));
    }
    root.append(el("div", { class: "mine" }, el("h3", {}, mine), facesNode));
  }
}

function renderDistricts() {
  const map = document.getElementById("district-map");
  map.replaceChildren();
  const backlog = state.kpis.values.open_backlog || {};
  const max = Math.max(1, ...Object.values(backlog));
  for (const [id, name, col, row] of DISTRICTS) {
    const n = backlog[id] ?? 0;
    const heat = n / max;
    const fill = `rgb(${Math.round(30 + 200 * heat)}, ${Math.round(70 + 40 * (1 - heat))}, ${Math.round(110 * (1 - heat) + 40)})`;
    const x = col * 200, y = row * 110;
    map.append(svg("rect", { x: x + 4, y: y + 4, width: 192, height: 102, fill, "data-district": id }));
    const label = svg("text", { x: x + 100, y: y + 40 }); label.textContent = name; map.append(label);
    const value = svg("text", { x: x + 100, y: y + 78, class: "n" }); value.textContent = String(n); map.append(value);
  }
}

function renderMeta() {
  const asof = state.kpis.time || (state.status && state.status.sensor_watermark);
  document.getElementById("asof").textContent = asof ? new Date(asof).toLocaleTimeString("en-GB", TIME) : "–";
  document.getElementById("clock").textContent = new Date().toLocaleTimeString("en-GB", TIME) + " Ordos";
  const stale = Date.now() - state.lastMessage;
  const banner = document.getElementById("banner");
  if (state.lastMessage && stale > 5000) {
    banner.textContent = `DATA STALE: no update from the engine for ${Math.round(stale / 1000)} s`;
    banner.classList.remove("hidden");
  } else {
    banner.classList.add("hidden");
  }
}

// While the last rule reload failed, the previous rules keep running: say so, with the first
// problem (file:line:column), until a reload succeeds.
function renderConfig() {
  const banner = document.getElementById("config-banner");
  const c = state.config;
  if (c && !c.success) {
    const first = (c.error || "").split("\n")[0];
    banner.textContent = `RULE RELOAD FAILED — previous rules still running: ${first}`;
    banner.title = c.error || "";
    banner.classList.remove("hidden");
  } else {
    banner.classList.add("hidden");
  }
}

// While the Kafka brokers are away or the alert log cannot be written, the engine waits (and
// loses nothing): say what it waits for, and since when, until it is back.
function renderHealth() {
  const banner = document.getElementById("health-banner");
  const st = state.status || {};
  const since = p => Math.max(0, Math.round(((st.wall_time || Date.now()) - p.since) / 1000));
  const parts = [];
  if (st.kafka_away) parts.push(`KAFKA BROKERS AWAY for ${since(st.kafka_away)} s — waiting, nothing is lost`);
  if (st.outputs_blocked) parts.push(`ALERT LOG NOT WRITABLE for ${since(st.outputs_blocked)} s — intake paused`);
  if (parts.length) {
    banner.textContent = parts.join(" · ");
    banner.title = [st.kafka_away, st.outputs_blocked].filter(Boolean).map(p => p.reason).join("\n");
    banner.classList.remove("hidden");
  } else {
    banner.classList.add("hidden");
  }
}

// A receiver that answered 410 Gone gets nothing until its config changes: its alerts go to
// its dead letter. Name it, with the answer and since when, in red, until it is enabled again.
function renderDispatch() {
  const banner = document.getElementById("dispatch-banner");
  const disabled = (state.status && state.status.receivers_disabled) || [];
  if (disabled.length) {
    const when = r => new Date(r.since).toLocaleTimeString("en-GB", TIME);
    const names = disabled.map(r => `${r.name} (since ${when(r)})`).join(", ");
    banner.textContent = `DISPATCH RECEIVER DISABLED: ${names} — alerts to it go to its dead letter until its config changes`;
    banner.title = disabled.map(r => `${r.name}: ${r.reason}`).join("\n");
    banner.classList.remove("hidden");
  } else {
    banner.classList.add("hidden");
  }
  // With dispatch configured: how many transitions the receivers have not acknowledged yet.
  const pill = document.getElementById("dispatch");
  const queue = state.status ? state.status.dispatch_queue : null;
  if (queue === null || queue === undefined) {
    pill.className = "pill hidden";
  } else {
    pill.textContent = queue === 0 ? "dispatch: all delivered" : `dispatch: ${queue} pending`;
    pill.className = "pill" + (disabled.length ? " down" : queue === 0 ? " live" : "");
  }
}

function render() { renderTiles(); renderAlerts(); renderMines(); renderDistricts(); renderMeta(); renderConfig(); renderHealth(); renderDispatch(); }

function applyAlert(t) {
  const key = t.rule + "|" + t.entity;
  if (t.state === "firing") { state.alerts.set(key, t); state.fresh.add(key); } else state.alerts.delete(key);
}

let source = null;
let retry = 1000;
function connect() {
  const pill = document.getElementById("connection");
  // A read token in the page's URL (/?token=...) goes on to the stream: EventSource cannot
  // send an Authorization header.
  const token = new URLSearchParams(location.search).get("token");
  source = new EventSource(token ? "/api/stream?token=" + encodeURIComponent(token) : "/api/stream");
  source.addEventListener("snapshot", e => {
    const snap = JSON.parse(e.data);
    state.alerts.clear();
    for (const t of snap.alerts.active) applyAlert(t);
    state.fresh.clear();
    state.kpis = snap.kpis; state.status = snap.status; state.config = snap.config; state.lastMessage = Date.now();
    pill.textContent = "live"; pill.className = "pill live"; retry = 1000;
    render();
  });
  source.addEventListener("alert", e => {
    applyAlert(JSON.parse(e.data).transition); state.lastMessage = Date.now();
    renderAlerts(); renderMines(); renderTiles();
  });
  source.addEventListener("kpis", e => { state.kpis = JSON.parse(e.data).snapshot; state.lastMessage = Date.now(); });
  source.addEventListener("status", e => { state.status = JSON.parse(e.data).status; state.lastMessage = Date.now(); renderHealth(); renderDispatch(); });
  source.addEventListener("config", e => { state.config = JSON.parse(e.data).status; state.lastMessage = Date.now(); renderConfig(); });
  source.addEventListener("lagged", () => { source.close(); connect(); });
  source.onerror = () => {
    // The engine restarted or went away: reconnect with backoff and take a fresh snapshot.
    pill.textContent = "reconnecting…"; pill.className = "pill down";
    source.close();
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

buildTiles();
render();
connect();
setInterval(render, 1000);
