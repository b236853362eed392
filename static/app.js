// The chat page: what is on screen, and how HTTP and the socket change it.
//
// The server is the source of truth. This page keeps the conversations and
// the open conversation's messages, applies live events to them, and after
// every (re)connect fetches what it may have missed.

import * as api from "./api.js";
import { LiveSocket } from "./socket.js";
import * as views from "./views.js";

const PAGE = 50; // messages per history page
const TYPING_EVERY_MS = 2100; // just over the server's 2 s: see "Typing indicators"
const TYPING_SHOWN_MS = 5000; // over twice that: no flicker between two frames
const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  socket: null,
  conversations: new Map(), // id -> Conversation (the sidebar, and channels being read)
  // The open conversation: {id, messages: Map id -> Message, items: Map id ->
  // its element, pendingItems: Map client_id -> element, complete, loading}.
  // Elements are found through these maps, never by a selector built from an
  // id: a client_id is any string its sender chose, `"]` included.
  view: null,
  pending: new Map(), // client_id -> {clientId, conversationId, content, attachmentIds, files, error}
  // Files for the open conversation's next message: {key, file, progress,
  // attachment (once uploaded), error}. Opening another conversation drops
  // them; the server deletes uploads never sent after a day.
  uploads: [],
  typing: new Map(), // conversation id -> Map user id -> {user, timer}
  readUpTo: new Map(), // conversation id -> highest message id we told the server we read
  typingSentAt: new Map(), // conversation id -> when our last `typing` frame went out
};

// ---- Session: log in, sign up, log out -------------------------------------

function showLogin(message) {
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("login-message").textContent = message;
  $("login-form").reset();
  $("login-username").focus();
}

async function startSession() {
  try {
    state.me = await api.get("/users/me");
  } catch (error) {
    if (error.status === 401) api.clearSession();
    showLogin(
      error.status === 401
        ? "Your session has expired or was revoked. Please log in again."
        : `Cannot reach MessageApp (${error.message}). Reload to try again.`,
    );
    return;
  }
  $("me").replaceChildren("Signed in as ", views.personName(state.me));
  $("login-view").hidden = true;
  $("chat-view").hidden = false;
  try {
    await loadConversations();
    openFirstConversation();
  } catch (error) {
    // A busy server (503) must not leave a dead page: the socket below
    // connects anyway, and its catch-up loads the list again.
    if (!state.me) return; // a 401 ended the session
    $("connection").textContent = `Could not load your conversations (${error.message}); retrying…`;
  }
  state.socket = new LiveSocket({
    getToken: () => api.loadSession()?.token,
    renew: async (token) => Boolean(await api.freshSession({ token })),
    onEvent: handleEvent,
    onReady: catchUp,
    onUnauthorized: () => expired(),
    onStatus: (up) => ($("connection").textContent = up ? "" : "Reconnecting…"),
  });
}

// Back to the login form, forgetting everything about the old session.
function endSession(message) {
  state.socket?.close();
  api.clearSession();
  Object.assign(state, { me: null, socket: null, view: null });
  readTimers.forEach(clearTimeout);
  const maps = [state.conversations, state.pending, state.typing, state.readUpTo];
  for (const map of [...maps, state.typingSentAt, readTimers, sidebarButtons]) map.clear();
  $("conversation-list").replaceChildren();
  closeConversation();
  showLogin(message);
}

function expired() {
  if (state.me) endSession("Your session has expired or was revoked. Please log in again.");
}
api.setUnauthorizedHandler(expired);

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const signingUp = event.submitter?.value === "signup";
  const [username, password] = [form.username.value.trim(), form.password.value];
  $("login-message").textContent = signingUp ? "Signing up…" : "Logging in…";
  try {
    await (signingUp ? api.signUp : api.logIn)(username, password);
    $("login-message").textContent = "";
    await startSession();
  } catch (error) {
    $("login-message").textContent =
      error.status === 409 ? "That username is taken. Pick another, or log in." : error.message;
  }
});

// The page stops at once (its socket closed before the server closes it, no
// request started after this one), and says so once the token is revoked.
$("logout").addEventListener("click", async () => {
  const loggingOut = api.logOut(); // forgets the session before it returns
  endSession("Logging out…");
  await loggingOut;
  if (!state.me) showLogin("You have logged out."); // unless logged in again meanwhile
});

// ---- The sidebar ---------------------------------------------------------

const activity = (c) => c.last_message?.created_at ?? c.created_at;
const latestFirst = (a, b) => activity(b).localeCompare(activity(a)) || b.id - a.id;
const sidebarButtons = new Map(); // conversation id -> its button in the sidebar

function renderSidebar() {
  const focused = document.activeElement?.closest(".conversation");
  const list = [...state.conversations.values()].filter((c) => c.is_member).sort(latestFirst);
  sidebarButtons.clear();
  const items = list.map((c) => {
    const item = views.conversationItem(c, state.me, c.id === state.view?.id);
    sidebarButtons.set(c.id, item.querySelector(".conversation"));
    return item;
  });
  $("conversation-list").replaceChildren(...items);
  // Rebuilding the list must not throw the keyboard user's focus away.
  if (focused) sidebarButtons.get(Number(focused.dataset.id))?.focus();
}

// A reply and a live event can cross: the reply may carry an older version
// of a message than the event that overtook it. Versions only move forward
// (a newer id, then an edit, then the tombstone), so keep the later one.
function laterVersion(a, b) {
  if (!a || !b) return a ?? b;
  if (a.id !== b.id) return a.id > b.id ? a : b;
  if (a.deleted !== b.deleted) return a.deleted ? a : b;
  return (a.edited_at ?? "") >= (b.edited_at ?? "") ? a : b;
}

function remember(c) {
  c.last_message = laterVersion(state.conversations.get(c.id)?.last_message, c.last_message);
  state.conversations.set(c.id, c);
}

async function loadConversations() {
  const list = await api.get("/conversations?limit=200");
  const known = new Set(list.map((c) => c.id));
  for (const id of [...state.conversations.keys()]) {
    if (!known.has(id)) state.conversations.delete(id); // left, or fell off the list
  }
  for (const c of list) {
    // This list may have left the server before our last read marker landed.
    if ((state.readUpTo.get(c.id) ?? 0) >= (c.last_message?.id ?? 0)) c.unread_count = 0;
    remember(c);
  }
  if (state.view && !state.conversations.has(state.view.id)) {
    remember(await api.get(`/conversations/${state.view.id}`));
  }
  renderSidebar();
}

// Nobody should land on an empty pane: open `general` (the oldest channel of
// that name, the one every new user is put in), else the latest conversation.
// Not when a conversation is open already, nor on a phone, where the list is
// the first screen.
function openFirstConversation() {
  if (state.view || getComputedStyle($("conversation")).display === "none") return;
  const mine = [...state.conversations.values()].filter((c) => c.is_member);
  const general = mine
    .filter((c) => c.kind === "channel" && c.title === "general")
    .sort((a, b) => a.id - b.id)[0];
  const first = general ?? mine.sort(latestFirst)[0];
  if (first) openConversation(first.id);
}

async function refreshConversation(id) {
  remember(await api.get(`/conversations/${id}`));
  renderSidebar();
}

$("conversation-list").addEventListener("click", (event) => {
  const button = event.target.closest(".conversation");
  if (button) openConversation(Number(button.dataset.id), { focus: true });
});

// ---- The open conversation ------------------------------------------------

function closeConversation() {
  state.view = null;
  document.body.classList.remove("chat-open");
  $("conversation-title").textContent = "No conversation open";
  $("conversation-info").textContent = "";
  $("messages").replaceChildren();
  $("typing").textContent = "";
  for (const id of ["messages", "composer", "join-bar"]) $(id).hidden = true;
  $("empty-state").hidden = false;
  clearUploads();
}

async function openConversation(id, { focus = false } = {}) {
  if (!state.conversations.has(id)) remember(await api.get(`/conversations/${id}`));
  const view = {
    id,
    messages: new Map(),
    items: new Map(),
    pendingItems: new Map(),
    complete: false,
    loading: true,
  };
  state.view = view;
  document.body.classList.add("chat-open");
  renderHeader();
  $("empty-state").hidden = true;
  $("messages").hidden = false;
  $("messages").replaceChildren();
  $("composer-input").value = "";
  clearUploads();
  renderTyping();
  renderSidebar();
  const page = await api.get(`/conversations/${id}/messages?limit=${PAGE}`);
  if (state.view !== view) return; // another conversation was opened meanwhile
  view.loading = false;
  view.complete = page.length < PAGE;
  page.forEach(addMessage);
  for (const p of state.pending.values()) if (p.conversationId === id) renderPending(p);
  renderStart();
  scrollToBottom();
  markSeen();
  if (focus) (state.conversations.get(id)?.is_member ? $("composer-input") : $("join")).focus();
}

function renderHeader() {
  const c = state.conversations.get(state.view.id);
  $("conversation-title").replaceChildren(views.conversationTitle(c, state.me));
  $("conversation-info").textContent =
    c.kind === "direct" ? "direct message" : `${c.kind} · ${c.member_count} members`;
  $("composer").hidden = !c.is_member;
  $("join-bar").hidden = c.is_member;
}

function renderStart() {
  const list = $("messages");
  if (state.view.complete && !list.querySelector(".start")) {
    list.prepend(views.el("li", { className: "start" }, "This is the start of the conversation."));
  }
}

const nearBottom = (list) => list.scrollHeight - list.scrollTop - list.clientHeight < 60;
const scrollToBottom = () => ($("messages").scrollTop = $("messages").scrollHeight);

// Put a message in the open conversation, in id order, or replace the one
// shown with the same id. Pending messages stay last, until theirs arrives.
function addMessage(message) {
  const view = state.view;
  if (!view || message.conversation_id !== view.id) return;
  const known = view.messages.get(message.id);
  if (known && laterVersion(known, message) === known && known !== message) return;
  view.messages.set(message.id, message);
  const list = $("messages");
  const item = views.messageItem(message, state.me);
  const old = view.items.get(message.id);
  view.items.set(message.id, item);
  if (old) {
    old.replaceWith(item);
    return;
  }
  const own = message.author.id === state.me.id;
  // Only our own message takes the place of our pending one: another
  // member's client_id may be anything, even a copy of ours.
  if (own) removePendingItem(view, message.client_id);
  const later = [...list.querySelectorAll(".message")].find(
    (li) => !li.dataset.id || Number(li.dataset.id) > message.id,
  );
  // A new message at the end follows the reader down; an older one (our own
  // too, in a page loaded by scrolling up) leaves the view where it is.
  const stick = !later?.dataset.id && (nearBottom(list) || own);
  list.insertBefore(item, later ?? null);
  if (stick) scrollToBottom();
}

// Older pages when the reader scrolls near the top (before= the oldest shown).
async function loadOlder() {
  const view = state.view;
  if (!view || view.loading || view.complete) return;
  view.loading = true;
  const oldest = Math.min(...view.messages.keys());
  try {
    const page = await api.get(`/conversations/${view.id}/messages?limit=${PAGE}&before=${oldest}`);
    if (state.view !== view) return;
    const list = $("messages");
    const height = list.scrollHeight;
    page.forEach(addMessage);
    view.complete = page.length < PAGE;
    renderStart();
    // Keep what the reader was looking at in place: down by exactly what was
    // added above it. The list has overflow-anchor: none (style.css), or
    // Chromium's scroll anchoring would move it once more.
    list.scrollTop += list.scrollHeight - height;
  } finally {
    view.loading = false; // a failed page is asked for again on the next scroll
  }
}

$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 100) loadOlder();
  markSeen();
});

// ---- Read markers: a message counts as read once it has been on screen ---

const readTimers = new Map(); // conversation id -> the pending POST .../read

function markSeen() {
  const view = state.view;
  if (!view || document.visibilityState !== "visible") return;
  if (!state.conversations.get(view.id).is_member) return; // no marker in a channel only read
  const box = $("messages").getBoundingClientRect();
  let seen = 0;
  for (const li of $("messages").querySelectorAll(".message[data-id]")) {
    const r = li.getBoundingClientRect();
    if (r.bottom > box.top && r.top < box.bottom) seen = Math.max(seen, Number(li.dataset.id));
  }
  if (seen <= (state.readUpTo.get(view.id) ?? 0)) return;
  state.readUpTo.set(view.id, seen);
  const c = state.conversations.get(view.id);
  const all = seen >= (c.last_message?.id ?? 0);
  if (all && c.unread_count > 0) {
    c.unread_count = 0; // the badge goes at once; the server hears of it just after
    renderSidebar();
  }
  clearTimeout(readTimers.get(view.id)); // one request for a burst of scrolling
  readTimers.set(view.id, setTimeout(() => sendRead(view.id, seen, all), 200));
}

async function sendRead(id, messageId, all) {
  await api.post(`/conversations/${id}/read`, { message_id: messageId });
  if (!all) await refreshConversation(id); // read part of it: the server counts the rest
}

document.addEventListener("visibilitychange", markSeen);

// ---- Sending, with a client_id so a retry never duplicates ---------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const content = $("composer-input").value;
  if (!state.view) return;
  if (state.uploads.some((u) => !u.attachment && !u.error)) {
    alertUser("Wait for the files to finish uploading");
    return;
  }
  const files = state.uploads.filter((u) => u.attachment).map((u) => u.attachment);
  if (!content.trim() && !files.length) return;
  const pending = {
    clientId: api.newClientId(),
    conversationId: state.view.id,
    content: content.trim() ? content : "",
    attachmentIds: files.map((a) => a.id),
    files,
    error: null,
  };
  state.pending.set(pending.clientId, pending);
  $("composer-input").value = "";
  clearUploads();
  trySend(pending);
});

// ---- Attachments: the button, drag and drop, pasting an image ---------------

let uploadKeys = 0;

function clearUploads() {
  state.uploads = [];
  renderUploads();
}

function renderUploads() {
  $("uploads").replaceChildren(...state.uploads.map(views.uploadItem));
  $("uploads").hidden = state.uploads.length === 0;
}

async function startUpload(file) {
  const view = state.view;
  if (!view || !state.conversations.get(view.id)?.is_member) return;
  const upload = { key: String(++uploadKeys), file, progress: 0, attachment: null, error: null };
  state.uploads.push(upload);
  renderUploads();
  try {
    upload.attachment = await api.upload(view.id, file, (fraction) => {
      upload.progress = fraction;
      const bar = $("uploads").querySelector(`[data-key="${upload.key}"] progress`);
      if (bar) bar.value = fraction;
    });
  } catch (error) {
    upload.error = error instanceof api.ApiError ? error.message : "No connection to the server";
  }
  if (state.view === view) renderUploads();
}

$("attach").addEventListener("click", () => $("file-input").click());
$("file-input").addEventListener("change", () => {
  for (const file of $("file-input").files) startUpload(file);
  $("file-input").value = "";
});
$("uploads").addEventListener("click", (event) => {
  const item = event.target.closest("li");
  if (!event.target.matches(".remove") || !item) return;
  state.uploads = state.uploads.filter((u) => u.key !== item.dataset.key);
  renderUploads();
});

// Files dropped anywhere on the open conversation.
const dropZone = $("conversation");
const carriesFiles = (event) => event.dataTransfer?.types.includes("Files");
dropZone.addEventListener("dragover", (event) => {
  if (!carriesFiles(event) || !state.view) return;
  event.preventDefault();
  dropZone.classList.add("dropping");
});
dropZone.addEventListener("dragleave", (event) => {
  if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove("dropping");
});
dropZone.addEventListener("drop", (event) => {
  dropZone.classList.remove("dropping");
  if (!carriesFiles(event) || !state.view) return;
  event.preventDefault();
  for (const file of event.dataTransfer.files) startUpload(file);
});

// An image pasted into the composer (a screenshot) is uploaded; text pastes as usual.
$("composer-input").addEventListener("paste", (event) => {
  const files = [...(event.clipboardData?.files ?? [])];
  if (!files.length) return;
  event.preventDefault();
  files.forEach(startUpload);
});

// Enter sends, Shift+Enter starts a new line (and IME composition is left alone).
$("composer-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

async function trySend(pending) {
  pending.error = null;
  renderPending(pending);
  try {
    const body = { client_id: pending.clientId };
    if (pending.content) body.content = pending.content;
    if (pending.attachmentIds?.length) body.attachment_ids = pending.attachmentIds;
    const message = await api.post(`/conversations/${pending.conversationId}/messages`, body);
    receiveMessage(message);
  } catch (error) {
    if (!state.pending.has(pending.clientId)) return; // the socket brought it meanwhile
    pending.error = error instanceof api.ApiError ? error.message : "No connection to the server";
    renderPending(pending);
  }
}

function renderPending(pending) {
  const view = state.view;
  if (view?.id !== pending.conversationId) return;
  const item = views.pendingItem(pending, state.me);
  const old = view.pendingItems.get(pending.clientId);
  view.pendingItems.set(pending.clientId, item);
  if (old) old.replaceWith(item);
  else $("messages").append(item);
  scrollToBottom();
}

function removePendingItem(view, clientId) {
  view.pendingItems.get(clientId)?.remove();
  view.pendingItems.delete(clientId);
}

$("messages").addEventListener("click", (event) => {
  const item = event.target.closest(".message");
  if (!item) return;
  const pending = state.pending.get(item.dataset.clientId);
  const message = state.view.messages.get(Number(item.dataset.id));
  if (event.target.matches(".retry")) trySend(pending);
  else if (event.target.matches(".discard")) {
    state.pending.delete(pending.clientId);
    removePendingItem(state.view, pending.clientId);
  } else if (event.target.matches(".edit")) startEdit(item, message);
  else if (event.target.matches(".delete")) deleteMessage(message);
});

// ---- Editing and deleting your own messages --------------------------------

function startEdit(item, message) {
  const view = state.view;
  const form = views.editForm(message);
  const input = form.querySelector("textarea");
  const done = () => {
    if (view.items.get(message.id) !== item) return; // a newer version replaced it already
    const shown = views.messageItem(view.messages.get(message.id), state.me); // the latest
    item.replaceWith(shown);
    view.items.set(message.id, shown);
    shown.querySelector(".edit")?.focus(); // the keyboard user is back where they were
  };
  item.querySelector(".content").replaceWith(form);
  item.querySelector(".message-actions").hidden = true;
  form.querySelector(".cancel").addEventListener("click", done);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") done();
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    try {
      addMessage(await api.request("PATCH", `/messages/${message.id}`, { content: input.value }));
      $("composer-input").focus();
    } catch (error) {
      alertUser(`Could not edit: ${error.message}`);
    }
  });
  input.focus();
}

async function deleteMessage(message) {
  if (!confirm("Delete this message? Everyone will see that it was deleted.")) return;
  try {
    await api.request("DELETE", `/messages/${message.id}`);
    receiveMessage({ ...message, content: null, deleted: true });
    $("composer-input").focus();
  } catch (error) {
    alertUser(`Could not delete: ${error.message}`);
  }
}

function alertUser(text) {
  $("announcer").textContent = text;
  $("typing").textContent = text;
}

// A request that failed after the page moved on (the server went away, the
// session ended): say so on the page instead of as an uncaught error.
window.addEventListener("unhandledrejection", (event) => {
  const error = event.reason;
  const offline = error instanceof TypeError && /fetch/i.test(error.message);
  if (!(error instanceof api.ApiError) && !offline) return; // a real bug: leave it loud
  event.preventDefault();
  if (state.me) alertUser(offline ? "No connection to the server." : error.message);
});

// ---- Live events -----------------------------------------------------------

function handleEvent(event) {
  switch (event.type) {
    case "message.created":
    case "message.updated":
    case "message.deleted":
      receiveMessage(event.message, event.type === "message.created");
      break;
    case "conversation.joined":
      remember(event.conversation);
      renderSidebar();
      if (state.view?.id === event.conversation.id) renderHeader();
      break;
    case "read": // this user read on another tab or device
      refreshConversation(event.conversation_id);
      break;
    case "typing":
      showTyping(event.conversation_id, event.user);
      break;
  }
}

// A message from the socket or from our own request: same handling, so the
// same message arriving both ways shows once.
function receiveMessage(message, isNew = false) {
  const own = message.author.id === state.me.id;
  const c = state.conversations.get(message.conversation_id);
  if (!c) {
    refreshConversation(message.conversation_id); // one we did not know: fetch it whole
    return;
  }
  if (own && state.pending.delete(message.client_id)) isNew = false; // counted already
  c.last_message = laterVersion(c.last_message, message);
  if (isNew && !own && c.is_member) c.unread_count += 1;
  if (message.deleted && !own && c.unread_count > 0) refreshConversation(c.id);
  addMessage(message);
  if (isNew && !own) {
    clearTyping(message.conversation_id, message.author.id);
    if (state.view?.id === c.id) {
      const files = message.attachments?.length ? ` (shared ${views.sharedText(message.attachments)})` : "";
      $("announcer").textContent = `${views.nameOf(message.author)}: ${message.content}${files}`;
    }
  }
  renderSidebar();
  markSeen();
}

// After every connect: refresh the sidebar (unread counts, conversations
// joined meanwhile), then fetch what the open conversation missed.
async function catchUp() {
  await loadConversations();
  $("connection").textContent = "";
  openFirstConversation(); // if the first load failed, or nothing is open yet
  const view = state.view;
  if (!view || view.loading) return;
  let after = Math.max(0, ...view.messages.keys());
  for (;;) {
    const page = await api.get(`/conversations/${view.id}/messages?limit=200&after=${after}`);
    page.forEach((m) => receiveMessage(m));
    if (page.length < 200) break;
    after = page.at(-1).id;
  }
  // after= brings new messages only; edits and deletions come with a re-read.
  const newest = await api.get(`/conversations/${view.id}/messages?limit=${PAGE}`);
  newest.forEach(addMessage);
}

// ---- Typing indicators -----------------------------------------------------

// The server relays one `typing` per user and conversation every 2 s and
// drops the rest (realtime.py). So a frame goes out when it will be relayed:
// at once if the last one left over TYPING_EVERY_MS ago, else by a timer at
// that moment. One sent sooner would be dropped, and if the typing stopped
// before the next was due (a short reply), nobody would see it at all.
// Sending a message does not restart the count: the server's does not either.
let typingDue = null; // {id, timer}: a frame waiting for its moment

$("composer-input").addEventListener("input", () => {
  const id = state.view?.id;
  if (!id || typingDue?.id === id) return;
  clearTimeout(typingDue?.timer); // one for a conversation left since
  const wait = (state.typingSentAt.get(id) ?? 0) + TYPING_EVERY_MS - Date.now();
  typingDue = { id, timer: setTimeout(() => sendTyping(id), Math.max(0, wait)) };
});

function sendTyping(id) {
  typingDue = null;
  // Not if the text went out as a message (or was cleared) meanwhile.
  if (state.view?.id !== id || !$("composer-input").value.trim()) return;
  // Not connected yet (or reconnecting): nothing went, the next keystroke tries again.
  if (state.socket?.send({ type: "typing", conversation_id: id })) {
    state.typingSentAt.set(id, Date.now());
  }
}

function showTyping(conversationId, user) {
  if (user.id === state.me.id) return;
  const typers = state.typing.get(conversationId) ?? new Map();
  state.typing.set(conversationId, typers);
  clearTimeout(typers.get(user.id)?.timer);
  const timer = setTimeout(() => clearTyping(conversationId, user.id), TYPING_SHOWN_MS);
  typers.set(user.id, { user, timer });
  renderTyping();
}

function clearTyping(conversationId, userId) {
  const typers = state.typing.get(conversationId);
  clearTimeout(typers?.get(userId)?.timer);
  typers?.delete(userId);
  renderTyping();
}

function renderTyping() {
  const typers = [...(state.typing.get(state.view?.id)?.values() ?? [])];
  const line = typers.flatMap((t, i) => [i > 0 ? ", " : "", views.personName(t.user)]);
  if (typers.length > 0) line.push(typers.length > 1 ? " are typing…" : " is typing…");
  $("typing").replaceChildren(...line);
}

// ---- Dialogs: new direct message, new group, channels, search -------------

function openDialog(id) {
  const dialog = $(id);
  dialog.querySelectorAll(".error").forEach((p) => (p.textContent = ""));
  dialog.showModal(); // modal: focus moves in, Escape closes, the page behind is inert
  return dialog;
}

document.querySelectorAll("dialog .close").forEach((button) =>
  button.addEventListener("click", () => button.closest("dialog").close()),
);

function showError(dialog, error) {
  dialog.querySelector(".error").textContent = error.message;
}

async function startConversation(dialog, body) {
  try {
    const conversation = await api.post("/conversations", body);
    remember(conversation);
    dialog.close();
    await openConversation(conversation.id, { focus: true });
  } catch (error) {
    showError(dialog, error);
  }
}

$("new-direct").addEventListener("click", () => {
  $("direct-query").value = "";
  $("direct-results").replaceChildren();
  openDialog("direct-dialog");
});

let directSearch = 0;
$("direct-query").addEventListener("input", async () => {
  const query = $("direct-query").value.trim();
  const ticket = ++directSearch; // answers may come back out of order: keep the latest
  const users = query ? await api.get(`/users?q=${encodeURIComponent(query)}&limit=10`) : [];
  if (ticket !== directSearch) return;
  const others = users.filter((u) => u.id !== state.me.id);
  $("direct-results").replaceChildren(
    ...others.map((u) =>
      views.el(
        "li",
        {},
        views.el(
          "button",
          { type: "button", dataset: { username: u.username } },
          views.personName(u),
        ),
      ),
    ),
  );
  if (query && others.length === 0) {
    $("direct-results").append(views.el("li", { className: "none" }, "Nobody by that name."));
  }
});

$("direct-results").addEventListener("click", (event) => {
  const username = event.target.closest("button")?.dataset.username;
  if (username) startConversation($("direct-dialog"), { kind: "direct", members: [username] });
});

$("new-group").addEventListener("click", () => {
  $("group-form").reset();
  openDialog("group-dialog");
});

$("group-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const members = $("group-members")
    .value.split(/[\s,]+/)
    .filter(Boolean);
  startConversation($("group-dialog"), { kind: "group", title: $("group-title").value, members });
});

$("browse-channels").addEventListener("click", async () => {
  $("channel-form").reset();
  const dialog = openDialog("channels-dialog");
  try {
    const channels = await api.get("/channels?limit=200");
    $("channel-list").replaceChildren(
      ...channels.map((c) =>
        views.el(
          "li",
          { className: "choice" },
          views.el(
            "span",
            {},
            `# ${c.title}`,
            views.el("span", { className: "info" }, ` · ${c.member_count} members`),
          ),
          views.el(
            "button",
            { type: "button", dataset: { id: c.id } },
            c.is_member ? "Open" : "View",
          ),
          !c.is_member &&
            views.el(
              "button",
              { type: "button", className: "join", dataset: { id: c.id } },
              "Join",
            ),
        ),
      ),
    );
  } catch (error) {
    showError(dialog, error);
  }
});

$("channel-list").addEventListener("click", async (event) => {
  const id = Number(event.target.closest("button")?.dataset.id);
  if (!id) return;
  $("channels-dialog").close();
  if (event.target.matches(".join")) await joinChannel(id);
  else await openConversation(id, { focus: true });
});

async function joinChannel(id) {
  remember(await api.post(`/conversations/${id}/join`));
  await openConversation(id, { focus: true });
}

$("join").addEventListener("click", () => joinChannel(state.view.id));

$("channel-form").addEventListener("submit", (event) => {
  event.preventDefault();
  startConversation($("channels-dialog"), { kind: "channel", title: $("channel-title").value });
});

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const dialog = openDialog("search-dialog");
  const q = $("search-input").value;
  $("search-heading").textContent = `Messages with “${q}”`;
  $("search-results").replaceChildren();
  try {
    const found = await api.get(`/search/messages?q=${encodeURIComponent(q)}&limit=50`);
    $("search-results").replaceChildren(
      ...found.map((m) => {
        const c = state.conversations.get(m.conversation_id);
        return views.searchResult(m, c ? views.conversationTitle(c, state.me) : "");
      }),
    );
    if (found.length === 0) {
      $("search-results").append(views.el("li", { className: "none" }, "Nothing found."));
    }
  } catch (error) {
    showError(dialog, error);
  }
});

$("search-results").addEventListener("click", (event) => {
  const id = Number(event.target.closest(".result")?.dataset.conversationId);
  if (!id) return;
  $("search-dialog").close();
  openConversation(id, { focus: true });
});

// ---- Settings: your sessions -------------------------------------------------

async function loadSessions() {
  const dialog = $("settings-dialog");
  try {
    const sessions = await api.get("/sessions");
    $("session-list").replaceChildren(...sessions.map(views.sessionItem));
    $("end-other-sessions").disabled = sessions.length < 2;
  } catch (error) {
    showError(dialog, error);
  }
}

$("settings").addEventListener("click", () => {
  openDialog("settings-dialog");
  loadSessions();
});

$("session-list").addEventListener("click", async (event) => {
  const id = event.target.closest("button")?.dataset.sessionId;
  if (!id) return;
  try {
    await api.del(`/sessions/${id}`);
  } catch (error) {
    showError($("settings-dialog"), error);
  }
  await loadSessions();
});

$("end-other-sessions").addEventListener("click", async () => {
  try {
    await api.post("/sessions/end-others");
  } catch (error) {
    showError($("settings-dialog"), error);
  }
  await loadSessions();
});

// On a phone the sidebar and the conversation take turns on the screen.
$("back").addEventListener("click", () => {
  document.body.classList.remove("chat-open");
  sidebarButtons.get(state.view?.id)?.focus();
});

// ---- Start -----------------------------------------------------------------

// A saved session whose access token has expired is refreshed on the way.
if (api.loadSession()) startSession();
else showLogin("");
