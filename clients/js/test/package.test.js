// The npm package is versioned with the server (issue 15: "version matching the server"): the
// server's version ([package] of the root Cargo.toml, the wsfleet binary) and package.json's
// must be the same string.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const read = (path) => readFileSync(new URL(path, import.meta.url), "utf8");

test("package.json's version is the server's (Cargo.toml [package])", () => {
  const cargo = read("../../../Cargo.toml");
  const section = cargo.split(/^\[package\]$/m)[1];
  assert.ok(section, "Cargo.toml has a [package] section");
  const server = section.split(/^\[/m)[0].match(/^version\s*=\s*"([^"]+)"/m);
  assert.ok(server, "[package] has a version");
  const pkg = JSON.parse(read("../package.json"));
  assert.equal(pkg.version, server[1]);
});
