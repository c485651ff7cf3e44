// docs/PROTOCOL.md's client rules and this client agree: each rule a client must follow carries
// an id there (**[R1]** …), and the client's source cites the id where it implements it. This
// test fails when a rule has no citation in src/, when src/ cites an id the page does not
// define, when the ids have a hole (a rule removed without its citations), or when a numbered
// client rule or a close code's advice on the page carries no id (a rule added without one).

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";

const PROTOCOL = new URL("../../../docs/PROTOCOL.md", import.meta.url);
const SOURCE = new URL("../src/", import.meta.url);

const ID = /\[R(\d+)\]/g;

/** The ids `[Rn]` in `text`, as numbers. */
function ids(text) {
  return new Set([...text.matchAll(ID)].map((m) => Number(m[1])));
}

/** The lines of the section of `doc` under the heading `heading`, up to the next heading. */
function section(doc, heading) {
  const lines = doc.split("\n");
  const start = lines.indexOf(heading);
  if (start < 0) return undefined;
  const end = lines.findIndex((line, i) => i > start && /^#{1,3} /.test(line));
  return lines.slice(start + 1, end < 0 ? undefined : end);
}

/**
 * What disagrees between the protocol page and the client's sources (file name → text).
 * @returns {string[]} one line per problem; empty when they agree
 */
function disagreements(doc, sources) {
  const problems = [];
  const defined = ids(doc);
  if (defined.size === 0) problems.push("docs/PROTOCOL.md defines no client rule id");
  const highest = Math.max(0, ...defined);
  for (let n = 1; n <= highest; n++) {
    if (!defined.has(n)) problems.push(`docs/PROTOCOL.md: [R${n}] is missing (ids run 1..${highest})`);
  }
  const cited = new Set();
  for (const [file, text] of Object.entries(sources)) {
    for (const n of ids(text)) {
      cited.add(n);
      if (!defined.has(n)) problems.push(`src/${file} cites [R${n}], which docs/PROTOCOL.md does not define`);
    }
  }
  for (const n of defined) {
    if (!cited.has(n)) problems.push(`[R${n}] of docs/PROTOCOL.md is cited nowhere in src/`);
  }
  // Every numbered client rule, and every close code's advice, carries an id.
  for (const heading of ["## Resuming without gaps or repeats", "## History and recovery"]) {
    const lines = section(doc, heading);
    if (!lines) {
      problems.push(`docs/PROTOCOL.md has no section ${heading}`);
      continue;
    }
    for (const line of lines.filter((l) => /^\d+\. /.test(l))) {
      if (!ids(line).size) problems.push(`docs/PROTOCOL.md, ${heading}: a rule without an id: ${line}`);
    }
  }
  const closes = section(doc, "## Close codes") ?? [];
  const rows = closes.filter((l) => /^\| 1\d\d\d \|/.test(l));
  if (rows.length === 0) problems.push("docs/PROTOCOL.md has no close-code table");
  for (const row of rows) {
    const advice = row.split(" | ").at(-1);
    if (!ids(advice).size) problems.push(`docs/PROTOCOL.md, close codes: advice without an id: ${row.slice(0, 40)}…`);
  }
  return problems;
}

function read() {
  const doc = readFileSync(PROTOCOL, "utf8");
  const sources = {};
  for (const file of readdirSync(SOURCE).filter((f) => f.endsWith(".js"))) {
    sources[file] = readFileSync(new URL(file, SOURCE), "utf8");
  }
  return { doc, sources };
}

test("every client rule of docs/PROTOCOL.md is cited in src/, and every citation is a rule", () => {
  const { doc, sources } = read();
  assert.deepEqual(disagreements(doc, sources), []);
  assert.ok(ids(doc).size >= 14, "the page's rules are found at all");
});

test("the check finds a rule cited nowhere, an orphan citation, a hole and a rule without an id", () => {
  const { doc, sources } = read();
  // The client forgets [R7]; a file cites [R99]; the page loses [R3]; a new rule comes with no id.
  const forgetful = Object.fromEntries(
    Object.entries(sources).map(([file, text]) => [file, text.replaceAll("[R7]", "")]),
  );
  assert.deepEqual(disagreements(doc, forgetful), ["[R7] of docs/PROTOCOL.md is cited nowhere in src/"]);
  assert.deepEqual(disagreements(doc, { ...sources, "extra.js": "// [R99]" }), [
    "src/extra.js cites [R99], which docs/PROTOCOL.md does not define",
  ]);
  const withoutR3 = doc.replaceAll("[R3]", "");
  assert.ok(disagreements(withoutR3, sources).includes("docs/PROTOCOL.md: [R3] is missing (ids run 1..14)"));
  const newRule = doc.replace(
    "5. **[R9]**",
    "6. A rule added without an id.\n5. **[R9]**",
  );
  assert.deepEqual(disagreements(newRule, sources), [
    "docs/PROTOCOL.md, ## History and recovery: a rule without an id: 6. A rule added without an id.",
  ]);
});
