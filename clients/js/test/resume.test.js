// The client against a real fleet (redis-server and two wsfleet processes): a SIGTERM drain of
// the instance it is on moves it to the other one, and the application sees every count once,
// 1..N, and every room message and broadcast once, in offset order, the ones published while it
// was away included.

import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import WebSocket from "ws";

import { connect } from "../src/index.js";
import { Fleet, eventually, gate, jwt } from "./fleet.js";
import { record } from "./record.js";

const SECRET = "a secret of at least thirty-two bytes!";

/** @type {Fleet} the fleet of the running test (each test starts its own) */
let fleet;
let clients = [];
/** Redis and two wsfleet nodes, with `extra` flags. */
async function startFleet(extra = []) {
  fleet = await Fleet.start(2, extra);
}
afterEach(async () => {
  for (const c of clients) c.close();
  clients = [];
  await fleet?.stop();
  fleet = undefined;
});

/**
 * A client of `url` (a string, or a function asked before each attempt) that records what the
 * application is given.
 */
function client(url, options = {}) {
  const c = record(connect(url, { WebSocket, ...options }));
  clients.push(c);
  return c;
}

/**
 * The URL of the first node that is not draining; once the first node drains, it waits at
 * `away` (so that the test can publish while the client is away) when one is given.
 */
function firstLiveNode(away) {
  return async () => {
    if (fleet.nodes[0].draining && away) await away.wait();
    return fleet.liveUrl();
  };
}

/** No test may hang: each fails after a minute, whatever it waits for. */
const BOUNDED = { timeout: 60_000 };

const opened = (c) => eventually("the client's welcome", () => c.state === "open");
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test("counts go 1..N with no gap and no repeat across a drain, on the other instance", BOUNDED, async () => {
  await startFleet();
  const N = 400;
  const c = client(firstLiveNode());
  await opened(c);
  const first = c.instance;
  let inFlightAtBye;
  c.on("disconnect", () => (inFlightAtBye = c.pendingCount));

  let drained;
  const counts = [];
  for (let i = 1; i <= N; i++) {
    counts.push(c.send(`frame ${i}`));
    // Sent as fast as replies come back, so that the drain catches frames on the wire.
    if (i % 16 === 0) await counts[i - 1];
    if (i === N / 4) drained = fleet.nodes[0].drain();
  }
  assert.deepEqual(await Promise.all(counts), range(1, N), "each send() its own count, in order");
  // The client keeps sending until a frame goes unanswered, so the drain, which stops reading,
  // always leaves some without a reply: they were resent on the other instance.
  assert.ok(inFlightAtBye > 0, `frames were in flight at the drain: ${inFlightAtBye}`);
  assert.equal((await drained).code, 0, "the drained node exited 0");
  assert.notEqual(c.instance, first, "resumed on the other instance");
  assert.deepEqual(
    c.seen.disconnects.map((d) => d.code),
    [1001],
  );
  assert.deepEqual(c.seen.anomalies, []);
  assert.equal(c.acked, N);
  assert.equal(c.pendingCount, 0);
});

test("counts go 1..N with no gap and no repeat when the client's instance is killed", BOUNDED, async () => {
  await startFleet();
  const N = 400;
  const c = client(firstLiveNode());
  await opened(c);
  let crashed;
  const counts = [];
  for (let i = 1; i <= N; i++) {
    counts.push(c.send(`frame ${i}`));
    if (i % 16 === 0) await counts[i - 1];
    if (i === N / 4) crashed = fleet.nodes[0].crash();
  }
  // Frames counted whose replies died with the instance are resolved by the welcome (rule 4).
  assert.deepEqual(await Promise.all(counts), range(1, N), "each send() its own count, in order");
  assert.equal((await crashed).signal, "SIGKILL");
  assert.equal(c.seen.disconnects[0]?.code, 1006, JSON.stringify(c.seen.disconnects));
  assert.deepEqual(c.seen.anomalies, []);
  assert.equal(c.acked, N);
});

test("room messages published while the client was away come once each, in offset order", BOUNDED, async () => {
  await startFleet();
  const away = gate();
  const alice = client(firstLiveNode(away), { user: "alice" });
  const bob = client(fleet.nodes[1].ws, { user: "bob" });
  await opened(alice);
  await opened(bob);
  await alice.join("lobby");
  assert.deepEqual((await bob.join("lobby")).users, ["alice", "bob"]);
  for (const n of range(1, 5)) await bob.publish("lobby", n);
  await eventually("alice to see 5 messages", () => alice.seen.messages.length === 5);

  const drained = fleet.nodes[0].drain();
  await eventually("alice to lose her socket", () => alice.state === "reconnecting");
  // Published while she is away: in the room's history only.
  for (const n of range(6, 10)) await bob.publish("lobby", n);
  const hers = alice.publish("lobby", "sent while away");
  away.open();
  assert.equal((await hers).offset, 11, "her message went out after she recovered 6..10");
  for (const n of range(12, 13)) await bob.publish("lobby", n);
  await eventually("alice to see 13 messages", () => alice.seen.messages.length >= 13);
  await eventually("bob to see 13 messages", () => bob.seen.messages.length >= 13);
  assert.equal((await drained).code, 0);

  const contents = [...range(1, 10), "sent while away", 12, 13];
  for (const c of [alice, bob]) {
    const who = c === alice ? "alice" : "bob";
    assert.deepEqual(c.seen.messages.map((m) => m.offset), range(1, 13), `${who}: offsets once each`);
    assert.deepEqual(c.seen.messages.map((m) => m.content), contents, `${who}: contents`);
    assert.deepEqual(c.seen.lost, [], `${who}: nothing lost`);
    assert.deepEqual(c.seen.anomalies, [], `${who}: no anomaly`);
  }
  assert.ok(
    !bob.seen.presence.some((p) => p.kind === "left"),
    `a drain causes no user_left: ${JSON.stringify(bob.seen.presence)}`,
  );
});

test("broadcasts published while the client was away come once each, in offset order", BOUNDED, async () => {
  await startFleet();
  const away = gate();
  const c = client(firstLiveNode(away));
  await opened(c);
  const other = fleet.nodes[1];
  const { offset: start } = await fleet.broadcast(other, "before");
  await eventually("the first broadcast", () => c.seen.broadcasts.length === 1);

  const drained = fleet.nodes[0].drain();
  await eventually("the client to lose its socket", () => c.state === "reconnecting");
  for (const n of range(2, 4)) await fleet.broadcast(other, n);
  away.open();
  await opened(c);
  await fleet.broadcast(other, "live");
  await eventually("5 broadcasts", () => c.seen.broadcasts.length >= 5);
  assert.equal((await drained).code, 0);

  assert.deepEqual(c.seen.broadcasts.map((b) => b.message), ["before", 2, 3, 4, "live"]);
  assert.deepEqual(c.seen.broadcasts.map((b) => b.offset), range(start, start + 4));
  assert.deepEqual(c.seen.lost, []);
  assert.deepEqual(c.seen.anomalies, []);
});

test("a session resumed elsewhere stops the older client for good, the newer one counts on", BOUNDED, async () => {
  await startFleet();
  const older = client(fleet.nodes[0].ws, { session: "twice" });
  assert.deepEqual([await older.send("a"), await older.send("b")], [1, 2]);
  const newer = client(fleet.nodes[1].ws, { session: "twice" });
  await opened(newer);
  await assert.rejects(older.send("fenced"), /session resumed elsewhere/);
  assert.equal(older.state, "closed");
  assert.deepEqual(older.seen.disconnects, [{ code: 1008, reason: "session resumed elsewhere" }]);
  assert.equal(await newer.send("c"), 3, "the fenced frame was not counted");
  assert.equal(older.state, "closed", "and the older client did not come back to fence it");
});

test("an expired token is replaced by the token function and the count goes on", BOUNDED, async () => {
  await startFleet(["--auth-secret", SECRET]);
  let issued = 0;
  const token = () => {
    issued += 1;
    // The first token expires in a second; the server closes 1008 `token expired` then.
    return jwt(SECRET, "alice", issued === 1 ? 1 : 600);
  };
  const c = client(fleet.nodes[0].ws, { token });
  assert.equal(await c.send("a"), 1);
  await eventually("the expired token's close", () => c.seen.disconnects.length === 1);
  assert.deepEqual(c.seen.disconnects, [{ code: 1008, reason: "token expired" }]);
  assert.equal(await c.send("b"), 2);
  assert.equal(issued, 2, "one fresh token");
  assert.deepEqual(c.seen.anomalies, []);
});

test("disconnect() keeps the session: sends wait, open() resumes and recovers, reconnect() too", BOUNDED, async () => {
  await startFleet();
  const c = client(fleet.nodes[0].ws, { user: "carol" });
  assert.equal(await c.send("a"), 1);
  await c.join("den");
  c.disconnect();
  assert.equal(c.state, "idle");
  const waiting = c.send("b");
  const { offset } = await fleet.broadcast(fleet.nodes[1], "while idle");
  c.open();
  assert.equal(await waiting, 2, "sent once the session was resumed");
  await eventually("the broadcast missed while idle", () => c.seen.broadcasts.length === 1);
  assert.deepEqual(c.seen.broadcasts.map((b) => b.offset), [offset]);
  await eventually("den joined again", () => c.rooms.get("den").joined);
  assert.equal(c.rooms.get("den").recovered, true, "the rejoin asked to recover");
  c.reconnect();
  assert.equal(await c.send("c"), 3);
  assert.deepEqual(c.seen.instances.length, 3, "three sockets, one session");
  assert.deepEqual(c.seen.disconnects, [], "closes the application asked for are not losses");
  assert.deepEqual(c.seen.anomalies, []);
});

test("a new client of a session in rooms joins them again from the welcome's list ([R7])", BOUNDED, async () => {
  await startFleet();
  const first = client(fleet.nodes[0].ws, { session: "roomy", user: "dora" });
  await first.join("attic");
  first.close();
  const second = client(fleet.nodes[1].ws, { session: "roomy", user: "dora" });
  await eventually("attic joined by the new client", () => second.rooms.get("attic")?.joined);
  assert.deepEqual([...second.rooms.get("attic").users], ["dora"]);
  const { offset } = await second.publish("attic", "still here");
  assert.equal(offset, 1);
});
