// The HTTP side of the API: the saved session and one fetch wrapper.
//
// A login gives two tokens. The access token goes with every request, in the
// Authorization header (never a cookie or a URL, so another site cannot make
// the browser use it), and lives minutes. The refresh token, exchanged at
// POST /token for a new pair, keeps the session going. A reload and every tab
// of this browser share the session (docs/security.md says where it is kept,
// and why). A refresh token works once: were two tabs to send the same one,
// the server would take it for a stolen copy and end the session. So tabs
// refresh one at a time (Web Locks), and a tab that finds the pair renewed by
// another uses it. That check reads IndexedDB: localStorage, quicker to read,
// may show one tab's write to another only a moment later.

const SESSION_KEY = "messageapp.session";
const LOCK = "messageapp.refresh";
const REFRESH_BEFORE_MS = 60_000; // refresh this long before expiry (or at 3/4 of a short life)

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

// This tab's copy, read at once (localStorage).
export function loadSession() {
  try {
    const session = JSON.parse(localStorage.getItem(SESSION_KEY));
    return session?.token && session.expiresAt ? session : null;
  } catch {
    return null; // a damaged entry is no session
  }
}

// The copy every tab agrees on (IndexedDB): a readwrite transaction one tab
// has completed is what the next one to read sees.
const store = new Promise((resolve, reject) => {
  const opening = indexedDB.open("messageapp", 1);
  opening.onupgradeneeded = () => opening.result.createObjectStore("kv");
  opening.onsuccess = () => resolve(opening.result);
  opening.onerror = () => reject(opening.error);
});

async function kept(value) {
  const db = await store;
  return new Promise((resolve, reject) => {
    const tx = db.transaction("kv", value === undefined ? "readonly" : "readwrite");
    const kv = tx.objectStore("kv");
    const reading = value === undefined ? kv.get(SESSION_KEY) : null;
    if (value === null) kv.delete(SESSION_KEY);
    else if (value !== undefined) kv.put(value, SESSION_KEY);
    tx.oncomplete = () => resolve(reading?.result ?? null);
    tx.onerror = () => reject(tx.error);
  });
}

// Times are kept absolute: expires_in counts from now.
async function saveSession(tokens) {
  const now = Date.now();
  const session = {
    token: tokens.access_token,
    expiresAt: now + tokens.expires_in * 1000,
    lifetime: tokens.expires_in * 1000,
    refreshToken: tokens.refresh_token,
  };
  await kept(session);
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
  return session;
}

function expiresSoon(session) {
  const margin = Math.min(REFRESH_BEFORE_MS, (session.lifetime ?? 0) / 4);
  return session.expiresAt - Date.now() < margin;
}

// The session to send a request with, refreshed first if its access token
// expires soon, or if `stale` (one the server refused) is still the saved
// one. null: there is none, or it has ended (log in again).
export async function freshSession(stale = null) {
  const saved = loadSession();
  if (!saved || (!expiresSoon(saved) && saved.token !== stale?.token)) return saved;
  const refresh = async () => {
    const current = await kept(); // another tab may have renewed it meanwhile
    if (current?.token !== loadSession()?.token) {
      if (current) localStorage.setItem(SESSION_KEY, JSON.stringify(current));
      else localStorage.removeItem(SESSION_KEY);
    }
    if (!current || current.token !== saved.token) return current;
    if (!current.refreshToken) return null; // saved before refresh tokens existed
    const response = await fetch("/token", {
      method: "POST",
      body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: current.refreshToken }),
    });
    if (response.ok) return saveSession(await response.json());
    if (response.status === 400 || response.status === 401) {
      clearSession(); // ended, expired, or used twice: the session is over
      return null;
    }
    throw new ApiError(response.status, "Cannot renew the session now"); // try again later
  };
  // Without Web Locks (plain HTTP on a LAN address), tabs may race: rare.
  return navigator.locks ? navigator.locks.request(LOCK, refresh) : refresh();
}

// How many times this tab's session has ended: a request that was on its way
// meanwhile belongs to a session that is over (see `answered`).
let sessionsEnded = 0;

export function clearSession() {
  sessionsEnded += 1;
  localStorage.removeItem(SESSION_KEY);
  kept(null).catch(() => {}); // the other tabs find it gone when they next refresh
}

// Called with the session when the server says the token is no good (401).
let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

// An answer that arrives after the session it was asked in has ended (the
// user signed out meanwhile) is not handed on: the page that asked has been
// cleared, and rendering it would mix two sessions. Its caller gets the error
// of a request sent without a session instead.
function answered(sentIn) {
  if (sentIn !== sessionsEnded) throw new ApiError(401, "You are not logged in");
}

// Without a session only an `anonymous` request goes out (signing up): any
// other would only be a 401, like those of a catch-up still running when the
// user logged out. A 401 gets one refresh and one retry.
export async function request(method, path, body, { anonymous = false } = {}) {
  const sentIn = sessionsEnded;
  const send = (session) => {
    const headers = {};
    if (session) headers.Authorization = `Bearer ${session.token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  };
  let session = await freshSession();
  if (!session && !anonymous) throw new ApiError(401, "You are not logged in");
  let response = await send(session);
  if (response.status === 401 && session) {
    session = await freshSession(session);
    if (session) response = await send(session);
  }
  if (response.ok && !anonymous) answered(sentIn);
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && !anonymous) onUnauthorized();
    throw new ApiError(response.status, data?.detail);
  }
  return data;
}

// One file to POST /conversations/{id}/attachments, with its progress told to
// `onProgress(fraction)`: XMLHttpRequest, since fetch cannot tell an
// upload's progress. Resolves to the Attachment.
export async function upload(conversationId, file, onProgress) {
  const sentIn = sessionsEnded;
  const send = (session) =>
    new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `/conversations/${conversationId}/attachments`);
      xhr.setRequestHeader("Authorization", `Bearer ${session.token}`);
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", () => {
        let data = null;
        try {
          data = JSON.parse(xhr.responseText);
        } catch {}
        resolve({ status: xhr.status, data });
      });
      xhr.addEventListener("error", () => reject(new Error("No connection to the server")));
      const form = new FormData();
      form.append("file", file, file.name || "pasted.png");
      xhr.send(form);
    });
  let session = await freshSession();
  if (!session) throw new ApiError(401, "You are not logged in");
  let answer = await send(session);
  if (answer.status === 401) {
    session = await freshSession(session);
    if (session) answer = await send(session);
  }
  if (answer.status < 400) answered(sentIn);
  if (answer.status >= 400) {
    if (answer.status === 401) onUnauthorized();
    throw new ApiError(answer.status, answer.data?.detail);
  }
  return answer.data;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

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
  return saveSession(data);
}

export async function signUp(username, password) {
  await request("POST", "/users", { username, password }, { anonymous: true });
  return logIn(username, password);
}

// The server ends the session (its tokens, and the sockets opened with them).
// The session is forgotten first, so nothing else sends the token meanwhile.
export async function logOut() {
  const session = await freshSession().catch(() => loadSession());
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
