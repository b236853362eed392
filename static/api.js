// The HTTP side of the API: the saved session and one fetch wrapper.
//
// The token lives in localStorage with its expiry, so a reload keeps you
// signed in. It travels only in the Authorization header, never in a cookie
// or a URL, so another site cannot make the browser use it.

const SESSION_KEY = "messageapp.session";

export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail) || `Request failed (${status})`);
    this.status = status;
  }
}

// FastAPI's `detail` is a string, or for 422 a list of {loc, msg}.
function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => `${d.loc?.at(-1) ?? "input"}: ${d.msg}`).join("; ");
  }
  return "";
}

export function loadSession() {
  try {
    const session = JSON.parse(localStorage.getItem(SESSION_KEY));
    return session?.token && session.expiresAt ? session : null;
  } catch {
    return null; // a damaged entry is no session
  }
}

export function clearSession() {
  localStorage.removeItem(SESSION_KEY);
}

// Called with the session when the server says the token is no good (401).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

// Without a session only an `anonymous` request goes out (signing up): any
// other would only be a 401, like those of a catch-up still running when the
// user logged out.
export async function request(method, path, body, { anonymous = false } = {}) {
  const headers = {};
  const session = loadSession();
  if (!session && !anonymous) throw new ApiError(401, "You are not logged in");
  if (session) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && session) onUnauthorized();
    throw new ApiError(response.status, data?.detail);
  }
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);

// POST /token takes a form (the OAuth2 password flow), not JSON.
export async function logIn(username, password) {
  const response = await fetch("/token", {
    method: "POST",
    body: new URLSearchParams({ username, password }),
  });
  const data = await response.json().catch(() => null);
  if (response.status === 401) throw new ApiError(401, "Wrong username or password");
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    throw new ApiError(429, `Too many failed attempts; try again in ${wait ?? "a few"} seconds`);
  }
  if (!response.ok) throw new ApiError(response.status, data?.detail);
  // Keep the expiry as an absolute time: expires_in counts from now.
  const session = { token: data.access_token, expiresAt: Date.now() + data.expires_in * 1000 };
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  return session;
}

export async function signUp(username, password) {
  await request("POST", "/users", { username, password }, { anonymous: true });
  return logIn(username, password);
}

// The server revokes the token (and closes the sockets opened with it). The
// session is forgotten first, so nothing else sends the token meanwhile.
export async function logOut() {
  const session = loadSession();
  clearSession();
  if (!session) return;
  await fetch("/logout", {
    method: "POST",
    headers: { Authorization: `Bearer ${session.token}` },
  }).catch(() => {}); // offline: the token still expires on its own
}

// A client_id for each message, so a retried send never makes a duplicate.
// crypto.randomUUID needs HTTPS or localhost; getRandomValues works everywhere.
export function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
