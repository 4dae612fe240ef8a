// Live pipeline charts: polls dashboard/data every second and draws each chart as SVG.
// No libraries and no network access beyond this server, so it works offline.
"use strict";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                "#ca8a04", "#db2777", "#4b5563", "#65a30d"];
const W = 460, H = 180, PAD_L = 48, PAD_R = 8, PAD_T = 8, PAD_B = 20;
const SVG_NS = "http://www.w3.org/2000/svg";

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  if (a >= 10 || v === Math.round(v)) return v.toFixed(0);
  return v.toFixed(1);
}

function card(chart) {
  let node = document.getElementById("chart-" + chart.id);
  if (!node) {
    node = document.createElement("section");
    node.className = "chart";
    node.id = "chart-" + chart.id;
    node.innerHTML = "<h2><span></span><span class='now'></span></h2><div class='plot'></div>" +
                     "<div class='legend'></div>";
    node.querySelector("h2 span").textContent = chart.title;
    document.getElementById("charts").appendChild(node);
  }
  return node;
}

function draw(chart, t) {
  const node = card(chart);
  const plot = node.querySelector(".plot");
  const legend = node.querySelector(".legend");
  const names = Object.keys(chart.series);
  const values = names.flatMap(n => chart.series[n].filter(v => v !== null));
  plot.textContent = "";
  legend.textContent = "";
  if (!values.length || t.length < 1) {
    plot.innerHTML = "<div class='empty'>no data yet</div>";
    node.querySelector(".now").textContent = "";
    return;
  }
  const ymax = Math.max(1, ...values) * 1.1;
  const t0 = t[0], t1 = Math.max(t[t.length - 1], t0 + 1000);
  const x = ms => PAD_L + (W - PAD_L - PAD_R) * (ms - t0) / (t1 - t0);
  const y = v => H - PAD_B - (H - PAD_T - PAD_B) * v / ymax;
  const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                         role: "img", "aria-label": chart.title}, plot);
  for (let i = 0; i <= 4; i++) {
    const v = ymax * i / 4, yy = y(v);
    el("line", {x1: PAD_L, x2: W - PAD_R, y1: yy, y2: yy, class: "grid"}, svg);
    el("text", {x: PAD_L - 4, y: yy + 3, "text-anchor": "end", class: "axis"}, svg)
      .textContent = fmt(v);
  }
  const span = Math.round((t1 - t0) / 1000);
  el("text", {x: PAD_L, y: H - 4, class: "axis"}, svg).textContent = `-${span}s`;
  el("text", {x: W - PAD_R, y: H - 4, "text-anchor": "end", class: "axis"}, svg)
    .textContent = "now";
  const now = [];
  names.forEach((name, i) => {
    const color = COLORS[i % COLORS.length];
    const data = chart.series[name];
    let segment = [];
    const flush = () => {
      if (segment.length) el("polyline", {points: segment.join(" "), stroke: color}, svg);
      segment = [];
    };
    data.forEach((v, j) => {
      if (v === null) { flush(); return; }
      segment.push(`${x(t[j]).toFixed(1)},${y(v).toFixed(1)}`);
    });
    if (segment.length === 1) segment.push(segment[0]);  // a lone point still shows
    flush();
    const last = [...data].reverse().find(v => v !== null);
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${color}"></i>`;
    item.appendChild(document.createTextNode(`${name} ${fmt(last)}`));
    legend.appendChild(item);
    if (names.length <= 2) now.push(fmt(last));
  });
  node.querySelector(".now").textContent = now.join(" / ");
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("dashboard/data", {cache: "no-store"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const data = await response.json();
    for (const chart of data.charts) draw(chart, data.t);
    const down = data.sources.filter(s => !s.up);
    status.textContent = `updated ${new Date().toLocaleTimeString()}` +
      (down.length ? ` — ${down.length} source(s) down` : "");
    status.className = down.length ? "status down" : "status";
    const footer = document.getElementById("sources");
    footer.textContent = "";
    for (const s of data.sources) {
      const span = document.createElement("span");
      span.className = s.up ? "" : "down";
      span.textContent = `${s.up ? "●" : "○"} ${s.url}${s.error ? " (" + s.error + ")" : ""}  `;
      footer.appendChild(span);
    }
    document.body.dataset.points = String(data.t.length);
  } catch (e) {
    status.textContent = "cannot reach the gateway: " + e.message;
    status.className = "status down";
  }
}

refresh();
setInterval(refresh, 1000);
