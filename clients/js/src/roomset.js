// The client's rooms on the wire: join, leave and publish as room commands, the replies that
// answer them, the rooms' frames (publications, presence), and every room joined again, from
// where it stands, after each welcome. The bookkeeping of one room and of the commands awaiting
// their replies is rooms.js's; this sends and reads the frames.

import { Commands, Room } from "./rooms.js";

/**
 * @typedef {object} Hooks
 * @property {import("./connection.js").Connection} connection the socket the frames go on
 * @property {(name: string, ...args: unknown[]) => void} emit tells the application
 * @property {(cursor: import("./cursor.js").Cursor, frame: { offset: number, epoch: string },
 *   where: object) => boolean} admit whether a publication is new to the application
 */

export class RoomSet {
  /** @type {Map<string, Room>} the client's `rooms` */
  #rooms;
  #connection;
  #emit;
  #admit;
  #commands = new Commands();
  /** Rooms left while disconnected: `leave` goes out after the next welcome. */
  #leaving = new Map();

  /**
   * @param {Map<string, Room>} rooms the map the client shows as `rooms`
   * @param {Hooks} hooks
   */
  constructor(rooms, { connection, emit, admit }) {
    this.#rooms = rooms;
    this.#connection = connection;
    this.#emit = emit;
    this.#admit = admit;
  }

  /** See Client.join(). */
  join(name) {
    for (const waiter of this.#leaving.get(name) ?? []) waiter.reject(new Error(`joined ${name} again`));
    this.#leaving.delete(name);
    let room = this.#rooms.get(name);
    if (!room) {
      room = new Room(name);
      this.#rooms.set(name, room);
    }
    const joined = new Promise((resolve, reject) => room.joining.push({ resolve, reject }));
    if (this.#connection.isOpen) this.#sendJoin(room);
    return joined;
  }

  /** See Client.leave(). */
  leave(name) {
    this.#rooms.get(name)?.abandon(new Error(`left room ${name}`));
    this.#rooms.delete(name);
    return new Promise((resolve, reject) => {
      const waiters = this.#leaving.get(name) ?? [];
      waiters.push({ resolve, reject });
      this.#leaving.set(name, waiters);
      if (this.#connection.isOpen) this.#sendLeave(name);
    });
  }

  /** See Client.publish(). */
  publish(name, content, id) {
    const room = this.#rooms.get(name);
    if (!room) return Promise.reject(new Error(`not in room ${name}: join() it first`));
    return new Promise((resolve, reject) => {
      room.outbox.set(id, { content, sent: false, resolve, reject });
      this.#flushOutbox(room);
    });
  }

  /**
   * A welcome came: the leaves that waited go, then every room is joined again.
   * @param {string[]} [names] the rooms the welcome lists
   */
  welcome(names) {
    for (const name of this.#leaving.keys()) this.#sendLeave(name);
    // [R7] every room of the session joined again, from where it stands: the rooms this client
    // is in, and those the welcome lists that it did not know (a session resumed by a new
    // client: a page reloaded with its session id), which it then is in too.
    for (const name of names ?? []) {
      if (!this.#rooms.has(name) && !this.#leaving.has(name)) this.#rooms.set(name, new Room(name));
    }
    for (const room of this.#rooms.values()) this.#sendJoin(room);
  }

  /** The socket is gone: no command awaits its reply, no room is joined, nothing is sent. */
  disconnected() {
    this.#commands.clear();
    for (const room of this.#rooms.values()) {
      room.joined = false;
      for (const entry of room.outbox.values()) entry.sent = false;
    }
  }

  /** Rejects everything waiting (the client was closed for good). */
  abandon(error) {
    for (const room of this.#rooms.values()) room.abandon(error);
    for (const waiters of this.#leaving.values()) for (const w of waiters) w.reject(error);
    this.#leaving.clear();
  }

  /** A frame with a `type`: a room's, or a reply to a room command. */
  onFrame(frame) {
    const room = this.#rooms.get(frame.room);
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
          this.#emit("message", frame);
        }
        break;
      case "user_joined":
      case "user_left":
        if (!room) break;
        if (frame.type === "user_joined") room.users.add(frame.user);
        else room.users.delete(frame.user);
        this.#emit("presence", {
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
        this.#onError(frame);
        break;
    }
  }

  /** [R7] A join asks to recover from the last publication seen, when there is one. */
  #sendJoin(room) {
    const join = { type: "join", room: room.name };
    if (room.cursor.resumable) {
      join.since = room.cursor.offset;
      join.epoch = room.cursor.epoch;
    }
    this.#connection.write(join);
    this.#commands.push({ kind: "join", room: room.name });
  }

  #sendLeave(name) {
    this.#connection.write({ type: "leave", room: name });
    this.#commands.push({ kind: "leave", room: name });
  }

  /** Sends the room's messages not on the wire yet, once it is joined on this socket. */
  #flushOutbox(room) {
    if (!room.joined || !this.#connection.isOpen) return;
    for (const [id, entry] of room.outbox) {
      if (entry.sent) continue;
      this.#connection.write({ type: "message", room: room.name, content: entry.content, id });
      entry.sent = true;
      this.#commands.push({ kind: "message", room: room.name, id });
    }
  }

  #onJoined(room, frame) {
    const { users, offset, epoch, recovered } = frame;
    // [R8] the history no longer covers the gap: the application hears of it.
    if (recovered === false) this.#emit("lost", { stream: "room", room: room.name });
    room.cursor.restart(offset, epoch, recovered);
    room.recovered = recovered;
    room.users = new Set(users);
    room.joined = true;
    const info = { room: room.name, users, offset, epoch, recovered };
    for (const waiter of room.joining.splice(0)) waiter.resolve(info);
    this.#emit("presence", { room: room.name, kind: "members", users: [...users] });
    // [R13] Messages that had no publication back yet go (again): the same id publishes once.
    this.#flushOutbox(room);
  }

  #onError(frame) {
    const { error: code, room: name } = frame;
    const command = this.#commands.answer(name, { code });
    const room = this.#rooms.get(name);
    const error = Object.assign(new Error(`${command?.kind ?? "room command"} ${name}: ${code}`), {
      code,
      room: name,
    });
    if (code === "unavailable" && command) {
      // [R14] Nothing happened; the same command goes again after a back-off.
      setTimeout(() => this.#retry(command), this.#connection.backoff());
      return;
    }
    if (command?.kind === "join" && room) {
      this.#rooms.delete(name);
      room.abandon(error);
    } else if (command?.kind === "message" && room) {
      room.outbox.get(command.id)?.reject(error);
      room.outbox.delete(command.id);
    } else if (command?.kind === "leave") {
      for (const waiter of this.#leaving.get(name) ?? []) waiter.reject(error);
      this.#leaving.delete(name);
    }
    this.#emit("error", error);
  }

  #retry(command) {
    if (!this.#connection.isOpen) return; // the next welcome re-sends everything anyway
    const room = this.#rooms.get(command.room);
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
