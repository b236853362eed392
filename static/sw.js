// The service worker: shows the server's pushes while no MessageApp tab is
// open, and takes a click on a notification to the message it is about.
//
// Served at /sw.js, so its scope is the whole app. It has no `fetch` handler:
// it caches nothing and never sees a request, so no API answer (and no
// token) is ever kept in a cache. The page works the same with or without it.

// A new version takes over at once: it holds no state an old page relies on.
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// The one place a conversation's notifications are named: the page closes
// them by this tag when the conversation is read (notify.js uses the same).
const tagOf = (conversationId) => `conversation-${conversationId}`;

// Where a notification leads. Built from the ids, never taken from the
// payload as a URL: it can only ever open a page of this app.
const urlOf = (conversationId, messageId) =>
  `/?conversation=${Number(conversationId)}&message=${Number(messageId)}`;

// The server's push (docs/api.md): {type: "message", conversation_id,
// message_id, title, sender, body, mentioned, url}. The browser demands that
// every push shows a notification (userVisibleOnly), so one always shows.
self.addEventListener("push", (event) => {
  let push = {};
  try {
    push = event.data?.json() ?? {};
  } catch {
    // not JSON: still show something, as the browser requires
  }
  const title = push.title || "MessageApp";
  const text = push.body || "New message";
  // A direct message's title is the sender already: do not say it twice.
  const body = push.sender && push.sender !== title ? `${push.sender}: ${text}` : text;
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      icon: "/icon-192.png",
      // One notification per conversation: a newer message replaces the older one.
      tag: tagOf(push.conversation_id),
      renotify: true,
      data: { conversationId: push.conversation_id, messageId: push.message_id },
    }),
  );
});

// A click: an open tab of the app is focused and told what to open (app.js
// listens for "open"); with none, a new one opens at that message.
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const { conversationId, messageId } = event.notification.data ?? {};
  if (!conversationId) return;
  event.waitUntil(
    (async () => {
      const tabs = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const tab = tabs.find((t) => t.focused) ?? tabs[0];
      if (tab) {
        // Told first: a tab the browser will not focus still opens the message.
        tab.postMessage({ type: "open", conversationId, messageId });
        await tab.focus().catch(() => {});
      } else {
        await self.clients.openWindow(urlOf(conversationId, messageId));
      }
    })(),
  );
});
