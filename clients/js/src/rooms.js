// The client's rooms: what it wants to be in, where it stands in each room's stream, its
// messages not yet seen published, and which reply answers which command.
//
// A room command gets its reply (`room_users`, `left` or an error) before the server reads the
// next frame, but a message that was published gets no reply at all: its publication comes back
// through the room like everyone's. So replies are matched to the oldest command that could
// have caused them, and the messages sent before that command, which got no error, were
// accepted (their publication is still on its way).

import { Cursor } from "./cursor.js";

/** Error codes each command can be answered with (docs/PROTOCOL.md, rooms). */
const ERRORS_OF = {
  join: new Set(["forbidden", "too_many_rooms", "unavailable", "bad_request"]),
  leave: new Set(["unavailable", "bad_request"]),
  message: new Set(["not_in_room", "unavailable", "bad_request"]),
};

/** One room the client is in, or is joining. */
export class Room {
  /** @param {string} name */
  constructor(name) {
    this.name = name;
    /** Exactly-once delivery of the room's publications. */
    this.cursor = new Cursor();
    /** Public user ids of the members, as the last `room_users` and presence events said. */
    this.users = new Set();
    /** The last `room_users`' `recovered`: set when that join asked to recover (`since`). */
    this.recovered = undefined;
    /** Whether `room_users` came on the current socket (messages may be sent). */
    this.joined = false;
    /** @type {{ resolve: Function, reject: Function }[]} join() calls waiting for `room_users` */
    this.joining = [];
    /**
     * Messages whose publication has not come back yet, by client id (resent with the same id
     * after a reconnect or `unavailable`: the server publishes an id once).
     * @type {Map<string, { content: unknown, sent: boolean, resolve: Function, reject: Function }>}
     */
    this.outbox = new Map();
  }

  /** Rejects everything waiting on the room. */
  abandon(error) {
    for (const waiter of this.joining.splice(0)) waiter.reject(error);
    for (const entry of this.outbox.values()) entry.reject(error);
    this.outbox.clear();
  }
}

/**
 * @typedef {{ kind: "join" | "leave" | "message", room: string, id?: string }} Command
 */

/** The room commands sent on the current socket that still await their reply. */
export class Commands {
  /** @type {Command[]} */
  #sent = [];

  /** @param {Command} command */
  push(command) {
    this.#sent.push(command);
  }

  clear() {
    this.#sent = [];
  }

  /**
   * The command a reply answers: `kind` for `room_users` ("join") and `left` ("leave"), or the
   * error `code`. Messages sent before it were accepted and are dropped from the list.
   * @param {string} room
   * @param {{ kind?: string, code?: string }} reply
   * @returns {Command | undefined}
   */
  answer(room, { kind, code }) {
    const index = this.#sent.findIndex(
      (c) => c.room === room && (kind ? c.kind === kind : ERRORS_OF[c.kind].has(code)),
    );
    if (index < 0) return undefined;
    const [command] = this.#sent.splice(index, 1);
    this.#sent = this.#sent.filter((c, i) => i >= index || c.kind !== "message");
    return command;
  }
}
