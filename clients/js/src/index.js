// wsfleet's reference client: a session that survives drains, crashes and Redis trouble with
// no count lost or repeated and every publication delivered once, in order. Every rule it
// follows is in docs/PROTOCOL.md ("Resuming without gaps or repeats", "Close codes", rooms and
// "History and recovery"); the comments cite each rule by its id there ([R1] … [R14]; a test,
// test/rules.test.js, checks that every id is cited and every citation is an id). No dependency: the WebSocket is the
// host's (browsers, Node 22+) or one passed in (`ws` on Node 18 and 20).

import { Emitter } from "./emitter.js";
import { Counter } from "./counter.js";
import { Cursor } from "./cursor.js";
import { Commands, Room } from "./rooms.js";

/** The server version this client speaks to (and its package version). */
export const VERSION = "0.1.0";

/** [R10] Closes after which reconnecting cannot help: the client's own frames are at fault. */
const FATAL_CODES = new Set([1002, 1003, 1007, 1009]);
const RESUMED_ELSEWHERE = "session resumed elsewhere";
const TOKEN_EXPIRED = "token expired";
const OPEN = 1; // WebSocket.OPEN, the same in every implementation

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
  #url;
  #WebSocket;
  #token;
  #user;
  #maxInFlight;
  #minBackoff;
  #maxBackoff;
  /** The current socket; frames of older sockets are ignored. */
  #ws = null;
  /** Whether the current socket's welcome came (frames may be sent). */
  #welcomed = false;
  #attempt = 0;
  /** Bumped by every connect, disconnect() and close(): an attempt that finds it moved gives up. */
  #generation = 0;
  /** `reconnect_after_ms` of the current socket's `bye`. */
  #byeDelay = undefined;
  #reconnectTimer = undefined;
  /** While set, counted frames wait (a back-off after `unavailable`). */
  #retryTimer = undefined;
  #commands = new Commands();
  /** Rooms left while disconnected: `leave` goes out after the next welcome. */
  #leaving = new Map();

  /**
   * @param {string | (() => string | Promise<string>)} url
   * @param {import("./index.d.ts").ClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#url = url;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket: pass options.WebSocket (e.g. the `ws` package's)");
    }
    this.#token = options.token;
    this.#user = options.user;
    this.#maxInFlight = options.maxInFlight ?? 64;
    this.#minBackoff = options.minBackoffMs ?? 100;
    this.#maxBackoff = options.maxBackoffMs ?? 5000;
    /** The session id: given, else the server's (from the first welcome), kept for every resume. */
    this.session = options.session;
    /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "idle";
    /** The instance holding the current socket (from its welcome). */
    this.instance = undefined;
    this.counter = new Counter();
    /** Exactly-once delivery of fleet broadcasts. */
    this.broadcasts = new Cursor();
    /** @type {Map<string, Room>} */
    this.rooms = new Map();
  }

  /** Starts connecting (connect() does this), or again after disconnect(). */
  open() {
    if (this.state === "idle") this.#connect();
  }

  /**
   * Closes the socket (1000) but keeps the session: sends without a count, rooms, their
   * positions and the broadcast position stay, and open() resumes from them as after any
   * reconnect. State "idle" until then; send(), join() and publish() wait meanwhile.
   */
  disconnect() {
    if (this.state === "closed" || this.state === "idle") return;
    const ws = this.#ws;
    this.#generation += 1;
    this.#ws = null;
    this.#welcomed = false;
    this.#byeDelay = undefined;
    clearTimeout(this.#reconnectTimer);
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
    for (const waiter of this.#leaving.get(name) ?? []) waiter.reject(new Error(`joined ${name} again`));
    this.#leaving.delete(name);
    let room = this.rooms.get(name);
    if (!room) {
      room = new Room(name);
      this.rooms.set(name, room);
    }
    const joined = new Promise((resolve, reject) => room.joining.push({ resolve, reject }));
    if (this.#isOpen()) this.#sendJoin(room);
    return joined;
  }

  /**
   * Leaves a room; resolves when the server said `left`. Messages to it that were not
   * published yet are rejected.
   * @param {string} name
   * @returns {Promise<void>}
   */
  leave(name) {
    if (this.state === "closed") return Promise.reject(new Error("client closed"));
    this.rooms.get(name)?.abandon(new Error(`left room ${name}`));
    this.rooms.delete(name);
    return new Promise((resolve, reject) => {
      const waiters = this.#leaving.get(name) ?? [];
      waiters.push({ resolve, reject });
      this.#leaving.set(name, waiters);
      if (this.#isOpen()) this.#sendLeave(name);
    });
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
    const room = this.rooms.get(name);
    if (!room) return Promise.reject(new Error(`not in room ${name}: join() it first`));
    return new Promise((resolve, reject) => {
      room.outbox.set(id, { content, sent: false, resolve, reject });
      this.#flushOutbox(room);
    });
  }

  /** Closes for good: no reconnect; everything pending is rejected. */
  close() {
    if (this.state === "closed") return;
    const ws = this.#ws;
    this.#finish(new Error("client closed"));
    ws?.close(1000, "client closed");
  }

  // ---- the connection ------------------------------------------------------------------------

  async #connect() {
    const generation = ++this.#generation;
    this.#setState(this.instance === undefined ? "connecting" : "reconnecting");
    let url;
    try {
      url = await this.#socketUrl();
    } catch (error) {
      if (generation !== this.#generation) return;
      this.emit("error", error);
      this.#scheduleReconnect(this.#backoff());
      return;
    }
    // close() or disconnect() came while the URL was being made.
    if (generation !== this.#generation) return;
    const ws = new this.#WebSocket(url);
    this.#ws = ws;
    this.#welcomed = false;
    ws.onmessage = (event) => {
      if (ws === this.#ws) this.#onFrame(String(event.data));
    };
    ws.onclose = (event) => {
      if (ws === this.#ws) this.#onClose(event.code, event.reason);
    };
    // A failed upgrade (503 draining, 401…) is an error then a close (1006): the close decides.
    ws.onerror = () => {};
  }

  /** The socket URL of this attempt: session, `last_count`, broadcast `since`/`epoch`, token. */
  async #socketUrl() {
    const base = typeof this.#url === "function" ? await this.#url() : this.#url;
    const url = new URL(base);
    const params = url.searchParams;
    if (this.session) params.set("session_uuid", this.session);
    // [R3] resume with the last count told, so a counter Redis lost continues from it.
    if (this.counter.known) params.set("last_count", String(this.counter.acked));
    // [R6] the last broadcast seen, so the ones missed follow the welcome.
    if (this.broadcasts.resumable) {
      params.set("since", String(this.broadcasts.offset));
      params.set("epoch", this.broadcasts.epoch);
    }
    // A function is asked before every attempt, so a token that expired is replaced.
    const token = typeof this.#token === "function" ? await this.#token() : this.#token;
    if (token) params.set("token", token);
    if (this.#user) params.set("user", this.#user);
    return url.toString();
  }

  #onClose(code, reason) {
    this.#ws = null;
    this.#welcomed = false;
    this.#disconnected();
    if (this.state === "closed") return;
    this.emit("disconnect", { code, reason });
    if (code === 1008 && reason === RESUMED_ELSEWHERE) {
      // [R12] A newer socket of this session is the one to use; coming back would fence it.
      this.#finish(new Error(RESUMED_ELSEWHERE));
      return;
    }
    if (FATAL_CODES.has(code)) {
      this.#finish(new Error(`closed ${code}: ${reason}`));
      return;
    }
    let delay;
    if (this.#byeDelay !== undefined) {
      // [R3] The drain's hint, already jittered by the server.
      delay = this.#byeDelay;
      this.#byeDelay = undefined;
    } else if (code === 1008 && reason === TOKEN_EXPIRED) {
      delay = 0; // [R11] the token function gives a fresh one (#socketUrl asks it each time)
    } else {
      // 1001 without bye, 1006, 1008 ping timeout or rate limit, 1013 slow consumer…
      delay = this.#backoff();
    }
    this.#scheduleReconnect(delay);
  }

  /** What a lost socket leaves behind: nothing is on the wire, no room is joined on it. */
  #disconnected() {
    this.counter.disconnected();
    this.#commands.clear();
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    for (const room of this.rooms.values()) {
      room.joined = false;
      for (const entry of room.outbox.values()) entry.sent = false;
    }
  }

  #scheduleReconnect(delay) {
    this.#setState("reconnecting");
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  /** Exponential back-off with jitter, reset by each welcome. */
  #backoff() {
    const ceiling = Math.min(this.#maxBackoff, this.#minBackoff * 2 ** this.#attempt);
    this.#attempt += 1;
    return Math.round(ceiling * (0.5 + Math.random() / 2));
  }

  #finish(error) {
    this.#generation += 1;
    this.#setState("closed");
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#retryTimer);
    this.#ws = null;
    this.counter.abandon(error);
    for (const room of this.rooms.values()) room.abandon(error);
    for (const waiters of this.#leaving.values()) for (const w of waiters) w.reject(error);
    this.#leaving.clear();
    this.emit("closed", error);
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  #isOpen() {
    return this.#welcomed && this.#ws !== null && this.#ws.readyState === OPEN;
  }

  #write(frame) {
    this.#ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
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
    if (typeof frame.type === "string") this.#onRoomFrame(frame);
    else if (typeof frame.session_uuid === "string") this.#onWelcome(frame);
    else if (frame.bye === true) {
      this.#byeDelay = frame.reconnect_after_ms;
      this.emit("bye", frame);
    } else if ("broadcast" in frame) this.#onBroadcast(frame);
    else if (typeof frame.count === "number") this.#onCount(frame.count);
    else if (frame.error === "unavailable") this.#onUnavailable();
    else if (typeof frame.ts === "string") this.emit("heartbeat", frame);
  }

  #onWelcome(welcome) {
    this.session = welcome.session_uuid;
    this.instance = welcome.instance;
    this.#welcomed = true;
    this.#attempt = 0;
    // [R4] what the welcome count says about the frames that had no reply.
    const judgement = this.counter.welcome(welcome.count);
    if (judgement.kind !== "continues") this.emit("anomaly", { stream: "count", ...judgement });
    if (welcome.epoch !== undefined) {
      if (welcome.recovered === false) this.emit("lost", { stream: "broadcast" });
      this.broadcasts.restart(welcome.offset, welcome.epoch, welcome.recovered);
    }
    this.#setState("open");
    this.emit("welcome", welcome);
    for (const name of this.#leaving.keys()) this.#sendLeave(name);
    // [R7] every room of the session joined again, from where it stands: the rooms this client
    // is in, and those the welcome lists that it did not know (a session resumed by a new
    // client: a page reloaded with its session id), which it then is in too.
    for (const name of welcome.rooms ?? []) {
      if (!this.rooms.has(name) && !this.#leaving.has(name)) this.rooms.set(name, new Room(name));
    }
    for (const room of this.rooms.values()) this.#sendJoin(room);
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
    }, this.#backoff());
  }

  /** Sends the counted frames that can go: at most `maxInFlight` without a reply. */
  #pump() {
    if (!this.#isOpen() || this.#retryTimer !== undefined) return;
    for (let frame; (frame = this.counter.nextToSend(this.#maxInFlight)); ) {
      this.#write(frame.text);
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

  // ---- rooms ---------------------------------------------------------------------------------

  /** [R7] A join asks to recover from the last publication seen, when there is one. */
  #sendJoin(room) {
    const join = { type: "join", room: room.name };
    if (room.cursor.resumable) {
      join.since = room.cursor.offset;
      join.epoch = room.cursor.epoch;
    }
    this.#write(join);
    this.#commands.push({ kind: "join", room: room.name });
  }

  #sendLeave(name) {
    this.#write({ type: "leave", room: name });
    this.#commands.push({ kind: "leave", room: name });
  }

  /** Sends the room's messages not on the wire yet, once it is joined on this socket. */
  #flushOutbox(room) {
    if (!room.joined || !this.#isOpen()) return;
    for (const [id, entry] of room.outbox) {
      if (entry.sent) continue;
      this.#write({ type: "message", room: room.name, content: entry.content, id });
      entry.sent = true;
      this.#commands.push({ kind: "message", room: room.name, id });
    }
  }

  #onRoomFrame(frame) {
    const room = this.rooms.get(frame.room);
    switch (frame.type) {
      case "room_users":
        this.#commands.answer(frame.room, { kind: "join" });
        if (room) this.#onJoined(room, frame);
        break;
      case "message":
        if (room && this.#admit(room.cursor, frame, { stream: "room", room: room.name })) {
          const mine = frame.id !== undefined ? room.outbox.get(frame.id) : undefined;
          if (mine) {
            room.outbox.delete(frame.id);
            mine.resolve({ offset: frame.offset, epoch: frame.epoch });
          }
          this.emit("message", frame);
        }
        break;
      case "user_joined":
      case "user_left":
        if (!room) break;
        if (frame.type === "user_joined") room.users.add(frame.user);
        else room.users.delete(frame.user);
        this.emit("presence", {
          room: frame.room,
          kind: frame.type === "user_joined" ? "joined" : "left",
          user: frame.user,
          users: [...room.users].sort(),
        });
        break;
      case "left":
        this.#commands.answer(frame.room, { kind: "leave" });
        for (const waiter of this.#leaving.get(frame.room) ?? []) waiter.resolve();
        this.#leaving.delete(frame.room);
        break;
      case "error":
        this.#onRoomError(frame);
        break;
    }
  }

  #onJoined(room, frame) {
    const { users, offset, epoch, recovered } = frame;
    // [R8] the history no longer covers the gap: the application hears of it.
    if (recovered === false) this.emit("lost", { stream: "room", room: room.name });
    room.cursor.restart(offset, epoch, recovered);
    room.recovered = recovered;
    room.users = new Set(users);
    room.joined = true;
    const info = { room: room.name, users, offset, epoch, recovered };
    for (const waiter of room.joining.splice(0)) waiter.resolve(info);
    this.emit("presence", { room: room.name, kind: "members", users: [...users] });
    // [R13] Messages that had no publication back yet go (again): the same id publishes once.
    this.#flushOutbox(room);
  }

  #onRoomError(frame) {
    const { error: code, room: name } = frame;
    const command = this.#commands.answer(name, { code });
    const room = this.rooms.get(name);
    const error = Object.assign(new Error(`${command?.kind ?? "room command"} ${name}: ${code}`), {
      code,
      room: name,
    });
    if (code === "unavailable" && command) {
      // [R14] Nothing happened; the same command goes again after a back-off.
      setTimeout(() => this.#retry(command), this.#backoff());
      return;
    }
    if (command?.kind === "join" && room) {
      this.rooms.delete(name);
      room.abandon(error);
    } else if (command?.kind === "message" && room) {
      room.outbox.get(command.id)?.reject(error);
      room.outbox.delete(command.id);
    } else if (command?.kind === "leave") {
      for (const waiter of this.#leaving.get(name) ?? []) waiter.reject(error);
      this.#leaving.delete(name);
    }
    this.emit("error", error);
  }

  #retry(command) {
    if (!this.#isOpen()) return; // the next welcome re-sends everything anyway
    const room = this.rooms.get(command.room);
    if (command.kind === "join" && room && !room.joined) this.#sendJoin(room);
    else if (command.kind === "leave" && this.#leaving.has(command.room)) {
      this.#sendLeave(command.room);
    } else if (command.kind === "message" && room) {
      const entry = room.outbox.get(command.id);
      if (entry) entry.sent = false;
      this.#flushOutbox(room);
    }
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
