// The dashboard's entry point: picks the page module from the path, marks the current section in the navigation,
// and wires the sign-out button. Each page module exports `render(main, params)`.

import { post } from "./api.js";
import { h, keepTimesFresh } from "./dom.js";

const ROUTES = [
  [/^\/ui\/runs$/, "runs", () => import("./pages/runs.js")],
  [/^\/ui\/runs\/([^/]+)$/, "runs", () => import("./pages/run.js")],
  [/^\/ui\/queue$/, "queue", () => import("./pages/queue.js")],
  [/^\/ui\/workers$/, "workers", () => import("./pages/workers.js")],
  [/^\/ui\/definitions$/, "definitions", () => import("./pages/definitions.js")],
  [/^\/ui\/definitions\/([^/]+)$/, "definitions", () => import("./pages/definition.js")],
];

async function start() {
  const main = document.getElementById("main");
  document.getElementById("sign-out").addEventListener("click", async () => {
    try {
      await post("/ui/sign-out");
    } finally {
      location.assign("/ui/sign-in");
    }
  });
  keepTimesFresh();
  for (const [pattern, section, load] of ROUTES) {
    const match = location.pathname.match(pattern);
    if (!match) continue;
    for (const link of document.querySelectorAll("nav a")) {
      if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    }
    const page = await load();
    page.render(main, match.slice(1).map(decodeURIComponent));
    return;
  }
  main.append(h("h1", {}, "Not found"));
}

start();
