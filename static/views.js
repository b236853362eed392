// Building DOM from API objects. No state lives here: app.js decides what to
// show, these functions only turn objects into elements.
//
// Every piece of user text goes in through textContent (or a text child in
// el() below), never innerHTML: a message "<script>...</script>" shows as
// those characters, it is never parsed as HTML.

// el("p", {className: "x"}, "text", child): properties are set on the element
// (so `textContent` and `dataset` work), strings become text nodes.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role") node.setAttribute(key, value);
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// Anyone may pick any display name, someone else's username included, so a
// person is shown as their display name followed by their username (which
// is unique): "Alice Liddell @alice", or "alice" alone without a display name.
const hasDisplayName = (user) => user.display_name && user.display_name !== user.username;

// As an element, the username muted.
export function personName(user) {
  if (!hasDisplayName(user)) return el("span", { className: "person" }, user.username);
  return el(
    "span",
    { className: "person" },
    `${user.display_name} `,
    el("span", { className: "handle" }, `@${user.username}`),
  );
}

// As plain text, where only text will do (the screen readers' live region).
export const nameOf = (user) =>
  hasDisplayName(user) ? `${user.display_name} @${user.username}` : user.username;

// A string, or for a direct conversation the other person's name element.
export function conversationTitle(conversation, me) {
  if (conversation.kind === "direct") {
    const other = conversation.members?.find((u) => u.id !== me.id);
    return other ? personName(other) : "Direct message";
  }
  return conversation.kind === "channel" ? `# ${conversation.title}` : conversation.title;
}

// The server sends UTC with an offset; the browser shows the viewer's zone.
export function formatTime(iso) {
  const date = new Date(iso);
  const today = date.toDateString() === new Date().toDateString();
  return today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

function timeElement(iso) {
  return el("time", { dateTime: iso, title: new Date(iso).toLocaleString() }, formatTime(iso));
}

// "an image", "report.pdf", "3 files": what a message shared, in words.
export function sharedText(attachments) {
  if (attachments.length === 1) {
    const [only] = attachments;
    return only.thumbnail_url ? `an image (${only.name})` : only.name;
  }
  const images = attachments.every((a) => a.thumbnail_url);
  return `${attachments.length} ${images ? "images" : "files"}`;
}

function previewText(message) {
  if (message.deleted) return "message deleted";
  const files = message.attachments ?? [];
  if (!files.length) return message.content;
  const shared = `shared ${sharedText(files)}`;
  return message.content ? `${message.content} (${shared})` : shared;
}

function preview(message, me) {
  if (!message) return ["No messages yet"];
  const who = message.author.id === me.id ? "You" : personName(message.author);
  return [who, `: ${previewText(message)}`];
}

// 1536 -> "1.5 KB": sizes as people read them.
export function formatSize(bytes) {
  const units = ["bytes", "KB", "MB", "GB"];
  let size = bytes;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} ${units[0]}` : `${size.toFixed(1)} ${units[unit]}`;
}

// An image as its thumbnail, opening the full size; any other file as a chip
// with its name, size and a download link. The URLs are the server's, signed
// for this reader: same origin, so the CSP's img-src 'self' allows them.
function attachmentItem(attachment) {
  if (attachment.thumbnail_url) {
    return el(
      "li",
      {},
      el(
        "a",
        { href: attachment.url, target: "_blank", rel: "noopener", className: "image-link" },
        el("img", {
          src: attachment.thumbnail_url,
          alt: attachment.name,
          width: Math.min(320, attachment.width ?? 320),
          loading: "lazy",
        }),
      ),
    );
  }
  return el(
    "li",
    {},
    el(
      "a",
      { href: attachment.url, download: attachment.name, className: "file-chip" },
      el("span", { className: "name" }, attachment.name),
      el("span", { className: "size" }, formatSize(attachment.size)),
    ),
  );
}

function attachmentList(attachments) {
  if (!attachments?.length) return null;
  return el("ul", { className: "attachments" }, ...attachments.map(attachmentItem));
}

export function conversationItem(conversation, me, active) {
  const unread = conversation.unread_count;
  const button = el(
    "button",
    { type: "button", className: "conversation", dataset: { id: conversation.id } },
    el("span", { className: "title" }, conversationTitle(conversation, me)),
    unread > 0 &&
      el(
        "span",
        { className: "badge" },
        String(unread),
        el("span", { className: "visually-hidden" }, " unread"),
      ),
    el("span", { className: "preview" }, ...preview(conversation.last_message, me)),
  );
  if (active) button.setAttribute("aria-current", "page");
  if (unread > 0) button.classList.add("unread");
  return el("li", {}, button);
}

// One message. `own` messages get Edit and Delete buttons; a tombstone shows
// that something was deleted, never what.
export function messageItem(message, me) {
  const own = message.author.id === me.id;
  const item = el(
    "li",
    { className: "message", dataset: { id: message.id } },
    el(
      "div",
      { className: "meta" },
      el("span", { className: "author" }, personName(message.author)),
      " · ",
      timeElement(message.created_at),
      message.edited_at && !message.deleted && el("span", { className: "edited" }, " (edited)"),
    ),
    message.deleted
      ? el("p", { className: "content tombstone" }, "This message was deleted.")
      : (message.content || !message.attachments?.length) &&
          el("p", { className: "content" }, message.content),
    !message.deleted && attachmentList(message.attachments),
    own &&
      !message.deleted &&
      el(
        "div",
        { className: "message-actions" },
        el("button", { type: "button", className: "edit", "aria-label": "Edit message" }, "Edit"),
        el(
          "button",
          { type: "button", className: "delete", "aria-label": "Delete message" },
          "Delete",
        ),
      ),
  );
  if (own) item.classList.add("own");
  return item;
}

// A message we are sending: "Sending…", or the error and a Retry button.
export function pendingItem(pending, me) {
  const item = el(
    "li",
    { className: "message own pending", dataset: { clientId: pending.clientId } },
    el(
      "div",
      { className: "meta" },
      el("span", { className: "author" }, personName(me)),
      " · ",
      el("span", { className: "status" }, pending.error ? "Not sent" : "Sending…"),
    ),
    pending.content && el("p", { className: "content" }, pending.content),
    pending.files?.length &&
      el("p", { className: "content" }, `Sharing ${sharedText(pending.files)}`),
  );
  if (pending.error) {
    item.classList.add("failed");
    item.append(
      el(
        "p",
        { className: "send-error", role: "alert" },
        `${pending.error} `,
        el("button", { type: "button", className: "retry" }, "Retry"),
        " ",
        el("button", { type: "button", className: "discard" }, "Discard"),
      ),
    );
  }
  return item;
}

export function editForm(message) {
  const input = el("textarea", {
    className: "edit-input",
    value: message.content,
    maxLength: 4000,
    rows: 2,
    "aria-label": "Edit message",
  });
  return el(
    "form",
    { className: "edit-form" },
    input,
    el("button", { type: "submit" }, "Save"),
    " ",
    el("button", { type: "button", className: "cancel" }, "Cancel"),
  );
}

// `title`: the conversation's, as conversationTitle gives it.
export function searchResult(message, title) {
  return el(
    "li",
    {},
    el(
      "button",
      { type: "button", className: "result", dataset: { conversationId: message.conversation_id } },
      el(
        "span",
        { className: "meta" },
        personName(message.author),
        " in ",
        title,
        " · ",
        timeElement(message.created_at),
      ),
      el("span", { className: "content" }, previewText(message)),
    ),
  );
}

// A file on its way up: its name, a progress bar, and a way to drop it.
export function uploadItem(upload) {
  return el(
    "li",
    { dataset: { key: upload.key } },
    el("span", { className: "name" }, upload.file.name || "pasted image"),
    upload.error
      ? el("span", { className: "error", role: "alert" }, upload.error)
      : upload.attachment
        ? el("span", { className: "size" }, formatSize(upload.attachment.size))
        : el("progress", {
            max: 1,
            value: upload.progress,
            "aria-label": `Uploading ${upload.file.name}`,
          }),
    el("button", { type: "button", className: "remove", "aria-label": "Remove" }, "✕"),
  );
}

// "Chrome on Linux", from a User-Agent; the string itself when it is no browser's.
export function describeAgent(agent) {
  // Most specific first: Edge's and Opera's strings name Chrome and Safari too.
  const browser = ["Firefox", "Edg", "OPR", "Chrome", "Safari"].find((b) => agent.includes(`${b}/`));
  const system = agent.match(/\b(Windows|Android|iPhone|iPad|Mac OS X|Linux)\b/)?.[1];
  const names = { Edg: "Edge", OPR: "Opera", "Mac OS X": "macOS" };
  if (!browser) return agent.slice(0, 60) || "An unknown client";
  const name = names[browser] ?? browser;
  return system ? `${name} on ${names[system] ?? system}` : name;
}

// One of your sessions, in the settings: what and where, and a way to end it.
export function sessionItem(session) {
  const what = describeAgent(session.user_agent);
  const when = `last active ${formatTime(session.last_used_at)}`;
  return el(
    "li",
    { className: "choice" },
    el(
      "span",
      {},
      what,
      el("span", { className: "info" }, ` · ${session.client_ip} · ${when}`),
      session.current && el("strong", {}, " · this browser"),
    ),
    !session.current &&
      el(
        "button",
        {
          type: "button",
          dataset: { sessionId: session.id },
          "aria-label": `Sign out ${what}, ${when}`,
        },
        "Sign out",
      ),
  );
}
