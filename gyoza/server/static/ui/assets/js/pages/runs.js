// Runs: newest first, filtered and paged exactly like GET /runs (its query parameters are the page's), live.

import { get, query } from "../api.js";
import { h, progressBar, refill, runLink, stateBadge, statusLine, table, time } from "../dom.js";
import { every } from "../poll.js";

const STATES = ["PENDING", "ASSIGNED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"];
const FILTERS = [
  ["op_definition", "Op"],
  ["topic", "Topic"],
  ["worker_id", "Worker"],
];

export function render(main) {
  const params = new URLSearchParams(location.search);
  const status = statusLine();
  const list = h("div", { "aria-live": "off" });
  const pager = h("nav", { class: "pager", "aria-label": "Pages of runs" });
  main.append(h("h1", {}, "Runs"), filterForm(params), status, list, pager);
  let shown = "";
  every(
    1000,
    async () => {
      const page = await get(`/runs${query(apiParams(params))}`);
      const seen = JSON.stringify(page);
      if (seen === shown) return;
      shown = seen;
      refill(list, runsTable(page.data));
      refill(pager, ...pagerLinks(params, page));
    },
    status,
  );
}

function apiParams(params) {
  const keys = ["state", ...FILTERS.map(([key]) => key), "starting_after", "ending_before"];
  return { limit: 25, ...Object.fromEntries(keys.map((key) => [key, params.get(key)])) };
}

function filterForm(params) {
  const state = h(
    "select",
    { id: "f-state", name: "state" },
    h("option", { value: "" }, "any"),
    STATES.map((s) => h("option", { value: s, selected: params.get("state") === s }, s)),
  );
  const fields = FILTERS.map(([key, label]) =>
    h("div", { class: "field" }, h("label", { for: `f-${key}` }, label),
      h("input", { id: `f-${key}`, name: key, value: params.get(key) ?? "", autocomplete: "off" })),
  );
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    h("div", { class: "field" }, h("label", { for: "f-state" }, "State"), state),
    fields,
    h("button", { type: "submit" }, "Filter"),
    h("a", { href: "/ui/runs", class: "button quiet" }, "Clear"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    location.assign(`/ui/runs${query(values)}`);
  });
  return form;
}

function runsTable(runs) {
  return table(
    "Runs, newest first",
    [
      ["Run", (run) => runLink(run.id)],
      ["Op", (run) => run.op_definition ?? run.image],
      ["State", (run) => stateBadge(run.state)],
      ["Progress", (run) => progressBar(run.progress, `Progress of run ${run.id}`)],
      ["Worker", (run) => run.worker_id ?? "–"],
      ["Created", (run) => time(run.created_at)],
    ],
    runs,
    "No runs match.",
  );
}

function pagerLinks(params, page) {
  const backwards = params.has("ending_before");
  const first = page.data[0]?.id;
  const last = page.data.at(-1)?.id;
  const base = Object.fromEntries([...params].filter(([key]) => key !== "starting_after" && key !== "ending_before"));
  const newer = backwards ? page.has_more : params.has("starting_after");
  const older = backwards || page.has_more;
  return [
    newer && first ? h("a", { href: `/ui/runs${query({ ...base, ending_before: first })}`, "data-key": "newer" }, "← Newer") : null,
    older && last ? h("a", { href: `/ui/runs${query({ ...base, starting_after: last })}`, "data-key": "older" }, "Older →") : null,
  ];
}
