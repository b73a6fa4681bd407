// Workers: status, CPU and RAM reserved of total, one VRAM bar per GPU, the runs each holds, its last heartbeat,
// and a drain button. Live.

import { get, post } from "../api.js";
import { bar, h, refill, runLink, stateBadge, statusLine, time } from "../dom.js";
import { every } from "../poll.js";

export function render(main) {
  const status = statusLine();
  const list = h("div", { class: "cards" });
  main.append(h("h1", {}, "Workers"), status, list);
  let shown = "";
  const poller = every(
    1000,
    async () => {
      const workers = (await get("/workers")).data;
      const seen = JSON.stringify(workers);
      if (seen === shown) return;
      shown = seen;
      const drain = async (worker) => {
        try {
          await post(`/workers/${encodeURIComponent(worker.id)}/drain`);
          status.show(`${worker.id} is draining: it takes no new runs.`);
        } catch (error) {
          status.show(error.message, "error");
        }
        poller.now();
      };
      refill(list, workers.length ? workers.map((worker) => card(worker, drain)) : h("p", { class: "empty" }, "No workers yet."));
    },
    status,
  );
}

function card(worker, drain) {
  const { totals, reserved } = worker;
  return h(
    "article",
    { class: "card", "aria-labelledby": `w-${worker.id}` },
    h("h2", { id: `w-${worker.id}` }, worker.id, " ", h("span", { class: `badge worker-${worker.status.toLowerCase()}` }, worker.status)),
    h("p", { class: "muted" }, `last heartbeat `, time(worker.last_heartbeat), worker.tags.length ? ` · tags ${worker.tags.join(", ")}` : ""),
    h("div", { class: "meters" },
      meter("CPU", reserved.cpu, totals.cpu, `${fmt(reserved.cpu)} / ${fmt(totals.cpu)} cores`),
      meter("RAM", reserved.ram_mb, totals.ram_mb, `${mb(reserved.ram_mb)} / ${mb(totals.ram_mb)}`),
      worker.gpus.map((gpu) =>
        meter(`GPU ${gpu.index} ${gpu.name}`, gpu.reserved_vram_mb, gpu.vram_mb, `${mb(gpu.reserved_vram_mb)} / ${mb(gpu.vram_mb)} VRAM`, "vram"))),
    h("h3", {}, "Running"),
    worker.running.length
      ? h("ul", { class: "plain" }, worker.running.map((ref) => h("li", {}, runLink(ref.run_id), ` attempt ${ref.attempt} `, stateBadge(ref.state))))
      : h("p", { class: "empty" }, "Nothing."),
    h("button", { type: "button", "data-key": `drain-${worker.id}`, disabled: worker.status !== "ONLINE", onclick: () => drain(worker) }, "Drain"),
  );
}

function meter(label, used, total, text, kind = "") {
  return h("div", { class: `meter ${kind}` }, h("span", { class: "meter-label" }, label),
    bar(used, total, `${label}: reserved of total`, text));
}

const fmt = (n) => (Math.round(n * 100) / 100).toString();
const mb = (n) => (n >= 1024 ? `${fmt(n / 1024)} GiB` : `${n} MiB`);
