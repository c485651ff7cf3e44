// The client's socket and the way from one socket to the next: each attempt's URL (the session
// and where it stands), the dial, what a close code means (docs/PROTOCOL.md, "Close codes") and
// how long to wait before trying again. It knows nothing of counts or rooms: the client gets
// the current socket's frames and hears of its close, through the hooks it gives.

/** [R10] Closes after which reconnecting cannot help: the client's own frames are at fault. */
const FATAL_CODES = new Set([1002, 1003, 1007, 1009]);
const RESUMED_ELSEWHERE = "session resumed elsewhere";
const TOKEN_EXPIRED = "token expired";
const OPEN = 1; // WebSocket.OPEN, the same in every implementation

/**
 * What the connection asks of the client, and tells it.
 * @typedef {object} Hooks
 * @property {() => { session: string | undefined, counter: import("./counter.js").Counter,
 *   broadcasts: import("./cursor.js").Cursor }} resume where the session stands, for the URL
 * @property {() => void} dialing an attempt starts
 * @property {() => void} waiting the next attempt waits for its delay
 * @property {(text: string) => void} frame a frame came on the current socket
 * @property {(code: number, reason: string) => void} closed the current socket closed
 * @property {(error: Error) => void} error an attempt's URL could not be made
 */

export class Connection {
  #url;
  #WebSocket;
  #token;
  #user;
  #minBackoff;
  #maxBackoff;
  /** @type {Hooks} */
  #hooks;
  /** The current socket; frames of older sockets are ignored. */
  #ws = null;
  /** Whether the current socket's welcome came (frames may be sent). */
  #welcomed = false;
  #attempt = 0;
  /** Bumped by every dial() and drop(): an attempt that finds it moved gives up. */
  #generation = 0;
  /** `reconnect_after_ms` of the current socket's `bye`. */
  #byeDelay = undefined;
  #reconnectTimer = undefined;

  /**
   * @param {string | (() => string | Promise<string>)} url
   * @param {import("./index.d.ts").ClientOptions} options
   * @param {Hooks} hooks
   */
  constructor(url, options, hooks) {
    this.#url = url;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket: pass options.WebSocket (e.g. the `ws` package's)");
    }
    this.#token = options.token;
    this.#user = options.user;
    this.#minBackoff = options.minBackoffMs ?? 100;
    this.#maxBackoff = options.maxBackoffMs ?? 5000;
    this.#hooks = hooks;
  }

  /** Whether frames may be sent: the current socket is open and its welcome came. */
  get isOpen() {
    return this.#welcomed && this.#ws !== null && this.#ws.readyState === OPEN;
  }

  /** Sends a frame on the current socket (a string as it is, anything else as JSON). */
  write(frame) {
    this.#ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /** One attempt: a new socket, to the URL made now. */
  async dial() {
    const generation = ++this.#generation;
    this.#hooks.dialing();
    let url;
    try {
      url = await this.#socketUrl();
    } catch (error) {
      if (generation !== this.#generation) return;
      this.#hooks.error(error);
      this.#redial(this.backoff());
      return;
    }
    // drop() came while the URL was being made.
    if (generation !== this.#generation) return;
    const ws = new this.#WebSocket(url);
    this.#ws = ws;
    this.#welcomed = false;
    ws.onmessage = (event) => {
      if (ws === this.#ws) this.#hooks.frame(String(event.data));
    };
    ws.onclose = (event) => {
      if (ws !== this.#ws) return;
      this.#ws = null;
      this.#welcomed = false;
      this.#hooks.closed(event.code, event.reason);
    };
    // A failed upgrade (503 draining, 401…) is an error then a close (1006): the close decides.
    ws.onerror = () => {};
  }

  /** The current socket's welcome came: frames may go, and the back-off starts over. */
  welcomed() {
    this.#welcomed = true;
    this.#attempt = 0;
  }

  /** The current socket's `bye` said when to come back (`reconnect_after_ms`). */
  bye(delay) {
    this.#byeDelay = delay;
  }

  /**
   * Lets go of the current socket and of any attempt under way or waiting: no reconnect
   * follows until dial(). Returns the socket, for the caller to close once it is done.
   * @returns {import("./index.d.ts").WebSocketLike | null}
   */
  drop() {
    const ws = this.#ws;
    this.#generation += 1;
    this.#ws = null;
    this.#welcomed = false;
    this.#byeDelay = undefined;
    clearTimeout(this.#reconnectTimer);
    return ws;
  }

  /**
   * What follows the close of the current socket: the error that ends the client when
   * reconnecting cannot help; else none, and the next attempt is scheduled.
   * @returns {Error | undefined}
   */
  reconnectAfter(code, reason) {
    if (code === 1008 && reason === RESUMED_ELSEWHERE) {
      // [R12] A newer socket of this session is the one to use; coming back would fence it.
      return new Error(RESUMED_ELSEWHERE);
    }
    if (FATAL_CODES.has(code)) return new Error(`closed ${code}: ${reason}`);
    let delay;
    if (this.#byeDelay !== undefined) {
      // [R3] The drain's hint, already jittered by the server.
      delay = this.#byeDelay;
      this.#byeDelay = undefined;
    } else if (code === 1008 && reason === TOKEN_EXPIRED) {
      delay = 0; // [R11] the token function gives a fresh one (#socketUrl asks it each time)
    } else {
      // 1001 without bye, 1006, 1008 ping timeout or rate limit, 1013 slow consumer…
      delay = this.backoff();
    }
    this.#redial(delay);
    return undefined;
  }

  /** Exponential back-off with jitter, reset by each welcome. */
  backoff() {
    const ceiling = Math.min(this.#maxBackoff, this.#minBackoff * 2 ** this.#attempt);
    this.#attempt += 1;
    return Math.round(ceiling * (0.5 + Math.random() / 2));
  }

  #redial(delay) {
    this.#hooks.waiting();
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.dial(), delay);
  }

  /** The socket URL of this attempt: session, `last_count`, broadcast `since`/`epoch`, token. */
  async #socketUrl() {
    const base = typeof this.#url === "function" ? await this.#url() : this.#url;
    const url = new URL(base);
    const params = url.searchParams;
    const { session, counter, broadcasts } = this.#hooks.resume();
    if (session) params.set("session_uuid", session);
    // [R3] resume with the last count told, so a counter Redis lost continues from it.
    if (counter.known) params.set("last_count", String(counter.acked));
    // [R6] the last broadcast seen, so the ones missed follow the welcome.
    if (broadcasts.resumable) {
      params.set("since", String(broadcasts.offset));
      params.set("epoch", broadcasts.epoch);
    }
    // A function is asked before every attempt, so a token that expired is replaced.
    const token = typeof this.#token === "function" ? await this.#token() : this.#token;
    if (token) params.set("token", token);
    if (this.#user) params.set("user", this.#user);
    return url.toString();
  }
}
