// What the application is given by a client, recorded for the tests and the disruption bench to
// check: counts, room messages, broadcasts, presence, and the client's own complaints
// (`anomaly`: a gap or repeat it saw; `lost`: a stream the server could not recover).

/**
 * Records the events of client `c` in `c.seen` and returns `c`.
 * @param {import("../src/index.js").Client} c
 */
export function record(c) {
  c.seen = { anomalies: [], lost: [], disconnects: [], messages: [], broadcasts: [], presence: [], instances: [],
    pendingAtDisconnect: [] };
  c.on("anomaly", (a) => c.seen.anomalies.push(a));
  c.on("lost", (l) => c.seen.lost.push(l));
  c.on("disconnect", (d) => {
    c.seen.disconnects.push(d);
    c.seen.pendingAtDisconnect.push(c.pendingCount);
  });
  c.on("message", (m) => c.seen.messages.push(m));
  c.on("broadcast", (b) => c.seen.broadcasts.push(b));
  c.on("presence", (p) => c.seen.presence.push(p));
  c.on("welcome", (w) => c.seen.instances.push(w.instance));
  return c;
}

/** How far `values` (numbers) are from exactly `from..to` once each: what is missing, what is repeated. */
export function tally(values, from, to) {
  const seen = new Map();
  for (const v of values) seen.set(v, (seen.get(v) ?? 0) + 1);
  let lost = 0;
  for (let v = from; v <= to; v++) if (!seen.has(v)) lost += 1;
  let repeated = 0;
  for (const n of seen.values()) repeated += n - 1;
  let outOfOrder = 0;
  for (let i = 1; i < values.length; i++) if (values[i] < values[i - 1]) outOfOrder += 1;
  return { lost, repeated, outOfOrder };
}
