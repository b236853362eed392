// The chat page: what is on screen, and how HTTP and the socket change it.
//
// The server is the source of truth. This page keeps the conversations and
// the open conversation's messages, applies live events to them, and after
// every (re)connect fetches what it may have missed.

import * as api from "./api.js";
import { MentionPicker } from "./mentions.js";
import * as notify from "./notify.js";
import { LiveSocket } from "./socket.js";
import * as views from "./views.js";

const PAGE = 50; // messages per history page
const GROUP_WITHIN_MS = 5 * 60 * 1000; // one author's messages this close share one name
const UNREAD_SEARCH_LIMIT = 500; // how far back the first unread message is looked for
const TYPING_EVERY_MS = 2100; // just over the server's 2 s: see "Typing indicators"
const TYPING_SHOWN_MS = 5000; // over twice that: no flicker between two frames
const MEMBER_PAGE = 1000; // a channel's members fetched for the @ list (the route's limit)
const $ = (id) => document.getElementById(id);
// Notifications are a help: one that fails (permission taken back in the
// browser's settings meanwhile) is worth a warning, not an error.
const warnNotifications = (error) => console.warn("Notifications:", error);

const state = {
  me: null,
  socket: null,
  conversations: new Map(), // id -> Conversation (the sidebar, and channels being read)
  // The open conversation: {id, messages: Map id -> Message, items: Map id ->
  // its element, pendingItems: Map client_id -> element, complete (the oldest
  // is loaded), atEnd (the newest is loaded), loading, firstUnreadId (where
  // the "New messages" line goes), newCount (arrived while scrolled up)}.
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
  replyTo: null, // the message the composer answers, if any
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
  notify.resume(state.me).catch(warnNotifications);
  const linked = takeLinkedMessage();
  try {
    await loadConversations();
    if (linked) await openLinked(linked);
    else openFirstConversation();
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
  picker.close();
  document.title = "MessageApp";
  notify.showUnreadOnIcon(0);
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
// First, while the token still works, this browser's push subscription goes:
// on a shared computer the next person must not get this one's pushes.
$("logout").addEventListener("click", async () => {
  if (!state.me) return; // a second click while the first one is on its way
  $("logout").disabled = true;
  await notify.signOut();
  $("logout").disabled = false;
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
  const unread = list.reduce((sum, c) => sum + c.unread_count, 0);
  document.title = unread > 0 ? `(${unread}) MessageApp` : "MessageApp";
  notify.showUnreadOnIcon(unread); // the tab's icon too, for a tab among many
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
    if ((state.readUpTo.get(c.id) ?? 0) >= (c.last_message?.id ?? 0)) {
      c.unread_count = 0;
      c.unread_mentions = 0;
    }
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

// A link from a notification (sw.js opens /?conversation=C&message=M). Read
// once and taken out of the address bar, so that a reload does not jump again.
function takeLinkedMessage() {
  const params = new URLSearchParams(location.search);
  if (!params.has("conversation")) return null;
  history.replaceState(null, "", location.pathname);
  const id = (name) => {
    const value = params.get(name) ?? "";
    return /^[1-9][0-9]{0,15}$/.test(value) ? Number(value) : null; // an id, or nothing
  };
  return id("conversation") ? { conversation: id("conversation"), message: id("message") } : null;
}

// Open a linked conversation at the message, phone width included (the
// user asked for it). One they can no longer read (left, or a wrong link):
// say so and open the usual one.
async function openLinked({ conversation, message }) {
  try {
    await openConversation(conversation, { at: message, focus: true });
  } catch (error) {
    if (error.status !== 403 && error.status !== 404) throw error;
    alertUser("That conversation is not open to you.");
    openFirstConversation();
  }
}

// A click on a notification while a tab is open: sw.js focuses this tab and
// says what to open. Signed out, it waits in the address bar for the sign-in.
navigator.serviceWorker?.addEventListener("message", (event) => {
  const { type, conversationId, messageId } = event.data ?? {};
  if (type !== "open") return;
  const linked = { conversation: Number(conversationId), message: Number(messageId) || null };
  if (state.me) openLinked(linked);
  else {
    const url = `/?conversation=${linked.conversation}&message=${linked.message ?? ""}`;
    history.replaceState(null, "", url);
  }
});

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
  for (const id of ["messages", "composer", "join-bar", "members", "new-messages"]) {
    $(id).hidden = true;
  }
  $("empty-state").hidden = false;
  clearUploads();
  cancelReply();
}

// Open a conversation: at its first unread message (under a "New messages"
// line), at message `at` (a search hit, a replied message), or at the newest.
async function openConversation(id, { focus = false, at = null, query = "", latest = false } = {}) {
  if (!state.conversations.has(id)) remember(await api.get(`/conversations/${id}`));
  const c = state.conversations.get(id);
  const view = {
    id,
    messages: new Map(),
    items: new Map(),
    pendingItems: new Map(),
    complete: false,
    atEnd: true,
    loading: true,
    firstUnreadId: null,
    newCount: 0,
  };
  // Opened again (at a message, or at the newest): what is being typed stays.
  const again = state.view?.id === id;
  if (!again) cancelReply();
  state.view = view;
  document.body.classList.add("chat-open");
  renderHeader();
  $("empty-state").hidden = true;
  $("messages").hidden = false;
  $("messages").replaceChildren();
  $("new-messages").hidden = true;
  if (!again) {
    $("composer-input").value = "";
    picker.close();
    clearUploads();
  }
  renderTyping();
  renderSidebar();
  let page;
  if (at !== null) {
    page = await api.get(`/conversations/${id}/messages?limit=${PAGE}&around=${at}`);
    view.complete = page.filter((m) => m.id <= at).length < PAGE - Math.floor(PAGE / 2);
    view.atEnd = page.filter((m) => m.id > at).length < Math.floor(PAGE / 2);
  } else {
    page = await api.get(`/conversations/${id}/messages?limit=${PAGE}`);
    view.complete = page.length < PAGE;
    // Unread: the newest `unread_count` messages of others, deleted ones
    // aside. Older pages are read until the first of them is in.
    const unread = c.is_member && !latest ? c.unread_count : 0;
    let first = firstUnread(page, unread);
    while (unread > 0 && first === null && !view.complete && page.length < UNREAD_SEARCH_LIMIT) {
      const path = `/conversations/${id}/messages?limit=${PAGE}&before=${page[0].id}`;
      const older = await api.get(path);
      view.complete = older.length < PAGE;
      page = [...older, ...page];
      first = firstUnread(page, unread);
    }
    if (unread > 0) view.firstUnreadId = first ?? page[0]?.id ?? null;
  }
  if (state.view !== view) return; // another conversation was opened meanwhile
  page.forEach((m) => addMessage(m));
  view.loading = false;
  if (view.atEnd) {
    for (const p of state.pending.values()) if (p.conversationId === id) renderPending(p);
  }
  renderStart();
  decorate();
  if (at !== null) showFound(at, query);
  else if (view.firstUnreadId !== null) {
    scrollToItem($("messages").querySelector(".new-line"), "start");
  }
  else scrollToBottom();
  markSeen();
  if (focus) (c.is_member ? $("composer-input") : $("join")).focus();
}

function firstUnread(page, count) {
  if (count <= 0) return null;
  let seen = 0;
  for (let i = page.length - 1; i >= 0; i--) {
    const m = page[i];
    if (m.author.id !== state.me.id && !m.deleted && ++seen === count) return m.id;
  }
  return null;
}

// Scroll the list so that `node` is at its top ("start") or in its middle.
function scrollToItem(node, where = "center") {
  const list = $("messages");
  if (!node) return;
  const margin = where === "start" ? 8 : (list.clientHeight - node.offsetHeight) / 2;
  const top = node.offsetTop - margin;
  list.scrollTop = Math.max(0, top);
}

// A message found (a search hit) or followed (a reply's quote): brought into
// view and marked for a moment, the query highlighted in it.
function showFound(id, query = "") {
  const item = state.view.items.get(id);
  if (!item) return;
  scrollToItem(item);
  item.classList.add("found");
  const content = item.querySelector(":scope > .content");
  if (query && content) views.highlight(content, query); // a file alone has no text
  setTimeout(() => item.classList.remove("found"), 4000);
}

// Jump to a message of the open conversation, loading history around it if
// it is not on the page.
async function jumpTo(id) {
  if (state.view.items.has(id)) showFound(id);
  else await openConversation(state.view.id, { at: id });
  state.view.items.get(id)?.focus();
}

function renderHeader() {
  const c = state.conversations.get(state.view.id);
  $("conversation-title").replaceChildren(views.conversationTitle(c, state.me));
  const level = c.is_member && c.notifications ? c.notifications : null;
  const usual = c.kind === "channel" ? "mentions" : "all"; // the default: not worth a word
  $("conversation-info").textContent =
    (c.kind === "direct" ? "direct message" : `${c.kind} · ${c.member_count} members`) +
    (level && level !== usual ? ` · ${LEVEL_NOTES[level]}` : "");
  $("members").hidden = false;
  $("composer").hidden = !c.is_member;
  $("join-bar").hidden = c.is_member;
}

const LEVEL_NOTES = {
  all: "notifies every message",
  mentions: "notifies mentions only",
  none: "muted",
};

function renderStart() {
  const list = $("messages");
  if (state.view.complete && !list.querySelector(".start")) {
    list.prepend(views.el("li", { className: "start" }, "This is the start of the conversation."));
  }
}

const nearBottom = (list) => list.scrollHeight - list.scrollTop - list.clientHeight < 60;
const scrollToBottom = () => ($("messages").scrollTop = $("messages").scrollHeight);

const isMember = (id) => Boolean(state.conversations.get(id)?.is_member);

// Put a message in the open conversation, in id order, or replace the one
// shown with the same id. Pending messages stay last, until theirs arrives.
// `isNew`: it just arrived live (counted in "N new messages" if unseen).
// `force`: this version replaces the one shown (a reaction changed).
function addMessage(message, { isNew = false, force = false } = {}) {
  const view = state.view;
  if (!view || message.conversation_id !== view.id) return;
  const known = view.messages.get(message.id);
  if (!force && known && laterVersion(known, message) === known && known !== message) return;
  const own = message.author.id === state.me.id;
  // Scrolled back in history (opened at a search hit): what arrives newer
  // than the pages loaded waits until the reader comes down to it, so that
  // no gap opens. (Pages being loaded are contiguous: they go in.)
  const beyond = view.messages.size > 0 && message.id > Math.max(...view.messages.keys());
  if (!known && !view.atEnd && !view.loading && beyond) {
    if (isNew && !own) countNew(view);
    return;
  }
  // Message events go to every member alike, without `me`: keep ours.
  if (known && !force) {
    for (const r of message.reactions) {
      r.me = r.me || Boolean(known.reactions.find((k) => k.emoji === r.emoji)?.me);
    }
  }
  view.messages.set(message.id, message);
  const list = $("messages");
  const item = views.messageItem(message, state.me, isMember(view.id));
  item.tabIndex = -1; // focusable when a reply's quote leads to it
  const old = view.items.get(message.id);
  if (old && force) {
    // Only the reactions changed: swap them alone, so that an edit, a picker
    // or a question open on the message stays, and so does the focus.
    const focused = document.activeElement;
    const focusedEmoji = old.contains(focused) && focused.dataset.emoji;
    const fresh = item.querySelector(".reactions");
    const current = old.querySelector(".reactions");
    if (current) current.replaceWith(...(fresh ? [fresh] : []));
    else if (fresh) {
      // After the files, the text or the edit open on it: whichever comes last.
      const anchors = ":scope > .attachments, :scope > .content, :scope > .edit-form, :scope > .meta";
      [...old.querySelectorAll(anchors)].at(-1).after(fresh);
    }
    if (focusedEmoji) {
      [...old.querySelectorAll(".reaction")].find((b) => b.dataset.emoji === focusedEmoji)?.focus();
    }
    return;
  }
  view.items.set(message.id, item);
  if (old) {
    const focused = old.contains(document.activeElement) && document.activeElement.className;
    old.replaceWith(item);
    decorate();
    // A keyboard user reacting or replying keeps their place in the new element.
    if (focused) item.querySelector(`.message-actions .${focused.split(" ")[0]}`)?.focus();
    return;
  }
  // Only our own message takes the place of our pending one: another
  // member's client_id may be anything, even a copy of ours.
  if (own) removePendingItem(view, message.client_id);
  const later = [...list.querySelectorAll(".message")].find(
    (li) => !li.dataset.id || Number(li.dataset.id) > message.id,
  );
  // A new message at the end follows the reader down; an older one (our own
  // too, in a page loaded by scrolling up) leaves the view where it is.
  const atBottom = nearBottom(list);
  const stick = !later?.dataset.id && (atBottom || own);
  list.insertBefore(item, later ?? null);
  decorate();
  if (stick) scrollToBottom();
  else if (isNew && !own && !later?.dataset.id) countNew(view);
}

// Day separators, the "New messages" line, and one name over consecutive
// messages of one author: laid out again from the messages, in order.
function decorate() {
  const view = state.view;
  const list = $("messages");
  list.querySelectorAll(".day-separator, .new-line").forEach((node) => node.remove());
  let previous = null;
  for (const item of list.querySelectorAll(".message[data-id]")) {
    const message = view.messages.get(Number(item.dataset.id));
    const date = new Date(message.created_at);
    const day = date.toDateString();
    const newDay = !previous || new Date(previous.created_at).toDateString() !== day;
    if (newDay) item.before(views.daySeparator(views.dayLabel(date)));
    const unreadStart = message.id === view.firstUnreadId;
    if (unreadStart) item.before(views.newMessagesLine());
    const grouped =
      !newDay &&
      !unreadStart &&
      previous.author.id === message.author.id &&
      date - new Date(previous.created_at) < GROUP_WITHIN_MS;
    item.classList.toggle("grouped", grouped);
    previous = message;
  }
}

// "N new messages", shown while the reader is scrolled up.
function countNew(view) {
  view.newCount += 1;
  const button = $("new-messages");
  button.textContent = view.newCount === 1 ? "1 new message ↓" : `${view.newCount} new messages ↓`;
  button.hidden = false;
}

$("new-messages").addEventListener("click", async () => {
  const view = state.view;
  $("new-messages").hidden = true;
  if (view.atEnd) {
    view.newCount = 0;
    scrollToBottom();
  } else {
    await openConversation(view.id, { latest: true });
  }
  $("composer-input").focus();
});

// Newer pages when the reader, back in history, scrolls near the bottom.
async function loadNewer() {
  const view = state.view;
  if (!view || view.loading || view.atEnd) return;
  view.loading = true;
  const newest = Math.max(...view.messages.keys());
  try {
    const page = await api.get(`/conversations/${view.id}/messages?limit=${PAGE}&after=${newest}`);
    if (state.view !== view) return;
    view.atEnd = page.length < PAGE;
    page.forEach((m) => addMessage(m));
  } finally {
    view.loading = false;
  }
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
    page.forEach((m) => addMessage(m));
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
  const list = $("messages");
  if (list.scrollTop < 100) loadOlder();
  if (nearBottom(list)) {
    loadNewer();
    if (state.view?.atEnd) {
      state.view.newCount = 0;
      $("new-messages").hidden = true;
    }
  }
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
    c.unread_mentions = 0;
    renderSidebar();
  }
  // Seen in the page: notifications about it have nothing left to say.
  notify.closeNotifications(view.id, seen).catch(warnNotifications);
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
    replyTo: state.replyTo?.conversation_id === state.view.id ? state.replyTo.id : null,
    error: null,
  };
  state.pending.set(pending.clientId, pending);
  picker.close();
  $("composer-input").value = "";
  clearUploads();
  cancelReply();
  // Back in history: what we send goes at the end, so the end comes first.
  if (!state.view.atEnd) openConversation(state.view.id, { latest: true });
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
  if (state.view?.id === view.id) renderUploads();
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

// ---- @ mentions: the list of people while typing "@al" -------------------------

// Who may be mentioned: the conversation's members (the server counts no
// one else). A direct or group conversation lists them itself; a channel's
// (null there) are fetched once per visit.
async function mentionCandidates(query) {
  const view = state.view;
  const c = view && state.conversations.get(view.id);
  if (!c) return [];
  let people = c.members;
  if (!people) {
    const path = `/conversations/${c.id}/members?limit=${MEMBER_PAGE}`;
    view.memberList ??= api.get(path).catch((error) => {
      view.memberList = null; // asked again on the next keystroke
      throw error;
    });
    people = await view.memberList;
    // A channel bigger than that: the directory finds the rest by prefix
    // (someone outside the channel may show; mentioning them notifies no one).
    if (people.length >= MEMBER_PAGE && query) {
      people = await api.get(`/users?q=${encodeURIComponent(query)}&limit=8`);
    }
  }
  return people.filter((u) => u.id !== state.me.id);
}

const picker = new MentionPicker($("composer-input"), $("mention-list"), mentionCandidates);
$("composer-input").addEventListener("input", () => picker.update());

// Enter sends, Shift+Enter starts a new line (and IME composition is left
// alone); ↑ in an empty composer edits your last message; Escape drops a reply.
$("composer-input").addEventListener("keydown", (event) => {
  if (event.isComposing) return;
  if (picker.handleKey(event)) return; // the @ list, while open, has ↑ ↓ Enter Tab Escape
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  } else if (event.key === "ArrowUp" && !$("composer-input").value && state.view) {
    const mine = [...state.view.messages.values()].filter(
      (m) => m.author.id === state.me.id && !m.deleted,
    );
    const last = mine.sort((a, b) => b.id - a.id)[0];
    if (last) {
      event.preventDefault();
      startEdit(state.view.items.get(last.id), last, $("composer-input"));
    }
  } else if (event.key === "Escape" && state.replyTo) {
    cancelReply();
  }
});

function startReply(message) {
  state.replyTo = message;
  $("reply-bar-text").replaceChildren(
    "Replying to ",
    views.personName(message.author),
    `: ${views.previewText(message).slice(0, 100)}`,
  );
  $("reply-bar").hidden = false;
  $("composer-input").focus();
}

function cancelReply() {
  state.replyTo = null;
  $("reply-bar").hidden = true;
}

$("cancel-reply").addEventListener("click", () => {
  cancelReply();
  $("composer-input").focus();
});

async function trySend(pending) {
  pending.error = null;
  renderPending(pending);
  try {
    const body = { client_id: pending.clientId };
    if (pending.content) body.content = pending.content;
    if (pending.attachmentIds?.length) body.attachment_ids = pending.attachmentIds;
    if (pending.replyTo) body.reply_to = pending.replyTo;
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
  const button = event.target.closest("button");
  if (!item || !button) return;
  const pending = state.pending.get(item.dataset.clientId);
  const message = state.view.messages.get(Number(item.dataset.id));
  const is = (name) => button.classList.contains(name);
  if (is("retry")) trySend(pending);
  else if (is("discard")) {
    state.pending.delete(pending.clientId);
    removePendingItem(state.view, pending.clientId);
  } else if (is("edit")) startEdit(item, message);
  else if (is("delete")) askDelete(item, message);
  else if (is("confirm")) deleteMessage(message);
  else if (is("cancel-delete")) closeAside(item, ".confirm-delete", ".delete");
  else if (is("reply")) startReply(message);
  else if (is("react")) openPicker(item, message);
  else if (is("pick")) {
    closeAside(item, ".reaction-picker", ".react");
    react(message, button.dataset.emoji, true);
  } else if (is("cancel-pick")) closeAside(item, ".reaction-picker", ".react");
  else if (is("reaction")) {
    react(message, button.dataset.emoji, button.getAttribute("aria-pressed") !== "true");
  }
  else if (is("reply-quote")) jumpTo(Number(button.dataset.replyTo));
});

// Escape closes the picker or the delete question it is in.
$("messages").addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  const item = event.target.closest(".message");
  if (item?.querySelector(".reaction-picker")) closeAside(item, ".reaction-picker", ".react");
  if (item?.querySelector(".confirm-delete")) closeAside(item, ".confirm-delete", ".delete");
});

// A picker or a question shown in place of the actions bar, and its end:
// the bar back, and the focus on the button that opened it.
function showAside(item, aside) {
  item.querySelector(".message-actions").hidden = true;
  item.querySelector(".reaction-picker, .confirm-delete")?.remove();
  item.append(aside);
  item.classList.add("busy");
}

function closeAside(item, selector, back) {
  item.querySelector(selector)?.remove();
  item.classList.remove("busy");
  const actions = item.querySelector(".message-actions");
  if (actions) actions.hidden = false;
  item.querySelector(back)?.focus();
}

function openPicker(item, message) {
  const picker = views.reactionPicker(message);
  showAside(item, picker);
  picker.querySelector("button").focus();
}

function askDelete(item, message) {
  const question = views.deleteConfirmation(message);
  showAside(item, question);
  question.querySelector(".cancel-delete").focus();
}

// ---- Reactions ---------------------------------------------------------------

async function react(message, emoji, add) {
  try {
    const path = `/messages/${message.id}/reactions/${encodeURIComponent(emoji)}`;
    await api.request(add ? "PUT" : "DELETE", path);
    // At once, without waiting for the event (which may be slower, or lost
    // while the socket reconnects); the event then gives the exact count.
    const mine = message.reactions.find((r) => r.emoji === emoji);
    if (add && !mine?.me) applyReaction(message.id, emoji, (mine?.count ?? 0) + 1, true);
    if (!add && mine?.me) applyReaction(message.id, emoji, mine.count - 1, false);
  } catch (error) {
    alertUser(`Could not react: ${error.message}`);
  }
}

// A reaction's new count, and whether it is ours (undefined: unchanged).
function applyReaction(messageId, emoji, count, me) {
  const message = state.view?.messages.get(messageId);
  if (!message) return;
  const reactions = message.reactions.map((r) => ({ ...r }));
  let reaction = reactions.find((r) => r.emoji === emoji);
  if (!reaction) {
    reaction = { emoji, count, me: Boolean(me) };
    reactions.push(reaction);
  }
  reaction.count = count;
  if (me !== undefined) reaction.me = me;
  addMessage({ ...message, reactions: reactions.filter((r) => r.count > 0) }, { force: true });
}

// ---- Editing and deleting your own messages --------------------------------

// `back`: where the focus goes when the edit ends (the composer, after ↑).
function startEdit(item, message, back = null) {
  const view = state.view;
  const form = views.editForm(message);
  const input = form.querySelector("textarea");
  const done = () => {
    if (view.items.get(message.id) !== item) return; // a newer version replaced it already
    const shown = views.messageItem(view.messages.get(message.id), state.me, true); // the latest
    shown.tabIndex = -1;
    item.replaceWith(shown);
    view.items.set(message.id, shown);
    decorate();
    (back ?? shown.querySelector(".edit"))?.focus(); // the keyboard user is back where they were
  };
  // A message of files alone has no text yet: the form goes where it would be.
  const content = item.querySelector(":scope > .content");
  if (content) content.replaceWith(form);
  else [...item.querySelectorAll(":scope > .meta, :scope > .reply-quote")].at(-1).after(form);
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
  try {
    await api.request("DELETE", `/messages/${message.id}`);
    receiveMessage({ ...message, content: null, deleted: true, reactions: [], attachments: [] });
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
    case "reaction.added":
    case "reaction.removed": {
      const mine = event.user.id === state.me.id;
      const me = mine ? event.type === "reaction.added" : undefined;
      applyReaction(event.message_id, event.emoji, event.count, me);
      break;
    }
  }
}

// A message from the socket or from our own request: same handling, so the
// same message arriving both ways shows once.
function receiveMessage(message, isNew = false) {
  const own = message.author.id === state.me.id;
  const c = state.conversations.get(message.conversation_id);
  if (!c) {
    // One we did not know (someone's first message to us): fetch it whole.
    const id = message.conversation_id;
    refreshConversation(id).then(() => {
      if (isNew && !own && isMember(id)) notifyOf(state.conversations.get(id), message);
    });
    return;
  }
  if (own && state.pending.delete(message.client_id)) isNew = false; // counted already
  // A conversation fetched after this message was sent counts it already in
  // its unread (its messages commit in id order): the event of a message
  // racing that fetch must not count it twice.
  const counted = c.last_message != null && message.id <= c.last_message.id;
  c.last_message = laterVersion(c.last_message, message);
  if (isNew && !own && c.is_member) {
    if (!counted) {
      c.unread_count += 1;
      if (views.mentionsMe(message, state.me)) c.unread_mentions = (c.unread_mentions ?? 0) + 1;
    }
    notifyOf(c, message);
  }
  if (message.deleted && !own && c.unread_count > 0) refreshConversation(c.id);
  addMessage(message, { isNew });
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

// A desktop notification, shown only if the tab is hidden and the
// conversation's level asks for it (notify.js decides).
function notifyOf(c, message) {
  const title = c.kind === "channel" ? `# ${c.title}` : titleText(c);
  notify.notifyMessage(c, message, state.me, title).catch(warnNotifications);
}

// After every connect: refresh the sidebar (unread counts, conversations
// joined meanwhile), then fetch what the open conversation missed.
async function catchUp() {
  await loadConversations();
  $("connection").textContent = "";
  openFirstConversation(); // if the first load failed, or nothing is open yet
  const view = state.view;
  if (!view || view.loading || !view.atEnd) return; // back in history: loadNewer() will come
  let after = Math.max(0, ...view.messages.keys());
  for (;;) {
    const page = await api.get(`/conversations/${view.id}/messages?limit=200&after=${after}`);
    page.forEach((m) => receiveMessage(m));
    if (page.length < 200) break;
    after = page.at(-1).id;
  }
  // after= brings new messages only; edits and deletions come with a re-read.
  const newest = await api.get(`/conversations/${view.id}/messages?limit=${PAGE}`);
  newest.forEach((m) => addMessage(m));
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
        return views.searchResult(m, c ? views.conversationTitle(c, state.me) : "", q);
      }),
    );
    if (found.length === 0) {
      $("search-results").append(views.el("li", { className: "none" }, "Nothing found."));
    }
  } catch (error) {
    showError(dialog, error);
  }
});

// A result opens its conversation at the message, the words found marked.
$("search-results").addEventListener("click", (event) => {
  const result = event.target.closest(".result");
  if (!result) return;
  $("search-dialog").close();
  openConversation(Number(result.dataset.conversationId), {
    focus: true,
    at: Number(result.dataset.messageId),
    query: $("search-input").value,
  });
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
  $("profile-form").reset();
  $("password-form").reset();
  document.querySelectorAll("#settings-dialog .status").forEach((p) => (p.textContent = ""));
  $("display-name").value = state.me.display_name ?? "";
  renderNotificationSettings();
  loadSessions();
});

// ---- Settings: notifications in this browser -------------------------------

function renderNotificationSettings(text = "") {
  const on = notify.enabledFor(state.me);
  $("enable-notifications").hidden = on;
  $("enable-notifications").disabled = !notify.supported();
  $("disable-notifications").hidden = !on;
  const unavailable = "Not available here: browsers allow them only on HTTPS (or localhost).";
  $("notifications-status").textContent = text || (notify.supported() ? "" : unavailable);
}

// The browser asks for permission now, on this click, and only then.
$("enable-notifications").addEventListener("click", async () => {
  try {
    const noPush = await notify.enable(state.me);
    renderNotificationSettings(
      noPush
        ? `On while MessageApp is open. Not while it is closed: ${noPush}.`
        : "On: this browser will be notified, with MessageApp open or closed.",
    );
    $("disable-notifications").focus(); // the button pressed is gone: focus its opposite
  } catch (error) {
    renderNotificationSettings(error.message);
  }
});

$("disable-notifications").addEventListener("click", async () => {
  await notify.disable();
  renderNotificationSettings("Off in this browser.");
  $("enable-notifications").focus();
});

// A form's own line: "Saved." or what went wrong.
function say(form, text) {
  form.querySelector(".status").textContent = text;
}

$("profile-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const name = $("display-name").value.trim();
  try {
    state.me = await api.request("PATCH", "/users/me", { display_name: name || null });
    $("me").replaceChildren("Signed in as ", views.personName(state.me));
    say(form, "Saved.");
  } catch (error) {
    say(form, `Not saved: ${error.message}`);
  }
});

// The server ends every other session and this token; this session goes on
// with its refresh token, which the next request (or the socket) uses.
$("password-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  try {
    await api.request("PUT", "/users/me/password", {
      current_password: $("current-password").value,
      new_password: $("new-password").value,
    });
    form.reset();
    say(form, "Password changed. Your other sessions were signed out.");
    await api.freshSession(api.loadSession());
    loadSessions();
  } catch (error) {
    say(form, `Not changed: ${error.message}`);
  }
});

$("sign-out").addEventListener("click", () => {
  $("settings-dialog").close();
  $("logout").click();
});

// ---- Members: who is in the conversation, adding someone, leaving ----------

async function loadMembers() {
  const c = state.conversations.get(state.view.id);
  const users = await api.get(`/conversations/${c.id}/members?limit=1000`);
  $("member-list").replaceChildren(...users.map((u) => views.memberItem(u, state.me)));
}

$("members").addEventListener("click", async () => {
  const c = state.conversations.get(state.view.id);
  const dialog = openDialog("members-dialog");
  $("members-heading").replaceChildren("Who is in ", views.conversationTitle(c, state.me));
  $("add-member-form").reset();
  $("add-member-form").hidden = c.kind !== "group" || !c.is_member;
  $("leave").hidden = c.kind === "direct" || !c.is_member;
  $("leave").textContent = c.kind === "group" ? "Leave group" : "Leave channel";
  $("notifications-form").hidden = !c.is_member; // a level is a member's
  $("notification-level").value = notify.levelOf(c);
  say($("notifications-form"), "");
  $("member-list").replaceChildren();
  try {
    await loadMembers();
  } catch (error) {
    showError(dialog, error);
  }
});

// The conversation's notification level: saved as soon as it is picked.
$("notification-level").addEventListener("change", async () => {
  const form = $("notifications-form");
  const id = state.view.id;
  try {
    const level = $("notification-level").value;
    remember(await api.request("PUT", `/conversations/${id}/notifications`, { level }));
    say(form, "Saved.");
    renderHeader();
  } catch (error) {
    say(form, `Not saved: ${error.message}`);
    $("notification-level").value = notify.levelOf(state.conversations.get(id));
  }
});
$("notifications-form").addEventListener("submit", (event) => event.preventDefault());

$("add-member-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const dialog = $("members-dialog");
  dialog.querySelector(".error").textContent = "";
  try {
    const body = { username: $("member-username").value.trim() };
    remember(await api.post(`/conversations/${state.view.id}/members`, body));
    $("add-member-form").reset();
    renderHeader();
    await loadMembers();
  } catch (error) {
    showError(dialog, error);
  }
});

$("leave").addEventListener("click", async () => {
  const dialog = $("members-dialog");
  const c = state.conversations.get(state.view.id);
  try {
    await api.post(`/conversations/${c.id}/leave`);
  } catch (error) {
    showError(dialog, error);
    return;
  }
  dialog.close();
  if (c.kind === "channel") {
    remember({
      ...c,
      is_member: false,
      member_count: c.member_count - 1,
      unread_count: 0,
      unread_mentions: 0,
      notifications: null,
    });
  } else {
    state.conversations.delete(c.id);
  }
  closeConversation();
  renderSidebar();
  openFirstConversation();
});

// ---- Quick switcher (Ctrl+K, or ⌘K on a Mac) --------------------------------

function openSwitcher() {
  $("switcher-input").value = "";
  if (!$("switcher-dialog").open) openDialog("switcher-dialog");
  fillSwitcher();
}

document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "k" && state.me) {
    event.preventDefault();
    openSwitcher();
  }
});
$("switcher").addEventListener("click", openSwitcher);

// A conversation's title as words to match against.
function titleText(c) {
  if (c.kind !== "direct") return c.title;
  const other = c.members?.find((u) => u.id !== state.me.id);
  return other ? views.nameOf(other) : "";
}

let switcherTicket = 0;
async function fillSwitcher() {
  const query = $("switcher-input").value.trim().toLowerCase();
  const ticket = ++switcherTicket;
  const mine = [...state.conversations.values()].filter((c) => c.is_member).sort(latestFirst);
  const found = mine.filter((c) => titleText(c).toLowerCase().includes(query)).slice(0, 8);
  const items = found.map((c) =>
    views.switcherItem(views.conversationTitle(c, state.me), { id: c.id }),
  );
  // People without a direct conversation yet: the directory finds them.
  if (query) {
    const known = new Set(mine.filter((c) => c.kind === "direct").map(titleText));
    const people = await api.get(`/users?q=${encodeURIComponent(query)}&limit=5`);
    if (ticket !== switcherTicket) return;
    for (const u of people) {
      if (u.id === state.me.id || known.has(views.nameOf(u))) continue;
      items.push(views.switcherItem(views.personName(u), { username: u.username }));
    }
  }
  $("switcher-results").replaceChildren(...items);
  if (items.length === 0) {
    $("switcher-results").append(views.el("li", { className: "none" }, "Nothing matches."));
  }
}

$("switcher-input").addEventListener("input", fillSwitcher);
$("switcher-input").addEventListener("keydown", (event) => {
  if (event.key === "Enter") {
    event.preventDefault();
    $("switcher-results").querySelector("button")?.click();
  } else if (event.key === "ArrowDown") {
    event.preventDefault();
    $("switcher-results").querySelector("button")?.focus();
  }
});
$("switcher-results").addEventListener("keydown", (event) => {
  const item = event.target.closest("li");
  if (event.key === "ArrowDown") item?.nextElementSibling?.querySelector("button")?.focus();
  else if (event.key === "ArrowUp") {
    const previous = item?.previousElementSibling?.querySelector("button");
    (previous ?? $("switcher-input")).focus();
  } else return;
  event.preventDefault();
});

$("switcher-results").addEventListener("click", (event) => {
  const button = event.target.closest(".switch");
  if (!button) return;
  const dialog = $("switcher-dialog");
  if (button.dataset.id) {
    dialog.close();
    openConversation(Number(button.dataset.id), { focus: true });
  } else {
    startConversation(dialog, { kind: "direct", members: [button.dataset.username] });
  }
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

notify.registerWorker();
// A saved session whose access token has expired is refreshed on the way.
if (api.loadSession()) startSession();
else showLogin("");
