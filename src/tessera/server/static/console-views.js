// Tessera console: one loader per tab, and the forms of the query, request, inbox
// and vault views.  Values from the server go in as text only (see console-dom.js).

import {
  $, api, busy, el, fmt, note, post, session, shortId, show, table, when,
} from "./console-dom.js";
import { chartsFor, gauge, timeline } from "./console-charts.js";

const path = (id, action = "") => "/api/v1/requests/" + encodeURIComponent(id) + action;
const epsilonText = (e) => (e === null || e === undefined ? "policy default" : fmt(e));

// ----- query answers -------------------------------------------------------------------

function cellOf(doc, r, c) {
  const v = doc.rows[r][c];
  const column = doc.privacy && doc.privacy.columns[c];
  const iv = column && column.intervals && column.intervals[r];
  if (!doc.privacy) return fmt(v);
  const span = el("span", { text: fmt(v) });
  if (iv && v !== null) {
    const text = " [" + fmt(iv[0]) + ", " + fmt(iv[1]) + "]";
    span.appendChild(el("span", { className: "interval", text }));
  }
  return span;
}

// The answer as a table (each DP value with its 95% interval) and as charts; the
// status line to show with it.
export function renderAnswer(doc, tableId, chartId) {
  const rows = doc.rows.map((row, r) => row.map((_, c) => cellOf(doc, r, c)));
  show(tableId, table(doc.columns, rows));
  if (chartId) show(chartId, ...chartsFor(doc));
  const privacy = doc.privacy;
  if (!privacy) return doc.rows.length + " row(s)";
  return "(" + privacy.epsilon.toPrecision(3) + ", " + privacy.delta +
    ")-differentially private; bars show 95% intervals";
}

export async function runQuery(event) {
  event.preventDefault();
  const status = $("query-status");
  $("query-result").replaceChildren();
  $("query-chart").replaceChildren();
  const epsilon = $("epsilon").value;
  await busy(status, "running on the custodians…", async () => {
    const body = { sql: $("sql").value, epsilon: epsilon ? Number(epsilon) : null };
    const doc = await post("/api/v1/query", body);
    status.textContent = renderAnswer(doc, "query-result", "query-chart");
  });
}

// ----- a researcher's requests ---------------------------------------------------------

const STATE_TEXT = {
  pending: "waiting for the steward",
  approved: "approved: ready to run",
  refused: "refused",
  done: "answered",
  held: "held for the steward's review",
  released: "released",
  withheld: "withheld",
};

function lastDecision(r) {
  const decisions = r.decisions || [];
  const d = decisions[decisions.length - 1];
  if (!d) return el("span", { className: "muted", text: "—" });
  return el("span", {}, d.decision + " by " + d.by + ": " + d.reason + " (", when(d.at), ")");
}

function stateBadge(state) {
  const title = STATE_TEXT[state] || state;
  return el("span", { className: "state state-" + state, title, text: state });
}

function actionButton(r, className, text, onclick) {
  return el("button", { type: "button", className, text, onclick, dataset: { id: r.id } });
}

function requestAction(r) {
  if (r.state === "approved") return actionButton(r, "run", "Run", () => runRequest(r.id));
  if (r.state === "released") {
    return actionButton(r, "result", "Show result", () => showResult(r.id));
  }
  return el("span", { className: "muted", text: STATE_TEXT[r.state] || "" });
}

export async function loadMyRequests() {
  const requests = await api("/api/v1/requests");
  requests.sort((a, b) => b.filed_at - a.filed_at);
  const head = ["filed", "request", "state", "purpose", "tables", "epsilon", "decision", ""];
  const rows = requests.map((r) => [
    when(r.filed_at), shortId(r.id), stateBadge(r.state), r.purpose,
    (r.tables || []).join(", "), epsilonText(r.epsilon), lastDecision(r), requestAction(r),
  ]);
  show("my-requests", rows.length ? table(head, rows, "requests") : note("no requests yet"));
}

export async function fileRequest(event) {
  event.preventDefault();
  const status = $("request-status");
  const epsilon = $("request-epsilon").value;
  await busy(status, "filing…", async () => {
    const r = await post("/api/v1/requests", {
      kind: "sql",
      sql: $("request-sql").value,
      purpose: $("request-purpose").value,
      epsilon: epsilon ? Number(epsilon) : null,
    });
    status.className = "ok";
    status.textContent = "filed request " + r.id.slice(0, 8) + ": waiting for the steward";
    await loadMyRequests();
  });
}

async function runRequest(id) {
  const status = $("request-run-status");
  $("request-result").replaceChildren();
  $("request-chart").replaceChildren();
  await busy(status, "running request " + id.slice(0, 8) + " on the custodians…", async () => {
    const doc = await post(path(id, "/run"), {});
    if (doc.held) {
      status.className = "error";
      status.textContent = "held for the steward's review: " + (doc.reasons || []).join("; ");
    } else {
      status.className = "ok";
      status.textContent = renderAnswer(doc, "request-result", "request-chart");
    }
    await loadMyRequests();
  });
}

async function showResult(id) {
  const status = $("request-run-status");
  await busy(status, "fetching the released result…", async () => {
    const doc = await api(path(id, "/result"));
    status.className = "ok";
    status.textContent = renderAnswer(doc, "request-result", "request-chart");
  });
}

// ----- the steward's inbox -------------------------------------------------------------

function cardBody(r, output) {
  const parts = [
    el("h3", {}, output ? "Held output " : "Request ", shortId(r.id),
      " by " + r.researcher + ", filed ", when(r.filed_at)),
    el("p", {}, el("strong", { text: "Purpose: " }), r.purpose),
  ];
  if (r.sql) parts.push(el("pre", { className: "sql", text: r.sql }));
  const tables = (r.tables || []).join(", ") || "—";
  parts.push(note("tables: " + tables + "; epsilon: " + epsilonText(r.epsilon)));
  if ((r.reasons || []).length) {
    parts.push(note("The disclosure checker held it back:", "error"));
    parts.push(el("ul", { className: "reasons" }, r.reasons.map((why) => el("li", { text: why }))));
  }
  return parts;
}

// A request or held output waiting for a decision, with a reason and two buttons.
function card(r) {
  const output = r.kind === "output";
  const box = el("article", { className: "request-card", dataset: { id: r.id, state: r.state } });
  const held = el("div", { className: "held-result" });
  const status = el("p", { className: "muted", role: "status" });
  const reason = el("textarea", { className: "reason", rows: 2, required: true });
  reason.setAttribute("aria-label", "reason");
  const choices = [
    [true, output ? "Release" : "Approve", "approve"],
    [false, output ? "Withhold" : "Refuse", "refuse"],
  ];
  const buttons = choices.map(([approve, text, className]) => el("button", {
    type: "button", className, text, onclick: () => decide(r.id, approve, reason, status),
  }));
  box.append(...cardBody(r, output), held);
  box.append(el("label", { text: "Reason (shown to the researcher)" }), reason);
  box.append(el("div", { className: "buttons" }, buttons), status);
  // the custodians hand a held result to the table's steward only
  if (output && session.me.role === "steward") loadHeld(r.id, held, buttons);
  else if (output) held.appendChild(note("the table's steward reviews the held result"));
  return box;
}

// The held result, shown to its steward before they decide.
async function loadHeld(id, host, buttons) {
  for (const b of buttons) b.disabled = true;
  host.replaceChildren(note("loading the held result…"));
  try {
    const doc = await api(path(id, "/result"));
    const tableHost = el("div", { id: "held-table-" + id });
    const chartHost = el("div", { className: "charts", id: "held-chart-" + id });
    const intro = note("The held result (only you see it until you release it):");
    host.replaceChildren(intro, tableHost, chartHost);
    renderAnswer(doc, tableHost.id, chartHost.id);
  } catch (e) {
    host.replaceChildren(note("the held result cannot be shown: " + e.message, "error"));
  }
  for (const b of buttons) b.disabled = false;
}

async function decide(id, approve, reason, status) {
  const why = reason.value.trim();
  if (!why) {
    status.className = "error";
    status.textContent = "give a reason: the researcher sees it";
    reason.focus();
    return;
  }
  await busy(status, approve ? "approving…" : "refusing…", async () => {
    await post(path(id, approve ? "/approve" : "/refuse"), { reason: why });
    await loaders.inbox();
  });
}

// ----- budgets -------------------------------------------------------------------------

function gaugeRow(title, spent, pending, text) {
  return el("div", { className: "gauge-row" },
    el("div", { className: "gauge-title", text: title }),
    gauge({ spent, pending, label: title + ": " + text }),
    el("div", { className: "muted gauge-detail", text }));
}

function tableGauges(rows) {
  return rows.map((b) => {
    const total = b.policy && b.policy.total_epsilon;
    const text = "ε spent " + fmt(b.spent_epsilon ?? 0) + (total ? " of " + fmt(total) : "") +
      "; ε left " + fmt(b.remaining_epsilon) + (b.pending_rho > 0 ? " (some pending)" : "");
    return gaugeRow(b.table, b.spent_rho / b.total_rho, b.pending_rho / b.total_rho, text);
  });
}

function ownGauges(rows, label) {
  return rows.map((b) => {
    const of = b.share_epsilon ? " of " + fmt(b.share_epsilon) : "";
    const text = "ε spent " + fmt(b.spent_epsilon) + of + "; ε left " + fmt(b.remaining_epsilon);
    return gaugeRow(label(b), b.share_rho > 0 ? b.spent_rho / b.share_rho : 0, 0, text);
  });
}

// ----- vault ---------------------------------------------------------------------------

function healthCell(o, store) {
  const state = o.cells[store];
  const why = o.problems.filter((p) => String(p.store) === store).map((p) => p.problem);
  return el("span", {
    className: "cell cell-" + state,
    title: why.join("; ") || state,
    text: state,
    dataset: { object: o.name, store, state },
  });
}

function healthGrid(doc) {
  const head = ["object", "status", ...doc.stores.map((s) => "store " + s)];
  const rows = doc.objects.map((o) => [
    o.name, stateBadge(o.status), ...doc.stores.map((s) => healthCell(o, s)),
  ]);
  return table(head, rows, "health-grid");
}

function putText(put) {
  const shape = put.size + " bytes, " + put.scheme + " " + put.k + "-of-" + put.n;
  const tail = put.status === "healthy" ? "" : "; degraded: run tessera vault repair";
  return "stored " + put.name + " (" + shape + ") on stores " + put.stores_written.join(", ") + tail;
}

// The chosen file, streamed as the request's body (the gateway spools it to a file).
export async function upload(event) {
  event.preventDefault();
  const status = $("upload-status");
  const file = $("upload-file").files[0];
  if (!file) {
    status.className = "error";
    status.textContent = "choose a file";
    return;
  }
  const name = $("upload-name").value.trim() || file.name;
  const replace = $("upload-replace").checked;
  const params = new URLSearchParams({ name, replace: String(replace) });
  await busy(status, "uploading " + name + " (" + file.size + " bytes)…", async () => {
    // the gateway refuses a taken name too (409); asking first spares the upload
    const taken = !replace && (await api("/api/v1/vault")).some((o) => o.name === name);
    if (taken) {
      status.className = "error";
      status.textContent = name + " is already in the vault: tick replace to replace it";
      return;
    }
    const options = { method: "POST", body: file, raw: true };
    const put = await api("/api/v1/vault/upload?" + params, options);
    status.className = put.status === "healthy" ? "ok" : "error";
    status.textContent = putText(put);
    $("upload-form").reset();
    await loaders.vault();
  });
}

export function pickFile() {
  const file = $("upload-file").files[0];
  if (file && !$("upload-name").value) $("upload-name").value = file.name;
}

// ----- audit ---------------------------------------------------------------------------

function witnessText(report, custodians) {
  const of = report.nodes || (custodians.checked || []).length;
  const problems = custodians.problems || [];
  return "verified against " + report.vouched + " of " + of + " custodians" +
    (problems.length ? ": " + problems.join("; ") : "") +
    (custodians.unreachable ? " (" + custodians.unreachable + ")" : "");
}

async function auditStatus() {
  const report = await api("/api/v1/audit/verify");
  const status = $("audit-status");
  const where = report.first_bad === null ? "" : "entry " + report.first_bad + ": ";
  status.textContent = report.ok
    ? "verified: " + report.entries + " entries, every one covered by a signed tree head"
    : "NOT verified: " + where + report.problem;
  status.className = report.ok ? "ok" : "error";
  const custodians = report.custodians || {};
  const witness = $("audit-custodians");
  witness.dataset.vouched = String(report.vouched ?? 0);
  if (custodians.no_custodians) {
    witness.textContent = "no custodians to compare with";
    witness.className = "muted";
    return;
  }
  witness.textContent = witnessText(report, custodians);
  const all = report.vouched === (report.nodes || (custodians.checked || []).length);
  witness.className = report.ok && all ? "ok" : "error";
}

async function auditEvents() {
  const events = await api("/api/v1/audit/events?limit=50");
  const head = ["#", "time", "action", "outcome", "user", "role", "address", "entity"];
  show("audit-events", table(head, events.map((e) => [
    String(e.seq), when(e.recorded), e.action, e.outcome, e.user, e.role, e.address, e.entity,
  ])));
}

async function alertTimeline() {
  const scan = await api("/api/v1/monitor/alerts");
  const none = note("no alerts in " + scan.events + " events", "ok");
  show("alert-timeline", scan.alerts.length ? timeline(scan.alerts) : none);
}

// Wait for every part; then fail with the first failure, if any.
function settle(results) {
  const failed = results.filter((r) => r.status === "rejected");
  if (failed.length) throw failed[0].reason;
}

// ----- the loaders ---------------------------------------------------------------------

export const loaders = {
  async query() {
    const researcher = session.me.role === "researcher";
    $("requests-box").hidden = !researcher;
    if (researcher) await loadMyRequests();
  },
  async inbox() {
    const all = await api("/api/v1/requests");
    all.sort((a, b) => a.filed_at - b.filed_at);
    // waiting for a decision: pending requests, and held outputs (a request whose own
    // release was held is answered by its output, listed separately)
    const waits = (r) => r.state === "pending" || (r.kind === "output" && r.state === "held");
    const open = all.filter(waits);
    show("inbox", ...(open.length ? open.map(card) : [note("nothing waits for a decision", "ok")]));
    const decided = all.filter((r) => !waits(r)).reverse();
    const head = ["filed", "request", "kind", "researcher", "state", "purpose", "decision"];
    show("decided", decided.length ? table(head, decided.map((r) => [
      when(r.filed_at), shortId(r.id), r.kind, r.researcher, stateBadge(r.state), r.purpose,
      lastDecision(r),
    ])) : note("no decisions yet"));
  },
  async tables() {
    const tables = await api("/api/v1/tables");
    show("tables", table(["name", "rows", "columns", "hospitals"], tables.map((t) => [
      t.name, String(t.rows ?? ""), String(t.columns ?? ""), (t.hospitals || []).join(", "),
    ])));
  },
  async budget() {
    const rows = await api("/api/v1/budget");
    const none = note("no table with a privacy budget");
    if (session.me.role === "researcher") {
      show("budget", ...(rows.length ? ownGauges(rows, (b) => b.table) : [none]));
      return;
    }
    show("budget", el("h3", { text: "Tables" }), ...(rows.length ? tableGauges(rows) : [none]));
    const each = await api("/api/v1/budget/researchers");
    const gauges = ownGauges(each, (b) => b.researcher + " on " + b.table);
    show("budget-researchers", el("h3", { text: "Researchers" }),
      ...(gauges.length ? gauges : [note("no researcher has a budget yet")]));
  },
  async vault() {
    const steward = session.me.role === "steward";
    $("upload-form").hidden = !steward;
    $("vault-listing").hidden = !steward;
    const doc = await api("/api/v1/vault/verify");
    const away = doc.unreachable.map((u) => "store " + u.store).join(", ");
    const status = $("vault-status");
    status.textContent = "vault " + doc.status + ": " + doc.objects.length + " object(s) on " +
      doc.stores.length + " stores" + (away ? "; unreachable: " + away : "");
    status.className = doc.status === "healthy" ? "ok" : "error";
    show("vault-grid", doc.objects.length ? healthGrid(doc) : note("the vault is empty"));
    if (!steward) return;
    const objects = await api("/api/v1/vault");
    show("vault", table(["name", "size", "scheme", "k of n", "created"], objects.map((o) => [
      o.name, String(o.size), o.scheme, o.k + " of " + o.n, when(o.created),
    ])));
  },
  async audit() {
    settle(await Promise.allSettled([auditStatus(), auditEvents(), alertTimeline()]));
  },
  async alerts() {
    const scan = await api("/api/v1/monitor/alerts");
    const head = ["first seen", "last seen", "severity", "alert", "explanation"];
    show("alerts", scan.alerts.length ? table(head, scan.alerts.map((a) => [
      when(a.first_seen), when(a.last_seen),
      el("span", { className: "sev sev-" + a.severity, text: a.severity }),
      a.title || a.kind, a.explanation || "",
    ])) : note("no alerts in " + scan.events + " events", "ok"));
  },
};
