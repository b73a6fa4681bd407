// Building the DOM: every value goes in as text (textContent / attributes), never as HTML.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Replace a node's content.
export function fill(node, ...children) {
  node.replaceChildren();
  append(node, children);
  return node;
}

export const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

export function stateBadge(state) {
  return h("span", { class: `badge state-${String(state).toLowerCase()}` }, state);
}

// A labelled bar: a native <progress> (read by screen readers) with the numbers beside it.
export function bar(value, max, label, text) {
  const safeMax = max > 0 ? max : 1;
  return h(
    "div",
    { class: "bar" },
    h("progress", { value: Math.min(value, safeMax), max: safeMax, "aria-label": label }),
    h("span", { class: "bar-text" }, text),
  );
}

export function progressBar(percent, label = "Progress") {
  return bar(percent, 100, label, `${percent}%`);
}

export function age(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function time(iso) {
  return iso ? h("time", { class: "ago", datetime: iso, title: iso }, age(iso)) : "–";
}

export function shortId(id) {
  return id.slice(0, 8);
}

export function runLink(id) {
  return h("a", { href: `/ui/runs/${encodeURIComponent(id)}`, class: "mono", title: id, "data-key": `run-${id}` }, shortId(id));
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

// A table: columns are [heading, (row) => cell]; an empty list shows `empty` instead.
export function table(caption, columns, rows, empty) {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption },
    h(
      "table",
      {},
      h("caption", { class: "sr-only" }, caption),
      h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", { scope: "col" }, heading)))),
      h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([heading, cell]) => h("td", { "data-label": heading }, cell(row)))))),
    ),
  );
}

// A page's status line (announced politely): an action's result, or why a refresh failed.
export function statusLine() {
  const line = h("p", { class: "notice", role: "status" });
  line.show = (message, kind = "info") => {
    line.dataset.kind = kind;
    line.textContent = message;
  };
  return line;
}

// Refill a region without losing the keyboard's place: the element that had focus (found again by its data-key)
// gets it back after the new content replaced it.
export function refill(region, ...children) {
  const focused = region.contains(document.activeElement) ? document.activeElement?.dataset.key : undefined;
  fill(region, ...children);
  if (focused) region.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
}

// Relative times ("12 s ago") stay current without re-fetching anything.
export function keepTimesFresh() {
  setInterval(() => {
    for (const node of document.querySelectorAll("time.ago")) node.textContent = age(node.dateTime);
  }, 1000);
}
