'use strict';
// The socket.io chat tutorial's page in Debian's headless Chromium, against wsrelay --mode chat:
// two tabs chat with each other, the client script loaded from the socket.io-client npm package
// (dist/socket.io.min.js).
//
//   WSRELAY_BIN  server binary (default ../../target/release/wsrelay, relative to this dir)
//   CHROMIUM     browser binary (default /usr/bin/chromium)
//
// The page and the script are served by this test on wsrelay's own origin through Playwright's
// route interception (`/tutorial/…`, never reaching the server), as the tutorial's Express app
// serves them beside socket.io: the page's `io()` is same-origin, as in the tutorial.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { chromium } = require('playwright-core');

const { startServer, stop, withLogs } = require('./harness');

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CLIENT_JS = path.join(__dirname, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js');
const WAIT_MS = 10_000; // every Playwright wait
const TEST_MS = 40_000;

// The tutorial's index.html, with a status line for the welcome. Text only: messages go in
// with textContent, as the tutorial does.
const PAGE = `<!DOCTYPE html>
<html>
  <head>
    <meta charset="utf-8">
    <title>Socket.IO chat</title>
  </head>
  <body>
    <p id="status"></p>
    <ul id="messages" role="log"></ul>
    <form id="form" action="">
      <input id="input" aria-label="Message" autocomplete="off" /><button>Send</button>
    </form>
    <script src="/tutorial/socket.io.min.js"></script>
    <script>
      const socket = io(location.origin);
      window.socket = socket;
      const form = document.getElementById('form');
      const input = document.getElementById('input');
      const messages = document.getElementById('messages');
      const status = document.getElementById('status');
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        if (input.value) {
          socket.emit('message', input.value);
          input.value = '';
        }
      });
      socket.on('connected', (text) => {
        status.textContent = text;
      });
      socket.on('message', (msg) => {
        const item = document.createElement('li');
        item.textContent = msg;
        messages.appendChild(item);
        window.scrollTo(0, document.body.scrollHeight);
      });
    </script>
  </body>
</html>
`;

let server;
let browser;
const pageErrors = [];

async function openTab(label) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.setDefaultNavigationTimeout(WAIT_MS);
  page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`));
  await page.route(`${server.url}/tutorial/`, (route) => route.fulfill({
    status: 200, contentType: 'text/html; charset=utf-8', body: PAGE,
  }));
  await page.route(`${server.url}/tutorial/socket.io.min.js`, (route) => route.fulfill({
    status: 200, contentType: 'text/javascript; charset=utf-8', body: fs.readFileSync(CLIENT_JS),
  }));
  const res = await page.goto(`${server.url}/tutorial/`);
  assert.equal(res.status(), 200);
  return page;
}

async function say(page, text) {
  await page.getByLabel('Message').fill(text);
  await page.getByLabel('Message').press('Enter');
}

const lines = (page) => page.locator('#messages li');

/** Waits until `page` shows `want` (and nothing else) as its messages. */
async function shows(page, want) {
  await lines(page).nth(want.length - 1).waitFor();
  assert.deepEqual(await lines(page).allTextContents(), want);
}

const run = (fn) => () => withLogs(() => [server], fn);

let tabA;
let tabB;

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `chromium not found: ${CHROMIUM} (apt-get install chromium)`);
  assert.ok(fs.existsSync(CLIENT_JS), `${CLIENT_JS} missing: npm ci`);
  server = await startServer(['--mode', 'chat']);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // A page fulfilled by route interception has no address, so Chromium counts it as public
      // and blocks its WebSocket to loopback (ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS), though
      // its URL is wsrelay's own. Served by wsrelay itself, it would be allowed.
      '--disable-features=LocalNetworkAccessChecks'],
  });
}, { timeout: 45_000 });

after(async () => {
  if (browser) {
    let timer;
    await Promise.race([browser.close(), new Promise((r) => { timer = setTimeout(r, 10_000); })]).catch(() => {});
    clearTimeout(timer);
  }
  await stop(server && server.proc);
}, { timeout: 20_000 });

test('two tabs get the welcome and upgrade to WebSocket', { timeout: TEST_MS }, run(async () => {
  tabA = await openTab('A');
  tabB = await openTab('B');
  for (const tab of [tabA, tabB]) {
    await tab.locator('#status', { hasText: 'Welcome to the chat' }).waitFor();
    await tab.waitForFunction(() => window.socket.io.engine.transport.name === 'websocket');
  }
}));

test('two tabs chat with each other: each line shows in both, in one order, as text', { timeout: TEST_MS }, run(async () => {
  await say(tabA, 'hello from A');
  await shows(tabB, ['hello from A']);
  await say(tabB, 'hello from B <b>bold?</b>');
  await shows(tabA, ['hello from A', 'hello from B <b>bold?</b>']);
  await say(tabA, 'and again');
  const want = ['hello from A', 'hello from B <b>bold?</b>', 'and again'];
  await shows(tabA, want);
  await shows(tabB, want);
  assert.equal(await tabA.locator('#messages b').count(), 0, 'text, not markup');
}));

test('a tab whose connection drops reconnects by itself, recovered, and shows what it missed once', { timeout: TEST_MS }, run(async () => {
  const before = await lines(tabB).allTextContents();
  await tabB.evaluate(() => {
    // Not the manager's 'reconnect': that comes before the server's CONNECT answer, which
    // is what sets socket.recovered.
    window.back = false;
    window.socket.once('connect', () => { window.back = true; });
    window.socket.io.engine.close();
  });
  await say(tabA, 'while B was away 1');
  await say(tabA, 'while B was away 2');
  await tabB.waitForFunction(() => window.back); // bounded by the page's default timeout
  assert.equal(await tabB.evaluate(() => window.socket.recovered), true);
  await say(tabA, 'B is back');
  const want = [...before, 'while B was away 1', 'while B was away 2', 'B is back'];
  await shows(tabA, want);
  await shows(tabB, want);
  assert.deepEqual(pageErrors, []);
}));
