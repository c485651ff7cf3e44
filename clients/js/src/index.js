// wsfleet's reference client: a session that survives drains, crashes and Redis trouble with
// no count lost or repeated and every publication delivered once, in order. Every rule it
// follows is in docs/PROTOCOL.md ("Resuming without gaps or repeats", "Close codes", rooms and
// "History and recovery"); the comments of src/ cite each rule by its id there, beside the code
// that follows it ([R1] … [R14]; a test, test/rules.test.js, checks that every id is cited and
// every citation is an id). No dependency: the WebSocket is the host's (browsers, Node 22+) or
// one passed in (`ws` on Node 18 and 20).
//
// This module is the public API and the frames' dispatch; the socket and its reconnects are
// connection.js's, the rooms' commands and frames roomset.js's.

import { Emitter } from "./emitter.js";
import { Counter } from "./counter.js";
import { Cursor } from "./cursor.js";
import { Connection } from "./connection.js";
import { RoomSet } from "./roomset.js";

/** The server version this client speaks to (and its package version). */
export const VERSION = "0.1.0";

/**
 * Opens a client and starts connecting.
 * @param {string | (() => string | Promise<string>)} url
 * @param {import("./index.d.ts").ClientOptions} [options]
 */
export function connect(url, options = {}) {
  const client = new Client(url, options);
  client.open();
  return client;
}

export class Client extends Emitter {
  #maxInFlight;
  /** @type {Connection} */
  #connection;
  /** @type {RoomSet} */
  #roomSet;
  /** While set, counted frames wait (a back-off after `unavailable`). */
  #retryTimer = undefined;

  /**
   * @param {string | (() => string | Promise<string>)} url
   * @param {import("./index.d.ts").ClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#connection = new Connection(url, options, {
      resume: () => ({ session: this.session, counter: this.counter, broadcasts: this.broadcasts }),
      dialing: () => this.#setState(this.instance === undefined ? "connecting" : "reconnecting"),
      waiting: () => this.#setState("reconnecting"),
      frame: (text) => this.#onFrame(text),
      closed: (code, reason) => this.#onClose(code, reason),
      error: (error) => this.emit("error", error),
    });
    this.#maxInFlight = options.maxInFlight ?? 64;
    /** The session id: given, else the server's (from the first welcome), kept for every resume. */
    this.session = options.session;
    /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "idle";
    /** The instance holding the current socket (from its welcome). */
    this.instance = undefined;
    this.counter = new Counter();
    /** Exactly-once delivery of fleet broadcasts. */
    this.broadcasts = new Cursor();
    /** @type {Map<string, import("./rooms.js").Room>} */
    this.rooms = new Map();
    this.#roomSet = new RoomSet(this.rooms, {
      connection: this.#connection,
      emit: (name, ...args) => this.emit(name, ...args),
      admit: (cursor, frame, where) => this.#admit(cursor, frame, where),
    });
  }

  /** Starts connecting (connect() does this), or again after disconnect(). */
  open() {
    if (this.state === "idle") this.#connection.dial();
  }

  /**
   * Closes the socket (1000) but keeps the session: sends without a count, rooms, their
   * positions and the broadcast position stay, and open() resumes from them as after any
   * reconnect. State "idle" until then; send(), join() and publish() wait meanwhile.
   */
  disconnect() {
    if (this.state === "closed" || this.state === "idle") return;
    const ws = this.#connection.drop();
    this.#disconnected();
    this.#setState("idle");
    ws?.close(1000, "client disconnected");
  }

  /** A new socket now, resuming the session (e.g. after the network changed). */
  reconnect() {
    if (this.state === "closed") return;
    this.disconnect();
    this.open();
  }

  /** The last count the server told (`acked` in docs/PROTOCOL.md). */
  get acked() {
    return this.counter.acked;
  }

  /** How many sent frames have no count yet. */
  get pendingCount() {
    return this.counter.pending.length;
  }

  /**
   * Sends one counted frame; resolves with its count, exactly once across any reconnects.
   * @param {string} text
   * @returns {Promise<number>}
   */
  send(text) {
    if (typeof text !== "string") throw new TypeError("send() takes a string");
    if (isRoomCommand(text)) {
      throw new TypeError("a room command is not counted: use join(), leave() or publish()");
    }
    if (this.state === "closed") return Promise.reject(new Error("client closed"));
    return new Promise((resolve, reject) => {
      this.counter.push({ text, resolve, reject });
      this.#pump();
    });
  }

  /**
   * Joins a room (and re-joins it, recovering what was missed, after every reconnect).
   * @param {string} name
   * @returns {Promise<import("./index.d.ts").RoomInfo>}
   */
  join(name) {
    if (this.state === "closed") return Promise.reject(new Error("client closed"));
    return this.#roomSet.join(name);
  }

  /**
   * Leaves a room; resolves when the server said `left`. Messages to it that were not
   * published yet are rejected.
   * @param {string} name
   * @returns {Promise<void>}
   */
  leave(name) {
    if (this.state === "closed") return Promise.reject(new Error("client closed"));
    return this.#roomSet.leave(name);
  }

  /**
   * Publishes to a room the client joined (or is joining). Resolves with the publication's
   * place in the room's stream once it came back; resent with the same `id` after a reconnect
   * or `unavailable`, so it is published once.
   * @param {string} name
   * @param {unknown} content any JSON value but null
   * @param {{ id?: string }} [options]
   * @returns {Promise<{ offset: number, epoch: string }>}
   */
  publish(name, content, { id = newId() } = {}) {
    return this.#roomSet.publish(name, content, id);
  }

  /** Closes for good: no reconnect; everything pending is rejected. */
  close() {
    if (this.state === "closed") return;
    const ws = this.#finish(new Error("client closed"));
    ws?.close(1000, "client closed");
  }

  // ---- the connection's life -----------------------------------------------------------------

  #onClose(code, reason) {
    this.#disconnected();
    if (this.state === "closed") return;
    this.emit("disconnect", { code, reason });
    const fatal = this.#connection.reconnectAfter(code, reason);
    if (fatal) this.#finish(fatal);
  }

  /** What a lost socket leaves behind: nothing is on the wire, no room is joined on it. */
  #disconnected() {
    this.counter.disconnected();
    this.#roomSet.disconnected();
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
  }

  /**
   * Stops for good, rejecting everything pending.
   * @returns the socket that was current, for close() to close
   */
  #finish(error) {
    this.#setState("closed");
    const ws = this.#connection.drop();
    clearTimeout(this.#retryTimer);
    this.counter.abandon(error);
    this.#roomSet.abandon(error);
    this.emit("closed", error);
    return ws;
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  // ---- frames from the server ----------------------------------------------------------------

  #onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this.emit("error", new Error(`not JSON from the server: ${text.slice(0, 100)}`));
      return;
    }
    if (typeof frame.type === "string") this.#roomSet.onFrame(frame);
    else if (typeof frame.session_uuid === "string") this.#onWelcome(frame);
    else if (frame.bye === true) {
      this.#connection.bye(frame.reconnect_after_ms);
      this.emit("bye", frame);
    } else if ("broadcast" in frame) this.#onBroadcast(frame);
    else if (typeof frame.count === "number") this.#onCount(frame.count);
    else if (frame.error === "unavailable") this.#onUnavailable();
    else if (typeof frame.ts === "string") this.emit("heartbeat", frame);
  }

  #onWelcome(welcome) {
    this.session = welcome.session_uuid;
    this.instance = welcome.instance;
    this.#connection.welcomed();
    // [R4] what the welcome count says about the frames that had no reply.
    const judgement = this.counter.welcome(welcome.count);
    if (judgement.kind !== "continues") this.emit("anomaly", { stream: "count", ...judgement });
    if (welcome.epoch !== undefined) {
      if (welcome.recovered === false) this.emit("lost", { stream: "broadcast" });
      this.broadcasts.restart(welcome.offset, welcome.epoch, welcome.recovered);
    }
    this.#setState("open");
    this.emit("welcome", welcome);
    this.#roomSet.welcome(welcome.rooms);
    this.#pump();
  }

  #onCount(count) {
    const { expected } = this.counter.counted(count);
    if (count !== expected) this.emit("anomaly", { stream: "count", kind: "reply", count, expected });
    this.emit("count", count);
    this.#pump();
  }

  /** [R2] not counted; the frame keeps its place and goes again after a back-off. */
  #onUnavailable() {
    this.counter.refused();
    if (this.#retryTimer !== undefined) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#pump();
    }, this.#connection.backoff());
  }

  /** Sends the counted frames that can go: at most `maxInFlight` without a reply. */
  #pump() {
    if (!this.#connection.isOpen || this.#retryTimer !== undefined) return;
    for (let frame; (frame = this.counter.nextToSend(this.#maxInFlight)); ) {
      this.#connection.write(frame.text);
      this.counter.sent();
    }
  }

  #onBroadcast(frame) {
    const { broadcast: message, ts, offset, epoch } = frame;
    // Without an offset: a message to this session alone, not recorded, never replayed.
    if (offset !== undefined && !this.#admit(this.broadcasts, frame, { stream: "broadcast" })) {
      return;
    }
    this.emit("broadcast", { message, ts, offset, epoch });
  }

  /** Whether a publication is new to the application (reporting a gap if there is one). */
  #admit(cursor, frame, where) {
    const before = cursor.offset;
    const verdict = cursor.admit(frame.offset, frame.epoch);
    if (verdict === "gap") {
      this.emit("anomaly", { ...where, kind: "gap", after: before, offset: frame.offset });
    }
    return verdict !== "duplicate";
  }
}

/** Whether the server would take `text` as a room command (and not count it). */
function isRoomCommand(text) {
  if (!text.trimStart().startsWith("{")) return false;
  try {
    const value = JSON.parse(text);
    return ["join", "leave", "message"].includes(value?.type);
  } catch {
    return false;
  }
}

/** A client message id: random, so that no other client of the same session reuses it. */
function newId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export { Counter } from "./counter.js";
export { Cursor } from "./cursor.js";
