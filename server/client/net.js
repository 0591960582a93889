// The connection to the game server: one WebSocket per page, requests with
// ids matched to their answers, an idempotency key on every action, and a
// reconnect with backoff that sends again what was never answered
// (docs/protocol.md, "Sending again safely").

// At most this many keyed requests wait for an answer: the server remembers
// a player's last 32 keys, so each one may safely be sent again.
const OUTBOX_MAX = 32;
// An answer that takes longer than this means a dead connection (a lost
// socket the browser has not noticed yet): reconnect and send again.
const ANSWER_TIMEOUT_MS = 15000;
// Reconnect delays: from the first to the largest, doubling, with jitter so
// that players of a restarted server do not all come back at once.
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 8000;

// Error codes that end the session: the player must log in again.
const SESSION_ENDED = new Set(["unauthorized", "token_expired", "logged_out", "wrong_title", "banned"]);

function randomKey() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class ApiError extends Error {
  constructor(code, message, details) {
    super(message || code);
    this.code = code;
    this.details = details;
  }
}

export class Net extends EventTarget {
  constructor(title) {
    super();
    this.title = title;
    this.token = null;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // id -> {text, resolve, reject, keyed, sentAt}
    this.attempt = 0;
    this.closed = false;
    this.status = "offline";
    this.keyPrefix = randomKey();
    this.timer = setInterval(() => this.checkTimeouts(), 1000);
  }

  setStatus(status, detail) {
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, detail } }));
  }

  async http(path, body) {
    const init = body === undefined ? {} : { method: "POST", body: JSON.stringify(body), headers: {} };
    if (this.token && body !== undefined) init.headers.authorization = `Bearer ${this.token}`;
    const r = await fetch(path, init);
    const v = await r.json().catch(() => null);
    if (!r.ok && v && v.error) throw new ApiError(v.error.code, v.error.message, v.error.details);
    if (!r.ok) throw new ApiError("http_" + r.status, `the server answered ${r.status}`);
    return v;
  }

  // The dev login (the gateway's login takes its place when there is one).
  async login(player) {
    const v = await this.http(`/v1/${this.title}/login`, { player });
    this.token = v.token;
    return v;
  }

  connect() {
    if (this.closed || !this.token) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/v1/${this.title}/ws?token=${encodeURIComponent(this.token)}`);
    this.ws = ws;
    this.setStatus(this.attempt ? "reconnecting" : "connecting");
    ws.onopen = () => {
      this.attempt = 0;
      this.setStatus("online");
      // What was sent and never answered goes again, with the same ids and
      // keys: the server answers a repeated key from its record.
      for (const p of this.pending.values()) {
        p.sentAt = performance.now();
        ws.send(p.text);
      }
    };
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (e.code === 4001) return this.why();
      this.setStatus("offline");
      this.retry();
    };
  }

  async retry() {
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt += 1;
    // Ask over HTTP why the socket went: a session that ended needs a new
    // login, a server that drains or restarts needs patience.
    const e = await this.refusal();
    if (e && SESSION_ENDED.has(e.code)) return this.ended(e.code, e.message, e.details);
    if (e) this.setStatus("offline", e);
    setTimeout(() => this.connect(), delay);
  }

  // The server's refusal of a ping with this session's token, or null.
  async refusal() {
    try {
      await this.http(`/v1/${this.title}/request`, { id: 0, action: "ping" });
      return null;
    } catch (e) {
      if (e instanceof ApiError) return e;
      return null;
    }
  }

  // The server ended the session (a forced logout or a ban): ask it why,
  // so that a ban is shown as one, with its reason and end.
  async why() {
    if (this.asking) return; // the push and the close that follows it
    this.asking = true;
    const e = await this.refusal();
    if (e && SESSION_ENDED.has(e.code)) return this.ended(e.code, e.message, e.details);
    this.ended("logged_out", "Customer support ended this session. Log in again.");
  }

  ended(code, message, details) {
    this.closed = true;
    for (const p of this.pending.values()) p.reject(new ApiError(code, message, details));
    this.pending.clear();
    this.setStatus("ended", new ApiError(code, message, details));
  }

  receive(text) {
    let v;
    try {
      v = JSON.parse(text);
    } catch {
      return;
    }
    if (v.event) {
      if (v.event === "server_shutdown") this.setStatus("restarting");
      if (v.event === "logged_out") this.why();
      this.dispatchEvent(new CustomEvent("push", { detail: v }));
      return;
    }
    const p = this.pending.get(v.id);
    if (!p) return;
    this.pending.delete(v.id);
    if (v.ok) p.resolve(v.result);
    else p.reject(new ApiError(v.error.code, v.error.message, v.error.details));
    this.dispatchEvent(new CustomEvent("answered"));
  }

  // Sends a request; `keyed` requests (every action that changes
  // something) carry an idempotency key.
  request(action, args, keyed = true) {
    if (this.closed) return Promise.reject(new ApiError("logged_out", "Log in again."));
    const keyedNow = [...this.pending.values()].filter((p) => p.keyed).length;
    if (keyed && keyedNow >= OUTBOX_MAX) {
      return Promise.reject(new ApiError("client_busy", "Too many actions are waiting for the server."));
    }
    const id = this.nextId++;
    const req = { id, action };
    if (args && Object.keys(args).length) req.args = args;
    if (keyed) req.key = `${this.keyPrefix}-${id}`;
    const text = JSON.stringify(req);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { text, resolve, reject, keyed, sentAt: performance.now() });
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
    });
  }

  checkTimeouts() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    for (const p of this.pending.values()) {
      if (now - p.sentAt > ANSWER_TIMEOUT_MS) {
        this.ws.close();
        return;
      }
    }
  }

  get waiting() {
    return this.pending.size;
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    if (this.ws) this.ws.close();
  }
}
