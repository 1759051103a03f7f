'use strict';
// What every socket.io test file here shares: starting wsrelay (and redis-server) on free
// loopback ports and stopping them, a small HTTP/WebSocket balancer in front of several nodes,
// and waits that always end.
//
//   WSRELAY_BIN  server binary (default ../../target/release/wsrelay, relative to this dir)
//   REDIS_SERVER redis-server binary (default: redis-server on PATH; run.sh installs it)
//   WSRELAY_TEST_VERBOSE=1 copies every server's stderr to ours
//
// A server is started as `$WSRELAY_BIN --listen 127.0.0.1:0 ARGS…` and its address read from
// its `listening on ws://HOST:PORT/` line.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const SERVER_BIN = path.resolve(
  process.env.WSRELAY_BIN || path.join(__dirname, '..', '..', 'target', 'release', 'wsrelay'),
);
const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';
const STARTUP_MS = 10_000;
// Every wait for something the server sends. Loopback answers in milliseconds; the margin is
// for a loaded machine with two shared cores, and for events that cross Redis.
const WAIT_MS = 5_000;

// Every process started here, killed on exit whatever happened, and on SIGINT/SIGTERM (a
// test runner giving up on this file, ^C).
const children = new Set();
const killChildren = () => {
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
};
process.on('exit', killChildren);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    killChildren();
    process.exit(128 + (sig === 'SIGINT' ? 2 : 15));
  });
}

/** A loopback port nobody listens on right now (bound, noted, released). */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * wsrelay with `args` after `--listen 127.0.0.1:0`; resolves with
 * { proc, host, url, log() } once it prints its address.
 */
function startServer(args) {
  assert.ok(fs.existsSync(SERVER_BIN), `server binary not found: ${SERVER_BIN} (build it or set WSRELAY_BIN)`);
  return new Promise((resolve, reject) => {
    const proc = spawn(SERVER_BIN, ['--listen', '127.0.0.1:0', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(proc);
    proc.on('exit', () => children.delete(proc));
    let stderr = '';
    let done = false;
    const finish = (err, val) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        proc.kill('SIGKILL');
        err.message += `\n--- wsrelay ${args.join(' ')} stderr ---\n${stderr}`;
        reject(err);
      } else resolve(val);
    };
    const timer = setTimeout(
      () => finish(new Error(`wsrelay did not print "listening on ws://…/" within ${STARTUP_MS} ms`)),
      STARTUP_MS,
    );
    proc.stdout.resume(); // drain, never block the child on a full pipe
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      if (stderr.length < 256 * 1024) stderr += chunk;
      if (process.env.WSRELAY_TEST_VERBOSE) process.stderr.write(chunk);
      const m = /listening on ws:\/\/([^\s/]+)\//.exec(stderr);
      if (m) finish(null, { proc, host: m[1], url: `http://${m[1]}`, args, log: () => stderr });
    });
    proc.on('error', (e) => finish(new Error(`cannot start ${SERVER_BIN}: ${e.message}`)));
    proc.on('exit', (code, sig) => finish(new Error(`wsrelay exited early (code ${code}, signal ${sig})`)));
  });
}

/** SIGTERM (or `signal`), then SIGKILL if `proc` has not exited within `ms`. */
function stop(proc, ms = 3_000, signal = 'SIGTERM') {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), ms);
    proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    proc.kill(signal);
  });
}

/** Whether a Redis server on `port` answers an inline PING with +PONG within 1 s. */
function ping(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    let got = '';
    const done = (ok) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 1_000);
    sock.on('connect', () => sock.write('PING\r\n'));
    sock.on('data', (d) => {
      got += d;
      if (got.includes('\r\n')) done(got.startsWith('+PONG'));
    });
    sock.on('error', () => done(false));
  });
}

/** redis-server on a free port in its own directory, no persistence; { proc, port, url, log(), dir }. */
async function startRedis() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsrelay-socketio-redis-'));
  const port = await freePort();
  const logFile = path.join(dir, 'redis.log');
  const log = () => {
    try {
      return fs.readFileSync(logFile, 'utf8').slice(-4000);
    } catch {
      return '';
    }
  };
  const proc = spawn(
    REDIS_SERVER,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--dir', dir, '--logfile', logFile],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  children.add(proc);
  let failed = null;
  proc.on('error', (e) => { failed = `cannot start ${REDIS_SERVER}: ${e.message} (apt-get install redis-server)`; });
  proc.on('exit', (code, sig) => {
    children.delete(proc);
    failed = failed || `redis-server exited (code ${code}, signal ${sig})`;
  });
  const deadline = Date.now() + STARTUP_MS;
  for (;;) {
    if (failed) throw new Error(`${failed}\n${log()}`);
    if (await ping(port)) return { proc, port, url: `redis://127.0.0.1:${port}`, log, dir };
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`redis-server did not answer PING within ${STARTUP_MS} ms\n${log()}`);
    }
    await sleep(50);
  }
}

async function stopRedis(redis) {
  if (!redis) return;
  await stop(redis.proc, 2_000, 'SIGKILL');
  fs.rmSync(redis.dir, { recursive: true, force: true });
}

/**
 * A loopback load balancer in front of `targets` (["127.0.0.1:PORT", …]), for HTTP requests
 * and WebSocket upgrades alike, so that a client keeps one URL while its requests reach
 * different nodes:
 *   'round-robin': each request or upgrade goes to the next target, whatever its sid;
 *   'failover':    each goes to the first target that accepts a connection.
 * A target that refuses the connection, or was marked `down(i)`, is skipped (a request body is
 * buffered first, so it can be sent again). `hits` counts what each target was sent; `cut()`
 * drops every connection through it, as a network failure would.
 */
async function startBalancer(targets, mode) {
  assert.ok(mode === 'round-robin' || mode === 'failover');
  let next = 0;
  const hits = targets.map(() => 0);
  const isDown = targets.map(() => false);
  const order = () => {
    const start = mode === 'round-robin' ? next++ % targets.length : 0;
    return targets.map((_, i) => (start + i) % targets.length).filter((i) => !isDown[i]);
  };
  const split = (t) => {
    const i = t.lastIndexOf(':');
    return { host: t.slice(0, i), port: Number(t.slice(i + 1)) };
  };
  const sockets = new Set();
  const server = http.createServer((req, res) => {
    const body = [];
    req.on('data', (c) => body.push(c));
    req.on('end', () => {
      const tries = order();
      const attempt = () => {
        const i = tries.shift();
        if (i === undefined) {
          res.writeHead(502).end('no target');
          return;
        }
        const out = http.request({
          ...split(targets[i]), method: req.method, path: req.url, headers: req.headers, agent: false,
        });
        out.on('socket', (s) => {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
        });
        out.on('response', (up) => {
          hits[i] += 1;
          res.writeHead(up.statusCode, up.headers);
          up.pipe(res);
          up.on('error', () => res.destroy());
        });
        out.on('error', (e) => {
          if (!res.headersSent && (e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET')) attempt();
          else res.destroy();
        });
        res.on('close', () => out.destroy());
        out.end(Buffer.concat(body));
      };
      attempt();
    });
  });
  server.on('upgrade', (req, sock, head) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    const tries = order();
    const attempt = () => {
      const i = tries.shift();
      if (i === undefined) {
        sock.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      const up = net.connect(split(targets[i]));
      up.once('error', (e) => {
        if (e.code === 'ECONNREFUSED') attempt();
        else sock.destroy();
      });
      up.once('connect', () => {
        hits[i] += 1;
        sockets.add(up);
        up.on('close', () => { sockets.delete(up); sock.destroy(); });
        sock.on('close', () => up.destroy());
        up.on('error', () => up.destroy());
        const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
        for (let k = 0; k < req.rawHeaders.length; k += 2) lines.push(`${req.rawHeaders[k]}: ${req.rawHeaders[k + 1]}`);
        up.write(`${lines.join('\r\n')}\r\n\r\n`);
        if (head.length) up.write(head);
        sock.pipe(up);
        up.pipe(sock);
      });
    };
    attempt();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    hits,
    /** From now on, sends nothing to target `i` (as a balancer does whose health check failed). */
    down: (i) => {
      isDown[i] = true;
    },
    /** Cuts every connection through the balancer, both sides, without a close frame or packet. */
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    close: () => new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves with the arguments of the next `event` on `emitter`, or rejects after `ms`. */
function once(emitter, event, ms = WAIT_MS, what = event) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, handler);
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    const handler = (...args) => {
      clearTimeout(timer);
      resolve(args);
    };
    emitter.once(event, handler);
  });
}

/** Polls `fn` until it returns a truthy value, or fails after `ms` saying `what`. */
async function eventually(fn, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms: ${typeof what === 'function' ? what() : what}`);
    await sleep(20);
  }
}

/** Records every `event` a socket.io socket receives (its argument lists, in order). */
class Recorder {
  constructor(socket, event) {
    this.event = event;
    this.calls = [];
    socket.on(event, (...args) => this.calls.push(args));
  }

  /** Waits until `n` calls have arrived; returns the first `n`. */
  async count(n, ms = WAIT_MS) {
    await eventually(() => this.calls.length >= n,
      () => `${n} "${this.event}" events, got ${this.calls.length}: ${JSON.stringify(this.calls)}`, ms);
    return this.calls.slice(0, n);
  }

  /** Waits until a call whose first argument deep-equals `first` has arrived. */
  async until(first, ms = WAIT_MS) {
    await eventually(() => this.calls.some((c) => isDeepEqual(c[0], first)),
      () => `a "${this.event}" event ${JSON.stringify(first)}, got ${JSON.stringify(this.calls)}`, ms);
  }
}

function isDeepEqual(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

/**
 * The arguments an event was emitted with, from those a listener got. With connection-state
 * recovery on, a socket.io server appends the packet's offset to an event's arguments as a last
 * string (that is how the client learns its `_lastOffset`); a listener sees it as one more
 * argument. `sent` says how many arguments were emitted.
 */
function withoutOffset(args, sent) {
  assert.ok(args.length === sent || (args.length === sent + 1 && typeof args[sent] === 'string'),
    `${sent} arguments, optionally followed by an offset string, got ${JSON.stringify(args)}`);
  return args.slice(0, sent);
}

/** Connects `socket` (bounded), failing with its connect_error if it gets one. */
async function connected(socket, ms = WAIT_MS) {
  if (socket.connected) return socket;
  let onError;
  const refused = new Promise((_, reject) => {
    onError = (e) => reject(new Error(`${socket.nsp}: connect_error: ${e.message}`));
    socket.once('connect_error', onError);
  });
  try {
    await Promise.race([once(socket, 'connect', ms, `${socket.nsp} to connect`), refused]);
  } finally {
    socket.off('connect_error', onError);
  }
  return socket;
}

/** Emits with an ack callback; resolves with the ack's arguments, rejects after `ms`. */
function ack(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(WAIT_MS).emit(event, ...args, (err, ...resp) => (err ? reject(err) : resolve(resp)));
  });
}

/** Runs `fn`; on failure, adds the logs of `sources()` ({ log() } objects) to the error. */
async function withLogs(sources, fn) {
  try {
    await fn();
  } catch (e) {
    for (const s of sources()) {
      if (s) e.message += `\n--- ${s.args ? `wsrelay ${s.args.join(' ')}` : 'redis-server'} log ---\n${s.log().slice(-6000)}`;
    }
    throw e;
  }
}

module.exports = {
  SERVER_BIN,
  ack,
  connected,
  WAIT_MS,
  Recorder,
  eventually,
  freePort,
  once,
  sleep,
  startBalancer,
  startRedis,
  startServer,
  stop,
  stopRedis,
  withLogs,
  withoutOffset,
};
