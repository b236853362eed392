// The @ autocomplete of the message box: typing "@al" lists the members of
// the conversation whose username or display name starts with "al".
//
// The pattern is ARIA's list autocomplete: the text box keeps the focus (and
// the caret), the list is a listbox of options, and aria-activedescendant on
// the box names the option ↑ and ↓ move to, so a screen reader reads it out.
// Enter or Tab picks it, Escape closes the list; a click picks one too.

import { el, personName } from "./views.js";

// "@" and what follows it, up to the caret, at the start or after a space or
// punctuation (not inside "bob@example.com"): the same rule as views.js's
// mention pattern, which decides what is highlighted once sent.
const TOKEN = /(?:^|[^\p{L}\p{N}_.@-])@([A-Za-z0-9_.-]{0,32})$/u;
const SHOWN = 8; // options at most

export class MentionPicker {
  // `candidates(query)`: a promise of the people who may be mentioned here.
  constructor(input, list, candidates) {
    Object.assign(this, { input, list, candidates, users: [], active: 0, start: 0, ticket: 0 });
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", list.id);
    // mousedown, not click: the text box must not lose the focus (and close the list).
    list.addEventListener("mousedown", (event) => {
      const option = event.target.closest("[role=option]");
      if (!option) return;
      event.preventDefault();
      this.pick(Number(option.dataset.index));
    });
    input.addEventListener("blur", () => this.close());
    // The caret moved without typing (arrows sideways, a click): still in an @word?
    input.addEventListener("click", () => this.isOpen && this.update());
    const sideways = ["ArrowLeft", "ArrowRight", "Home", "End"];
    input.addEventListener("keyup", (event) => {
      if (this.isOpen && sideways.includes(event.key)) this.update();
    });
  }

  get isOpen() {
    return !this.list.hidden;
  }

  // After each keystroke: is the caret at the end of an @word?
  async update() {
    const { input } = this;
    const caret = input.selectionStart;
    const match = caret === input.selectionEnd && input.value.slice(0, caret).match(TOKEN);
    if (!match) return this.close();
    const query = match[1].toLowerCase();
    const ticket = ++this.ticket; // answers may come back out of order: keep the latest
    let users;
    try {
      users = await this.candidates(query);
    } catch {
      users = []; // the list is a help, never an error
    }
    if (ticket !== this.ticket) return;
    const starts = (text) => (text ?? "").toLowerCase().startsWith(query);
    const found = users.filter((u) => starts(u.username) || starts(u.display_name));
    // Usernames that match first: "@al" means alice before someone named "Al B".
    found.sort(
      (a, b) => starts(b.username) - starts(a.username) || a.username.localeCompare(b.username),
    );
    if (found.length === 0) return this.close();
    this.users = found.slice(0, SHOWN);
    this.start = caret - match[1].length - 1; // where the "@" is
    this.active = 0;
    this.render();
  }

  render() {
    this.list.replaceChildren(
      ...this.users.map((user, i) =>
        el(
          "li",
          {
            id: `mention-option-${i}`,
            role: "option",
            "aria-selected": String(i === this.active),
            dataset: { index: i },
          },
          personName(user),
        ),
      ),
    );
    this.list.hidden = false;
    this.input.setAttribute("aria-activedescendant", `mention-option-${this.active}`);
  }

  close() {
    this.ticket += 1; // an answer still on its way opens nothing
    if (!this.isOpen) return;
    this.list.hidden = true;
    this.list.replaceChildren();
    this.users = [];
    this.input.removeAttribute("aria-activedescendant");
  }

  // The message box's keydown goes here first: true if it was for the list.
  handleKey(event) {
    if (!this.isOpen) return false;
    const count = this.users.length;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.active = (this.active + step + count) % count;
      this.render();
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.pick(this.active);
    } else if (event.key === "Escape") {
      this.close();
    } else {
      return false;
    }
    event.preventDefault();
    return true;
  }

  // "@al" becomes "@alice " and the caret goes after it.
  pick(index) {
    const user = this.users[index];
    const end = this.input.selectionStart;
    if (!user || end < this.start) return this.close();
    this.input.setRangeText(`@${user.username} `, this.start, end, "end");
    this.close();
    this.input.focus();
  }
}
