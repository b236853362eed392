// Telling the user something happened while they look elsewhere: the unread
// count on the tab's icon, desktop notifications while the tab is hidden,
// and Web Push (through sw.js) while no tab is open at all.
//
// Nothing here asks the browser for permission on its own: only enable(),
// which the "Enable notifications" button calls, does. Browsers ignore (or
// hold against the site) a permission prompt nobody asked for.
//
// Service workers, notifications and push exist only in a secure context
// (HTTPS, or http://localhost): on plain HTTP from another machine the page
// works without them, and the settings say why the button does nothing.

import * as api from "./api.js";
import { mentionsMe, nameOf, previewText } from "./views.js";

// Who turned notifications on in this browser (a username). A browser's
// permission is per site, not per user: on a shared computer the next
// person to sign in must not inherit the previous one's notifications.
const OWNER_KEY = "messageapp.notifications";
const SNIPPET = 120; // characters of a message in a notification, as the server's pushes
// Sign-out waits this long at most for the push subscription to be deleted.
const SIGN_OUT_WAIT_MS = 3000;

export const supported = () =>
  window.isSecureContext && "serviceWorker" in navigator && "Notification" in window;
const pushSupported = () => supported() && "PushManager" in window;

// The same name the service worker gives a conversation's notifications.
const tagOf = (conversationId) => `conversation-${conversationId}`;

// ---- The service worker --------------------------------------------------------

let registering = null;

// Registered on every load (it shows pushes, and routes notification
// clicks), whether or not notifications are on: it does nothing else.
export function registerWorker() {
  if (!supported()) return;
  registering = navigator.serviceWorker.register("/sw.js").catch((error) => {
    console.warn("The service worker did not register:", error);
    return null;
  });
}

async function registration() {
  if (!registering) return null;
  return (await registering) ? navigator.serviceWorker.ready : null;
}

// ---- The unread count on the tab's icon ---------------------------------------

let iconCount = 0;
let iconUrl = null; // the blob: URL shown now, released after it is replaced
const ICON_RELEASE_MS = 30_000;
let baseIcon = null; // favicon.svg, decoded once

// favicon.svg with a red disc and the count drawn over its corner, as a PNG
// at a blob: URL (the CSP's img-src allows blob:, for this).
export async function showUnreadOnIcon(count) {
  if (count === iconCount) return;
  iconCount = count;
  const link = document.querySelector("link[rel=icon]");
  const show = (href, type) => {
    // The icon replaced is released later, not at once: the browser may not
    // have read it yet, and one released first fails to load (a console error).
    const replaced = iconUrl;
    if (replaced) setTimeout(() => URL.revokeObjectURL(replaced), ICON_RELEASE_MS);
    iconUrl = href.startsWith("blob:") ? href : null;
    link.type = type;
    link.href = href;
  };
  if (count === 0) {
    show("favicon.svg", "image/svg+xml");
    return;
  }
  baseIcon ??= new Promise((resolve) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => resolve(null); // no icon to draw on: the title still counts
    image.src = "favicon.svg";
  });
  const image = await baseIcon;
  if (!image) {
    baseIcon = null; // tried again with the next count
    iconCount = -1;
    return;
  }
  const size = 64;
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const draw = canvas.getContext("2d");
  draw.drawImage(image, 0, 0, size, size);
  const text = count > 99 ? "99+" : String(count);
  const radius = text.length > 2 ? 24 : 20;
  draw.fillStyle = "#d93025";
  draw.beginPath();
  draw.arc(size - radius, radius, radius, 0, 2 * Math.PI);
  draw.fill();
  draw.fillStyle = "white";
  draw.font = `bold ${text.length > 2 ? 22 : 30}px sans-serif`;
  draw.textAlign = "center";
  draw.textBaseline = "middle";
  draw.fillText(text, size - radius, radius + 2);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  if (count !== iconCount || !blob) return; // the count moved on meanwhile
  show(URL.createObjectURL(blob), "image/png");
}

// ---- Notification levels ------------------------------------------------------

// The level of a conversation I am in; the server sends it, and null means
// the kind's default (issue 19): everything in a direct message or a group,
// only mentions in a channel.
export function levelOf(conversation) {
  return conversation.notifications ?? (conversation.kind === "channel" ? "mentions" : "all");
}

// On: this user clicked "Enable" in this browser, and the browser still allows it.
export const enabledFor = (me) =>
  supported() &&
  Notification.permission === "granted" &&
  localStorage.getItem(OWNER_KEY) === me.username;

// A new message from someone else arrived on the socket. While the tab is
// hidden, and the conversation's level wants it, the browser shows it. (The
// server sends no push while this page has its socket open: this is what
// tells the user instead.) `title`: the conversation's, as text.
export async function notifyMessage(conversation, message, me, title) {
  if (document.visibilityState !== "hidden" || !enabledFor(me)) return;
  const level = levelOf(conversation);
  if (level === "none" || (level === "mentions" && !mentionsMe(message, me))) return;
  const worker = await registration();
  if (!worker) return;
  const sender = nameOf(message.author);
  const text = previewText(message).slice(0, SNIPPET);
  await worker.showNotification(conversation.kind === "direct" ? sender : title, {
    body: conversation.kind === "direct" ? text : `${sender}: ${text}`,
    icon: "/icon-192.png",
    tag: tagOf(conversation.id), // one per conversation, the newest replacing the last
    renotify: true,
    // What sw.js reads on a click: the same as a push's.
    data: { conversationId: conversation.id, messageId: message.id },
  });
}

// The user has read the conversation in the page up to message `seen`: a
// notification of it (shown by this page or by a push) about a message up
// to there has nothing left to say.
export async function closeNotifications(conversationId, seen) {
  const worker = await registration();
  if (!worker) return;
  for (const shown of await worker.getNotifications({ tag: tagOf(conversationId) })) {
    if (!(shown.data?.messageId > seen)) shown.close();
  }
}

// ---- Opting in and out: desktop notifications and Web Push --------------------

// The VAPID key from GET /push/key is base64url; pushManager wants bytes.
function bytesOf(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

const sameBytes = (a, b) => a.length === b.length && a.every((byte, i) => byte === b[i]);

async function currentSubscription() {
  if (!pushSupported() || !registering) return null;
  const worker = await registration();
  return worker ? worker.pushManager.getSubscription() : null;
}

// Subscribe this browser (or keep its subscription) and tell the server,
// which POSTs each push to the subscription's endpoint. Posting one the
// server has already is harmless (200), and moves it to this user.
async function subscribe() {
  if (!pushSupported()) throw new Error("this browser has no Web Push");
  const worker = await registration();
  if (!worker) throw new Error("the service worker is not running");
  const key = bytesOf((await api.get("/push/key")).public_key);
  let subscription = await worker.pushManager.getSubscription();
  const keyOf = (s) => new Uint8Array(s.options.applicationServerKey ?? []);
  if (subscription && !sameBytes(keyOf(subscription), key)) {
    await subscription.unsubscribe(); // made for a key the server no longer has
    subscription = null;
  }
  // userVisibleOnly: every push shows a notification (browsers require it).
  subscription ??= await worker.pushManager.subscribe({
    userVisibleOnly: true,
    applicationServerKey: key,
  });
  await api.post("/push/subscriptions", subscription.toJSON());
}

// Stop pushes to this browser: the server forgets the subscription, and the
// browser drops it. If the DELETE fails (offline), the browser's unsubscribe
// still kills the endpoint; the push service then answers the server 404 or
// 410 and the server deletes it on its own.
async function unsubscribe() {
  const subscription = await currentSubscription();
  if (!subscription) return;
  try {
    await api.request("DELETE", "/push/subscriptions", { endpoint: subscription.endpoint });
  } catch {
    // 404 (the server had dropped it already) or no connection: see above
  }
  await subscription.unsubscribe();
}

// The "Enable notifications" click. Resolves to null when pushes work too,
// else to why only desktop notifications (while a tab is open) do.
export async function enable(me) {
  if (!supported()) {
    throw new Error("This browser shows notifications only for a site on HTTPS (or localhost).");
  }
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    throw new Error(
      permission === "denied"
        ? "Notifications are blocked for this site: allow them in the browser's site settings."
        : "Notifications were not allowed.",
    );
  }
  localStorage.setItem(OWNER_KEY, me.username);
  try {
    await subscribe();
    return null;
  } catch (error) {
    return error.message;
  }
}

export async function disable() {
  localStorage.removeItem(OWNER_KEY);
  await unsubscribe();
}

// After signing in. The one who enabled notifications gets their push
// subscription checked with the server (it may have dropped it); anyone
// else finds this browser's subscription gone: a push for the previous user
// must never show while someone else uses the browser.
export async function resume(me) {
  if (!supported()) return;
  if (enabledFor(me)) {
    await subscribe().catch(() => {}); // no push service: desktop notifications still work
    return;
  }
  if (localStorage.getItem(OWNER_KEY) !== me.username) localStorage.removeItem(OWNER_KEY);
  const subscription = await currentSubscription().catch(() => null);
  await subscription?.unsubscribe();
}

// Before signing out, while the token still works: no more pushes here for
// this user, and nothing they were shown stays on the screen. Bounded in
// time: signing out must not hang on a slow server.
export async function signOut() {
  if (!supported()) return;
  const work = (async () => {
    await disable();
    const worker = await registration();
    for (const shown of (await worker?.getNotifications()) ?? []) shown.close();
  })().catch(() => {});
  await Promise.race([work, new Promise((resolve) => setTimeout(resolve, SIGN_OUT_WAIT_MS))]);
}
