// The bookkeeping of docs/PROTOCOL.md's client rules, without a socket: the counter's rules [R1],
// [R2] and [R4], the cursors' exactly-once admission, and which reply answers which room command.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Counter } from "../src/counter.js";
import { Cursor } from "../src/cursor.js";
import { Commands } from "../src/rooms.js";

/** A counter that knows `acked` and has `pending` frames on the wire, and what they resolved to. */
function counterWith(acked, pending) {
  const counter = new Counter();
  counter.welcome(acked);
  const resolved = [];
  for (let i = 0; i < pending; i++) {
    counter.push({ text: `f${i}`, resolve: (n) => resolved.push(n), reject: () => {} });
    counter.sent();
  }
  return { counter, resolved };
}

test("a welcome's count decides which frames in flight were counted ([R4])", () => {
  const cases = [
    // acked, pending, welcome → judgement, amount, frames resolved by the welcome, left to resend
    [5, 0, 5, "continues", 0, [], 0],
    [5, 2, 5, "continues", 0, [], 2],
    [5, 3, 7, "continues", 2, [6, 7], 1],
    [5, 1, 8, "ahead", 2, [6], 0],
    [5, 2, 3, "behind", 2, [], 2],
  ];
  for (const [acked, pending, welcome, kind, amount, resolvedByWelcome, left] of cases) {
    const { counter, resolved } = counterWith(acked, pending);
    const judgement = counter.welcome(welcome);
    const label = `acked ${acked}, pending ${pending}, welcome ${welcome}`;
    assert.deepEqual([judgement.kind, judgement.amount], [kind, amount], label);
    assert.deepEqual(resolved, resolvedByWelcome, label);
    assert.equal(counter.pending.length, left, label);
    assert.equal(counter.acked, welcome, label);
    assert.equal(counter.onWire, 0, `${label}: the rest is resent`);
  }
});

test("a reply counts the oldest pending frame; unavailable keeps it to resend ([R1], [R2])", () => {
  const { counter, resolved } = counterWith(0, 3);
  assert.equal(counter.nextToSend(64), undefined, "all three are on the wire");
  counter.refused();
  assert.equal(counter.nextToSend(64)?.text, "f2", "one place to fill again");
  assert.equal(counter.counted(1).expected, 1);
  assert.equal(counter.counted(2).expected, 2);
  assert.deepEqual(resolved, [1, 2], "send() promises resolve in order");
  assert.equal(counter.nextToSend(64)?.text, "f2", "the refused place is sent again");
  counter.sent();
  assert.equal(counter.counted(3).expected, 3);
  assert.deepEqual(resolved, [1, 2, 3]);
  assert.equal(counter.pending.length, 0);
  assert.equal(counter.nextToSend(1), undefined);
});

test("a cursor admits each offset once, starts over on a new epoch, reports a gap", () => {
  const cursor = new Cursor();
  cursor.restart(3, "e", undefined);
  const steps = [
    [3, "e", "duplicate"],
    [4, "e", "new"],
    [4, "e", "duplicate"],
    [2, "e", "duplicate"],
    [6, "e", "gap"],
    [1, "f", "new"],
    [2, "f", "new"],
  ];
  for (const [offset, epoch, verdict] of steps) {
    assert.equal(cursor.admit(offset, epoch), verdict, `${offset} of ${epoch}`);
  }
  // A recovered join keeps the cursor (the missed ones follow); otherwise it starts at the head.
  cursor.restart(9, "f", true);
  assert.deepEqual([cursor.offset, cursor.epoch], [2, "f"]);
  cursor.restart(9, "f", false);
  assert.deepEqual([cursor.offset, cursor.epoch], [9, "f"]);
  cursor.restart(4, "g", true);
  assert.deepEqual([cursor.offset, cursor.epoch], [4, "g"], "recovered, but in another epoch");
});

test("a room reply answers the oldest command that could cause it; earlier messages were accepted", () => {
  const commands = new Commands();
  commands.push({ kind: "message", room: "a", id: "1" });
  commands.push({ kind: "join", room: "b" });
  commands.push({ kind: "message", room: "a", id: "2" });
  commands.push({ kind: "message", room: "b", id: "3" });
  assert.deepEqual(commands.answer("b", { kind: "join" }), { kind: "join", room: "b" });
  assert.deepEqual(commands.answer("a", { code: "not_in_room" }), { kind: "message", room: "a", id: "2" });
  assert.deepEqual(commands.answer("b", { code: "too_many_rooms" }), undefined, "no join of b left");
  assert.deepEqual(commands.answer("b", { code: "unavailable" }), { kind: "message", room: "b", id: "3" });
});
