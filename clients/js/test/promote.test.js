// A blue-green promotion under traffic, as `make promote` does it: the green pair starts, the
// load balancer sends new connections to green, then both blue instances are SIGTERMed together
// (bye, 1001) while their clients count, publish to a room and receive broadcasts. Every client
// resumes on green; every count comes once (1..N per session), every room publication and every
// broadcast reaches every client once, in offset order.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import WebSocket from "ws";

import { connect } from "../src/index.js";
import { Fleet, eventually, within } from "./fleet.js";
import { record, tally } from "./record.js";

const CLIENTS = 12;
const ROOM = "promotion";
/** Every client publishes to the room once per this many counted frames, all along. */
const PUBLISH_EVERY = 5;

/** @type {Fleet} */
let fleet;
let clients = [];
afterEach(async () => {
  for (const c of clients) c.close();
  clients = [];
  await fleet?.stop();
  fleet = undefined;
});

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/**
 * One client's traffic until 32 frames after `done()`: counted frames as fast as replies come
 * (16 sent between waits), a room publication every PUBLISH_EVERY frames. Resolves with every
 * count and publication.
 */
async function traffic(c, index, done) {
  const counts = [];
  const published = [];
  // Live traffic on green too: 32 more frames once the client is there.
  let last = Infinity;
  for (let i = 1; i <= last; i++) {
    if (last === Infinity && done()) last = i + 32;
    counts.push(c.send(`frame ${i}`));
    if (i % PUBLISH_EVERY === 0) published.push(c.publish(ROOM, `${index}.${published.length}`));
    if (i % 16 === 0) {
      await counts[i - 1];
      await pause(5);
    }
  }
  return { counts: await Promise.all(counts), published: await Promise.all(published) };
}

test("a promotion loses and repeats no count, room publication or broadcast", { timeout: 120_000 }, async () => {
  fleet = await Fleet.start(2, ["--color", "blue"]);
  for (let i = 0; i < CLIENTS; i++) {
    const c = record(connect(() => fleet.nextUrl(), { WebSocket, user: `user${i}` }));
    clients.push(c);
  }
  await Promise.all(clients.map((c) => c.join(ROOM)));
  const blue = fleet.nodes.filter((n) => n.color === "blue");
  for (const node of blue) {
    assert.ok(clients.some((c) => c.instance.startsWith(node.name)), `a client on ${node.name}`);
  }

  let promoted = false;
  let broadcasts = 0;
  const broadcasting = (async () => {
    for (let n = 1; !promoted || n <= 20; n++) {
      await fleet.broadcastSomewhere(`broadcast ${n}`, `promotion-${n}`);
      broadcasts = n;
      await pause(25);
    }
  })();
  const running = clients.map((c, i) => traffic(c, i, () => promoted && c.instance.startsWith("green")));
  await eventually("every client to count 30", () => clients.every((c) => c.acked >= 30));

  // The promote: green starts and gets the new connections, then blue drains, both at once.
  for (const name of ["green0", "green1"]) await fleet.addNode(name, ["--color", "green"]);
  fleet.live = "green";
  const exits = await Promise.all(blue.map((node) => node.drain()));
  promoted = true;
  assert.deepEqual(exits.map((e) => e.code), [0, 0], "both blue instances exit 0 after their drain");

  const results = await within("every send() and publish() to resolve", Promise.all(running));
  assert.ok(
    clients.some((c) => c.seen.pendingAtDisconnect.some((n) => n > 0)),
    "the drain caught counted frames on the wire (resent on green)",
  );
  await broadcasting;
  const publications = results.reduce((sum, r) => sum + r.published.length, 0);
  await eventually("every client to see every publication and broadcast", () =>
    clients.every((c) => c.seen.messages.length >= publications && c.seen.broadcasts.length >= broadcasts),
  );

  const expectedContents = results.flatMap((r, i) => r.published.map((_, k) => `${i}.${k}`));
  clients.forEach((c, i) => {
    const who = `client ${i}`;
    const { counts, published } = results[i];
    assert.deepEqual(counts, range(1, counts.length), `${who}: counts 1..${counts.length} once each`);
    assert.equal(c.acked, counts.length, who);
    assert.deepEqual(c.seen.disconnects.map((d) => d.code), [1001], `${who}: one drain`);
    assert.ok(c.instance.startsWith("green"), `${who} ended on green: ${c.instance}`);
    const offsets = c.seen.messages.map((m) => m.offset);
    assert.deepEqual(offsets, range(1, publications), `${who}: room offsets once each, in order`);
    assert.deepEqual(
      c.seen.messages.map((m) => m.content).sort(),
      [...expectedContents].sort(),
      `${who}: every publication's content once`,
    );
    const mine = published.map((p) => p.offset);
    assert.deepEqual(
      mine.map((o) => c.seen.messages[o - 1].content),
      published.map((_, k) => `${i}.${k}`),
      `${who}: each publish() resolved with its own publication's offset`,
    );
    const b = c.seen.broadcasts.map((x) => x.offset);
    assert.deepEqual(tally(b, b[0], b[0] + broadcasts - 1), { lost: 0, repeated: 0, outOfOrder: 0 }, who);
    assert.deepEqual(
      c.seen.broadcasts.map((x) => x.message),
      range(1, broadcasts).map((n) => `broadcast ${n}`),
      `${who}: every broadcast once, in order`,
    );
    assert.deepEqual(c.seen.lost, [], `${who}: nothing unrecoverable`);
    assert.deepEqual(c.seen.anomalies, [], `${who}: no gap or repeat seen`);
    assert.ok(
      !c.seen.presence.some((p) => p.kind === "left"),
      `${who}: a promotion causes no user_left: ${JSON.stringify(c.seen.presence)}`,
    );
  });
});
