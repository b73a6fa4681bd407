// Run: its state and why, inputs and outputs, every attempt's timeline, a live log pane, and the actions
// (cancel, retry, change priority). Follows the run live (live.js: its event stream, or polling).

import { get, getText, patch, post } from "../api.js";
import { TERMINAL, fill, h, json, progressBar, refill, stateBadge, statusLine, time } from "../dom.js";
import { followRun } from "../live.js";

// After a run ends its worker may still upload the logs: keep reading them for this many polls.
const LOG_TICKS_AFTER_END = 10;

export function render(main, [runId]) {
  const base = `/runs/${encodeURIComponent(runId)}`;
  const status = statusLine();
  const summary = h("dl", { class: "facts" });
  const progress = h("div", { class: "run-progress" });
  const inputs = h("div");
  const outputs = h("div");
  const attempts = h("div");
  const logs = logPane();
  const actions = actionBar(base, status, () => live.refresh());
  main.append(
    h("h1", {}, "Run ", h("span", { class: "mono" }, runId)),
    status,
    progress,
    actions.node,
    h("div", { class: "columns" },
      h("section", { "aria-labelledby": "h-summary" }, h("h2", { id: "h-summary" }, "State"), summary),
      h("div", {},
        h("section", { "aria-labelledby": "h-inputs" }, h("h2", { id: "h-inputs" }, "Inputs"), inputs),
        h("section", { "aria-labelledby": "h-outputs" }, h("h2", { id: "h-outputs" }, "Outputs"), outputs))),
    h("section", { "aria-labelledby": "h-logs" }, h("h2", { id: "h-logs" }, "Logs"), logs.node),
    h("section", { "aria-labelledby": "h-attempts" }, h("h2", { id: "h-attempts" }, "Attempts"), attempts),
  );
  let shown = "";
  let ticksSinceEnd = 0;
  const show = serially(async (run) => {
    const seen = JSON.stringify(run);
    const changed = seen !== shown;
    ticksSinceEnd = TERMINAL.has(run.state) ? ticksSinceEnd + 1 : 0;
    if (changed) {
      document.title = `${run.state} · run ${runId.slice(0, 8)} · Gyoza`;
      refill(summary, facts(run));
      fill(progress, h("span", { class: "meter-label" }, "Progress"), progressBar(run.progress, "Run progress"));
      fill(inputs, json(run.inputs));
      fill(outputs, Object.keys(run.outputs).length ? json(run.outputs) : h("p", { class: "empty" }, "None yet."));
      actions.update(run);
      logs.attempt(run.current_attempt);
      refill(attempts, ...(await get(`${base}/attempts`)).data.reverse().map(attempt));
      shown = seen; // only once all of it is shown: a refresh that failed half-way is done again
    }
    if (changed || ticksSinceEnd <= LOG_TICKS_AFTER_END) {
      logs.uploaded(run.current_attempt, await getText(`${base}/logs?attempt=${run.current_attempt}`));
    }
  });
  const live = followRun(base, { onRun: show, onLog: (line) => logs.streamed(line.attempt, line.text) }, status);
}

// One call at a time, the latest argument winning: a slow refresh never overwrites a newer one.
function serially(task) {
  let running = null;
  let next = undefined;
  return async function call(value) {
    next = value;
    if (running) return running;
    running = (async () => {
      while (next !== undefined) {
        const current = next;
        next = undefined;
        await task(current);
      }
    })();
    try {
      await running;
    } finally {
      running = null;
    }
  };
}

function facts(run) {
  const reason = run.state_reason;
  const rows = [
    ["State", stateBadge(run.state)],
    ["Reason", h("span", {}, h("code", {}, reason.code), reason.message ? ` — ${reason.message}` : "")],
    ["Op", run.op_definition ? `${run.op_definition} ${run.definition_version ?? ""}` : "ad hoc"],
    ["Image", h("code", {}, run.image)],
    ["Priority", run.priority],
    ["Attempt", run.retry_policy.max_attempts > 1
      ? `${run.current_attempt} (retried automatically up to ${run.retry_policy.max_attempts} attempts)`
      : run.current_attempt],
    ["Worker", run.worker_id ?? "–"],
    ["GPUs", run.gpu_ids.length ? run.gpu_ids.join(", ") : "–"],
    ["Created", time(run.created_at)],
    ["Started", time(run.started_at)],
    ["Finished", time(run.finished_at)],
  ];
  if (run.cancel_requested && !TERMINAL.has(run.state)) rows.push(["Cancel", "requested; waiting for the worker"]);
  const error = run.execution_summary?.error_message;
  if (error) rows.push(["Error", h("pre", { class: "error-text" }, error)]);
  return rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]);
}

function attempt(view) {
  return h(
    "article",
    { class: "attempt", "aria-label": `Attempt ${view.number}` },
    h("h3", {}, `Attempt ${view.number} `, stateBadge(view.state)),
    h("p", {}, h("code", {}, view.state_reason.code), view.state_reason.message ? ` — ${view.state_reason.message}` : "",
      view.worker_id ? ` · worker ${view.worker_id}` : ""),
    h("ol", { class: "timeline" }, view.events.map((event) =>
      h("li", {}, h("time", { datetime: event.t, title: event.t }, new Date(event.t).toLocaleTimeString()), " ",
        h("strong", {}, event.type), event.msg !== "" ? ` ${event.msg}` : ""))),
  );
}

// The log of the attempt shown: lines as the stream delivers them, or the upload the worker stored (GET logs),
// whichever holds more (both are the same log, one possibly further along).
function logPane() {
  const pre = h("pre", { class: "logs", tabindex: "0", "aria-label": "Logs of the current attempt" });
  const follow = h("input", { type: "checkbox", id: "follow-logs", checked: true });
  const caption = h("span", { class: "muted" });
  const node = h("div", {},
    h("div", { class: "log-bar" }, caption, h("label", { for: "follow-logs" }, follow, " Follow")), pre);
  const streamed = new Map();
  const uploaded = new Map();
  let shown = 0;
  const draw = () => {
    const [live, stored] = [streamed.get(shown) ?? "", uploaded.get(shown) ?? ""];
    const text = (live.length >= stored.length ? live : stored) || "No logs yet.";
    if (pre.textContent === text) return;
    pre.textContent = text;
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
  };
  return {
    node,
    attempt(number) {
      shown = number;
      caption.textContent = `Attempt ${number}`;
      draw();
    },
    streamed(number, text) {
      streamed.set(number, (streamed.get(number) ?? "") + text);
      if (number === shown) draw();
    },
    uploaded(number, text) {
      uploaded.set(number, text);
      if (number === shown) draw();
    },
  };
}

function actionBar(base, status, refresh) {
  const act = async (label, call) => {
    try {
      await call();
      status.show(label);
    } catch (error) {
      status.show(error.message, "error");
    }
    refresh();
  };
  const cancel = h("button", { type: "button", class: "danger", onclick: () => act("Cancel requested.", () => post(`${base}/cancel`)) }, "Cancel run");
  const retry = h("button", { type: "button", onclick: () => act("Retry requested: a new attempt is queued.", () => post(`${base}/retry`)) }, "Retry");
  const priority = h("input", { id: "priority", type: "number", min: 0, max: 100, step: 1, "aria-describedby": "priority-error" });
  const priorityError = h("span", { id: "priority-error", class: "field-error" });
  // novalidate: the server checks the value, and its 400 is shown beside the field.
  const priorityForm = h("form", { class: "inline", novalidate: true },
    h("label", { for: "priority" }, "Priority"), priority,
    h("button", { type: "submit" }, "Set priority"), priorityError);
  priorityForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    priorityError.textContent = "";
    try {
      await patch(base, { priority: priority.value === "" ? null : Number(priority.value) });
      status.show("Priority changed.");
    } catch (error) {
      priorityError.textContent = error.details.find((d) => d.field === "priority")?.problem ?? error.message;
    }
    refresh();
  });
  const node = h("div", { class: "actions" }, cancel, retry, priorityForm);
  let priorityShown = null;
  return {
    node,
    update(run) {
      cancel.hidden = TERMINAL.has(run.state);
      retry.hidden = !(run.state === "FAILED" || run.state === "CANCELLED");
      priorityForm.hidden = !(run.state === "PENDING" || run.state === "ASSIGNED");
      if (run.priority !== priorityShown && document.activeElement !== priority) priority.value = run.priority;
      priorityShown = run.priority;
    },
  };
}
