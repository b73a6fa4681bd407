// Queue: the pending runs in the order the scheduler places them (GET /queue), each with why it waits. Live.

import { get } from "../api.js";
import { h, refill, runLink, statusLine, table, time } from "../dom.js";
import { every } from "../poll.js";

export function render(main) {
  const status = statusLine();
  const count = h("p", { class: "muted" });
  const list = h("div");
  main.append(h("h1", {}, "Queue"), status, count, list);
  let shown = "";
  every(
    1000,
    async () => {
      const queue = await get("/queue?limit=100");
      const seen = JSON.stringify(queue);
      if (seen === shown) return;
      shown = seen;
      count.textContent = `${queue.total} pending ${queue.total === 1 ? "run" : "runs"}, highest priority first, then oldest first.`;
      refill(list, queueTable(queue.data));
    },
    status,
  );
}

function queueTable(runs) {
  return table(
    "Pending runs in scheduling order",
    [
      ["#", (run) => runs.indexOf(run) + 1],
      ["Run", (run) => runLink(run.id)],
      ["Op", (run) => run.op_definition ?? run.image],
      ["Priority", (run) => run.priority],
      ["Waiting since", (run) => time(run.created_at)],
      ["Why", (run) => h("span", {}, h("code", {}, run.state_reason.code), run.state_reason.message ? ` — ${run.state_reason.message}` : "")],
    ],
    runs,
    "Nothing is waiting.",
  );
}
