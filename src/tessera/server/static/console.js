// Tessera console: a static page over the gateway API (no inline script: CSP).
// The token stays in this tab's sessionStorage and travels only in the
// Authorization header; every value from the server is inserted as text.
// This file signs in and switches tabs; console-views.js draws each tab.

import { $, TOKEN_KEY, api, el, session } from "./console-dom.js";
import { fileRequest, loaders, pickFile, runQuery, upload } from "./console-views.js";

const TABS = {
  researcher: ["query", "tables", "budget"],
  steward: ["inbox", "query", "tables", "budget", "vault"],
  officer: ["audit", "alerts", "inbox", "budget", "vault"],
};

function selectTab(name) {
  for (const button of $("tabs").children) {
    button.setAttribute("aria-selected", String(button.dataset.tab === name));
  }
  for (const panel of document.querySelectorAll(".panel")) {
    panel.hidden = panel.id !== "panel-" + name;
  }
  const problem = $("panel-" + name).querySelector(".panel-error");
  problem.textContent = "";
  loaders[name]().catch((e) => {
    problem.textContent = e.message;
  });
}

async function signIn() {
  const me = await api("/api/v1/me");
  session.me = me;
  $("who").textContent = me.name + " (" + me.role + ")";
  $("signin").hidden = true;
  $("signout").hidden = false;
  const tabs = $("tabs");
  tabs.replaceChildren();
  for (const name of TABS[me.role] || []) {
    const b = el("button", { type: "button", role: "tab", text: name, dataset: { tab: name } });
    b.addEventListener("click", () => selectTab(name));
    tabs.appendChild(b);
  }
  tabs.hidden = false;
  selectTab((TABS[me.role] || [])[0]);
}

function start() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    signIn().catch((e) => {
      sessionStorage.removeItem(TOKEN_KEY);
      $("signin-error").textContent = e.status === 401 ? "unknown token" : e.message;
    });
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  $("query-form").addEventListener("submit", runQuery);
  $("request-form").addEventListener("submit", fileRequest);
  $("upload-form").addEventListener("submit", upload);
  $("upload-file").addEventListener("change", pickFile);
  for (const panel of document.querySelectorAll(".panel")) {
    panel.appendChild(el("p", { className: "error panel-error", role: "alert" }));
  }
  if (sessionStorage.getItem(TOKEN_KEY)) signIn().catch(() => sessionStorage.removeItem(TOKEN_KEY));
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
