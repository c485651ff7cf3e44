// The disruption run of docs/BENCHMARKS.md with the reference client: CLIENTS library clients
// in one Node process against a fleet (its own redis-server and wsfleet processes on free
// loopback ports, spread over like a load balancer would), each counting, in one room where
// every client publishes, receiving operator broadcasts, through
//   1. a drain: SIGTERM of one of the three blue instances;
//   2. a promotion: three green instances start and take the new connections, then the
//      remaining blue ones are SIGTERMed together;
//   3. a crash: SIGKILL of one green instance.
// Then traffic stops, every send() and publish() must resolve, every client must have every
// publication and broadcast, and the run prints what was lost and repeated. Exit 1 if anything
// was.
//
//   WSFLEET_BIN=target/release/wsfleet node bench/disruption.mjs
//   (scripts/bench-tools/js-disruption.sh builds the release binary and runs this)
//
// Knobs (environment): CLIENTS (200), PHASE_S (seconds of traffic before, between and after the
// disruptions, 4), SEND_EVERY_MS (each client's pause after each 4 counted frames, 100),
// PUBLISH_EVERY (a room publication every this many counted frames, 40), BROADCAST_EVERY_MS (250).

import WebSocket from "ws";

import { connect } from "../src/index.js";
import { Fleet, eventually, within } from "../test/fleet.js";
import { record, tally } from "../test/record.js";

const env = (name, fallback) => Number(process.env[name] ?? fallback);
const CLIENTS = env("CLIENTS", 200);
const PHASE_MS = env("PHASE_S", 4) * 1000;
const SEND_EVERY_MS = env("SEND_EVERY_MS", 100);
const PUBLISH_EVERY = env("PUBLISH_EVERY", 40);
const BROADCAST_EVERY_MS = env("BROADCAST_EVERY_MS", 250);
const BURST = 4;
const ROOM = "disruption";
/** The server's defaults for the drain, not the tests' short ones: a run like production's. */
const SERVER_FLAGS = ["--drain-spread", "2s", "--shutdown-timeout", "10s", "--lease-period", "5s"];

const started = Date.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const say = (line) => console.error(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${line}`);

/** One client's closed loop until `stop.now`: counted frames, a publication every PUBLISH_EVERY. */
async function traffic(c, index, stop) {
  const counts = [];
  const published = [];
  for (let n = 1; !stop.now; n++) {
    counts.push(c.send(`${index}:${n}`));
    if (n % PUBLISH_EVERY === 0) published.push(c.publish(ROOM, `${index}.${published.length}`));
    if (n % BURST === 0) {
      await counts[n - 1];
      await sleep(SEND_EVERY_MS);
    }
  }
  return { counts: await Promise.all(counts), published: await Promise.all(published) };
}

async function main() {
  const blueFlags = [...SERVER_FLAGS, "--color", "blue"];
  const fleet = await Fleet.start(3, blueFlags);
  const clients = [];
  const stop = { now: false };
  try {
    say(`fleet: redis and 3 blue instances; connecting ${CLIENTS} clients`);
    for (let i = 0; i < CLIENTS; i++) {
      clients.push(record(connect(() => fleet.nextUrl(), { WebSocket, user: `js${i}` })));
    }
    await within("every client to join the room", Promise.all(clients.map((c) => c.join(ROOM))));
    say(`every client joined "${ROOM}"; traffic starts`);

    let broadcasts = 0;
    const broadcasting = (async () => {
      while (!stop.now) {
        const n = broadcasts + 1;
        await fleet.broadcastSomewhere(`broadcast ${n}`, `js-disruption-${started}-${n}`);
        broadcasts = n;
        await sleep(BROADCAST_EVERY_MS);
      }
    })();
    const running = clients.map((c, i) => traffic(c, i, stop));

    await sleep(PHASE_MS);
    const [first, ...rest] = fleet.nodes;
    say(`drain: SIGTERM ${first.name}`);
    const drained = await first.drain();
    say(`${first.name} exited ${drained.code}`);

    await sleep(PHASE_MS);
    say("promote: 3 green instances start, the load balancer sends new connections to them");
    for (const name of ["green0", "green1", "green2"]) {
      await fleet.addNode(name, [...SERVER_FLAGS, "--color", "green"]);
    }
    fleet.live = "green";
    say(`promote: SIGTERM ${rest.map((n) => n.name).join(" and ")}`);
    const promoted = await Promise.all(rest.map((n) => n.drain()));
    say(`blue exited ${promoted.map((e) => e.code).join(", ")}`);

    await sleep(PHASE_MS);
    const victim = fleet.nodes.find((n) => n.name === "green0");
    say(`crash: SIGKILL ${victim.name}`);
    await victim.crash();

    await sleep(PHASE_MS);
    say("traffic stops; waiting for every send() and publish() to resolve");
    stop.now = true;
    const results = await within("every send() and publish()", Promise.all(running));
    await broadcasting;
    const publications = results.reduce((sum, r) => sum + r.published.length, 0);
    say(`waiting for ${publications} publications and ${broadcasts} broadcasts at every client`);
    await eventually("every publication and broadcast everywhere", () =>
      clients.every((c) => c.seen.messages.length >= publications && c.seen.broadcasts.length >= broadcasts),
    ).catch((error) => say(`${error.message}: counted as lost below`));

    report(clients, results, publications, broadcasts, [drained, ...promoted]);
  } finally {
    stop.now = true;
    for (const c of clients) c.close();
    await fleet.stop();
  }
}

function report(clients, results, publications, broadcasts, exits) {
  const sum = (values) => values.reduce((a, b) => a + b, 0);
  const counts = results.map((r) => tally(r.counts, 1, r.counts.length));
  const answered = sum(results.map((r) => r.counts.length));
  const rooms = clients.map((c) => tally(c.seen.messages.map((m) => m.offset), 1, publications));
  const casts = clients.map((c) => {
    const offsets = c.seen.broadcasts.map((b) => b.offset);
    return tally(offsets, offsets[0] ?? 1, (offsets[0] ?? 1) + broadcasts - 1);
  });
  // A message resent after a disruption must be published once: every content once in the room.
  const contents = new Map();
  for (const m of clients[0].seen.messages) contents.set(m.content, (contents.get(m.content) ?? 0) + 1);
  const publishedTwice = sum([...contents.values()].map((n) => n - 1));
  const disconnects = new Map();
  for (const c of clients) for (const d of c.seen.disconnects) disconnects.set(d.code, (disconnects.get(d.code) ?? 0) + 1);
  const pendingAtDisconnect = sum(clients.map((c) => sum(c.seen.pendingAtDisconnect)));
  const anomalies = sum(clients.map((c) => c.seen.anomalies.length));
  const lostEvents = sum(clients.map((c) => c.seen.lost.length));
  const total = (tallies, key) => sum(tallies.map((t) => t[key]));

  const lines = [
    `js-disruption: ${CLIENTS} clients (wsfleet-client ${process.env.npm_package_version ?? "0.1.0"}, Node ${process.version}), ` +
      `3 blue -> drain 1 -> promote to 3 green -> SIGKILL 1 green, ${(Date.now() - started) / 1000} s`,
    `counts: ${answered} answered, lost ${total(counts, "lost")}, repeated ${total(counts, "repeated")}, ` +
      `out of order ${total(counts, "outOfOrder")} (each session 1..N)`,
    `room publications: ${publications} published (${publishedTwice} twice), ` +
      `${sum(clients.map((c) => c.seen.messages.length))} of ${publications * CLIENTS} deliveries, ` +
      `lost ${total(rooms, "lost")}, repeated ${total(rooms, "repeated")}, out of order ${total(rooms, "outOfOrder")}`,
    `broadcasts: ${broadcasts} published, ${sum(clients.map((c) => c.seen.broadcasts.length))} of ${broadcasts * CLIENTS} deliveries, ` +
      `lost ${total(casts, "lost")}, repeated ${total(casts, "repeated")}, out of order ${total(casts, "outOfOrder")}`,
    `disconnects by close code: ${[...disconnects].map(([code, n]) => `${code}: ${n}`).join(", ")}; ` +
      `frames without a count at those moments (resent or resolved by the welcome): ${pendingAtDisconnect}`,
    `client anomalies (gaps/repeats it saw): ${anomalies}; streams not recoverable: ${lostEvents}; ` +
      `drained instances exited ${exits.map((e) => e.code).join(", ")}`,
  ];
  console.log(lines.join("\n"));
  const bad =
    total(counts, "lost") + total(counts, "repeated") + total(rooms, "lost") + total(rooms, "repeated") +
    total(casts, "lost") + total(casts, "repeated") + publishedTwice + anomalies + lostEvents;
  process.exitCode = bad === 0 ? 0 : 1;
}

await main();
