// Tessera console: charts drawn as inline SVG by hand (no library, no CDN).
// Every label goes in with textContent; colours come from console.css classes.

import { localTime, toDate } from "./console-dom.js";

const NS = "http://www.w3.org/2000/svg";
const SEVERITIES = ["critical", "high", "medium", "low"];

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function add(parent, ...children) {
  for (const child of children) parent.appendChild(child);
  return parent;
}

// A text label: anchor "start", "middle" or "end".
function label(x, y, text, anchor = "middle", className = "tick") {
  return svg("text", { x, y, class: className, "text-anchor": anchor }, text);
}

function tooltip(node, text) {
  return add(node, svg("title", {}, text));
}

function canvas(width, height, kind, name) {
  return svg("svg", {
    viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
    "aria-label": name, class: "chart chart-" + kind, "data-chart": kind,
  });
}

function short(v) {
  if (typeof v !== "number") return String(v);
  if (Math.abs(v) >= 1e6 || (Math.abs(v) < 1e-3 && v !== 0)) return v.toExponential(2);
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
}

function clip(text, n) {
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

const round = (v) => Number(v.toPrecision(12));

// About `count` round tick values covering [lo, hi].
export function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.floor(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(round(t));
  const last = ticks[ticks.length - 1];
  if (last < hi) ticks.push(round(last + step));
  return ticks;
}

// ----- what to draw from a query answer -----------------------------------------------

const NUM = String.raw`(-?\d+(?:\.\d+)?)`;
const BIN = new RegExp(String.raw`^\s*[[(]?\s*${NUM}\s*(?:-|–|—|\.\.|,|to)\s*${NUM}\s*[\])]?\s*$`);
const OPEN_HIGH = new RegExp(String.raw`^\s*(?:>=?|≥)?\s*${NUM}\s*\+?\s*$`);
const OPEN_LOW = new RegExp(String.raw`^\s*(?:<=?|≤)\s*${NUM}\s*$`);

// [lo, hi] of a bin label ("20-29", "[20, 30)", "90+", "<18"); null if it is none.
export function parseBin(text) {
  const s = String(text);
  let m = BIN.exec(s);
  if (m) return [Number(m[1]), Number(m[2])];
  m = OPEN_LOW.exec(s);
  if (m) return [-Infinity, Number(m[1])];
  if (/[+>≥]/.test(s) && (m = OPEN_HIGH.exec(s))) return [Number(m[1]), Infinity];
  return null;
}

function isNumberColumn(rows, c) {
  let seen = false;
  for (const row of rows) {
    const v = row[c];
    if (v === null || v === undefined) continue;
    if (typeof v !== "number") return false;
    seen = true;
  }
  return seen;
}

// The charts a query answer calls for: one per numeric column, over the groups (a
// histogram when the single group column holds bins), with DP intervals as error bars.
export function chartsFor(doc, limit = 4) {
  const rows = doc.rows || [];
  const numeric = doc.columns.map((_, c) => isNumberColumn(rows, c));
  const groups = doc.columns.map((_, c) => c).filter((c) => !numeric[c]);
  const measures = doc.columns.map((_, c) => c).filter((c) => numeric[c]);
  if (!rows.length || !groups.length || !measures.length) return [];
  const labels = rows.map((row) => groups.map((c) => String(row[c] ?? "NULL")).join(" / "));
  const bins = groups.length === 1 ? labels.map(parseBin) : [];
  const binned = bins.length > 1 && bins.every((b) => b !== null);
  const privacy = doc.privacy && doc.privacy.columns ? doc.privacy.columns : [];
  return measures.slice(0, limit).map((c) => {
    const spec = {
      column: doc.columns[c],
      labels,
      values: rows.map((row) => row[c]),
      intervals: (privacy[c] && privacy[c].intervals) || null,
    };
    return binned ? histogram({ ...spec, bins }) : barChart(spec);
  });
}

// ----- bar chart and histogram ---------------------------------------------------------

const W = 640, H = 280, M = { l: 64, r: 16, t: 28, b: 64 };
const BASE = H - M.b + 16;  // where the x labels sit

function valueTicks(values, intervals) {
  const all = [0];
  values.forEach((v, i) => {
    if (typeof v !== "number") return;
    all.push(v);
    const iv = intervals && intervals[i];
    if (iv) all.push(iv[0], iv[1]);
  });
  return niceTicks(Math.min(...all), Math.max(...all));
}

function yScale(ticks) {
  const lo = ticks[0], hi = ticks[ticks.length - 1];
  return (v) => M.t + (H - M.t - M.b) * (1 - (v - lo) / (hi - lo));
}

// A chart with its title and y axis; the y scale.
function frame(kind, column, values, intervals) {
  const chart = canvas(W, H, kind, `${kind === "bar" ? "bar chart" : kind} of ${column}`);
  chart.dataset.column = column;
  const ticks = valueTicks(values, intervals);
  const y = yScale(ticks);
  const suffix = (kind === "histogram" ? " per bin" : "") + (intervals ? " (95% intervals)" : "");
  add(chart, label(M.l, 16, column + suffix, "start", "chart-title"));
  for (const t of ticks) {
    add(chart, svg("line", { x1: M.l, x2: W - M.r, y1: y(t), y2: y(t), class: "grid" }));
    add(chart, label(M.l - 6, y(t) + 4, short(t), "end"));
  }
  add(chart, svg("line", { x1: M.l, x2: M.l, y1: M.t, y2: H - M.b, class: "axis" }));
  return [chart, y];
}

function bar(x, width, v, y, name, className = "bar") {
  const rect = svg("rect", {
    x, y: Math.min(y(v), y(0)), width: Math.max(1, width),
    height: Math.max(1, Math.abs(y(v) - y(0))), class: className, "data-label": name,
  });
  return tooltip(rect, `${name}: ${short(v)}`);
}

function errorBar(x, iv, y, name) {
  const [lo, hi] = iv;
  const g = svg("g", { class: "error-bar" });
  add(g, svg("line", { x1: x, x2: x, y1: y(lo), y2: y(hi) }));
  add(g, svg("line", { x1: x - 5, x2: x + 5, y1: y(lo), y2: y(lo) }));
  add(g, svg("line", { x1: x - 5, x2: x + 5, y1: y(hi), y2: y(hi) }));
  return tooltip(g, `${name}: 95% interval [${short(lo)}, ${short(hi)}]`);
}

// One bar per group; DP intervals drawn as error bars.
export function barChart({ column, labels, values, intervals }) {
  const [chart, y] = frame("bar", column, values, intervals);
  const band = (W - M.l - M.r) / labels.length;
  const rotate = labels.length > 6;
  labels.forEach((name, i) => {
    const x = M.l + band * i + band * 0.15, w = band * 0.7, cx = x + w / 2, v = values[i];
    const text = label(cx, BASE, clip(name, rotate ? 18 : Math.max(4, Math.floor(band / 7))),
      rotate ? "end" : "middle");
    if (rotate) text.setAttribute("transform", `rotate(-35 ${cx} ${BASE})`);
    add(chart, tooltip(text, name));
    if (typeof v !== "number") {
      add(chart, label(cx, y(0) - 4, "—"));  // suppressed or NULL: no bar
      return;
    }
    add(chart, bar(x, w, v, y, name));
    const iv = intervals && intervals[i];
    if (iv) add(chart, errorBar(cx, iv, y, name));
  });
  return chart;
}

// Adjacent bars over numeric bins (open-ended bins drawn as wide as a typical bin).
export function histogram({ column, labels, values, intervals, bins }) {
  const [chart, y] = frame("histogram", column, values, intervals);
  const widths = bins.map(([lo, hi]) => hi - lo).filter(Number.isFinite).sort((a, b) => a - b);
  const typical = widths.length ? widths[Math.floor(widths.length / 2)] : 1;
  const edges = bins.map(([lo, hi]) => [
    Number.isFinite(lo) ? lo : hi - typical,
    Number.isFinite(hi) ? hi : lo + typical,
  ]);
  const x0 = Math.min(...edges.map((e) => e[0])), x1 = Math.max(...edges.map((e) => e[1]));
  const x = (v) => M.l + (W - M.l - M.r) * ((v - x0) / (x1 - x0 || 1));
  const order = labels.map((_, i) => i).sort((a, b) => edges[a][0] - edges[b][0]);
  for (const i of order) {
    const [left, right] = [x(edges[i][0]), x(edges[i][1])];
    add(chart, label(left, BASE, short(edges[i][0])));
    if (typeof values[i] !== "number") continue;
    add(chart, bar(left, right - left, values[i], y, labels[i], "bar bin"));
    const iv = intervals && intervals[i];
    if (iv) add(chart, errorBar((left + right) / 2, iv, y, labels[i]));
  }
  add(chart, label(x(x1), BASE, short(x1)));
  add(chart, svg("line", { x1: M.l, x2: W - M.r, y1: y(0), y2: y(0), class: "axis" }));
  return chart;
}

// ----- gauges --------------------------------------------------------------------------

const clamp = (f) => Math.max(0, Math.min(1, Number.isFinite(f) ? f : 0));

// A horizontal gauge: `spent` and `pending` are fractions of the whole (0..1).
export function gauge({ spent, pending = 0, label: name }) {
  const width = 360, height = 22;
  const chart = canvas(width, height, "gauge", name);
  const s = clamp(spent), p = clamp(Math.min(pending, 1 - s));
  const high = s > 0.9 ? " gauge-high" : "";
  add(chart, svg("rect", { x: 0, y: 0, width, height, rx: 4, class: "gauge-track" }));
  const used = svg("rect", { x: 0, y: 0, width: width * s, height, rx: 4, class: "gauge-spent" + high });
  add(chart, tooltip(used, name));
  if (p > 0) {
    add(chart, svg("rect", { x: width * s, y: 0, width: width * p, height, class: "gauge-pending" }));
  }
  add(chart, label(width - 6, 15, Math.round(s * 100) + "% used", "end", "gauge-text"));
  chart.dataset.spent = String(s);
  return chart;
}

// ----- the alert timeline ----------------------------------------------------------------

const T = { width: 760, lane: 30, top: 12, left: 76, right: 16 };

// [first, last] in ms of each alert (null when it has no time).
function spansOf(alerts) {
  return alerts.map((a) => {
    const first = toDate(a.first_seen), last = toDate(a.last_seen) || first;
    return first ? [first.getTime(), Math.max(first.getTime(), last.getTime())] : null;
  });
}

// The lanes and the time axis; the x scale.
function timeAxis(chart, spans) {
  const known = spans.filter((s) => s);
  let t0 = Math.min(...known.map((s) => s[0])), t1 = Math.max(...known.map((s) => s[1]));
  if (!known.length) [t0, t1] = [Date.now() - 3600e3, Date.now()];
  const pad = Math.max((t1 - t0) * 0.05, 5 * 60e3);
  [t0, t1] = [t0 - pad, t1 + pad];
  const x = (t) => T.left + (T.width - T.left - T.right) * ((t - t0) / (t1 - t0));
  SEVERITIES.forEach((sev, i) => {
    const y = T.top + T.lane * i + T.lane / 2;
    add(chart, svg("line", { x1: T.left, x2: T.width - T.right, y1: y, y2: y, class: "grid" }));
    add(chart, label(T.left - 8, y + 4, sev, "end"));
  });
  const axisY = T.top + T.lane * SEVERITIES.length + 4;
  add(chart, svg("line", { x1: T.left, x2: T.width - T.right, y1: axisY, y2: axisY, class: "axis" }));
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    add(chart, label(x(t), axisY + 16, localTime(new Date(t)).slice(5, 16), anchor));  // MM-DD HH:MM
  }
  return x;
}

function alertMark(a, span, x) {
  const y = T.top + T.lane * SEVERITIES.indexOf(a.severity) + T.lane / 2;
  const g = svg("g", { class: "alert sev-" + a.severity, "data-kind": a.kind || "" });
  const [s, e] = [x(span[0]), x(span[1])];
  if (e - s >= 8) add(g, svg("rect", { x: s, y: y - 6, width: e - s, height: 12, rx: 6 }));
  add(g, svg("circle", { cx: s, cy: y, r: 6 }));
  const end = span[1] > span[0] ? " – " + localTime(new Date(span[1])) : "";
  const when = localTime(new Date(span[0])) + end;
  return tooltip(g, `${a.title || a.kind} (${a.severity})\n${when}\n${a.explanation || ""}`);
}

// Alerts on a time axis, one lane per severity (critical on top).
export function timeline(alerts) {
  const height = T.top + T.lane * SEVERITIES.length + 44;
  const chart = canvas(T.width, height, "timeline", `timeline of ${alerts.length} alerts by severity`);
  const spans = spansOf(alerts);
  const x = timeAxis(chart, spans);
  alerts.forEach((a, i) => {
    if (spans[i] && SEVERITIES.includes(a.severity)) add(chart, alertMark(a, spans[i], x));
  });
  return chart;
}
