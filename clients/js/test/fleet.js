// A real fleet for the tests: one redis-server and wsfleet processes (the binary that
// scripts/test.sh builds: target/debug/wsfleet, or $WSFLEET_BIN) on free loopback ports.
// Every process is a child of the test and is stopped by its own handle when the test ends.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
export const BINARY = process.env.WSFLEET_BIN ?? join(ROOT, "target/debug/wsfleet");
export const TOKEN = "t";
/** How long anything the tests wait for may take before the test fails (a bound, not a timing). */
const PATIENCE_MS = 30_000;

/** A TCP port nothing listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Polls `check` (every 20 ms) until it returns something truthy; fails after PATIENCE_MS. */
export async function eventually(what, check) {
  const deadline = Date.now() + PATIENCE_MS;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** `promise`, or a failure naming `what` after PATIENCE_MS. */
export async function within(what, promise) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up waiting for ${what}`)), PATIENCE_MS);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A child process, its output in a log file, and a promise of its exit. */
function start(name, program, args) {
  const log = join(tmpdir(), `wsfleet-js-${name}-${process.pid}-${Date.now()}.log`);
  const out = createWriteStream(log);
  const child = spawn(program, args, { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return { child, log, exited };
}

async function redisAnswers(port) {
  return new Promise((resolve) => {
    const socket = tcpConnect(port, "127.0.0.1");
    socket.once("error", () => resolve(false));
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => {
      socket.destroy();
      resolve(String(data).startsWith("+PONG"));
    });
  });
}

export class Fleet {
  /** @type {{ child: import("node:child_process").ChildProcess }[]} */
  #processes = [];
  nodes = [];
  /** The colour new connections go to through nextUrl(), as nginx's upstream after a promote. */
  live = "blue";
  #turn = 0;

  /** Redis and `count` wsfleet nodes, every one ready, with `extra` flags (flag, value pairs). */
  static async start(count = 2, extra = []) {
    if (!existsSync(BINARY)) {
      throw new Error(`${BINARY} is missing: cargo build --bin wsfleet (or set WSFLEET_BIN)`);
    }
    const fleet = new Fleet();
    const redisPort = await freePort();
    const redis = start("redis", "redis-server", [
      "--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
    ]);
    fleet.#processes.push(redis);
    fleet.redisUrl = `redis://127.0.0.1:${redisPort}`;
    try {
      await eventually(`redis-server on ${redisPort}`, () => redisAnswers(redisPort));
      for (let i = 0; i < count; i++) await fleet.addNode(`node${i}`, extra);
    } catch (error) {
      await fleet.stop(); // what did start, stopped by its own handle
      throw error;
    }
    return fleet;
  }

  /** Starts one more wsfleet node (its colour from a `--color` in `extra`, else blue), ready. */
  async addNode(name, extra = []) {
    const node = await this.#startNode(name, extra);
    this.nodes.push(node);
    return node;
  }

  async #startNode(name, extra) {
    const port = await freePort();
    const colorAt = extra.indexOf("--color");
    const color = colorAt >= 0 ? extra[colorAt + 1] : "blue";
    // Flags and values, the tests' defaults first; `extra` (flag, value pairs) replaces them.
    const flags = new Map([
      ["--bind-addr", `127.0.0.1:${port}`],
      ["--redis-url", this.redisUrl],
      ["--instance-id", `${name}-${port}`],
      ["--broadcast-token", TOKEN],
      ["--lease-period", "500ms"],
      ["--redis-timeout", "500ms"],
      ["--drain-spread", "200ms"],
      ["--shutdown-timeout", "5s"],
      // The tests send as fast as replies come; the rate limit is not what they are about.
      ["--rate-limit", "0"],
    ]);
    for (let i = 0; i + 1 < extra.length; i += 2) flags.set(extra[i], extra[i + 1]);
    const args = [...flags].flat();
    const node = start(name, BINARY, args);
    this.#processes.push(node);
    const addr = `127.0.0.1:${port}`;
    await eventually(`${name} ready (log ${node.log})`, async () => {
      const response = await fetch(`http://${addr}/readyz`).catch(() => undefined);
      return response?.status === 200;
    });
    return {
      name,
      color,
      addr,
      log: node.log,
      ws: `ws://${addr}/ws/chat/`,
      /** Set when the node was told to drain: clients should go elsewhere. */
      draining: false,
      /** SIGKILL: the node vanishes mid-frame (clients see 1006); resolves with its exit. */
      crash() {
        this.draining = true;
        node.child.kill("SIGKILL");
        return node.exited;
      },
      /** SIGTERM: the node drains (bye, 1001) and exits; resolves with its exit. */
      drain() {
        this.draining = true;
        node.child.kill("SIGTERM");
        return node.exited;
      },
    };
  }

  /** The socket URL of the first node that is not draining. */
  liveUrl() {
    const node = this.nodes.find((n) => !n.draining);
    if (!node) throw new Error("no live node");
    return node.ws;
  }

  /**
   * The socket URL of the next live node of the live colour, in turn: what a load balancer in
   * front of the fleet gives each new connection.
   */
  nextUrl() {
    const live = this.nodes.filter((n) => !n.draining && n.color === this.live);
    if (live.length === 0) throw new Error(`no live ${this.live} node`);
    this.#turn += 1;
    return live[this.#turn % live.length].ws;
  }

  /**
   * `POST /broadcast` through `node`; the answer's body. With `key` (an `Idempotency-Key`) a
   * repeat publishes nothing and answers 200 with the first answer.
   */
  async broadcast(node, message, { key } = {}) {
    const headers = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
    if (key) headers["idempotency-key"] = key;
    const response = await fetch(`http://${node.addr}/broadcast`, {
      method: "POST",
      headers,
      body: JSON.stringify({ message }),
    });
    if (response.status !== 202 && !(key && response.status === 200)) {
      throw new Error(`broadcast answered ${response.status}`);
    }
    return response.json();
  }

  /**
   * A broadcast through a live node of the live colour, tried again (same idempotency key, so
   * published once) while nodes drain or vanish under it.
   */
  async broadcastSomewhere(message, key) {
    for (let attempt = 0; ; attempt++) {
      const node = this.nodes.find((n) => !n.draining && n.color === this.live);
      try {
        if (!node) throw new Error(`no live ${this.live} node`);
        return await this.broadcast(node, message, { key });
      } catch (error) {
        if (attempt >= 50) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  /** Stops every process still running, by its own handle. */
  async stop() {
    await Promise.all(
      this.#processes.map(({ child, exited }) => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        return exited;
      }),
    );
  }
}

/** A gate that a client's URL function can wait at: `wait()` until `open()`. */
export function gate() {
  let open;
  const opened = new Promise((resolve) => (open = resolve));
  return { wait: () => opened, open: () => open() };
}

/** An HS256 JWT for `sub`, expiring `seconds` from now (SPEC "Identity"). */
export function jwt(secret, sub, seconds) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const exp = Math.floor(Date.now() / 1000) + seconds;
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub, exp })}`;
  const signature = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${signature}`;
}
