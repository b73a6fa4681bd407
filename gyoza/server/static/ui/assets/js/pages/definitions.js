// Definitions: the latest version of each, linking to its specs and run form.

import { get } from "../api.js";
import { h, statusLine, table, time } from "../dom.js";

export async function render(main) {
  const status = statusLine();
  const list = h("div");
  main.append(h("h1", {}, "Definitions"), status, list);
  try {
    const definitions = (await get("/definitions")).data;
    list.append(
      table(
        "Op definitions, latest version of each",
        [
          ["Name", (d) => h("a", { href: `/ui/definitions/${encodeURIComponent(d.name)}` }, d.name)],
          ["Version", (d) => d.version],
          ["Image", (d) => h("code", {}, d.image)],
          ["Inputs", (d) => Object.keys(d.input_specs).join(", ") || "–"],
          ["Description", (d) => d.description || "–"],
          ["Deployed", (d) => time(d.created_at)],
        ],
        definitions,
        "No definitions deployed yet (gyoza deploy, or POST /definitions).",
      ),
    );
  } catch (error) {
    status.show(error.message, "error");
  }
}
