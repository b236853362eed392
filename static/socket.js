// The live side of the API: one WebSocket to /ws that stays open.
//
// Delivery over a socket is best effort, so the socket only says "something
// happened"; after every (re)connect the app catches up over HTTP (onReady).

const PING_EVERY_MS = 25_000; // keeps idle proxies from closing the socket
const MAX_BACKOFF_MS = 30_000;
const UNAUTHORIZED = 4401; // bad, expired or revoked token

export class LiveSocket {
  // getToken() gives the access token to connect with; renew(token) gets a
  // new one when that token expired (true) or says the session is over (false).
  constructor({ getToken, renew, onEvent, onReady, onUnauthorized, onStatus }) {
    Object.assign(this, { getToken, renew, onEvent, onReady, onUnauthorized, onStatus });
    this.attempt = 0;
    this.stopped = false;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    this.ws = ws;
    // The token goes in the first frame, never in the URL, where logs keep it.
    ws.addEventListener("open", () => {
      this.token = this.getToken();
      ws.send(JSON.stringify({ type: "auth", token: this.token }));
    });
    ws.addEventListener("message", (e) => this.receive(JSON.parse(e.data)));
    ws.addEventListener("close", (e) => this.closed(e.code));
  }

  receive(event) {
    if (event.type === "ready") {
      this.attempt = 0;
      this.renewed = false;
      this.ready = true;
      this.pinger = setInterval(() => this.send({ type: "ping" }), PING_EVERY_MS);
      this.onStatus(true);
      this.onReady(event.user);
    } else if (event.type !== "pong") {
      this.onEvent(event);
    }
  }

  closed(code) {
    this.ready = false;
    clearInterval(this.pinger);
    if (this.stopped) return;
    this.onStatus(false);
    if (code === UNAUTHORIZED) {
      // The server closes a socket when its access token expires: renew the
      // token and connect again at once. Refused again, the session is over.
      if (!this.renewed) {
        this.renewed = true;
        this.renew(this.token).then(
          (renewed) => {
            if (!renewed) this.unauthorized();
            else if (!this.stopped) this.connect();
          },
          () => {
            this.renewed = false; // the server is unreachable: try again later
            this.reconnectLater();
          },
        );
      } else this.unauthorized();
      return;
    }
    this.reconnectLater();
  }

  unauthorized() {
    if (this.stopped) return;
    this.stopped = true;
    this.onUnauthorized();
  }

  reconnectLater() {
    if (this.stopped) return;
    // Exponential backoff with jitter, so a restarted server is not hit by
    // every client at the same instant.
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    this.retry = setTimeout(() => this.connect(), delay);
  }

  // Frames other than auth need `ready` (until then the server takes a frame
  // for the auth one), so before it they are not sent. Says whether it went.
  send(frame) {
    if (this.ready) this.ws.send(JSON.stringify(frame));
    return Boolean(this.ready);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retry);
    clearInterval(this.pinger);
    this.ws.close();
  }
}
