// [R5] Where the client stands in one publication stream (a room, or the fleet's broadcasts):
// docs/PROTOCOL.md, "History and recovery". Each publication carries its stream's `offset`
// (1, 2, 3, … with no gaps) and `epoch`; the cursor lets each one through to the application
// exactly once, in order, whatever a replay and the live feed deliver twice.

export class Cursor {
  /**
   * @param {number} offset the last offset the application was given (0: none)
   * @param {string | undefined} epoch the stream's epoch at that offset (undefined: unknown)
   */
  constructor(offset = 0, epoch = undefined) {
    this.offset = offset;
    this.epoch = epoch;
  }

  /** Whether the cursor can ask for recovery (`since` + `epoch`). */
  get resumable() {
    return this.epoch !== undefined;
  }

  /**
   * [R9] Whether a publication at `offset` of `epoch` is new to the application; if so the cursor
   * moves to it. Same epoch: only offsets above the cursor are new. Another epoch: the stream
   * lost its history (e.g. Redis lost its data) and starts over, so it is new.
   * @returns {"new" | "duplicate" | "gap"} "gap": new, but offsets were skipped (reported,
   *   still delivered: the server promises this cannot happen within the history window)
   */
  admit(offset, epoch) {
    if (epoch === this.epoch && offset <= this.offset) return "duplicate";
    const gap = epoch === this.epoch && offset > this.offset + 1;
    this.offset = offset;
    this.epoch = epoch;
    return gap ? "gap" : "new";
  }

  /**
   * The server said where the stream stands (a join's `room_users`, or the welcome) and
   * whether what follows continues from this cursor (`recovered`). Not recovered, or no
   * recovery asked: the application starts from the stream's current offset.
   * @param {number} offset
   * @param {string} epoch
   * @param {boolean | undefined} recovered
   */
  restart(offset, epoch, recovered) {
    if (recovered === true && epoch === this.epoch) return;
    this.offset = offset;
    this.epoch = epoch;
  }
}
