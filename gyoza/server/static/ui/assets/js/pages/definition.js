// Definition: one version's specs, and a form generated from its input specs that starts a run of it. The server
// validates the inputs; its 400 details are shown next to the fields they name.

import { get, post, query } from "../api.js";
import { h, json, statusLine, table } from "../dom.js";
import { inputField } from "../fields.js";

export async function render(main, [name]) {
  const version = new URLSearchParams(location.search).get("version");
  const status = statusLine();
  main.append(h("h1", {}, name), status);
  let definition;
  let versions;
  try {
    const base = `/definitions/${encodeURIComponent(name)}`;
    [definition, versions] = await Promise.all([get(base + query({ version })), get(`${base}/versions`)]);
  } catch (error) {
    status.show(error.message, "error");
    return;
  }
  main.append(
    versionPicker(name, definition.version, versions.data),
    definition.description ? h("p", {}, definition.description) : null,
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "h-run" }, h("h2", { id: "h-run" }, "Start a run"), runForm(definition)),
      h("section", { "aria-labelledby": "h-specs" }, h("h2", { id: "h-specs" }, "Specs"), specs(definition))),
  );
}

function versionPicker(name, current, versions) {
  const select = h("select", { id: "version" },
    versions.map((v) => h("option", { value: v.version, selected: v.version === current }, v.version)));
  select.addEventListener("change", () =>
    location.assign(`/ui/definitions/${encodeURIComponent(name)}${query({ version: select.value })}`));
  return h("div", { class: "field inline" }, h("label", { for: "version" }, "Version"), select);
}

function specs(definition) {
  const inputs = Object.entries(definition.input_specs);
  const outputs = Object.entries(definition.output_specs ?? {});
  return h("div", {},
    h("p", {}, "Image ", h("code", {}, definition.image)),
    h("h3", {}, "Inputs"),
    table("Input specs", [
      ["Name", ([key]) => h("code", {}, key)],
      ["Type", ([, s]) => s.type],
      ["Required", ([, s]) => (s.required ? "yes" : "no")],
      ["Default", ([, s]) => (s.default === null ? "–" : JSON.stringify(s.default))],
      ["Allowed", ([, s]) => allowed(s)],
      ["Description", ([, s]) => s.description || "–"],
    ], inputs, "No inputs."),
    h("h3", {}, "Outputs"),
    table("Output specs", [
      ["Name", ([key]) => h("code", {}, key)],
      ["Type", ([, s]) => s.type],
      ["Required", ([, s]) => (s.required ? "yes" : "no")],
      ["Description", ([, s]) => s.description || "–"],
    ], outputs, "Not declared."),
    h("h3", {}, "Constraints"), json(definition.constraints),
    h("h3", {}, "Retry policy"), json(definition.retry_policy),
  );
}

function allowed(spec) {
  if (spec.choices) return spec.choices.map((c) => JSON.stringify(c)).join(", ");
  const bounds = [spec.min !== null ? `≥ ${spec.min}` : "", spec.max !== null ? `≤ ${spec.max}` : ""].filter(Boolean);
  return bounds.join(", ") || "–";
}

function runForm(definition) {
  const fields = Object.entries(definition.input_specs).map(([key, spec]) => inputField(key, spec));
  const priority = inputField("priority", { type: "int", required: false, default: 5, min: 0, max: 100,
    description: "0–100, higher runs first", choices: null }, "run-priority");
  const summary = h("div", { class: "form-error", role: "alert" });
  const form = h("form", { class: "run-form", novalidate: true },
    summary,
    fields.map((f) => f.node),
    priority.node,
    h("button", { type: "submit" }, "Start run"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    summary.textContent = "";
    for (const field of [...fields, priority]) field.setError("");
    const inputs = {};
    let bad = false;
    for (const field of fields) {
      const read = field.read();
      if (read.error) {
        field.setError(read.error);
        bad = true;
      } else if (read.given) inputs[field.key] = read.value;
    }
    if (bad) return;
    const body = { inputs, version: definition.version };
    const chosen = priority.read();
    if (chosen.given) body.priority = chosen.value;
    try {
      const run = await post(`/definitions/${encodeURIComponent(definition.name)}/runs`, body);
      location.assign(`/ui/runs/${encodeURIComponent(run.id)}`);
    } catch (error) {
      showProblems(error, fields, priority, summary);
    }
  });
  return form;
}

function showProblems(error, fields, priority, summary) {
  const byField = new Map(fields.map((f) => [`inputs.${f.key}`, f]));
  byField.set("priority", priority);
  const unplaced = [];
  let first = null;
  for (const detail of error.details) {
    const field = byField.get(detail.field);
    if (field) {
      field.setError(detail.problem);
      first ??= field;
    } else unplaced.push(`${detail.field}: ${detail.problem}`);
  }
  summary.textContent = [error.message, ...unplaced].join(" — ");
  first?.focus();
}
