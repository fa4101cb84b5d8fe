// Tessera console: the API client and small DOM helpers shared by every view.
// The token stays in this tab's sessionStorage and travels only in the
// Authorization header; every value from the server goes into the page as text
// (textContent, attributes), never as markup.

export const TOKEN_KEY = "tessera-token";
// Who is signed in ({name, role}), set by console.js.
export const session = { me: null };
export const $ = (id) => document.getElementById(id);

// fetch() with the bearer token; the JSON answer, or an Error carrying the status
// and the gateway's error code.  options.raw: send options.body as it is (a file).
export async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const type = options.raw ? "application/octet-stream" : "application/json";
  const { raw, ...rest } = options;
  const response = await fetch(path, {
    ...rest,
    headers: { ...(rest.headers || {}), Authorization: "Bearer " + token, "Content-Type": type },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.message || "HTTP " + response.status);
    error.status = response.status;
    error.code = body.error;
    throw error;
  }
  return body;
}

export function post(path, body) {
  return api(path, { method: "POST", body: JSON.stringify(body) });
}

// An element: el("p", {className: "muted", text: "hi", title: "x"}, child, "text", ...).
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else if (key === "className") node.className = value;
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function show(id, ...nodes) {
  $(id).replaceChildren(...nodes.filter((n) => n));
}

export function note(text, className = "muted") {
  return el("p", { className, text });
}

export function fmt(v) {
  if (typeof v === "number" && !Number.isInteger(v)) return String(Number(v.toPrecision(6)));
  if (v === true || v === false) return String(v);
  return String(v ?? "NULL");
}

// A table of text (or of nodes, for cells that are elements).
export function table(columns, rows, className) {
  const t = el("table", { className });
  const head = t.createTHead().insertRow();
  for (const c of columns) head.appendChild(el("th", { text: c, scope: "col" }));
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) {
      const td = tr.insertCell();
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell ?? "NULL";
    }
  }
  return t;
}

// ----- time --------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

// "2026-12-04 14:03:12" in the browser's local time.
export function localTime(date) {
  return (
    date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) + " " +
    pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds())
  );
}

// A Date from unix seconds or an ISO 8601 text (null when it is neither).
export function toDate(value) {
  if (value === null || value === undefined || value === "") return null;
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(String(value));
  return Number.isNaN(date.getTime()) ? null : date;
}

// <time> with the local time as text and the ISO time as its title.
export function when(value) {
  const date = toDate(value);
  if (date === null) return el("span", { className: "muted", text: value ? String(value) : "—" });
  const iso = date.toISOString();
  return el("time", { dateTime: iso, title: iso, text: localTime(date) });
}

// Shorten an id for display (the whole id in the title).
export function shortId(id) {
  const text = String(id ?? "");
  return el("code", { title: text, text: text.length > 10 ? text.slice(0, 8) + "…" : text });
}

// Run an async action, showing what it does (and its failure) in the status element.
export async function busy(status, text, work) {
  status.className = "muted";
  status.textContent = text;
  try {
    const result = await work();
    return result;
  } catch (e) {
    status.className = "error";
    status.textContent = e.message;
    return undefined;
  }
}
