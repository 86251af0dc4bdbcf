// The fleet dashboard: polls the JSON API and draws with inline SVG (no libraries, no
// network beyond this service).
"use strict";

const REFRESH_MS = 5000;
const MAX_CHARTED = 8; // series per chart; more devices stay readable in the table
const COLORS = ["#2f6fdb", "#d64545", "#1f9d55", "#e08a00", "#7c5cbf", "#0f9bb5", "#c2417f", "#6b7280"];
const PHASES = ["committed", "testing", "downloading", "waiting", "pending", "rolled_back", "failed", "silent"];
const SVG = "http://www.w3.org/2000/svg";
const CHARTS = [
  { id: "chart-p95", key: "p95_ms", scale: 1, digits: 1 },
  { id: "chart-errors", key: "error_rate", scale: 100, digits: 2 },
  { id: "chart-drift", key: "drift", scale: 1, digits: 3 },
];

let focused = null; // device id the charts are narrowed to, or null for all
let lastFleet = null;

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function fmt(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function ago(ts, now) {
  if (!ts) return "never";
  const s = Math.max(0, now - ts);
  if (s >= 86400) return Math.floor(s / 86400) + "d ago";
  if (s >= 3600) return Math.floor(s / 3600) + "h ago";
  if (s >= 60) return Math.floor(s / 60) + "m ago";
  return Math.floor(s) + "s ago";
}

function clock(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

function renderTiles(fleet) {
  const s = fleet.summary;
  const tiles = [
    ["devices", s.devices, ""],
    ["online", s.online, s.online === s.devices ? "good" : ""],
    ["offline", s.devices - s.online, s.devices - s.online > 0 ? "bad" : "good"],
    ["mean p95", s.mean_p95_ms === null ? "–" : fmt(s.mean_p95_ms, 1) + " ms", ""],
    ["mean errors", s.mean_error_rate === null ? "–" : fmt(s.mean_error_rate * 100, 2) + " %", s.mean_error_rate > 0.01 ? "bad" : ""],
    ["active rollouts", s.active_rollouts, ""],
  ];
  const box = document.getElementById("tiles");
  box.replaceChildren(...tiles.map(([label, value, cls]) => {
    const tile = el("div", { class: "tile " + cls, "data-tile": label });
    tile.append(el("div", { class: "label" }, label), el("div", { class: "value" }, String(value)));
    return tile;
  }));
}

function renderDevices(fleet) {
  const body = document.querySelector("#devices tbody");
  const now = fleet.generated;
  body.replaceChildren(...fleet.devices.map((d) => {
    const row = el("tr", { "data-device": d.device_id, class: (d.online ? "" : "offline ") + (focused === d.device_id ? "selected" : "") });
    const state = el("td");
    state.append(el("span", { class: "dot " + (d.online ? "on" : "off") }), document.createTextNode(d.online ? "online" : "offline"));
    const bundle = d.bundle_name ? d.bundle_name + " " + (d.bundle_version || "") : (d.bundle ? d.bundle.slice(0, 12) : "–");
    row.append(
      el("td", {}, d.device_id), el("td", {}, d.group), state, el("td", {}, bundle),
      el("td", { class: "num" }, fmt(d.p95_ms, 1)),
      el("td", { class: "num" }, d.error_rate === null ? "–" : fmt(d.error_rate * 100, 2) + "%"),
      el("td", { class: "num" }, fmt(d.drift, 3)),
      el("td", { class: "num" }, fmt(d.temp_c, 0)),
      el("td", {}, ago(d.last_seen, now)),
    );
    row.addEventListener("click", () => {
      focused = focused === d.device_id ? null : d.device_id;
      refresh();
    });
    return row;
  }));
}

async function control(rolloutId, action) {
  if (action === "abort" && !window.confirm("Abort rollout " + rolloutId + " and roll back its devices?")) return;
  try {
    const response = await fetch("/api/rollouts/" + encodeURIComponent(rolloutId) + "/" + action, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ reason: action + " from the dashboard" }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error);
    showError(null);
  } catch (err) {
    showError(action + " failed: " + err.message);
  }
  refresh();
}

function renderRollouts(views) {
  const box = document.getElementById("rollouts");
  if (!views.length) {
    box.replaceChildren(el("div", { class: "muted" }, "no rollouts yet"));
    return;
  }
  box.replaceChildren(...views.slice(0, 5).map((r) => {
    const item = el("div", { class: "rollout", "data-rollout": r.rollout_id, "data-status": r.status });
    const title = el("div", { class: "title" });
    title.append(
      el("strong", {}, r.rollout_id),
      el("span", { class: "badge " + r.status }, r.status),
      el("span", { class: "muted" }, "group " + r.group + " · bundle " + r.bundle.slice(0, 12) + (r.reason ? " · " + r.reason : "")),
    );
    const active = r.status === "running" || r.status === "paused";
    if (active) {
      const toggle = r.status === "paused" ? "resume" : "pause";
      const button = el("button", { "data-action": toggle }, toggle);
      button.addEventListener("click", () => control(r.rollout_id, toggle));
      const abort = el("button", { class: "danger", "data-action": "abort" }, "abort");
      abort.addEventListener("click", () => control(r.rollout_id, "abort"));
      title.append(button, abort);
    }
    item.append(title);
    for (const w of r.waves) {
      const row = el("div", { class: "wave" });
      const total = Math.max(1, w.devices);
      const bar = el("div", { class: "bar" });
      const parts = [];
      for (const phase of PHASES) {
        const n = w.counts[phase] || 0;
        if (!n) continue;
        const span = el("span", { class: "ph-" + phase, title: phase.replace("_", " ") + ": " + n, "data-phase": phase });
        span.style.width = (100 * n / total) + "%";
        bar.append(span);
        parts.push(n + " " + phase.replace("_", " "));
      }
      row.append(
        el("span", {}, w.canary ? "canary" : "wave " + w.index),
        el("span", { class: "muted" }, w.stage.replace(/_/g, " ")),
        bar,
        el("span", { class: "muted" }, w.devices + (w.devices === 1 ? " device" : " devices") + (parts.length ? ": " + parts.join(", ") : "")),
      );
      item.append(row);
    }
    return item;
  }));
}

function drawChart(svg, chart, series, since, now) {
  const W = 420, H = 220, L = 46, R = 12, T = 12, B = 28;
  const points = [];
  for (const s of series) {
    for (const sample of s.samples) {
      const v = sample[chart.key];
      if (v !== null && v !== undefined) points.push(v * chart.scale);
    }
  }
  svg.replaceChildren();
  if (!points.length) {
    svg.append(svgEl("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, "no samples in this window"));
    svg.dataset.points = "0";
    return;
  }
  let lo = Math.min(0, ...points), hi = Math.max(...points);
  if (hi - lo < 1e-9) hi = lo + (hi === 0 ? 1 : Math.abs(hi) * 0.5);
  hi += (hi - lo) * 0.08;
  const x = (ts) => L + (W - L - R) * (ts - since) / Math.max(1, now - since);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    svg.append(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(svgEl("text", { class: "axis", x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v, chart.digits)));
  }
  for (let i = 0; i <= 3; i++) {
    const ts = since + (now - since) * i / 3;
    svg.append(svgEl("text", { class: "axis", x: x(ts), y: H - 8, "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle" }, clock(ts)));
  }
  let total = 0;
  for (const s of series) {
    const group = svgEl("g", { class: "series", "data-device": s.device });
    let d = "", pen = false, count = 0;
    for (const sample of s.samples) {
      const v = sample[chart.key];
      if (v === null || v === undefined) { pen = false; continue; }
      const px = x(sample.ts).toFixed(1), py = y(v * chart.scale).toFixed(1);
      d += (pen ? "L" : "M") + px + " " + py + " ";
      pen = true;
      const dot = svgEl("circle", { class: "point", cx: px, cy: py, r: 2.5, fill: s.color });
      dot.append(svgEl("title", {}, s.device + " " + clock(sample.ts) + ": " + fmt(v * chart.scale, chart.digits)));
      group.append(dot);
      count++;
    }
    if (d) group.prepend(svgEl("path", { class: "line", d: d.trim(), stroke: s.color }));
    group.setAttribute("data-count", count);
    total += count;
    svg.append(group);
  }
  svg.dataset.points = String(total);
  // Where the chart sits on the page, so a screenshot can be checked region by region.
  const r = svg.getBoundingClientRect();
  svg.dataset.rect = [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map(Math.round).join(",");
}

async function renderCharts(fleet) {
  const windowS = Number(document.getElementById("window").value);
  const now = Date.now() / 1000;
  const since = now - windowS;
  let devices = fleet.devices;
  if (focused) devices = devices.filter((d) => d.device_id === focused);
  // Online devices first: the live fleet is what an operator watches.
  devices = [...devices].sort((a, b) => (b.online - a.online) || a.device_id.localeCompare(b.device_id)).slice(0, MAX_CHARTED);
  const series = await Promise.all(devices.map(async (d, i) => {
    const health = await getJson("/api/devices/" + encodeURIComponent(d.device_id) + "/health?since=" + since.toFixed(0));
    return { device: d.device_id, color: COLORS[i % COLORS.length], samples: health.samples };
  }));
  const legend = document.getElementById("legend");
  legend.replaceChildren(...series.map((s) => {
    const item = el("span", { "data-device": s.device });
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = s.color;
    item.append(swatch, document.createTextNode(s.device + " (" + s.samples.length + ")"));
    return item;
  }));
  if (fleet.devices.length > series.length && !focused) {
    legend.append(el("span", { class: "muted" }, "+" + (fleet.devices.length - series.length) + " more in the table"));
  }
  for (const chart of CHARTS) drawChart(document.getElementById(chart.id), chart, series, since, now);
}

function showError(message) {
  const box = document.getElementById("error");
  box.hidden = !message;
  box.textContent = message || "";
}

let running = false;
async function refresh() {
  if (running) return;
  running = true;
  try {
    const [fleet, rollouts] = await Promise.all([getJson("/api/fleet"), getJson("/api/rollouts")]);
    lastFleet = fleet;
    document.getElementById("fleet-name").textContent = fleet.service && fleet.service.fleet ? fleet.service.fleet : "";
    renderTiles(fleet);
    renderRollouts(rollouts);
    renderDevices(fleet);
    await renderCharts(fleet);
    document.getElementById("updated").textContent = "updated " + clock(Date.now() / 1000);
    showError(null);
    document.body.dataset.ready = "1";
  } catch (err) {
    showError("cannot reach the fleet service: " + err.message);
  } finally {
    running = false;
  }
}

document.getElementById("window").addEventListener("change", () => { if (lastFleet) renderCharts(lastFleet); });
refresh();
setInterval(refresh, REFRESH_MS);
