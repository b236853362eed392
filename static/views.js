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

export function previewText(message) {
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
  const mentions = conversation.unread_mentions ?? 0;
  const button = el(
    "button",
    { type: "button", className: "conversation", dataset: { id: conversation.id } },
    el("span", { className: "title" }, conversationTitle(conversation, me)),
    el(
      "span",
      { className: "badges" },
      // "@": someone asked for you in what is unread here.
      mentions > 0 &&
        el(
          "span",
          { className: "mention-badge", title: `${mentions} unread mentioning you` },
          "@",
          el("span", { className: "visually-hidden" }, ` ${mentions} mentioning you,`),
        ),
      unread > 0 &&
        el(
          "span",
          { className: "badge" },
          String(unread),
          el("span", { className: "visually-hidden" }, " unread"),
        ),
    ),
    el("span", { className: "preview" }, ...preview(conversation.last_message, me)),
  );
  if (active) button.setAttribute("aria-current", "page");
  if (unread > 0) button.classList.add("unread");
  return el("li", {}, button);
}

// ---- Formatting: plain text in, elements out --------------------------------
//
// The server stores what was typed. Here a small subset of Markdown becomes
// elements, each built with el() and text nodes, never by parsing HTML:
// ```fenced code```, `inline code`, **bold**, _italic_, links (http and
// https only) and @mentions. Anything else, `<b>` or `javascript:` included,
// stays the characters it is.

const FENCE = /```(?:[^\n`]*\n)?([\s\S]*?)```/g; // an info string ("js") is skipped
const INLINE = new RegExp(
  [
    "`([^`\\n]+)`", // 1: code
    "\\*\\*(?=\\S)([^\\n]*?\\S)\\*\\*", // 2: bold
    "(?<![\\p{L}\\p{N}_])_(?=\\S)([^_\\n]*?\\S)_(?![\\p{L}\\p{N}_])", // 3: italic
    "(https?:\\/\\/[^\\s<>\"]*[^\\s<>\".,;:!?'()\\[\\]{}])", // 4: link
    "(?<![\\p{L}\\p{N}_.@-])@([A-Za-z0-9_.-]{3,32})(?<!\\.)", // 5: mention
  ].join("|"),
  "gu",
);

// Only web links become links: whatever the text says, the href is parsed
// and must come out http or https.
function safeLink(text) {
  try {
    const url = new URL(text);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    return el("a", { href: url.href, target: "_blank", rel: "noopener noreferrer" }, text);
  } catch {
    return null;
  }
}

function inline(text, me) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    const [whole, code, bold, italic, link, mention] = m;
    if (code !== undefined) out.push(el("code", {}, code));
    else if (bold !== undefined) out.push(el("strong", {}, ...inline(bold, me)));
    else if (italic !== undefined) out.push(el("em", {}, ...inline(italic, me)));
    else if (link !== undefined) out.push(safeLink(link) ?? link);
    else if (mention !== undefined) {
      const mine = me && mention.toLowerCase() === me.username.toLowerCase();
      out.push(el("span", { className: mine ? "mention me" : "mention" }, whole));
    }
    last = m.index + whole.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

// The content of a message as nodes: fenced blocks first, inline elsewhere.
// A block is a line of its own: the line breaks around it are its edges.
export function formatText(text, me = null) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(FENCE)) {
    const before = text.slice(last, m.index).replace(/\n$/, "");
    if (before) out.push(...inline(before, me));
    out.push(el("pre", {}, el("code", {}, m[1].replace(/\n$/, ""))));
    last = m.index + m[0].length;
    if (text[last] === "\n") last += 1;
  }
  if (last < text.length) out.push(...inline(text.slice(last), me));
  return out;
}

// ---- Messages ------------------------------------------------------------------

export const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "👀", "✅"];

// "alice's message of 14:05": what an action's label says it acts on, for
// screen readers, where a row of "Reply" buttons would say nothing.
export function messageLabel(message) {
  return `${nameOf(message.author)}'s message of ${formatTime(message.created_at)}`;
}

function replyQuote(reply) {
  // A message of files alone has no text to quote (the server sends none of its files).
  const snippet = reply.snippet || "an attachment";
  return el(
    "button",
    {
      type: "button",
      className: "reply-quote",
      dataset: { replyTo: reply.id },
      "aria-label": `In reply to ${nameOf(reply.author)}: ${
        reply.deleted ? "a deleted message" : snippet
      }. Show it`,
    },
    el("span", { className: "reply-author" }, personName(reply.author)),
    " ",
    reply.deleted
      ? el("span", { className: "tombstone" }, "message deleted")
      : el("span", { className: "reply-snippet" }, snippet),
  );
}

function reactionList(message, member) {
  if (message.deleted || message.reactions.length === 0) return null;
  return el(
    "ul",
    { className: "reactions", "aria-label": `Reactions to ${messageLabel(message)}` },
    ...message.reactions.map((r) => {
      const people = r.count === 1 ? "1 person" : `${r.count} people`;
      const button = el(
        "button",
        {
          type: "button",
          className: r.me ? "reaction me" : "reaction",
          dataset: { emoji: r.emoji },
          "aria-pressed": String(r.me),
          disabled: !member,
          "aria-label": `${r.emoji} ${people}${r.me ? ", you included" : ""}: ${
            r.me ? "take yours back" : "react with it too"
          }`,
        },
        `${r.emoji} `,
        el("span", { className: "count" }, String(r.count)),
      );
      return el("li", {}, button);
    }),
  );
}

function actionButton(className, text, label) {
  return el("button", { type: "button", className, "aria-label": label }, text);
}

// One message: who and when, what it answers, its text, its reactions, and
// a bar of actions that shows on hover or focus (keyboard users tab into it).
// A tombstone shows that something was deleted, never what.
// `member`: the reader is in the conversation (a channel can be read without
// joining it, but only members react and reply).
// Whether a message's `mentions` (usernames, from the server) name me.
export const mentionsMe = (message, me) =>
  (message.mentions ?? []).some((name) => name.toLowerCase() === me.username.toLowerCase());

export function messageItem(message, me, member = true) {
  const own = message.author.id === me.id;
  // The server decides who is mentioned (members only, never the author):
  // the whole message stands out for the one it names.
  const forMe = !message.deleted && mentionsMe(message, me);
  const about = messageLabel(message);
  const actions =
    member &&
    !message.deleted &&
    el(
      "div",
      { className: "message-actions", role: "group", "aria-label": `Actions on ${about}` },
      actionButton("react", "☺ React", `React to ${about}`),
      actionButton("reply", "↩ Reply", `Reply to ${about}`),
      own && actionButton("edit", "Edit", `Edit ${about}`),
      own && actionButton("delete", "Delete", `Delete ${about}`),
    );
  const item = el(
    "li",
    { className: "message", dataset: { id: message.id, author: message.author.id } },
    el(
      "div",
      { className: "meta" },
      el("span", { className: "author" }, personName(message.author)),
      " · ",
      timeElement(message.created_at),
      message.edited_at && !message.deleted && el("span", { className: "edited" }, " (edited)"),
      forMe && el("span", { className: "visually-hidden" }, " · mentions you"),
    ),
    message.reply_to && replyQuote(message.reply_to),
    message.deleted
      ? el("p", { className: "content tombstone" }, "This message was deleted.")
      : (message.content || !message.attachments?.length) &&
          el("div", { className: "content" }, ...formatText(message.content ?? "", me)),
    !message.deleted && attachmentList(message.attachments),
    reactionList(message, member),
    actions,
  );
  if (own) item.classList.add("own");
  if (forMe) item.classList.add("mentions-me");
  return item;
}

// The row of emoji to react with, shown under a message until one is picked.
export function reactionPicker(message) {
  return el(
    "div",
    {
      className: "reaction-picker",
      role: "group",
      "aria-label": `React to ${messageLabel(message)}`,
    },
    ...QUICK_REACTIONS.map((emoji) =>
      el(
        "button",
        { type: "button", className: "pick", dataset: { emoji }, "aria-label": `React with ${emoji}` },
        emoji,
      ),
    ),
    el("button", { type: "button", className: "cancel-pick" }, "Cancel"),
  );
}

// Asked in the page, next to the message: no browser dialog.
export function deleteConfirmation(message) {
  return el(
    "div",
    {
      className: "confirm-delete",
      role: "alertdialog",
      "aria-label": `Delete ${messageLabel(message)}?`,
    },
    el("span", {}, "Delete this message for everyone? "),
    el("button", { type: "button", className: "confirm danger" }, "Delete"),
    " ",
    el("button", { type: "button", className: "cancel-delete" }, "Cancel"),
  );
}

// "Today", "Yesterday", or the date, in the viewer's zone.
export function dayLabel(date) {
  const today = new Date();
  const yesterday = new Date(today);
  yesterday.setDate(today.getDate() - 1);
  if (date.toDateString() === today.toDateString()) return "Today";
  if (date.toDateString() === yesterday.toDateString()) return "Yesterday";
  const parts = { weekday: "long", day: "numeric", month: "long", year: "numeric" };
  return date.toLocaleDateString([], parts);
}

// Items of the message list like the messages (a list holds only items),
// read out as what they say.
export function daySeparator(label) {
  return el("li", { className: "day-separator" }, el("span", {}, label));
}

export function newMessagesLine() {
  return el("li", { className: "new-line" }, el("span", {}, "New messages"));
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
    pending.content && el("div", { className: "content" }, ...formatText(pending.content, me)),
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

// Wrap each occurrence of `query` (ignoring case) in the text under `node`
// in <mark>: a search hit, highlighted.
export function highlight(node, query) {
  const needle = query.toLowerCase();
  if (!needle) return;
  const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
  const texts = [];
  while (walker.nextNode()) texts.push(walker.currentNode);
  for (const text of texts) {
    const value = text.nodeValue;
    const lower = value.toLowerCase();
    // Lower-casing may change a string's length (İ): then leave it unmarked.
    if (lower.length !== value.length) continue;
    const parts = [];
    let from = 0;
    for (let at = lower.indexOf(needle); at >= 0; at = lower.indexOf(needle, from)) {
      parts.push(value.slice(from, at), el("mark", {}, value.slice(at, at + needle.length)));
      from = at + needle.length;
    }
    if (parts.length === 0) continue;
    parts.push(value.slice(from));
    text.replaceWith(...parts);
  }
}

// `title`: the conversation's, as conversationTitle gives it.
export function searchResult(message, title, query) {
  const content = el("span", { className: "content" }, ...formatText(message.content ?? ""));
  highlight(content, query);
  if (message.attachments?.length) {
    const shared = `shared ${sharedText(message.attachments)}`;
    content.append(message.content ? ` (${shared})` : shared);
  }
  return el(
    "li",
    {},
    el(
      "button",
      {
        type: "button",
        className: "result",
        dataset: { conversationId: message.conversation_id, messageId: message.id },
      },
      el(
        "span",
        { className: "meta" },
        personName(message.author),
        " in ",
        title,
        " · ",
        timeElement(message.created_at),
      ),
      content,
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

// One member, in the members panel.
export function memberItem(user, me) {
  const you = user.id === me.id && " (you)";
  return el("li", { className: "choice" }, el("span", {}, personName(user), you));
}

// A choice in the quick switcher: a conversation (by id) or a person (by username).
export function switcherItem(label, data) {
  return el("li", {}, el("button", { type: "button", className: "switch", dataset: data }, label));
}
