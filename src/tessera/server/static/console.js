// Tessera console: a static page over the gateway API (no inline script: CSP).
// The token stays in this tab's sessionStorage and travels only in the
// Authorization header; every value from the server is inserted as text.
"use strict";

const TABS = {
  researcher: ["query", "tables", "budget"],
  steward: ["query", "tables", "budget", "vault"],
  officer: ["audit", "alerts"],
};
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const token = sessionStorage.getItem("tessera-token") || "";
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: "Bearer " + token,
               "Content-Type": "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.message || "HTTP " + response.status);
    error.status = response.status;
    throw error;
  }
  return body;
}

function table(columns, rows) {
  const t = document.createElement("table");
  const head = t.createTHead().insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    head.appendChild(th);
  }
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) {
      const td = tr.insertCell();
      if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell ?? "NULL";
    }
  }
  return t;
}

function show(id, node) {
  const target = $(id);
  target.replaceChildren(node);
}

function fmt(v) {
  return typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(6) : String(v ?? "NULL");
}

const loaders = {
  async query() {},
  async tables() {
    const tables = await api("/api/v1/tables");
    show("tables", table(["name", "rows", "columns"],
      tables.map((t) => [t.name, String(t.rows ?? ""), (t.columns || []).map((c) => c.name || c).join(", ")])));
  },
  async budget() {
    const rows = await api("/api/v1/budget");
    show("budget", table(["table", "researcher", "spent epsilon", "remaining epsilon"],
      rows.map((b) => [b.table, b.researcher || "all", fmt(b.spent_epsilon), fmt(b.remaining_epsilon)])));
  },
  async vault() {
    const objects = await api("/api/v1/vault");
    show("vault", table(["name", "size", "scheme", "k of n", "created"],
      objects.map((o) => [o.name, String(o.size), o.scheme, o.k + " of " + o.n, o.created])));
  },
  async audit() {
    const report = await api("/api/v1/audit/verify");
    const status = $("audit-status");
    status.textContent = report.ok
      ? "verified: " + report.entries + " entries, every one covered by a signed tree head"
      : "NOT verified: entry " + report.first_bad + ": " + report.problem;
    status.className = report.ok ? "ok" : "error";
    const events = await api("/api/v1/audit/events?limit=50");
    show("audit-events", table(["#", "time", "action", "outcome", "user", "role", "address", "entity"],
      events.map((e) => [String(e.seq), e.recorded, e.action, e.outcome, e.user, e.role, e.address, e.entity])));
  },
  async alerts() {
    const scan = await api("/api/v1/monitor/alerts");
    if (!scan.alerts.length) {
      const p = document.createElement("p");
      p.className = "ok";
      p.textContent = "no alerts in " + scan.events + " events";
      show("alerts", p);
      return;
    }
    show("alerts", table(["rule", "severity", "summary"],
      scan.alerts.map((a) => [a.rule || a.name, a.severity, a.summary || a.description || ""])));
  },
};

function selectTab(name) {
  for (const button of $("tabs").children) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll(".panel")) {
    panel.hidden = panel.id !== "panel-" + name;
  }
  loaders[name]().catch((e) => {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = e.message;
    const panel = $("panel-" + name);
    panel.appendChild(p);
  });
}

async function signIn() {
  const me = await api("/api/v1/me");
  $("who").textContent = me.name + " (" + me.role + ")";
  $("signin").hidden = true;
  $("signout").hidden = false;
  const tabs = $("tabs");
  tabs.replaceChildren();
  for (const name of TABS[me.role] || []) {
    const b = document.createElement("button");
    b.textContent = name;
    b.dataset.tab = name;
    b.addEventListener("click", () => selectTab(name));
    tabs.appendChild(b);
  }
  tabs.hidden = false;
  selectTab((TABS[me.role] || [])[0]);
}

async function runQuery(event) {
  event.preventDefault();
  const status = $("query-status");
  status.textContent = "running on the custodians…";
  $("query-result").replaceChildren();
  const epsilon = $("epsilon").value;
  try {
    const doc = await api("/api/v1/query", {
      method: "POST",
      body: JSON.stringify({ sql: $("sql").value, epsilon: epsilon ? Number(epsilon) : null }),
    });
    const privacy = doc.privacy;
    const rows = doc.rows.map((row, r) => row.map((v, c) => {
      if (!privacy) return fmt(v);
      const span = document.createElement("span");
      span.textContent = fmt(v);
      const iv = privacy.columns[c] && privacy.columns[c].intervals && privacy.columns[c].intervals[r];
      if (iv && v !== null) {
        const small = document.createElement("span");
        small.className = "interval";
        small.textContent = " [" + fmt(iv[0]) + ", " + fmt(iv[1]) + "]";
        span.appendChild(small);
      }
      return span;
    }));
    show("query-result", table(doc.columns, rows));
    status.textContent = privacy
      ? "(" + privacy.epsilon.toPrecision(3) + ", " + privacy.delta + ")-differentially private"
      : doc.rows.length + " row(s)";
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("tessera-token", $("token").value.trim());
    $("token").value = "";
    signIn().catch((e) => {
      sessionStorage.removeItem("tessera-token");
      $("signin-error").textContent = e.status === 401 ? "unknown token" : e.message;
    });
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem("tessera-token");
    location.reload();
  });
  $("query-form").addEventListener("submit", runQuery);
  if (sessionStorage.getItem("tessera-token")) signIn().catch(() => sessionStorage.removeItem("tessera-token"));
});
