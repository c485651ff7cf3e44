// The session counter's client side: docs/PROTOCOL.md, "Resuming without gaps or repeats".
// Pure bookkeeping, no socket: the client tells it what was sent and what came back, and it
// says what to send next and which send() got which count.
//
// The server counts frames, not their contents (a text frame is never parsed), so a count
// belongs to a position in the order of sends, not to a text: the oldest frame without a count
// gets the next count ([R1]). After an `unavailable` the frame that was refused keeps its
// place, and whichever frame is resent fills it; every send() still resolves with its own
// count, in the order send() was called.

/**
 * @typedef {{ text: string, resolve: (count: number) => void, reject: (error: Error) => void }} Frame
 */

/** What a welcome said about the frames in flight ([R4]). */
export class ResumeJudgement {
  /**
   * @param {"continues" | "ahead" | "behind"} kind
   * @param {number} amount counted (continues), skipped (ahead) or behind (behind)
   */
  constructor(kind, amount) {
    this.kind = kind;
    this.amount = amount;
  }
}

export class Counter {
  /** The last count the client was told: the welcome's `count`, then each reply. */
  acked = 0;
  /** Whether a welcome has set `acked` (before it, `last_count` is not sent). */
  known = false;
  /** @type {Frame[]} frames without a count, oldest first */
  pending = [];
  /** How many of `pending` (the oldest) were sent on the current socket and await a reply. */
  onWire = 0;

  /** @param {Frame} frame */
  push(frame) {
    this.pending.push(frame);
  }

  /** Whether a frame is waiting to be sent (and which), given at most `window` on the wire. */
  nextToSend(window) {
    if (this.onWire >= window || this.onWire >= this.pending.length) return undefined;
    return this.pending[this.onWire];
  }

  /** The frame nextToSend() returned went out. */
  sent() {
    this.onWire += 1;
  }

  /**
   * [R1] `{"count": n}` counted the oldest pending frame.
   * @returns {{ frame: Frame | undefined, expected: number }} the frame, and the count it
   *   should have had (`acked + 1`; anything else is a gap or a repeat, for the caller to report)
   */
  counted(n) {
    const expected = this.acked + 1;
    const frame = this.pending.shift();
    this.onWire = Math.max(0, this.onWire - 1);
    this.acked = n;
    frame?.resolve(n);
    return { frame, expected };
  }

  /** [R2] `unavailable`: the oldest pending frame was not counted; it stays, to resend. */
  refused() {
    this.onWire = Math.max(0, this.onWire - 1);
  }

  /** The socket is gone: nothing is on the wire any more (the welcome will tell what counted). */
  disconnected() {
    this.onWire = 0;
  }

  /**
   * [R4] the welcome after a (re)connect says the counter is `welcome`. The first
   * `welcome - acked` pending frames were counted (their replies were lost with the old socket).
   * @param {number} welcome
   * @returns {ResumeJudgement}
   */
  welcome(welcome) {
    this.onWire = 0;
    if (!this.known) {
      this.known = true;
      this.acked = welcome;
      return new ResumeJudgement("continues", 0);
    }
    if (welcome < this.acked) {
      const behind = this.acked - welcome;
      this.acked = welcome;
      return new ResumeJudgement("behind", behind);
    }
    const counted = welcome - this.acked;
    const inFlight = this.pending.length;
    for (let n = this.acked + 1; n <= welcome && this.pending.length > 0; n++) {
      this.pending.shift().resolve(n);
    }
    this.acked = welcome;
    if (counted > inFlight) return new ResumeJudgement("ahead", counted - inFlight);
    return new ResumeJudgement("continues", counted);
  }

  /** Rejects every pending frame (the client was closed for good). */
  abandon(error) {
    for (const frame of this.pending.splice(0)) frame.reject(error);
    this.onWire = 0;
  }
}
