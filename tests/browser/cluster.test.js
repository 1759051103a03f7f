'use strict';
// The chat page across two wsrelay nodes on one Redis, in Debian's headless Chromium: a page
// served by node A chats with a page served by node B; both count 2 online; a late page on B
// is shown what was said on A as history.
//
//   WSRELAY_BIN  server binary (default ../../target/release/wsrelay, relative to this dir)
//   CHROMIUM     browser binary (default /usr/bin/chromium)
//   REDIS_SERVER redis-server binary (default: redis-server on PATH; run.sh installs it)
//
// redis-server is started here on a free loopback port without persistence, and each node as
// `$WSRELAY_BIN --listen 127.0.0.1:0 --mode chat --redis redis://127.0.0.1:PORT`, its address
// read from its `listening on ws://HOST:PORT/` line.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const SERVER_BIN = path.resolve(
  process.env.WSRELAY_BIN || path.join(__dirname, '..', '..', 'target', 'release', 'wsrelay'),
);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';
const STARTUP_MS = 10_000;
const WAIT_MS = 10_000; // every Playwright wait: a message crosses Redis between the pages
const TEST_MS = 30_000;

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

/** redis-server on a free port in its own directory; resolves with { proc, port, dir }. */
async function startRedis() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wsrelay-browser-redis-'));
  const port = await freePort();
  const proc = spawn(
    REDIS_SERVER,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--dir', dir, '--logfile', path.join(dir, 'redis.log')],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let failed = null;
  proc.on('error', (e) => { failed = `cannot start ${REDIS_SERVER}: ${e.message} (apt-get install redis-server)`; });
  proc.on('exit', (code, sig) => { failed = failed || `redis-server exited (code ${code}, signal ${sig})`; });
  const deadline = Date.now() + STARTUP_MS;
  for (;;) {
    if (failed) throw new Error(`${failed}\n${redisLog({ dir })}`);
    if (await ping(port)) return { proc, port, dir };
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`redis-server did not answer PING within ${STARTUP_MS} ms\n${redisLog({ dir })}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function redisLog(redis) {
  try {
    return fs.readFileSync(path.join(redis.dir, 'redis.log'), 'utf8');
  } catch {
    return '';
  }
}

/** A wsrelay node on `redisURL`; resolve with { proc, host, log() } once it prints its address. */
function startNode(redisURL) {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      SERVER_BIN,
      ['--listen', '127.0.0.1:0', '--mode', 'chat', '--redis', redisURL],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    let done = false;
    const finish = (err, val) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        proc.kill('SIGKILL');
        err.message += `\n--- node stderr ---\n${stderr}`;
        reject(err);
      } else resolve(val);
    };
    const timer = setTimeout(
      () => finish(new Error(`node did not print "listening on ws://…/" within ${STARTUP_MS} ms`)),
      STARTUP_MS,
    );
    proc.stdout.resume();
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (chunk) => {
      if (stderr.length < 64 * 1024) stderr += chunk;
      if (process.env.WSRELAY_TEST_VERBOSE) process.stderr.write(chunk);
      const m = /listening on ws:\/\/([^\s/]+)\//.exec(stderr);
      if (m) finish(null, { proc, host: m[1], log: () => stderr });
    });
    proc.on('error', (e) => finish(new Error(`cannot start ${SERVER_BIN}: ${e.message}`)));
    proc.on('exit', (code, sig) => finish(new Error(`node exited early (code ${code}, signal ${sig})`)));
  });
}

/** SIGTERM, then SIGKILL if `proc` has not exited within `ms`. */
function stop(proc, ms = 3_000) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), ms);
    proc.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    proc.kill('SIGTERM');
  });
}

let redis;
let nodeA;
let nodeB;
let browser;
let pageA;
let pageB;
const pageErrors = [];

async function openPage(label, node, query = '') {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.setDefaultNavigationTimeout(WAIT_MS);
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
  page.on('dialog', (d) => {
    pageErrors.push(`${label}: dialog ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  const res = await page.goto(`http://${node.host}/${query}`);
  assert.equal(res.status(), 200);
  return page;
}

const status = (page) => page.locator('#status');
const messages = (page) => page.getByRole('log').locator('.message');

async function send(page, name, msg) {
  await page.getByLabel('Name', { exact: true }).fill(name);
  await page.getByLabel('Message', { exact: true }).fill(msg);
  await page.getByLabel('Message', { exact: true }).press('Enter');
}

/** The servers' logs, for a failure message. */
function logs() {
  return `\n--- node A stderr ---\n${nodeA ? nodeA.log() : ''}`
    + `\n--- node B stderr ---\n${nodeB ? nodeB.log() : ''}`
    + `\n--- redis-server log ---\n${redis ? redisLog(redis).slice(-4000) : ''}`;
}

/** Runs `fn`; on failure, adds the servers' logs to the error. */
async function withLogs(fn) {
  try {
    await fn();
  } catch (e) {
    e.message += logs();
    throw e;
  }
}

before(async () => {
  assert.ok(fs.existsSync(SERVER_BIN), `server binary not found: ${SERVER_BIN} (build it or set WSRELAY_BIN)`);
  assert.ok(fs.existsSync(CHROMIUM), `chromium not found: ${CHROMIUM} (apt-get install chromium)`);
  redis = await startRedis();
  const url = `redis://127.0.0.1:${redis.port}`;
  nodeA = await startNode(url);
  nodeB = await startNode(url);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}, { timeout: 45_000 });

after(async () => {
  const bounded = (p, ms) => {
    let timer;
    const limit = new Promise((r) => { timer = setTimeout(r, ms); });
    return Promise.race([p, limit]).catch(() => {}).finally(() => clearTimeout(timer));
  };
  if (browser) await bounded(browser.close(), 10_000);
  for (const node of [nodeA, nodeB]) if (node) await stop(node.proc);
  if (redis) {
    redis.proc.kill('SIGKILL');
    fs.rmSync(redis.dir, { recursive: true, force: true });
  }
}, { timeout: 20_000 });

// Last resort if the runner is torn down without after().
process.on('exit', () => {
  for (const p of [nodeA && nodeA.proc, nodeB && nodeB.proc, redis && redis.proc]) {
    if (p && p.exitCode === null) p.kill('SIGKILL');
  }
});

test('a page on node A and a page on node B count 2 online', { timeout: TEST_MS }, () => withLogs(async () => {
  pageA = await openPage('A', nodeA);
  await assertEventually(() => status(pageA).getAttribute('data-state'), 'connected');
  await assertEventually(() => pageA.locator('#count').textContent(), /\b1 online/);
  pageB = await openPage('B', nodeB);
  await assertEventually(() => status(pageB).getAttribute('data-state'), 'connected');
  await assertEventually(() => pageB.locator('#count').textContent(), /\b2 online/);
  await assertEventually(() => pageA.locator('#count').textContent(), /\b2 online/);
}));

test('the pages chat across the nodes and show the same lines in the same order', { timeout: TEST_MS }, () => withLogs(async () => {
  await send(pageA, 'Ann', 'hello from node A');
  await messages(pageB).filter({ hasText: 'hello from node A' }).first().waitFor();
  await send(pageB, 'Bob', 'hello from node B <b>x</b>');
  await messages(pageA).filter({ hasText: 'hello from node B' }).first().waitFor();
  await send(pageA, 'Ann', 'and again');
  for (const page of [pageA, pageB]) {
    await messages(page).filter({ hasText: 'and again' }).first().waitFor();
  }
  const want = ['Ann: hello from node A', 'Bob: hello from node B <b>x</b>', 'Ann: and again'];
  assert.deepEqual(await messages(pageA).allTextContents(), want);
  assert.deepEqual(await messages(pageB).allTextContents(), want);
  assert.equal(await pageA.locator('#log b, #log img').count(), 0, 'text, not markup');
}));

test('a late page on node B is shown what was said on node A as history', { timeout: TEST_MS }, () => withLogs(async () => {
  const late = await openPage('L', nodeB);
  await assertEventually(() => status(late).getAttribute('data-state'), 'connected');
  await messages(late).filter({ hasText: 'and again' }).first().waitFor();
  assert.deepEqual(
    await late.getByRole('log').locator('.message.history').allTextContents(),
    ['Ann: hello from node A', 'Bob: hello from node B <b>x</b>', 'Ann: and again'],
  );
  await assertEventually(() => pageA.locator('#count').textContent(), /\b3 online/);
  await late.context().close();
  await assertEventually(() => pageA.locator('#count').textContent(), /\b2 online/);
  assert.deepEqual(pageErrors, []);
}));

/** Poll `fn` until its value equals / matches `want`, or fail after `ms`. */
async function assertEventually(fn, want, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  let got;
  for (;;) {
    got = await fn();
    const ok = want instanceof RegExp ? want.test(String(got)) : got === want;
    if (ok) return got;
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms: got ${JSON.stringify(got)}, want ${want}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
