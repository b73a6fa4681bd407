// A form field generated from an input spec (string, int, float, bool, object, array, any; defaults, choices,
// required). `read()` says whether a value was given and what it is; values the field cannot parse go to the
// server as typed, so that its 400 names the problem.

import { h } from "./dom.js";

export function inputField(key, spec, id = `in-${key}`) {
  const errorId = `${id}-error`;
  const control = makeControl(id, spec, errorId);
  const error = h("span", { id: errorId, class: "field-error" });
  const label = h("label", { for: id }, h("code", {}, key), ` (${spec.type}${spec.required ? ", required" : ""})`);
  const hint = spec.description ? h("span", { class: "hint" }, spec.description) : null;
  return {
    key,
    node: h("div", { class: "field" }, label, hint, control, error),
    read: () => readValue(control, spec),
    setError(problem) {
      error.textContent = problem;
      control.setAttribute("aria-invalid", problem ? "true" : "false");
    },
    focus: () => control.focus(),
  };
}

function makeControl(id, spec, errorId) {
  const common = { id, name: id, "aria-describedby": errorId, "aria-required": spec.required ? "true" : "false" };
  const hasDefault = spec.default !== null && spec.default !== undefined;
  if (spec.choices || spec.type === "bool") {
    const choices = spec.choices ?? [true, false];
    const blank = spec.required && !hasDefault ? "choose…" : "(default)";
    return h("select", common, h("option", { value: "" }, blank),
      choices.map((choice, index) => h("option", { value: index, selected: hasDefault && choice === spec.default }, JSON.stringify(choice))));
  }
  if (["object", "array", "any"].includes(spec.type)) {
    return h("textarea", { ...common, rows: 3, spellcheck: "false", placeholder: "JSON" }, hasDefault ? JSON.stringify(spec.default) : "");
  }
  const numeric = spec.type === "int" || spec.type === "float";
  return h("input", {
    ...common,
    type: "text",
    inputmode: numeric ? (spec.type === "int" ? "numeric" : "decimal") : undefined,
    autocomplete: "off",
    value: hasDefault ? String(spec.default) : "",
  });
}

function readValue(control, spec) {
  const raw = control.value;
  if (raw === "") return { given: false };
  if (control.tagName === "SELECT") return { given: true, value: (spec.choices ?? [true, false])[Number(raw)] };
  if (spec.type === "int" || spec.type === "float") {
    const number = Number(raw.trim());
    return { given: true, value: raw.trim() !== "" && Number.isFinite(number) ? number : raw };
  }
  if (spec.type === "string") return { given: true, value: raw };
  try {
    return { given: true, value: JSON.parse(raw) };
  } catch {
    return spec.type === "any" ? { given: true, value: raw } : { error: "not valid JSON" };
  }
}
