// The one way the dashboard talks to the server: the JSON API, authenticated by the session cookie, with the
// session's CSRF token on every state-changing request. Errors come back as ApiError carrying the uniform body.

const csrfToken = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code ?? "";
    this.details = Array.isArray(error.details) ? error.details : [];
  }
}

function signIn() {
  const here = location.pathname + location.search;
  location.assign(`/ui/sign-in?next=${encodeURIComponent(here)}`);
}

async function send(path, { method = "GET", body, text = false } = {}) {
  const headers = { Accept: text ? "text/plain" : "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  if (response.status === 401) {
    signIn();
    throw new ApiError(401, null);
  }
  if (!response.ok) {
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    throw new ApiError(response.status, parsed);
  }
  if (response.status === 204) return null;
  return text ? response.text() : response.json();
}

export const get = (path) => send(path);
export const getText = (path) => send(path, { text: true });
export const post = (path, body) => send(path, { method: "POST", body });
export const patch = (path, body) => send(path, { method: "PATCH", body });

// A query string from the non-empty values of an object.
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
