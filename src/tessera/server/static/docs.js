// Renders /openapi.json as plain text elements: no CDN, no inline script, no HTML parsing.
"use strict";

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

function refName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return "[" + refName(schema.items) + "]";
  if (schema.anyOf) return schema.anyOf.map(refName).join(" | ");
  return schema.type || "";
}

function jsonSchemaOf(content) {
  const json = content && content["application/json"];
  return json ? refName(json.schema) : "";
}

function operation(path, method, op) {
  const box = el("section", undefined, "operation");
  box.appendChild(el("h2", method.toUpperCase() + " " + path));
  if (op.summary) box.appendChild(el("p", op.summary));
  if (op.security && op.security.length) box.appendChild(el("p", "needs a bearer token", "muted"));
  const params = (op.parameters || []).map(
    (p) => p.name + " (" + p.in + ", " + refName(p.schema) + (p.required ? ", required" : "") + ")"
  );
  if (params.length) box.appendChild(el("p", "parameters: " + params.join(", ")));
  if (op.requestBody) box.appendChild(el("p", "body: " + jsonSchemaOf(op.requestBody.content)));
  const list = el("ul");
  for (const [status, resp] of Object.entries(op.responses || {})) {
    const shape = jsonSchemaOf(resp.content);
    list.appendChild(el("li", status + " " + (resp.description || "") + (shape ? " -> " + shape : "")));
  }
  box.appendChild(list);
  return box;
}

function schemas(components) {
  const box = el("section", undefined, "operation");
  box.appendChild(el("h2", "Schemas"));
  for (const [name, schema] of Object.entries((components && components.schemas) || {})) {
    const fields = Object.entries(schema.properties || {}).map(([k, v]) => k + ": " + refName(v));
    box.appendChild(el("p", name + " { " + fields.join(", ") + " }"));
  }
  return box;
}

async function main() {
  const about = document.getElementById("about");
  const target = document.getElementById("operations");
  try {
    const resp = await fetch("/openapi.json", { headers: { Accept: "application/json" } });
    const spec = await resp.json();
    about.textContent = spec.info.title + " " + spec.info.version + " (OpenAPI " + spec.openapi + "). " +
      (spec.info.description || "");
    for (const [path, item] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(item)) target.appendChild(operation(path, method, op));
    }
    target.appendChild(schemas(spec.components));
  } catch (err) {
    about.textContent = "Could not load the API description: " + err;
  }
}

document.addEventListener("DOMContentLoaded", main);
